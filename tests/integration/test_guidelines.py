"""Guidelines as a versioned standard on the real stack: ingest shows v1 in Label Studio, a changed file is pushed
as v2 by collect, new labels are stamped v2, v1 labels are flagged and routed back under `require_guideline:
current`, and the published version counts its labels' versions and ships guidelines.md; bad files change nothing."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd
import yaml
from typer.testing import CliRunner

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.annotation_store import AnnotationStore
from labelflow.tasks.guidelines import OUTDATED_REASON, read_history
from labelflow.tasks.ingest import read_project_record, settings_to_update
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import load_spec
from labelflow.tasks.task_types.classification import choice_result

LABELS = ["positive", "negative", "neutral"]
GUIDE_V1 = (
    "# 评论情感标注规范\n\n"
    "选择 **positive**、**negative** 或 **neutral**。\n\n"
    "| 例子 | 标签 |\n|---|---|\n| 很好 | positive |\n\n"
    "<script>alert('not run')</script>\n"
)
GUIDE_V2 = GUIDE_V1 + "\n## 反讽\n\n反讽算作 negative (sarcasm counts as negative).\n"


def sha(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def write_project(store: ObjectStore, tmp_path: Path, name: str, count: int) -> Path:
    """`count` texts under folders named after their label, a guideline file, and a spec naming it."""
    source = f"{name}-src"
    store.ensure_bucket(source)
    for i in range(count):
        label = LABELS[i % len(LABELS)]
        store.put_bytes(source, f"reviews/{label}/{i:04d}.txt", f"评论 {i}: a {label} review".encode())
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "guide.md").write_text(GUIDE_V1, encoding="utf-8")
    body: dict[str, Any] = {
        "name": f"guidelines {name}",
        "source": f"s3://{source}/reviews/",
        "state": f"s3://{name}-state/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 1,
        "guidelines": "docs/guide.md",
        "quality": {"require_guideline": "current"},
        "dataset": {"name": name},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    return path


def test_a_guideline_change_is_pushed_stamps_new_labels_flags_old_ones_and_ships_with_the_version(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest

    path = write_project(object_store, tmp_path, unique_name, 6)
    v1, v2 = sha(GUIDE_V1), sha(GUIDE_V2)
    assert ingest(str(path))["tasks_created"] == 6
    spec = load_spec(path)
    record = read_project_record(object_store, spec)
    assert record is not None
    project_id = int(record["project_id"])

    # Label Studio shows v1 to annotators, as HTML that runs no script, with its version.
    project = label_studio.get_project(project_id)
    assert project is not None and project["show_instruction"] is True
    shown = project["expert_instruction"]
    assert "<h1>评论情感标注规范</h1>" in shown and "<strong>positive</strong>" in shown and "<table>" in shown
    assert "<script" not in shown and v1 in shown
    assert settings_to_update(spec, project) == {}  # what Label Studio stored counts as pushed: no push again
    assert [v.version for v in read_history(object_store, spec).versions] == [v1]

    run(label_studio, spec, project_id, build_annotators([1.0], spammers=0, prefix=f"{unique_name}a"), seed=1)
    first = collect(str(path))
    assert first["dataset"]["published"] and first["dataset"]["version"] == 1 and first["dataset"]["rows"] == 6

    # v2: collect pushes it, records it, and the six v1 labels no longer count: flagged and routed back.
    (tmp_path / "docs" / "guide.md").write_text(GUIDE_V2, encoding="utf-8")
    second = collect(str(path))
    spec = load_spec(path)
    project = label_studio.get_project(project_id)
    assert (
        project is not None and v2 in project["expert_instruction"] and "<h2>反讽</h2>" in project["expert_instruction"]
    )
    history = read_history(object_store, spec).versions
    assert [v.version for v in history] == [v1, v2] and history[0].first_seen < history[1].first_seen
    assert second["quality"]["flagged_tasks"] == 6 and second["routed_back"] == 6
    assert not second["dataset"]["published"]
    task_ids = sorted(label_studio.task_ids(project_id))
    assert {label_studio.get_task(t)["overlap"] for t in task_ids} == {2}
    consensus = second_consensus(object_store, second)
    assert (consensus["flag_reason"] == f"1 {OUTDATED_REASON}").all()

    # Three tasks get a label under v2 through the API: stamped v2, and the next version is built from them only.
    expert = label_studio.create_user(f"{unique_name}-v2@labelflow.local")
    renewed = task_ids[:3]
    for task_id in renewed:
        truth = label_studio.get_task(task_id)["data"]["source_key"].split("/")[1]
        label_studio.create_annotation(task_id, choice_result("label", "text", truth), expert, 4.0)
    third = collect(str(path))
    rows = AnnotationStore(object_store, spec.state_location).load().annotations.to_pandas()
    assert (rows["annotator_id"] == expert).sum() == 3
    assert rows[rows["annotator_id"] == expert]["guideline_version"].eq(v2).all()
    assert rows[rows["annotator_id"] != expert]["guideline_version"].eq(v1).all()
    assert third["quality"]["flagged_tasks"] == 3
    published = third["dataset"]
    assert published["published"] and published["version"] == 2 and published["rows"] == 3

    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(unique_name, 2, tmp_path / "v2")
    assert sorted(pd.read_parquet(pulled.path("consensus"))["task_id"]) == renewed
    shipped = pulled.manifest["guidelines"]
    assert shipped == {
        "file": "guidelines.md",
        "path": "docs/guide.md",
        "version": v2,
        "label_versions": {v1: 3, v2: 3},
    }
    (entry,) = [f for f in pulled.manifest["files"] if f["path"] == "guidelines.md"]
    assert entry["sha256"] == v2 and entry["role"] == "guidelines"
    assert pulled.path("guidelines").read_text(encoding="utf-8") == GUIDE_V2


def second_consensus(store: ObjectStore, summary: dict[str, Any]) -> pd.DataFrame:
    """The consensus table a collect wrote next to its report."""
    import io

    bucket, prefix = summary["batch"].removeprefix("s3://").split("/", 1)
    return pd.read_parquet(io.BytesIO(store.get_bytes(bucket, prefix.rstrip("/") + "/consensus.parquet")))


def test_a_missing_or_gb18030_guideline_file_is_one_line_exit_2_and_changes_nothing(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path
) -> None:
    from labelflow.cli import app

    path = write_project(object_store, tmp_path, unique_name, 3)
    guide = tmp_path / "docs" / "guide.md"
    title = f"guidelines {unique_name}"
    guide.write_bytes(GUIDE_V1.encode("gb18030"))
    for command in ("ingest", "collect"):
        result = CliRunner().invoke(app, [command, str(path)])
        assert result.exit_code == 2, result.output
        (line,) = result.output.strip().splitlines()
        assert "guidelines: docs/guide.md: not UTF-8 text" in line and str(path) in line
    guide.unlink()
    result = CliRunner().invoke(app, ["ingest", str(path)])
    assert result.exit_code == 2
    (line,) = result.output.strip().splitlines()
    assert "guidelines: docs/guide.md: no such file" in line
    # Nothing was contacted or created: no project, no state.
    assert label_studio.find_project(title) is None
    assert not object_store.bucket_exists(f"{unique_name}-state")
