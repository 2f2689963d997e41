# MLflow tracking server with the PostgreSQL driver and S3 client it needs in production.
FROM python:3.11-slim
RUN pip install --no-cache-dir "mlflow==3.17.2" "psycopg2-binary==2.9.*" "boto3>=1.40"
ENV MLFLOW_DISABLE_TELEMETRY=true DO_NOT_TRACK=true MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false
USER 1000
