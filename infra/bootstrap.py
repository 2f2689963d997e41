"""One-off setup once the servers answer: MLflow's artifact bucket and a Label Studio API token that works."""

from __future__ import annotations

import time
from pathlib import Path

import httpx

from labelflow.infra.credentials import Credentials
from labelflow.infra.services import MLFLOW_ARTIFACT_BUCKET
from labelflow.infra.stack_config import LOOPBACK, StackConfig, StackError
from labelflow.integrations.settings import S3Settings


def ensure_mlflow_artifact_bucket(config: StackConfig, creds: Credentials, s3_log: Path) -> None:
    """Create the bucket MLflow stores artifacts in, retrying for a minute while SeaweedFS settles."""
    # Imported here: `labelflow status` loads this module, and the S3 clients take a second to import.
    from labelflow.integrations.object_store import ObjectStore, ObjectStoreError

    store = ObjectStore(
        S3Settings(
            endpoint_url=f"http://{LOOPBACK}:{config.s3_port}",
            access_key=creds.s3_access_key,
            secret_key=creds.s3_secret_key,
        )
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            store.ensure_bucket(MLFLOW_ARTIFACT_BUCKET)
            break
        except ObjectStoreError as exc:  # the volume server may still be registering with the master
            if time.monotonic() > deadline:
                raise StackError(f"s3: could not create bucket {MLFLOW_ARTIFACT_BUCKET}: {exc}; see {s3_log}") from exc
            time.sleep(1)


def ensure_label_studio_token(config: StackConfig, creds: Credentials, label_studio_log: Path) -> None:
    """Check that Label Studio accepts the stack's API token, enabling legacy tokens first if it must."""
    ls = f"http://{LOOPBACK}:{config.label_studio_port}"
    headers = {"Authorization": f"Token {creds.label_studio_token}"}
    response = httpx.get(f"{ls}/api/current-user/whoami", headers=headers, timeout=10)
    if response.status_code == 401:
        # An organisation created before legacy tokens were enabled: switch them on with a session login.
        _enable_legacy_tokens(ls, creds)
        response = httpx.get(f"{ls}/api/current-user/whoami", headers=headers, timeout=10)
    if response.status_code != 200:
        raise StackError(
            f"label-studio: the API token is refused (HTTP {response.status_code}: {response.text[:200]}); "
            f"see {label_studio_log}"
        )


def _enable_legacy_tokens(ls: str, creds: Credentials) -> None:
    """Log in as the stack's admin and switch on the organisation's legacy API tokens."""
    with httpx.Client(base_url=ls, timeout=10, follow_redirects=True) as http:
        http.get("/user/login/")
        csrf = http.cookies.get("csrftoken", "")
        http.post(
            "/user/login/",
            data={
                "email": creds.label_studio_username,
                "password": creds.label_studio_password,
                "csrfmiddlewaretoken": csrf,
            },
            headers={"Referer": f"{ls}/user/login/"},
        )
        csrf = http.cookies.get("csrftoken", csrf)
        http.post(
            "/api/jwt/settings",
            json={"legacy_api_tokens_enabled": True, "api_tokens_enabled": True},
            headers={"X-CSRFToken": csrf, "Referer": ls},
        )
