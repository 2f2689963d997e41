"""Commands that hand the pipeline to Prefect: deploy registers scheduled runs, worker runs them, listen starts them."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Annotated

import typer

from labelflow.cli import render
from labelflow.cli.errors import json_stdout, reported_failures
from labelflow.cli.render import err_console
from labelflow.layout import PROJECT_DIR, WORK_POOL
from labelflow.runtime import prefect_connection


def deploy(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML)")],
    ingest_every: Annotated[str, typer.Option(help="Ingest schedule: 30s, 10m, 2h, 1d or off")] = "10m",
    collect_every: Annotated[str, typer.Option(help="Collect + validate + register schedule, or off")] = "30m",
    pipeline_every: Annotated[str, typer.Option(help="Whole-pipeline schedule, or off")] = "off",
    pool: Annotated[str | None, typer.Option(help="Work pool [default: the one in prefect.yaml]")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print what was registered as JSON")] = False,
) -> None:
    """Register this spec's ingest, collect and pipeline deployments (from prefect.yaml) with their schedules."""
    import httpx

    from labelflow.orchestration import DeployError, deploy_spec, parse_every
    from labelflow.tasks.spec import load_spec

    with json_stdout(as_json) as print_json, reported_failures("deploy", httpx.HTTPError, bad_input=(DeployError,)):
        project_spec = load_spec(spec)
        every = {
            "ingest": parse_every(ingest_every),
            "collect": parse_every(collect_every),
            "pipeline": parse_every(pipeline_every),
        }
        with prefect_connection() as prefect:
            from prefect.client.orchestration import get_client

            with get_client(sync_client=True) as client:
                deployed = deploy_spec(client, project_spec, spec, every, PROJECT_DIR, pool)
        if as_json:
            print_json(render.deployment_rows(deployed))
            return
    ui = prefect.url.removesuffix("/api")
    render.deployments(project_spec.name, deployed, ui)


def worker(
    pool: Annotated[str, typer.Option(help="Work pool to take flow runs from")] = WORK_POOL,
    health_port: Annotated[
        int | None, typer.Option(help="Serve Prefect's worker health check on 127.0.0.1:PORT/health [off]")
    ] = None,
    project_dir: Annotated[Path | None, typer.Option(help="Checkout the flows run from [this one]")] = None,
) -> None:
    """Run a Prefect process worker for the pool (creating the pool if needed); flows run from the checkout."""
    import httpx
    from prefect.client.orchestration import get_client

    from labelflow.orchestration import ensure_work_pool, prefect_worker_command, worker_environment

    directory = (project_dir or PROJECT_DIR).resolve()
    with reported_failures("worker", OSError), prefect_connection() as prefect, get_client(sync_client=True) as client:
        try:
            ensure_work_pool(client, pool)
        except httpx.HTTPError as exc:
            raise ConnectionError(f"cannot reach the Prefect server at {prefect.url}: {exc}") from exc
    env = worker_environment(directory) | {"PREFECT_API_URL": prefect.url}
    if health_port:
        env |= {"PREFECT_WORKER_WEBSERVER_HOST": "127.0.0.1", "PREFECT_WORKER_WEBSERVER_PORT": str(health_port)}
    command = prefect_worker_command(pool, health_port)
    err_console.print(f"labelflow worker: pool {pool}, flows from {directory}")
    os.chdir(directory)
    os.execve(command[0], command, env)  # the worker replaces this process: signals and exit code are its own


def listen(
    host: Annotated[str, typer.Option(help="Address to bind (0.0.0.0 in a container)")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port [the stack's 8700]")] = 8700,
    debounce: Annotated[float, typer.Option(help="Seconds a triggered run waits, gathering more events")] = 15.0,
) -> None:
    """Turn object-store and Label Studio webhooks into debounced ingest and collect runs of deployed specs."""
    from prefect.client.orchestration import get_client

    from labelflow.integrations.settings import ListenerSettings, load_settings
    from labelflow.orchestration import build_listener, serve_until_stopped

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    with reported_failures("listen", OSError), prefect_connection(), get_client(sync_client=True) as client:
        from labelflow.integrations.resources import Resources

        settings = load_settings(ListenerSettings)
        resources = Resources.from_settings()
        listener = build_listener(
            client,
            settings.base_url,
            settings.token.get_secret_value(),
            resources.store,
            resources.label_studio_client,
            debounce,
        )
        server = listener.server(host, port)  # a busy port fails here, before anything starts
        listener.start()  # servers still starting are fine: routes are retried
        err_console.print(f"labelflow listen: http://{host}:{port}/hooks/{{seaweedfs,s3,label-studio}}")
        serve_until_stopped(server, listener.stop)
