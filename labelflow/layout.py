"""Where labelflow's own files are, and the work pool its deployments share (no imports: every command reads it)."""

from __future__ import annotations

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent
# The folder holding prefect.yaml, flows/ and expectations/: the deployments' working directory. In a checkout that
# is the repository; in an installed wheel it is the package itself, which carries them as package data.
PROJECT_DIR = _PACKAGE_DIR if (_PACKAGE_DIR / "prefect.yaml").is_file() else _PACKAGE_DIR.parent
WORK_POOL = "labelflow"
