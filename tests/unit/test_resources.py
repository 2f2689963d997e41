"""Resources: the one place clients are built; each once, on first use, from explicit or configured settings."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from labelflow.integrations.errors import SettingsError
from labelflow.integrations.resources import Resources
from labelflow.integrations.settings import LabelStudioSettings, S3Settings, S3StorageSettings

S3 = S3Settings(endpoint_url="http://127.0.0.1:9", access_key="k", secret_key="s")
LS = LabelStudioSettings(url="http://127.0.0.1:9", api_key="t" * 40)


@pytest.fixture
def no_configuration(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No environment, no .env and no local stack: only explicit settings exist."""
    for name in ("LABELFLOW_S3_ENDPOINT_URL", "LABEL_STUDIO_URL", "LABEL_STUDIO_API_KEY", "MLFLOW_TRACKING_URI"):
        monkeypatch.delenv(name, raising=False)
    for name in ("LABELFLOW_S3_STORAGE_ACCESS_KEY", "LABELFLOW_S3_STORAGE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LABELFLOW_HOME", str(tmp_path / "no-stack"))
    monkeypatch.chdir(tmp_path)


def test_each_client_is_built_once_from_the_given_settings(no_configuration: None) -> None:
    resources = Resources(s3=S3, label_studio=LS, label_studio_timeout=600)
    assert resources.store is resources.store and resources.store.settings == S3
    client = resources.label_studio_client
    assert client is resources.label_studio_client and client.settings == LS and client._timeout == 600
    resources.close()


def test_nothing_is_read_or_imported_until_a_client_is_asked_for(no_configuration: None) -> None:
    resources = Resources.from_settings()  # nothing configured: fine until a client is needed
    with pytest.raises(SettingsError, match="LABELFLOW_S3_ENDPOINT_URL"):
        _ = resources.store
    with pytest.raises(SettingsError, match="LABELFLOW_S3_STORAGE_ACCESS_KEY"):
        _ = resources.reader_settings
    resources.close()  # closes only what was built: nothing here


def test_the_read_only_identity_is_taken_as_given(no_configuration: None) -> None:
    reader = S3StorageSettings(access_key="reader", secret_key=SecretStr("r"))
    assert Resources(storage_reader=reader).reader_settings is reader


def test_building_resources_imports_no_client_library() -> None:
    code = (
        "import sys; from integrations.resources import Resources; Resources.from_settings(); "
        "print([m for m in ('mlflow', 'boto3', 'minio', 'httpx') if m in sys.modules])"
    )
    import subprocess

    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=Path(__file__).parents[2]
    )
    assert out.stdout.strip() == "[]"
