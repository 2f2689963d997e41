"""The `image-captioning` type on the real stack: images are ingested (a corrupt one quarantined), served to
annotators through Label Studio's storage connection, captioned by simulated annotators from a truth file and by a
reviewer through the API, collected, validated, published and pulled as captions.jsonl."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pandas as pd
from PIL import Image, ImageDraw

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.task_types.free_text import answer_text, textarea_result
from tests.integration.test_ingest import all_tasks, write_spec

CAPTIONS = {
    "pics/red-square.png": ("red", "A red square on a white background."),
    "pics/蓝色圆形.png": ("blue", "白色背景上的一个蓝色圆形。"),
    "pics/green-bar.jpg": ("green", "A wide green bar across the middle of the picture."),
}
REVIEWED = "一个蓝色的圆，背景是白色。"


def picture(color: str, fmt: str) -> bytes:
    image = Image.new("RGB", (96, 64), "white")
    ImageDraw.Draw(image).ellipse((20, 8, 76, 56), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


def test_captions_are_written_reviewed_published_and_pulled(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
    prefect_api: str,
) -> None:
    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest

    source = f"{unique_name}-src"
    object_store.ensure_bucket(source)
    for key, (color, _) in CAPTIONS.items():
        object_store.put_bytes(source, key, picture(color, "JPEG" if key.endswith(".jpg") else "PNG"))
    object_store.put_bytes(source, "pics/broken.png", picture("black", "PNG")[:-200])
    reviewer = f"lead-{unique_name}@example.com"
    spec_path = write_spec(
        tmp_path,
        {
            "name": f"captions {unique_name}",
            "source": f"s3://{source}/pics/",
            "state": f"s3://{unique_name}-state/labelflow/",
            "task": "image-captioning",
            "overlap": 2,
            "quality": {"route_low_agreement": False, "reviewers": [reviewer], "min_agreement": 0.3},
            "dataset": {"name": unique_name},
        },
    )
    from labelflow.tasks.spec import load_spec

    spec = load_spec(spec_path)
    summary = ingest(str(spec_path))
    assert summary["tasks_created"] == len(CAPTIONS) and summary["quarantined_by_reason"] == {"corrupt": 1}, summary
    record = read_project_record(object_store, spec)
    assert record is not None
    project_id = int(record["project_id"])
    tasks = {t["data"]["source_key"]: t for t in all_tasks(label_studio, project_id)}
    for key in CAPTIONS:
        served = label_studio.resolve_uri(tasks[key]["id"], tasks[key]["data"]["image"])
        assert served.status_code == 200 and served.content == object_store.get_bytes(source, key)

    truth = pd.DataFrame(
        {"source_uri": [f"s3://{source}/{k}" for k in CAPTIONS], "label": [c for _, c in CAPTIONS.values()]}
    )
    annotators = build_annotators([1.0, 1.0], spammers=0, prefix=unique_name)
    from labelflow.tasks.quality import parse_gold

    gold = parse_gold(truth.to_csv(index=False).encode(), "truth.csv", None)
    done = run(label_studio, spec, project_id, annotators, truth=gold, seed=5)
    assert done["annotations_created"] == 2 * len(CAPTIONS)
    assert all(a["observed_accuracy"] == 1.0 for a in done["annotators"])
    reviewer_id = label_studio.create_user(reviewer)
    label_studio.create_annotation(
        tasks["pics/蓝色圆形.png"]["id"], textarea_result(REVIEWED, "image"), reviewer_id, 20.0
    )

    result = collect(str(spec_path))
    assert result["validation"]["success"], result["validation"]
    assert result["dataset"]["published"] and result["dataset"]["rows"] == len(CAPTIONS), result["dataset"]

    pulled = DatasetRegistry(object_store, mlflow_tracking).pull(unique_name, None, tmp_path / "v1")
    export = pulled.path("training-export")
    assert export.name == "captions.jsonl"
    lines = {json.loads(line)["image"]: json.loads(line) for line in export.read_text(encoding="utf-8").splitlines()}
    assert set(lines) == {f"s3://{source}/{key}" for key in CAPTIONS}
    assert lines[f"s3://{source}/pics/蓝色圆形.png"]["caption"] == REVIEWED
    assert (
        lines[f"s3://{source}/pics/red-square.png"]["width"],
        lines[f"s3://{source}/pics/red-square.png"]["height"],
    ) == (96, 64)
    consensus = pd.read_parquet(pulled.path("consensus")).set_index("source_uri")
    by_key = {uri.split("/", 3)[3]: row for uri, row in consensus.iterrows()}
    assert by_key["pics/蓝色圆形.png"]["method"] == "review"
    for key in ("pics/red-square.png", "pics/green-bar.jpg"):
        # Two careful annotators lightly edit the reference: the medoid stays close to it.
        assert by_key[key]["method"] == "medoid" and by_key[key]["agreement"] > 0.6
        assert CAPTIONS[key][1].rstrip(".!") in answer_text(by_key[key]["answer"])
