"""Label Studio's own environment: a separate virtualenv from locked requirements, and the settings it runs with."""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

from labelflow.infra.credentials import Credentials
from labelflow.infra.postgres import label_studio_database_variables
from labelflow.infra.stack_config import LOOPBACK, StackConfig, StackError, log_tail

LABEL_STUDIO_REQUIREMENTS = Path(__file__).parent / "local" / "label-studio-requirements.txt"
LABEL_STUDIO_SETTINGS_DIR = Path(__file__).parent / "local" / "label_studio_settings"
LABEL_STUDIO_SETTINGS_MODULE = "labelflow_label_studio_settings"
# Run with Label Studio's python: `label-studio init` (migrations, admin user and token), then gunicorn.
LABEL_STUDIO_SERVE_MODULE = "labelflow_label_studio_serve"

# Label Studio 1.23's default SSRF block list (core/utils/io.py: validate_ip).
LABEL_STUDIO_DEFAULT_BANNED_SUBNETS = [
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.0.2.0/24",
    "192.88.99.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "198.51.100.0/24",
    "203.0.113.0/24",
    "224.0.0.0/4",
    "233.252.0.0/24",
    "240.0.0.0/4",
    "255.255.255.255/32",
    "::/128",
    "::1/128",
    "::ffff:0:0/96",
    "::ffff:0:0:0/96",
    "64:ff9b::/96",
    "64:ff9b:1::/48",
    "100::/64",
    "2001:0000::/32",
    "2001:20::/28",
    "2001:db8::/32",
    "2002::/16",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]


def banned_subnets_except_loopback_host() -> list[str]:
    """Label Studio's default block list with 127.0.0.1/32 (and only it) carved out of 127.0.0.0/8."""
    loopback, host = ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network(f"{LOOPBACK}/32")
    result: list[str] = []
    for subnet in LABEL_STUDIO_DEFAULT_BANNED_SUBNETS:
        if ipaddress.ip_network(subnet) == loopback:
            result.extend(sorted(str(net) for net in loopback.address_exclude(host)))
        else:
            result.append(subnet)
    return result


def label_studio_variables(config: StackConfig, creds: Credentials) -> dict[str, str]:
    """The environment variables Label Studio's server starts with (on top of the common child environment)."""
    data = config.data_dir
    variables = {
        "LABEL_STUDIO_BASE_DATA_DIR": str(data / "label-studio"),
        "DJANGO_DB": "sqlite",
        "LABEL_STUDIO_HOST": f"http://{LOOPBACK}:{config.label_studio_port}",
        "LABEL_STUDIO_USERNAME": creds.label_studio_username,
        "LABEL_STUDIO_PASSWORD": creds.label_studio_password,
        "LABEL_STUDIO_USER_TOKEN": creds.label_studio_token,
        "LABEL_STUDIO_ENABLE_LEGACY_API_TOKEN": "true",
        "LABEL_STUDIO_DISABLE_SIGNUP_WITHOUT_LINK": "true",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        # SSRF protection stays ON. Storages created without an explicit endpoint fall back to this
        # operator-set endpoint, which Label Studio trusts; every user-supplied URL is still checked.
        "S3_ENDPOINT": f"http://{LOOPBACK}:{config.s3_port}",
        # ... against Label Studio's own list of reserved networks minus exactly 127.0.0.1, so that its webhooks
        # reach the event listener on this machine; 127.0.0.2-255, private networks, link-local (cloud metadata)
        # and the rest stay refused.
        "USE_DEFAULT_BANNED_SUBNETS": "false",
        "USER_ADDITIONAL_BANNED_SUBNETS": ",".join(banned_subnets_except_loopback_host()),
        "HOME": str(data / "label-studio"),
        # Label Studio's settings plus FILE_UPLOAD_PERMISSIONS 0o600: Django chmods saved exports 0644 otherwise.
        "DJANGO_SETTINGS_MODULE": LABEL_STUDIO_SETTINGS_MODULE,
        "PYTHONPATH": str(LABEL_STUDIO_SETTINGS_DIR),
    }
    if config.database == "postgres":
        variables.update(label_studio_database_variables(config, creds.postgres_password))
    return variables


def ensure_label_studio_venv(
    config: StackConfig, log: Path, env: dict[str, str], echo: Callable[[str], None] = lambda _: None
) -> None:
    """Create Label Studio's own virtual environment from the locked requirements, once (output goes to `log`)."""
    venv = config.label_studio_venv
    wanted = hashlib.sha256(LABEL_STUDIO_REQUIREMENTS.read_bytes()).hexdigest()
    marker = venv / ".labelflow-requirements.sha256"
    if marker.is_file() and marker.read_text().strip() == wanted and (venv / "bin" / "label-studio").exists():
        return
    echo(f"Installing Label Studio into {venv} (once; about 1 GB) ...")
    config.logs_dir.mkdir(parents=True, exist_ok=True)
    uv = os.environ.get("UV") or shutil.which("uv")
    python = f"{sys.version_info.major}.{sys.version_info.minor}"
    if uv:
        steps = [
            [uv, "venv", "--quiet", "--allow-existing", "--python", python, str(venv)],
            [
                uv,
                "pip",
                "install",
                "--quiet",
                "--python",
                str(venv / "bin" / "python"),
                "-r",
                str(LABEL_STUDIO_REQUIREMENTS),
            ],
        ]
    else:
        steps = [
            [sys.executable, "-m", "venv", str(venv)],
            [str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", "-r", str(LABEL_STUDIO_REQUIREMENTS)],
        ]
    with log.open("ab") as out:
        for step in steps:
            result = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, env=env, check=False)
            if result.returncode != 0:
                raise StackError(
                    f"label-studio: installing its environment failed ({' '.join(step[:3])} ...); "
                    f"see {log}\n{log_tail(log)}"
                )
    marker.write_text(wanted)
