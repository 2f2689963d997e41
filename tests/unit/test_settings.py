"""Settings: environment first, then the local stack file; errors name the variable."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labelflow.integrations.settings import (
    LabelStudioSettings,
    MLflowSettings,
    PrefectSettings,
    S3Settings,
    SettingsError,
    connection_variables,
    load_settings,
)

ALL_VARIABLES = connection_variables()


@pytest.fixture(autouse=True)
def isolated_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No connection variables, no .env, and an empty stack home."""
    for name in ALL_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("LABELFLOW_HOME", str(tmp_path / "home"))
    return tmp_path / "home"


def write_stack_file(home: Path, env: dict[str, str]) -> None:
    home.mkdir(parents=True, exist_ok=True)
    (home / "stack.json").write_text(json.dumps({"env": env}), encoding="utf-8")


def test_missing_settings_name_every_variable() -> None:
    with pytest.raises(SettingsError) as caught:
        load_settings(S3Settings)
    message = str(caught.value)
    for name in ("LABELFLOW_S3_ENDPOINT_URL", "LABELFLOW_S3_ACCESS_KEY", "LABELFLOW_S3_SECRET_KEY"):
        assert f"{name} is not set" in message
    assert "labelflow up" in message


def test_malformed_url_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABEL_STUDIO_URL", "not a url")
    monkeypatch.setenv("LABEL_STUDIO_API_KEY", "k")
    with pytest.raises(SettingsError, match=r"LABEL_STUDIO_URL is invalid"):
        load_settings(LabelStudioSettings)


def test_malformed_tracking_uri_is_rejected(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "127.0.0.1:5000")
    with pytest.raises(SettingsError, match=r"MLFLOW_TRACKING_URI is invalid"):
        load_settings(MLflowSettings)


def test_local_stack_file_is_used_when_nothing_is_exported(isolated_environment: Path) -> None:
    write_stack_file(
        isolated_environment,
        {
            "LABELFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
            "LABELFLOW_S3_ACCESS_KEY": "stack-key",
            "LABELFLOW_S3_SECRET_KEY": "stack-secret",
            "PREFECT_API_URL": "http://127.0.0.1:4200/api",
        },
    )
    s3 = load_settings(S3Settings)
    assert s3.endpoint == "http://127.0.0.1:8333"
    assert s3.access_key == "stack-key"
    assert s3.secret_key.get_secret_value() == "stack-secret"
    assert "stack-secret" not in repr(s3)
    assert load_settings(PrefectSettings).url == "http://127.0.0.1:4200/api"


def test_environment_overrides_the_local_stack(isolated_environment: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    write_stack_file(
        isolated_environment,
        {
            "LABELFLOW_S3_ENDPOINT_URL": "http://127.0.0.1:8333",
            "LABELFLOW_S3_ACCESS_KEY": "stack-key",
            "LABELFLOW_S3_SECRET_KEY": "stack-secret",
        },
    )
    monkeypatch.setenv("LABELFLOW_S3_ENDPOINT_URL", "https://minio.example.internal:9000")
    s3 = load_settings(S3Settings)
    assert s3.endpoint == "https://minio.example.internal:9000"
    assert s3.access_key == "stack-key"


def test_dotenv_file_is_read(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MLFLOW_TRACKING_URI=http://mlflow.internal:5000/\n", encoding="utf-8")
    assert load_settings(MLflowSettings).tracking_uri == "http://mlflow.internal:5000"


def test_env_example_lists_every_connection_variable() -> None:
    example = (Path(__file__).parents[2] / ".env.example").read_text(encoding="utf-8")
    for name in ALL_VARIABLES:
        assert f"{name}=" in example


def test_storage_reader_identity_is_required_and_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from labelflow.integrations.settings import S3StorageSettings

    for name in ("LABELFLOW_S3_STORAGE_ACCESS_KEY", "LABELFLOW_S3_STORAGE_SECRET_KEY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LABELFLOW_S3_ACCESS_KEY", "admin")  # the admin key is never a fallback
    monkeypatch.setenv("LABELFLOW_S3_SECRET_KEY", "admin-secret")
    with pytest.raises(SettingsError) as caught:
        load_settings(S3StorageSettings)
    message = str(caught.value)
    assert "LABELFLOW_S3_STORAGE_ACCESS_KEY is not set" in message
    assert "LABELFLOW_S3_STORAGE_SECRET_KEY is not set" in message
    assert "\n" not in message


def test_storage_reader_identity_comes_from_the_stack_file(isolated_environment: Path) -> None:
    from labelflow.integrations.settings import S3StorageSettings

    write_stack_file(
        isolated_environment,
        {"LABELFLOW_S3_STORAGE_ACCESS_KEY": "reader", "LABELFLOW_S3_STORAGE_SECRET_KEY": "reader-secret"},
    )
    reader = load_settings(S3StorageSettings)
    assert reader.access_key == "reader"
    assert reader.secret_key.get_secret_value() == "reader-secret"
    assert "reader-secret" not in repr(reader)
