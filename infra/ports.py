"""The loopback ports of the local stack and their defaults: the one list `up`, `status` and `up --help` read."""

from __future__ import annotations

# setting name -> (what listens there, default port); LABELFLOW_STACK_<NAME> overrides each.
STACK_PORTS: dict[str, tuple[str, int]] = {
    "s3_port": ("S3 (SeaweedFS gateway)", 8333),
    "label_studio_port": ("Label Studio", 8080),
    "mlflow_port": ("MLflow", 5000),
    "prefect_port": ("Prefect", 4200),
    "listener_port": ("event listener (webhooks)", 8700),
    "worker_health_port": ("worker health (--with-worker)", 8701),
    # beside, not on, a system PostgreSQL's 5432
    "postgres_port": ("PostgreSQL (--db postgres)", 5433),
    "weed_master_port": ("SeaweedFS master", 9333),
    "weed_volume_port": ("SeaweedFS volume", 8480),
    "weed_filer_port": ("SeaweedFS filer", 8888),
    # SeaweedFS's admin server binds even with its UI off: pinned, never moved
    "weed_admin_port": ("SeaweedFS admin", 23646),
}


def ports_help() -> str:
    """Every port with its variable and default, for `labelflow up --help`."""
    lines = [f"{title}: {port} (env LABELFLOW_STACK_{name.upper()})" for name, (title, port) in STACK_PORTS.items()]
    return (
        "Ports, all on 127.0.0.1 (a busy port fails `up`; nothing moves):\n\n"
        + "\n\n".join(lines)
        + "\n\nSeaweedFS also binds each of its ports +10000 for gRPC (mutual TLS)."
    )
