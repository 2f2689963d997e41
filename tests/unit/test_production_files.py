"""The production compose file cannot run here (no Docker engine): check what can be checked."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from labelflow.integrations.settings import connection_variables

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "infra" / "compose" / "docker-compose.yml"


def load_compose() -> dict:
    return yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))


def test_every_expected_service_is_present() -> None:
    services = load_compose()["services"]
    for name in (
        "minio",
        "postgres",
        "label-studio",
        "prefect-server",
        "prefect-worker",
        "labelflow-listener",
        "mlflow",
    ):
        assert name in services, f"{name} missing from {COMPOSE}"


def test_images_are_pinned_and_builds_exist() -> None:
    for name, service in load_compose()["services"].items():
        if "image" in service:
            assert ":" in service["image"] and not service["image"].endswith(":latest"), name
        else:
            dockerfile = ROOT / "infra" / "compose" / service["build"]["context"] / service["build"]["dockerfile"]
            assert dockerfile.resolve().is_file(), f"{name}: {dockerfile}"


def test_worker_gets_every_connection_variable_the_code_reads() -> None:
    worker_env = load_compose()["services"]["prefect-worker"]["environment"]
    assert set(connection_variables()) == {
        "LABELFLOW_S3_ENDPOINT_URL",
        "LABELFLOW_S3_ACCESS_KEY",
        "LABELFLOW_S3_SECRET_KEY",
        "LABEL_STUDIO_URL",
        "LABEL_STUDIO_API_KEY",
        "MLFLOW_TRACKING_URI",
        "PREFECT_API_URL",
    }
    assert set(connection_variables()) <= set(worker_env)
    assert worker_env["LABEL_STUDIO_URL"].startswith("http://label-studio:")
    assert worker_env["MLFLOW_TRACKING_URI"].startswith("http://mlflow:")
    assert worker_env["PREFECT_API_URL"].startswith("http://prefect-server:")


def test_minio_and_label_studio_reach_the_listener_service() -> None:
    services = load_compose()["services"]
    listener = services["labelflow-listener"]
    env = listener["environment"]
    assert set(connection_variables()) <= set(env)
    port = listener["entrypoint"][listener["entrypoint"].index("--port") + 1]
    assert env["LABELFLOW_LISTENER_URL"] == f"http://labelflow-listener:{port}"  # what Label Studio's webhooks call
    minio = services["minio"]["environment"]
    assert minio["MINIO_NOTIFY_WEBHOOK_ENDPOINT_LABELFLOW"] == f"{env['LABELFLOW_LISTENER_URL']}/hooks/s3"
    assert env["LABELFLOW_LISTENER_TOKEN"] == "${LABELFLOW_LISTENER_TOKEN}"
    assert "LABELFLOW_LISTENER_TOKEN" in minio["MINIO_NOTIFY_WEBHOOK_AUTH_TOKEN_LABELFLOW"]


def test_services_share_postgres_and_minio() -> None:
    services = load_compose()["services"]
    ls = services["label-studio"]["environment"]
    assert ls["DJANGO_DB"] == "default" and ls["POSTGRE_HOST"] == "postgres"
    assert "postgres:5432/prefect" in services["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert "postgresql://" in services["mlflow"]["command"] and "s3://" in services["mlflow"]["command"]
    databases = set(re.findall(r"CREATE DATABASE (\w+);", (COMPOSE.parent / "postgres-init.sql").read_text()))
    assert {"labelstudio", "prefect", "mlflow"} <= databases


def test_telemetry_is_off_everywhere() -> None:
    services = load_compose()["services"]
    ls = services["label-studio"]["environment"]
    assert ls["COLLECT_ANALYTICS"] == "false" and ls["LATEST_VERSION_CHECK"] == "false"
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    assert services["mlflow"]["environment"]["MLFLOW_DISABLE_TELEMETRY"] == "true"
    assert "SSRF_PROTECTION_ENABLED" not in ls, "SSRF protection stays on in production"


def test_compose_variables_are_documented() -> None:
    used = set(re.findall(r"\$\{(\w+)", COMPOSE.read_text(encoding="utf-8")))
    example = (COMPOSE.parent / "compose.env.example").read_text(encoding="utf-8")
    documented = set(re.findall(r"^(\w+)=", example, flags=re.MULTILINE))
    assert used <= documented, used - documented
