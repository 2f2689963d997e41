# The labelflow image: the pipeline's locked environment, used by the Prefect worker (and for one-off CLI runs).
FROM python:3.11-slim
COPY --from=ghcr.io/astral-sh/uv:0.13 /uv /usr/local/bin/uv
WORKDIR /app
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy DO_NOT_TRACK=true MLFLOW_DISABLE_TELEMETRY=true \
    PREFECT_SERVER_ANALYTICS_ENABLED=false GX_ANALYTICS_ENABLED=false PATH="/app/.venv/bin:$PATH"
COPY pyproject.toml uv.lock README.md ./
RUN uv sync --frozen --no-dev --no-install-project
COPY labelflow ./labelflow
COPY flows ./flows
COPY tasks ./tasks
COPY integrations ./integrations
COPY infra ./infra
COPY expectations ./expectations
COPY prefect.yaml ./
RUN uv sync --frozen --no-dev
USER 1000
ENTRYPOINT ["labelflow"]
