"""The built wheel, installed alone in a fresh venv outside the checkout, runs the pipeline from an empty directory
(.ci/check_installed_wheel.py, run here so that `make test`, and so CI, runs it)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import RunningStack

SCRIPT = Path(__file__).resolve().parents[2] / ".ci" / "check_installed_wheel.py"
CHECKS = (
    "wheel built",
    "fresh venv",
    "site-packages",
    "labelflow --help",
    "source bucket",
    "labelflow ingest",
    "labelflow simulate",
    "labelflow collect",
    "labelflow pull",
    "revision tags",
    "working directory",
)


# Building the venv is fast from uv's cache but a cold cache downloads ~190 packages; the pipeline takes ~2 min.
@pytest.mark.timeout(1800)
def test_the_installed_wheel_ingests_collects_and_pulls_from_an_empty_directory(local_stack: RunningStack) -> None:
    env = {**os.environ, "LABELFLOW_HOME": str(local_stack.stack.config.home)}
    env.pop("LABELFLOW_WHEEL_CHECK_KEEP", None)  # the test always cleans up what the script creates
    result = subprocess.run(
        [sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=1700, check=False
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-8000:]
    passed = [line.split(":", 2)[1].strip() for line in result.stdout.splitlines() if line.startswith("ok: ")]
    assert passed == list(CHECKS), output[-8000:]
    assert "installed wheel OK" in result.stdout
    assert "FAILED" not in result.stdout
