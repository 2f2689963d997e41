# The two commands a newcomer needs:  `make demo`  (set up, start the local stack, run the demo end to end)
#                                      `make test`  (set up, install the test browser and PostgreSQL, lint, run every
#                                                    test against a real local stack of the suite's own, then the
#                                                    PostgreSQL tests on a second one)
# Everything is installed into this checkout: uv (if not already on PATH) into .tools/, the locked
# environment into .venv/, Label Studio's own environment into .labelflow/venvs/ on first `labelflow up`.

SHELL := /bin/bash
PYTHON ?= python3
UV ?= $(shell command -v uv 2>/dev/null || echo .tools/bin/uv)
export DO_NOT_TRACK := true
export MLFLOW_DISABLE_TELEMETRY := true
export PREFECT_SERVER_ANALYTICS_ENABLED := false
export GX_ANALYTICS_ENABLED := false

.PHONY: setup browser demo test lint up down status bench

.tools/bin/uv:
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check uv

setup: $(if $(filter .tools/bin/uv,$(UV)),.tools/bin/uv)
	$(UV) sync --frozen

# tests/browser drive Label Studio's pages and the quality report in Debian's Chromium through its chromedriver; the
# fonts make Chinese text and emoji render (the report's test fails on an empty box). Installed with apt-get when
# missing if run as root; otherwise the command is printed.
BROWSER_PACKAGES := chromium chromium-driver fonts-wqy-microhei fonts-noto-color-emoji

browser:
	@if command -v chromium >/dev/null && command -v chromedriver >/dev/null \
		&& fc-list :lang=zh family 2>/dev/null | grep -q . && fc-list :charset=1f44d family 2>/dev/null | grep -q .; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(BROWSER_PACKAGES); \
	else \
		echo "The browser tests need Chromium; run: sudo apt-get update && sudo apt-get install -y $(BROWSER_PACKAGES)"; \
	fi

demo: setup
	$(UV) run labelflow demo

test: setup browser postgres
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run pytest
	$(MAKE) --no-print-directory test-postgres

lint: setup
	$(UV) run ruff check .
	$(UV) run ruff format --check .

up: setup
	$(UV) run labelflow up

down:
	$(UV) run labelflow down

status:
	$(UV) run labelflow status

# `labelflow up --db postgres` runs PostgreSQL from the machine (production's database; see infra/compose): Debian's
# server package, installed with apt-get when missing if run as root; otherwise the command is printed.
.PHONY: postgres test-postgres
POSTGRES_PACKAGES := postgresql

postgres:
	@if command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
		:; \
	elif [ "$$(id -u)" = 0 ]; then \
		apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y $(POSTGRES_PACKAGES); \
	else \
		echo "--db postgres needs PostgreSQL; run: sudo apt-get update && sudo apt-get install -y $(POSTGRES_PACKAGES)"; \
	fi

# The ingest -> collect -> publish path and the concurrency test on a stack of its own whose services use PostgreSQL.
test-postgres: setup postgres
	LABELFLOW_TEST_DB=postgres LABELFLOW_TEST_HOME=.labelflow-test-pg LABELFLOW_TEST_PORT_OFFSET=200 \
		$(UV) run pytest tests/integration/test_postgres_stack.py tests/integration/test_stack.py \
		-k "postgres or eight_annotators"
