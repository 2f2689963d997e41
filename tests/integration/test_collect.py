"""Collect and judge against the real stack: incremental pick-up of new, edited and deleted annotations exactly
once, consensus with Dawid-Skene on simulated annotators, and low-agreement tasks routed back to Label Studio."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.annotation_store import AnnotationStore
from labelflow.tasks.quality import judge
from labelflow.tasks.simulate import build_annotators, run, truth_from_key
from labelflow.tasks.spec import ProjectSpec, parse_spec
from labelflow.tasks.task_types.classification import choice_result

LABELS = ["positive", "negative", "neutral"]


def make_project(
    store: ObjectStore, tmp_path: Path, name: str, count: int, **spec_extra: Any
) -> tuple[Path, ProjectSpec]:
    """Upload `count` texts under folders named after their (true) label, write a spec, ingest it."""
    from labelflow.flows.ingest import ingest

    source = f"{name}-src"
    store.ensure_bucket(source)
    for i in range(count):
        label = LABELS[i % len(LABELS)]
        store.put_bytes(
            source, f"reviews/{label}/{i:04d}.txt", f"评论 {i}: {label} review {random.Random(i).random()}".encode()
        )
    body = {
        "name": f"collect {name}",
        "source": f"s3://{source}/reviews/",
        "state": f"s3://{name}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 3,
        **spec_extra,
    }
    spec = parse_spec(body)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    assert ingest(str(path))["tasks_created"] == count
    return path, spec


def collect(path: Path, full: bool = False) -> dict[str, Any]:
    from labelflow.flows.collect import collect_annotations

    return collect_annotations(str(path), full=full)


def project_id_of(summary: dict[str, Any]) -> int:
    return int(summary["project_id"])


def current(store: ObjectStore, spec: ProjectSpec) -> tuple[Any, Any]:
    table = AnnotationStore(store, spec.state_location).load()
    return table.tasks.to_pandas(), table.annotations.to_pandas()


def test_incremental_collection_picks_up_new_edited_and_deleted_annotations_exactly_once(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path, prefect_api: str
) -> None:
    path, spec = make_project(object_store, tmp_path, unique_name, 12, quality={"route_low_agreement": False})
    first = collect(path)
    assert first["collection"]["mode"] == "full"
    assert first["collection"]["annotation_rows"] == 0 and first["quality"]["finished_tasks"] == 0
    project_id = project_id_of(first)

    annotators = build_annotators([0.9, 0.8, 0.7], spammers=0, prefix=unique_name)
    simulated = run(label_studio, spec, project_id, annotators, seed=1)
    assert simulated["annotations_created"] == 36
    second = collect(path)
    assert second["collection"]["mode"] == "incremental"
    assert second["collection"]["changed_tasks"] == 12 and second["collection"]["annotation_rows"] == 36
    tasks, rows = current(object_store, spec)
    assert len(rows) == 36 and rows["annotation_id"].is_unique
    assert set(rows["annotator_email"]) == {a.email for a in annotators}
    assert rows["source_uri"].str.startswith(f"s3://{unique_name}-src/reviews/").all()
    assert (rows["lead_time_seconds"] > 0).all() and rows["problem"].isna().all()
    assert second["quality"]["finished_tasks"] == 12

    # Nothing changed: nothing is collected, even though the safety window re-reads recent tasks.
    third = collect(path)
    assert third["collection"]["changed_tasks"] == 0 and third["collection"]["unchanged_at_edge"] == 12

    # One edit, one deletion, one new annotation, on three different tasks.
    by_task = rows.groupby("task_id")
    task_ids = sorted(by_task.groups)
    edited = rows[rows["task_id"] == task_ids[0]].iloc[0]
    new_label = next(label for label in LABELS if label != edited["label"])
    label_studio.update_annotation(int(edited["annotation_id"]), choice_result("label", "text", new_label))
    deleted = rows[rows["task_id"] == task_ids[1]].iloc[0]
    label_studio.delete_annotation(int(deleted["annotation_id"]))
    admin = label_studio.whoami()["id"]
    added = label_studio.create_annotation(task_ids[2], choice_result("label", "text", "neutral"), admin, 3.0)

    fourth = collect(path)
    assert fourth["collection"]["changed_tasks"] == 3
    tasks, after = current(object_store, spec)
    assert len(after) == 36 and after["annotation_id"].is_unique
    assert after.set_index("annotation_id").loc[int(edited["annotation_id"]), "label"] == new_label
    assert int(deleted["annotation_id"]) not in set(after["annotation_id"])
    assert added in set(after["annotation_id"])
    assert fourth["quality"]["finished_tasks"] == 11  # the task that lost an annotation is unfinished again

    # A second collection sees nothing new; a full re-read gives the same table.
    assert collect(path)["collection"]["changed_tasks"] == 0
    full = collect(path, full=True)
    assert full["collection"]["mode"] == "full" and full["collection"]["deleted_tasks"] == 0
    _, reread = current(object_store, spec)
    columns = ["task_id", "annotation_id", "label", "annotator_id"]
    assert (
        reread[columns]
        .sort_values("annotation_id")
        .reset_index(drop=True)
        .equals(after[columns].sort_values("annotation_id").reset_index(drop=True))
    )

    # A task deleted in Label Studio disappears on the next full collection.
    label_studio._request("DELETE", f"/api/tasks/{task_ids[3]}", "delete task")
    gone = collect(path, full=True)
    assert gone["collection"]["deleted_tasks"] == 1
    tasks, final = current(object_store, spec)
    assert task_ids[3] not in set(final["task_id"])
    assert tasks.set_index("task_id").loc[task_ids[3], "deleted"]
    assert gone["quality"]["tasks"] == 11


def test_dawid_skene_beats_majority_on_simulated_noisy_annotators_and_low_agreement_is_routed_back(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path, prefect_api: str
) -> None:
    path, spec = make_project(
        object_store,
        tmp_path,
        unique_name,
        150,
        quality={
            "aggregation": "dawid-skene",
            "min_agreement": 0.6,
            "tie_policy": "flag",
            "min_annotations_for_tier": 20,
        },
    )
    project_id = project_id_of(collect(path))
    annotators = build_annotators([0.95, 0.75, 0.6], spammers=1, prefix=unique_name)
    run(label_studio, spec, project_id, annotators, seed=3, workers=4)
    summary = collect(path)
    assert summary["quality"]["finished_tasks"] == 150
    assert summary["quality"]["krippendorff_alpha"] is not None and summary["quality"]["fleiss_kappa"] is not None

    tasks, rows = current(object_store, spec)
    truth = tasks.set_index("task_id")["source_uri"].map(lambda uri: truth_from_key(uri, LABELS, None))
    accuracy = {}
    for method in ("majority", "dawid-skene"):
        variant = spec.model_copy(
            update={"quality": spec.quality.model_copy(update={"aggregation": method, "tie_policy": "random"})}
        )
        consensus = judge(tasks, rows, variant).consensus.set_index("task_id")
        accuracy[method] = float(np.mean(consensus["label"] == truth.reindex(consensus.index)))
    print("consensus accuracy against the known truth:", accuracy)
    assert accuracy["dawid-skene"] >= accuracy["majority"]

    # Annotators are ranked: the 95% annotator in a higher tier than the spammer.
    people = {row["annotator_email"]: row for row in summary["annotators"]}
    best, spammer = people[annotators[0].email], people[annotators[-1].email]
    assert best["score"] > spammer["score"]
    assert spammer["tier"] == "trainee" and best["tier"] in {"qualified", "expert"}

    # Flagged (low agreement or tied) finished tasks went back to Label Studio with one more annotation slot.
    flagged = summary["quality"]["flagged_tasks"]
    assert flagged > 0 and summary["routed_back"] == flagged
    report_bucket, report_key = summary["report"].removeprefix("s3://").split("/", 1)
    flagged_csv = object_store.get_bytes(report_bucket, report_key + "flagged.csv").decode()
    routed_id = int(flagged_csv.splitlines()[1].split(",")[0])
    routed_task = label_studio.get_task(routed_id)
    assert routed_task["overlap"] == 4 and routed_task["is_labeled"] is False
    html = object_store.get_bytes(report_bucket, report_key + "report.html").decode()
    # Self-contained (charts drawn by the inlined Vega-Lite, nothing loaded from elsewhere); flagged tasks link to
    # their Label Studio page.
    assert 'id="labelflow-charts"' in html and "<script src" not in html and "<link" not in html
    assert f"{label_studio.settings.base_url}/projects/{summary['project_id']}/data?task={routed_id}" in html

    # The next collection sees those tasks as unfinished until their fourth annotation arrives.
    again = collect(path)
    assert again["quality"]["finished_tasks"] == 150 - flagged
    assert again["collection"]["mode"] == "incremental"


@pytest.mark.parametrize("bad", ["label outside the set"])
def test_annotation_outside_the_label_set_is_kept_and_flagged(
    bad: str,
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    path, spec = make_project(object_store, tmp_path, unique_name, 3)
    project_id = project_id_of(collect(path))
    task_id = label_studio.task_ids(project_id)[0]
    admin = label_studio.whoami()["id"]
    annotation_id = label_studio.create_annotation(task_id, choice_result("label", "text", "sarcastic"), admin)
    summary = collect(path)
    _, rows = current(object_store, spec)
    row = rows.set_index("annotation_id").loc[annotation_id]
    assert row["label"] == "sarcastic" and "not in the spec's label set" in row["problem"]
    assert summary["quality"]["invalid_annotations"] == 1 and summary["quality"]["flagged_tasks"] == 1


def test_collect_flow_with_a_dask_task_runner_on_a_local_cluster(
    object_store: ObjectStore, label_studio: LabelStudioClient, prefect_api: str, tmp_path: Path, unique_name: str
) -> None:
    """The judging step runs on a Dask worker process; the result equals the thread runner's."""
    from distributed import Client, LocalCluster, get_task_stream

    from labelflow.flows.collect import collect as collect_flow

    path, spec = make_project(object_store, tmp_path, unique_name, 12, dataset={"name": unique_name})
    summary = collect(path)
    run(label_studio, spec, project_id_of(summary), build_annotators([1.0, 0.9, 0.8], 0), None, None, None, None, 1)

    with (
        LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster,
        Client(cluster) as client,
        get_task_stream(client) as stream,
    ):
        result = collect_flow(str(path), dask_address=cluster.scheduler_address)
        worker_addresses = set(client.scheduler_info()["workers"])
    ran_on_dask = [t for t in stream.data if str(t["key"]).startswith("judge_annotations")]
    assert ran_on_dask, [t["key"] for t in stream.data]
    assert {t["worker"] for t in ran_on_dask} <= worker_addresses
    assert result["dataset"]["published"] and result["dataset"]["rows"] == 12
    assert result["quality"]["finished_tasks"] == 12
    # The thread runner judges the same annotations the same way (no new version: same content digest).
    again = collect_flow(str(path))
    assert again["dataset"]["published"] is False and again["dataset"]["version"] == 1
    assert again["quality"]["mean_task_agreement"] == pytest.approx(result["quality"]["mean_task_agreement"])
