"""Process-level setup done at the CLI entry point: telemetry off, Prefect pointed at the configured server."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from labelflow.integrations.settings import PrefectSettings

TELEMETRY_OFF = {
    "DO_NOT_TRACK": "true",
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    # MLflow prints "View run ... at: <url>" to stdout when a run ends, which corrupts `--json` output.
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}


@contextmanager
def prefect_connection() -> Iterator[PrefectSettings]:
    """Run the enclosed flows against the configured (or local-stack) Prefect server, never a temporary one."""
    for key, value in TELEMETRY_OFF.items():
        os.environ.setdefault(key, value)
    from labelflow.integrations.settings import PrefectSettings, load_settings

    prefect = load_settings(PrefectSettings)
    os.environ["PREFECT_API_URL"] = prefect.url
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect.url}):
        yield prefect
