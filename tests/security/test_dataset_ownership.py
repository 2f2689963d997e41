"""Dataset ownership and atomic version allocation against the real stack (issue 13, item 2): concurrent
publishers get distinct consecutive versions whose files are their own, and a project cannot publish into a
dataset another project owns unless both specs say `dataset.shared: true`."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import yaml
from typer.testing import CliRunner

from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.collect import BatchRecord, BatchTables
from labelflow.tasks.publish import publish_dataset
from labelflow.tasks.registry import DatasetRegistry, experiment_name
from labelflow.tasks.spec import DATASETS_BUCKET, ProjectSpec, parse_spec
from labelflow.tasks.validate import ValidationSummary

LABELS = ["cat", "dog"]
H = "a" * 64


def spec_body(name: str, dataset: str, state_bucket: str, **dataset_options: Any) -> dict[str, Any]:
    return {
        "name": name,
        "source": f"s3://{state_bucket}-src/{name.replace(' ', '-')}/",
        "state": f"s3://{state_bucket}/{name.replace(' ', '-')}/",
        "task": "text-classification",
        "labels": LABELS,
        "dataset": {"name": dataset, **dataset_options},
    }


def tables_for(publisher: int, rows: int = 3) -> dict[str, pd.DataFrame]:
    """A collected batch whose task ids and texts belong to one publisher only."""
    ids = [publisher * 100 + i for i in range(1, rows + 1)]
    consensus = pd.DataFrame(
        {
            "task_id": ids,
            "source_uri": [f"s3://raw/p{publisher}/{i}.txt" for i in ids],
            "content_sha256": [H] * rows,
            "label": [LABELS[i % 2] for i in ids],
            "confidence": [1.0] * rows,
            "agreement": [1.0] * rows,
            "annotations": [1] * rows,
            "reviewed": [False] * rows,
            "method": ["majority"] * rows,
            "gold_label": [None] * rows,
            "finished": [True] * rows,
            "flagged": [False] * rows,
        }
    )
    annotations = pd.DataFrame({"task_id": ids, "annotation_id": [i * 10 for i in ids], "label": consensus["label"]})
    tasks = pd.DataFrame(
        {"task_id": ids, "text": [f"publisher {publisher} text {i}" for i in ids], "image_width": None}
    ).assign(image_height=None)
    return {"consensus": consensus, "annotations": annotations, "tasks": tasks}


def passed() -> ValidationSummary:
    return ValidationSummary(success=True, evaluated=1, failed=[], rows={"consensus": 3})


def publish(
    store: ObjectStore, tracking: MLflowTracking, spec: ProjectSpec, publisher: int, batch_uri: str
) -> dict[str, Any]:
    """What the register step does, without Prefect: its own registry client, like a separate process."""
    registry = DatasetRegistry(store, MLflowTracking(tracking.settings))
    batch = BatchRecord(project_id=publisher, label_studio_url="http://ls", watermark="w", batch_uri=batch_uri)
    return publish_dataset(store, registry, spec, BatchTables(**tables_for(publisher)), batch, passed()).as_dict()


@pytest.fixture
def dataset_name(object_store: ObjectStore, mlflow_tracking: MLflowTracking, unique_name: str) -> Iterator[str]:
    """A fresh dataset name whose versions, owner record and experiment are removed afterwards."""
    object_store.ensure_bucket(f"{unique_name}-state")
    yield unique_name
    for item in list(object_store.list_objects(DATASETS_BUCKET, f"{unique_name}/")):
        object_store.delete(DATASETS_BUCKET, item.key)
    experiment_id = mlflow_tracking.experiment_id(experiment_name(unique_name))
    if experiment_id is not None:
        mlflow_tracking.client.delete_experiment(experiment_id)


def run_at_once(jobs: list[Any]) -> list[Any]:
    """Start every job at the same instant on its own thread; return results (or exceptions) in order."""
    barrier = threading.Barrier(len(jobs))
    results: list[Any] = [None] * len(jobs)

    def work(index: int) -> None:
        barrier.wait()
        try:
            results[index] = jobs[index]()
        except Exception as exc:  # the test inspects every outcome
            results[index] = exc

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(jobs))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=600)
    return results


def check_versions(
    registry: DatasetRegistry, name: str, results: list[dict[str, Any]], batches: list[str], tmp_path: Path
) -> list[int]:
    """Every publisher got its own consecutive version, whose files and manifest are the ones it wrote."""
    versions = sorted(r["version"] for r in results)
    assert versions == list(range(1, len(results) + 1)), versions
    for result, batch in zip(results, batches, strict=True):
        pulled = registry.pull(name, result["version"], tmp_path / f"v{result['version']}")
        assert pulled.manifest["digest"] == result["digest"] and pulled.manifest["version"] == result["version"]
        assert pulled.manifest["lineage"]["collection_batch"] == batch
        publisher = int(batch.rsplit("-", 1)[-1])
        consensus = pd.read_parquet(pulled.path("consensus"))
        assert consensus["text"].str.startswith(f"publisher {publisher} ").all() and len(consensus) == 3
        found = registry.resolve(name, result["version"])
        assert found.tags["labelflow.collection.batch"] == batch and found.digest == result["digest"]
    latest = registry.pull(name, None, tmp_path / "latest")
    assert latest.version == len(results)
    assert [v.version for v in registry.versions(name, ready_only=False)] == versions  # no leftover claims
    return versions


def test_concurrent_publishers_of_one_project_get_distinct_consecutive_versions(
    object_store: ObjectStore, mlflow_tracking: MLflowTracking, dataset_name: str, tmp_path: Path
) -> None:
    # The CLI runs without a Prefect worker, so nothing but the registry itself serialises these.
    spec = parse_spec(spec_body("ownership one", dataset_name, f"{dataset_name}-state"))
    batches = [f"s3://{dataset_name}-state/batch-{i}" for i in range(6)]
    results = run_at_once(
        [lambda i=i: publish(object_store, mlflow_tracking, spec, i, batches[i]) for i in range(len(batches))]
    )
    failures = [r for r in results if isinstance(r, Exception)]
    assert not failures, failures
    registry = DatasetRegistry(object_store, mlflow_tracking)
    versions = check_versions(registry, dataset_name, results, batches, tmp_path)
    conflicts = sum(r["version_conflicts"] for r in results)
    print(f"concurrent publishers: versions {versions}, claims lost to another publisher and retried: {conflicts}")


PUBLISHER_PROCESS = """
import json, sys, time
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.integrations.settings import MLflowSettings, S3Settings, read_stack_connection
from labelflow.tasks.spec import parse_spec
from tests.security.test_dataset_ownership import publish

body, publisher, batch, start = json.loads(sys.argv[1])
env = read_stack_connection()
store = ObjectStore(S3Settings(endpoint_url=env["LABELFLOW_S3_ENDPOINT_URL"], access_key=env["LABELFLOW_S3_ACCESS_KEY"],
                               secret_key=env["LABELFLOW_S3_SECRET_KEY"]))
tracking = MLflowTracking(MLflowSettings(tracking_uri=env["MLFLOW_TRACKING_URI"]))
time.sleep(max(0.0, start - time.time()))  # every process publishes at the same instant
result = publish(store, tracking, parse_spec(body), publisher, batch)
print("RESULT " + json.dumps({k: result[k] for k in ("version", "digest", "version_conflicts")}))
"""


def test_concurrent_publisher_processes_get_distinct_consecutive_versions(
    object_store: ObjectStore, mlflow_tracking: MLflowTracking, dataset_name: str, tmp_path: Path
) -> None:
    # Separate processes, as concurrent `labelflow collect` runs without a worker would be.
    body = spec_body("ownership processes", dataset_name, f"{dataset_name}-state")
    batches = [f"s3://{dataset_name}-state/batch-{i}" for i in range(4)]
    start = time.time() + 20  # after every process has imported its libraries
    root = Path(__file__).resolve().parents[2]
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", PUBLISHER_PROCESS, json.dumps([body, i, batch, start])],
            cwd=root,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i, batch in enumerate(batches)
    ]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        (line,) = [x for x in out.splitlines() if x.startswith("RESULT ")]
        results.append(json.loads(line.removeprefix("RESULT ")))
    versions = check_versions(DatasetRegistry(object_store, mlflow_tracking), dataset_name, results, batches, tmp_path)
    conflicts = sum(r["version_conflicts"] for r in results)
    print(f"concurrent processes: versions {versions}, claims lost to another publisher and retried: {conflicts}")


def test_a_dataset_belongs_to_one_project_unless_both_specs_share_it(
    object_store: ObjectStore, mlflow_tracking: MLflowTracking, dataset_name: str, tmp_path: Path, prefect_api: str
) -> None:
    state = f"{dataset_name}-state"
    owner = parse_spec(spec_body("ownership owner", dataset_name, state))
    intruder = parse_spec(spec_body("ownership intruder", dataset_name, state))
    registry = DatasetRegistry(object_store, mlflow_tracking)

    first = publish(object_store, mlflow_tracking, owner, 0, f"s3://{state}/batch-0")
    assert first["published"] and first["version"] == 1
    experiment_id = mlflow_tracking.experiment_id(experiment_name(dataset_name))
    assert experiment_id is not None
    tags = mlflow_tracking.client.get_experiment(experiment_id).tags
    assert tags["labelflow.dataset.owner"] == owner.slug and tags["labelflow.dataset.shared"] == "false"
    before = sorted(o.key for o in object_store.list_objects(DATASETS_BUCKET, f"{dataset_name}/"))

    # Another project, same dataset name, no sharing: refused in one line naming both projects; nothing created.
    from labelflow.tasks.registry import DatasetOwnershipError

    with pytest.raises(DatasetOwnershipError) as refused:
        publish(object_store, mlflow_tracking, intruder, 1, f"s3://{state}/batch-1")
    message = str(refused.value)
    assert "\n" not in message and "ownership owner" in message and "ownership intruder" in message
    assert "shared" in message
    assert sorted(o.key for o in object_store.list_objects(DATASETS_BUCKET, f"{dataset_name}/")) == before
    assert [v.version for v in registry.versions(dataset_name, ready_only=False)] == [1]

    # `labelflow collect` of the intruder's spec says the same in one line and exits 2 before collecting anything.
    from labelflow.cli import app

    intruder_path = tmp_path / "intruder.yaml"
    intruder_path.write_text(yaml.safe_dump(spec_body("ownership intruder", dataset_name, state)), encoding="utf-8")
    result = CliRunner().invoke(app, ["collect", str(intruder_path)])
    said = " ".join(result.output.split())
    assert result.exit_code == 2 and "Traceback" not in result.output, result.output
    assert "ownership owner" in said and "ownership intruder" in said, result.output
    assert "no Label Studio project recorded" not in said, "the ownership check comes before collecting"
    assert sorted(o.key for o in object_store.list_objects(DATASETS_BUCKET, f"{dataset_name}/")) == before

    # The intruder alone opting in is not enough: the owner has not.
    sharing_intruder = parse_spec(spec_body("ownership intruder", dataset_name, state, shared=True))
    with pytest.raises(DatasetOwnershipError, match="ownership owner"):
        publish(object_store, mlflow_tracking, sharing_intruder, 1, f"s3://{state}/batch-1")

    # Once the owner's spec says `shared: true` too (recorded at its next collection, even with nothing new to
    # publish), both publish, even at the same time, as distinct versions.
    sharing_owner = parse_spec(spec_body("ownership owner", dataset_name, state, shared=True))
    unchanged = publish(object_store, mlflow_tracking, sharing_owner, 0, f"s3://{state}/batch-0")
    assert not unchanged["published"] and unchanged["version"] == 1
    batches = [f"s3://{state}/batch-0"] + [f"s3://{state}/batch-{i}" for i in range(1, 5)]
    jobs = [
        lambda i=i: publish(object_store, mlflow_tracking, (sharing_owner, sharing_intruder)[i % 2], i, batches[i])
        for i in range(1, 5)
    ]
    results = run_at_once(jobs)
    failures = [r for r in results if isinstance(r, Exception)]
    assert not failures, failures
    check_versions(registry, dataset_name, [first, *results], batches, tmp_path)
    tags = mlflow_tracking.client.get_experiment(experiment_id).tags
    assert tags["labelflow.dataset.owner"] == owner.slug and tags["labelflow.dataset.shared"] == "true"


def test_a_dataset_without_an_owner_is_claimed_by_its_first_publisher(
    object_store: ObjectStore, mlflow_tracking: MLflowTracking, dataset_name: str, tmp_path: Path
) -> None:
    # A dataset registered before ownership existed: an experiment without the owner tag.
    state = f"{dataset_name}-state"
    mlflow_tracking.ensure_experiment(experiment_name(dataset_name), tags={"labelflow.kind": "dataset"})
    first = parse_spec(spec_body("legacy first", dataset_name, state))
    second = parse_spec(spec_body("legacy second", dataset_name, state))
    assert publish(object_store, mlflow_tracking, first, 0, f"s3://{state}/batch-0")["version"] == 1
    experiment_id = mlflow_tracking.experiment_id(experiment_name(dataset_name))
    assert experiment_id is not None
    assert mlflow_tracking.client.get_experiment(experiment_id).tags["labelflow.dataset.owner"] == first.slug
    from labelflow.tasks.registry import DatasetOwnershipError

    with pytest.raises(DatasetOwnershipError, match="legacy first"):
        publish(object_store, mlflow_tracking, second, 1, f"s3://{state}/batch-1")
