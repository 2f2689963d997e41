"""Hostile specs: DTDs in label configs, sources over labelflow's own state, and state taken from another project."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from labelflow.cli import app
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import state_index_key
from labelflow.tasks.spec import STATE_BUCKET, S3Location, SpecError, parse_spec

ROOT = Path(__file__).parents[2]
BASE = {"name": "p", "source": "s3://raw/x/", "task": "text-classification", "labels": ["a", "b"]}
DOCTYPE_CONFIG = (
    '<!DOCTYPE View [<!ENTITY a "aaaaaaaaaa">]>'
    '<View><Text name="text" value="$text"/>'
    '<Choices name="label" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>'
)


class CountingListener:
    """A loopback socket that counts the connections made to it (any server the CLI would contact)."""

    def __init__(self) -> None:
        self.socket = socket.create_server(("127.0.0.1", 0))
        self.port = self.socket.getsockname()[1]
        self.accepted = 0
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                connection, _ = self.socket.accept()
            except OSError:
                return
            self.accepted += 1
            connection.close()

    def close(self) -> None:
        self.socket.close()


@pytest.fixture
def counting_listener() -> Iterator[CountingListener]:
    listener = CountingListener()
    yield listener
    listener.close()


def run_cli_against(listener: CountingListener, *args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """The CLI in a subprocess whose every server address is the counting listener."""
    url = f"http://127.0.0.1:{listener.port}"
    env = {
        **os.environ,
        "LABELFLOW_S3_ENDPOINT_URL": url,
        "LABELFLOW_S3_ACCESS_KEY": "k",
        "LABELFLOW_S3_SECRET_KEY": "s",
        "LABEL_STUDIO_URL": url,
        "LABEL_STUDIO_API_KEY": "t",
        "MLFLOW_TRACKING_URI": url,
        "PREFECT_API_URL": f"{url}/api",
        "LABELFLOW_HOME": str(cwd / "no-stack"),
    }
    return subprocess.run(
        [sys.executable, "-m", "labelflow.cli", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
    )


def write_spec(folder: Path, spec: dict[str, Any], name: str = "spec.yaml") -> Path:
    path = folder / name
    path.write_text(yaml.safe_dump(spec, allow_unicode=True), encoding="utf-8")
    return path


def test_a_label_config_with_a_doctype_is_refused_by_the_spec() -> None:
    with pytest.raises(SpecError, match=r"label_config: label_config must not contain a DOCTYPE"):
        parse_spec({**BASE, "label_config": DOCTYPE_CONFIG})
    with pytest.raises(SpecError, match="DOCTYPE"):
        parse_spec({**BASE, "label_config": "<!doctype View><View/>"})


@pytest.mark.parametrize(
    ("source", "extra", "what"),
    [
        ("s3://labelflow-state/", {}, "labelflow's own bucket s3://labelflow-state/"),
        ("s3://labelflow-state/projects/other-1234/", {}, "labelflow's own bucket s3://labelflow-state/"),
        ("s3://labelflow-datasets/", {}, "labelflow's own bucket s3://labelflow-datasets/"),
        ("s3://labelflow-mlflow/artifacts/", {}, "labelflow's own bucket s3://labelflow-mlflow/"),
        ("s3://raw/", {"state": "s3://raw/state/"}, "this project's state location s3://raw/state/"),
        ("s3://raw/state/in/", {"state": "s3://raw/state/"}, "this project's state location"),
        # a state at the root of a bucket covers every key in it
        ("s3://raw/in/", {"state": "s3://raw/"}, "this project's state location s3://raw/"),
        (
            "s3://raw/",
            {"dataset": {"name": "d", "location": "s3://raw/published/"}},
            "this project's dataset location s3://raw/published/",
        ),
    ],
)
def test_a_source_over_a_labelflow_managed_location_is_refused(source: str, extra: dict[str, Any], what: str) -> None:
    with pytest.raises(SpecError, match="overlaps") as caught:
        parse_spec({**BASE, "source": source, **extra})
    assert what in str(caught.value)


def test_sources_beside_managed_locations_stay_valid() -> None:
    assert parse_spec({**BASE, "source": "s3://raw/statement/", "state": "s3://raw/state/"})
    assert parse_spec({**BASE, "source": "s3://labelflow-statements/"})


@pytest.mark.parametrize(
    "spec",
    [
        {**BASE, "label_config": DOCTYPE_CONFIG},
        {**BASE, "source": "s3://labelflow-state/"},
        {**BASE, "source": ["s3://raw/in/", "s3://labelflow-mlflow/"]},
    ],
    ids=["doctype", "state-bucket", "mlflow-bucket"],
)
def test_the_cli_refuses_hostile_specs_with_exit_2_and_contacts_no_server(
    spec: dict[str, Any], tmp_path: Path, counting_listener: CountingListener
) -> None:
    path = write_spec(tmp_path, spec)
    for command in ("ingest", "collect"):
        result = run_cli_against(counting_listener, command, str(path), cwd=tmp_path)
        assert result.returncode == 2, result.stderr
        assert "Traceback" not in result.stderr + result.stdout
        assert "spec" in result.stderr and ("DOCTYPE" in result.stderr or "overlaps" in result.stderr)
    assert counting_listener.accepted == 0, "a refused spec must not contact any server"


# --- against the real stack ----------------------------------------------------------------------------------------
@pytest.fixture
def shared_bucket(object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str) -> Iterator[str]:
    """A source bucket with three texts; afterwards its objects, the projects and the index entries are removed."""
    bucket = f"{unique_name}-src"
    object_store.ensure_bucket(bucket)
    for index in range(3):
        object_store.put_bytes(bucket, f"in/{index}.txt", f"review number {index}: fine".encode())
    yield bucket
    for title in (f"owner {bucket}", f"attacker {bucket}"):
        project_id = label_studio.find_project(title)
        if project_id:
            label_studio.delete_project(project_id)
    for state in (f"s3://{bucket}/private-state/", f"s3://{bucket}/victim-state/"):
        object_store.delete(STATE_BUCKET, state_index_key(S3Location.parse(state)))
    for item in list(object_store.list_objects(bucket)):
        object_store.delete(bucket, item.key)


def test_a_source_over_another_projects_custom_state_is_refused_at_ingest(
    object_store: ObjectStore, label_studio: LabelStudioClient, shared_bucket: str, tmp_path: Path, prefect_api: str
) -> None:
    owner = {
        "name": f"owner {shared_bucket}",
        "source": f"s3://{shared_bucket}/in/",
        "state": f"s3://{shared_bucket}/private-state/",
        "task": "text-classification",
        "labels": ["a", "b"],
    }
    runner = CliRunner()
    result = runner.invoke(app, ["ingest", str(write_spec(tmp_path, owner, "owner.yaml"))])
    assert result.exit_code == 0, result.output
    reader = {"name": f"attacker {shared_bucket}", "source": f"s3://{shared_bucket}/", "task": "ner", "labels": ["X"]}
    parse_spec(reader)  # spec validation cannot know another project's custom state: ingest checks the index

    result = runner.invoke(app, ["ingest", str(write_spec(tmp_path, reader, "reader.yaml"))])

    assert result.exit_code == 2, result.output
    message = " ".join(result.output.split())
    assert f"overlaps another project's state location s3://{shared_bucket}/private-state/" in message
    assert label_studio.find_project(reader["name"]) is None, "nothing may be created for the refused spec"


def test_a_spec_pointing_at_another_projects_state_cannot_take_over_its_project(
    label_studio: LabelStudioClient, shared_bucket: str, tmp_path: Path, prefect_api: str
) -> None:
    victim = {
        "name": f"owner {shared_bucket}",
        "source": f"s3://{shared_bucket}/in/",
        "state": f"s3://{shared_bucket}/victim-state/",
        "task": "text-classification",
        "labels": ["a", "b"],
    }
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", str(write_spec(tmp_path, victim, "victim.yaml"))]).exit_code == 0
    victim_project = label_studio.find_project(victim["name"])
    config_before = label_studio.get_project(victim_project)["label_config"]
    attacker = {**victim, "name": f"attacker {shared_bucket}", "labels": ["hijacked"]}
    attacker_path = write_spec(tmp_path, attacker, "attacker.yaml")

    for command in ("ingest", "collect"):
        result = runner.invoke(app, [command, str(attacker_path)])
        assert result.exit_code == 2, result.output
        message = " ".join(result.output.split())
        assert victim["name"] in message and attacker["name"] in message, message

    after = label_studio.get_project(victim_project)
    assert after["label_config"] == config_before and "hijacked" not in after["label_config"]
    assert label_studio.find_project(attacker["name"]) is None
