"""Connection settings, one pydantic-settings model per external system."""

from __future__ import annotations

import json
from typing import Any, ClassVar, TypeVar

from pydantic import AnyHttpUrl, SecretStr, ValidationError, field_validator
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from labelflow.integrations.errors import SettingsError

# Defined in a module of their own, so the local stack reads them without pydantic-settings (`labelflow status`).
from labelflow.integrations.stack_home import STACK_FILE_NAME, labelflow_home


def read_stack_connection() -> dict[str, str]:
    """Connection values published by `labelflow up`, keyed by environment variable name."""
    path = labelflow_home() / STACK_FILE_NAME
    if not path.is_file():
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return {}
    env = data.get("env", {})
    return {str(k): str(v) for k, v in env.items()} if isinstance(env, dict) else {}


class _LocalStackSource(PydanticBaseSettingsSource):
    """Lowest-priority source: values written by `labelflow up` to the stack file."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        self._values = read_stack_connection()

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        prefix = self.settings_cls.model_config.get("env_prefix", "")
        return self._values.get(f"{prefix}{field_name}".upper()), field_name, False

    def __call__(self) -> dict[str, Any]:
        values: dict[str, Any] = {}
        for name, field in self.settings_cls.model_fields.items():
            value, key, _ = self.get_field_value(field, name)
            if value is not None:
                values[key] = value
        return values


class _ServiceSettings(BaseSettings):
    """Base: environment first, then `.env`, then the running local stack."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)
    service_name: ClassVar[str] = ""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Order: explicit arguments, environment, .env file, local stack file."""
        return init_settings, env_settings, dotenv_settings, _LocalStackSource(settings_cls)


class S3Settings(_ServiceSettings):
    """S3-compatible object store (SeaweedFS locally, MinIO or AWS S3 in production)."""

    model_config = SettingsConfigDict(env_prefix="LABELFLOW_S3_")
    service_name: ClassVar[str] = "object store"

    endpoint_url: AnyHttpUrl
    access_key: str
    secret_key: SecretStr
    region: str = "us-east-1"

    @property
    def endpoint(self) -> str:
        """Endpoint URL without a trailing slash."""
        return str(self.endpoint_url).rstrip("/")


class S3StorageSettings(_ServiceSettings):
    """The read-only S3 identity Label Studio's storage connections use (their keys sit in its database)."""

    model_config = SettingsConfigDict(env_prefix="LABELFLOW_S3_STORAGE_")
    service_name: ClassVar[str] = "Label Studio storage (read-only S3 identity)"

    access_key: str
    secret_key: SecretStr


class LabelStudioSettings(_ServiceSettings):
    """Label Studio server and an API token (legacy token or personal access token)."""

    model_config = SettingsConfigDict(env_prefix="LABEL_STUDIO_")
    service_name: ClassVar[str] = "Label Studio"

    url: AnyHttpUrl
    api_key: SecretStr

    @property
    def base_url(self) -> str:
        """Server URL without a trailing slash."""
        return str(self.url).rstrip("/")


class MLflowSettings(_ServiceSettings):
    """MLflow tracking server."""

    model_config = SettingsConfigDict(env_prefix="MLFLOW_")
    service_name: ClassVar[str] = "MLflow"

    tracking_uri: str

    @field_validator("tracking_uri")
    @classmethod
    def _http_or_file(cls, value: str) -> str:
        if not value.startswith(("http://", "https://", "file:", "sqlite:", "databricks")):
            raise ValueError("must be an http(s):// URL of a tracking server (or a file:/sqlite: URI)")
        return value.rstrip("/")


class PrefectSettings(_ServiceSettings):
    """Prefect API server."""

    model_config = SettingsConfigDict(env_prefix="PREFECT_")
    service_name: ClassVar[str] = "Prefect"

    api_url: AnyHttpUrl

    @property
    def url(self) -> str:
        """API URL without a trailing slash."""
        return str(self.api_url).rstrip("/")


class ListenerSettings(_ServiceSettings):
    """labelflow's event listener: the URL webhooks are sent to and the bearer token they must carry."""

    model_config = SettingsConfigDict(env_prefix="LABELFLOW_LISTENER_")
    service_name: ClassVar[str] = "event listener"

    url: AnyHttpUrl  # as Label Studio and the object store reach it (not necessarily where it binds)
    token: SecretStr

    @property
    def base_url(self) -> str:
        """URL without a trailing slash."""
        return str(self.url).rstrip("/")


SettingsT = TypeVar("SettingsT", bound=_ServiceSettings)
CONNECTION_SETTINGS: tuple[type[_ServiceSettings], ...] = (
    S3Settings,
    LabelStudioSettings,
    MLflowSettings,
    PrefectSettings,
)


def connection_variables(required_only: bool = True) -> list[str]:
    """Environment variable names of the connection settings, derived from the models."""
    names = []
    for model in CONNECTION_SETTINGS:
        prefix = model.model_config.get("env_prefix", "")
        for field_name, field_info in model.model_fields.items():
            if field_info.is_required() or not required_only:
                names.append(f"{prefix}{field_name}".upper())
    return names


def load_settings(settings_cls: type[SettingsT], **overrides: Any) -> SettingsT:
    """Build one settings model, turning validation errors into a message naming each variable."""
    try:
        return settings_cls(**overrides)
    except ValidationError as exc:
        prefix = settings_cls.model_config.get("env_prefix", "")
        problems = []
        for error in exc.errors():
            field = str(error["loc"][0]) if error["loc"] else "?"
            variable = f"{prefix}{field}".upper()
            if error["type"] == "missing":
                problems.append(f"{variable} is not set")
            else:
                problems.append(f"{variable} is invalid: {error['msg']}")
        hint = "set it in the environment or in .env, or run `labelflow up` for the local stack"
        raise SettingsError(f"{settings_cls.service_name} settings: " + "; ".join(problems) + f" ({hint})") from None
