"""Where labelflow's own files are, and the work pool its deployments share (no imports: every command reads it)."""

from __future__ import annotations

from pathlib import Path

# The folder holding prefect.yaml and expectations/: the deployments' working directory.
PROJECT_DIR = Path(__file__).resolve().parents[1]
WORK_POOL = "labelflow"
