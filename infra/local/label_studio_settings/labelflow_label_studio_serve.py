"""Start Label Studio as its production image does: migrate and create the admin once, then serve with gunicorn.

`label-studio start` would run Django's development server, one process. Usage (in Label Studio's environment):
    python -m labelflow_label_studio_serve HOST PORT WORKERS
This module runs inside Label Studio's own environment, never labelflow's.
"""

import os
import subprocess
import sys
from pathlib import Path


def main() -> None:
    """Run `label-studio init` (migrations, the admin user and its token), then replace this process by gunicorn."""
    host, port, workers = sys.argv[1:4]
    bin_dir = Path(sys.executable).parent
    # The admin's email, password and token come from LABEL_STUDIO_USERNAME/PASSWORD/USER_TOKEN; an existing
    # database keeps its users ("User ... already exists").
    init = subprocess.run([str(bin_dir / "label-studio"), "init", "--quiet", "--enable-legacy-api-token"], check=False)
    if init.returncode != 0:
        sys.exit(f"label-studio init failed with exit code {init.returncode}")
    label_studio_package = next((bin_dir.parent / "lib").glob("python*/site-packages/label_studio"))
    gunicorn = str(bin_dir / "gunicorn")
    os.execv(
        gunicorn,
        [
            gunicorn,
            "--bind",
            f"{host}:{port}",
            "--workers",
            workers,
            # A few threads per worker: requests waiting on the network (S3, webhooks) do not hold a whole process.
            "--worker-class",
            "gthread",
            "--threads",
            "2",
            # As Label Studio's uWSGI: long imports and exports are allowed 300 s.
            "--timeout",
            "300",
            "--graceful-timeout",
            "20",
            # Label Studio's own modules (`core`, `projects`, ...) import as top-level packages.
            "--pythonpath",
            str(label_studio_package),
            "--access-logfile",
            "-",
            "--name",
            "label-studio",
            "labelflow_label_studio_wsgi:application",
        ],
    )


if __name__ == "__main__":
    main()
