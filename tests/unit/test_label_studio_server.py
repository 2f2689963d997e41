"""How the local stack runs Label Studio: migrations and admin once, then gunicorn workers, SQLite in WAL mode."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from labelflow.infra.credentials import Credentials
from labelflow.infra.label_studio_env import LABEL_STUDIO_SERVE_MODULE, LABEL_STUDIO_SETTINGS_DIR
from labelflow.infra.services import build_services
from labelflow.infra.stack_config import StackConfig

SHARED_LABEL_STUDIO_VENV = Path(__file__).resolve().parents[2] / ".labelflow" / "venvs" / "label-studio"


@pytest.fixture
def config(tmp_path: Path) -> StackConfig:
    return StackConfig(home=tmp_path / "stack", label_studio_workers=6)


def test_label_studio_starts_through_the_serve_module_with_the_configured_workers(config: StackConfig) -> None:
    services = {s.name: s for s in build_services(config, Credentials.load_or_create(config.home))}
    command = services["label-studio"].command
    assert command == [
        str(config.label_studio_venv / "bin" / "python"),
        "-m",
        LABEL_STUDIO_SERVE_MODULE,
        "127.0.0.1",
        str(config.label_studio_port),
        "6",
    ]
    assert (LABEL_STUDIO_SETTINGS_DIR / f"{LABEL_STUDIO_SERVE_MODULE}.py").is_file()
    assert services["label-studio"].env["PYTHONPATH"] == str(LABEL_STUDIO_SETTINGS_DIR)


def test_label_studio_workers_default_to_its_images_four(tmp_path: Path) -> None:
    assert StackConfig(home=tmp_path).label_studio_workers == 4


@pytest.mark.skipif(not (SHARED_LABEL_STUDIO_VENV / "bin" / "python").exists(), reason="Label Studio not installed")
def test_label_studio_settings_put_sqlite_in_wal_mode_with_immediate_transactions(tmp_path: Path) -> None:
    probe = (
        "import django; django.setup(); from django.db import connection; c = connection.cursor(); "
        "print(c.execute('PRAGMA journal_mode').fetchone()[0], c.execute('PRAGMA busy_timeout').fetchone()[0], "
        "connection.transaction_mode)"
    )
    package = next((SHARED_LABEL_STUDIO_VENV / "lib").glob("python*/site-packages/label_studio"))
    env = {
        "PATH": "/usr/bin:/bin",
        "HOME": str(tmp_path),
        "LABEL_STUDIO_BASE_DATA_DIR": str(tmp_path),
        "DJANGO_DB": "sqlite",
        "DJANGO_SETTINGS_MODULE": "labelflow_label_studio_settings",
        "PYTHONPATH": f"{LABEL_STUDIO_SETTINGS_DIR}:{package}",
        "SENTRY_DSN": "",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
    }
    done = subprocess.run(
        [str(SHARED_LABEL_STUDIO_VENV / "bin" / "python"), "-c", probe],
        env=env,
        cwd=tmp_path,  # not the checkout: its `tasks` package would shadow Label Studio's
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-3:] == ["wal", "30000", "IMMEDIATE"]
