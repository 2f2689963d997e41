"""Whether a collect has nothing to do, found in a few requests before any flow machinery starts.

A complete collect (validated, and registered or found unchanged) records its summary with a fingerprint of its
inputs: the spec, the gold file, the expectation suites and labelflow's own revision. The next collect has nothing
to do when the fingerprint is the same, the annotation table has not moved since (same watermark), and Label
Studio holds no task updated after the watermark's window other than the ones collected as they are. It then
returns the recorded summary instead of exporting, judging, validating and publishing the same batch again.
"""

from __future__ import annotations

import hashlib
import json
import time
from typing import TYPE_CHECKING, Any

from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.annotation_store import AnnotationStore, Watermark, window_start
from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.run_records import now_iso, read_run_record, write_run_record
from labelflow.tasks.spec import ProjectSpec, S3Location, expectations_dir

if TYPE_CHECKING:
    from labelflow.integrations.label_studio import LabelStudioClient

LAST_RUN_KEY = "collect/last-run.json"
# More changed tasks than this and the check stops counting: the collect has work to do.
CHANGED_TASKS_PAGE = 100


def inputs_fingerprint(store: ObjectStorePort, spec: ProjectSpec, spec_path: str | None) -> str:
    """A digest of everything besides the annotations that decides a collect's outcome."""
    from labelflow.tasks.registry import pipeline_revision

    digest = hashlib.sha256()
    digest.update(spec.model_dump_json().encode())
    digest.update(pipeline_revision().encode())
    if spec.quality.gold is not None:
        gold = S3Location.parse(spec.quality.gold)
        try:
            digest.update(hashlib.sha256(store.get_bytes(gold.bucket, gold.prefix)).digest())
        except ObjectStoreError as exc:
            if not exc.not_found:
                raise
            digest.update(b"no gold file")
    # A new exam certificate changes who is admitted under quality.min_level (tasks/exams.py).
    if spec.quality.min_level is not None:
        from labelflow.tasks.exams import CertificateStore  # pyarrow: only for specs that admit by level

        certificates = CertificateStore(store)
        if store.bucket_exists(certificates.location.bucket):
            parts = store.list_objects(certificates.location.bucket, certificates.domain_prefix(spec.pool_domain))
            digest.update("\n".join(sorted(obj.key for obj in parts)).encode())
    folder = expectations_dir(spec, spec_path)
    for path in sorted(folder.rglob("*")) if folder.is_dir() else []:
        if path.is_file():
            digest.update(str(path.relative_to(folder)).encode() + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def save_last_run(store: ObjectStorePort, spec: ProjectSpec, fingerprint: str, summary: dict[str, Any]) -> None:
    """Record a complete collect: its summary, the fingerprint of its inputs and where the watermark stood."""
    watermark = AnnotationStore(store, spec.state_location).watermark()
    record = {
        "fingerprint": fingerprint,
        "watermark": json.loads(watermark.to_json()),
        "collected_at": now_iso(),
        "summary": summary,
    }
    write_run_record(store, spec.state_location, LAST_RUN_KEY, record)


def unchanged_summary(
    store: ObjectStorePort, ls: LabelStudioClient, spec: ProjectSpec, spec_path: str | None
) -> dict[str, Any] | None:
    """The last complete collect's summary, marked unchanged, when nothing changed since; None when there is work."""
    began = time.perf_counter()
    record = read_run_record(store, spec.state_location, LAST_RUN_KEY)
    if record is None:
        return None
    if spec.automate is not None or spec.queue.order != "off":
        return None  # a newly registered model version re-scores the tasks: only a model lookup would tell
    watermark = AnnotationStore(store, spec.state_location).watermark()
    if json.loads(watermark.to_json()) != record.get("watermark") or watermark.project_id is None:
        return None  # the table moved since (another collect), or nothing was ever collected
    if record.get("fingerprint") != inputs_fingerprint(store, spec, spec_path):
        return None
    if _tasks_changed_since(ls, watermark, spec):
        return None
    from labelflow.tasks.escalation import review_changed

    if review_changed(store, ls, spec):  # an expert answered in the review project
        return None
    return _as_unchanged(record, time.perf_counter() - began)


def _tasks_changed_since(ls: LabelStudioClient, watermark: Watermark, spec: ProjectSpec) -> bool:
    """Whether Label Studio holds a task updated after the watermark's window, other than those collected as they are."""
    assert watermark.project_id is not None
    since = window_start(watermark, spec.collect.window_seconds)
    if since is None:
        return True
    updated = ls.tasks_updated_after(watermark.project_id, since, CHANGED_TASKS_PAGE)
    if len(updated) >= CHANGED_TASKS_PAGE:
        return True
    return any(watermark.edge.get(str(task["id"])) != task.get("updated_at") for task in updated)


def _as_unchanged(record: dict[str, Any], seconds: float) -> dict[str, Any]:
    """The recorded summary, saying that this run collected nothing and published nothing new."""
    summary = dict(record["summary"])
    summary["collection"] = {
        **summary.get("collection", {}),
        "mode": "unchanged",
        "exported_tasks": 0,
        "changed_tasks": 0,
        "unchanged_at_edge": 0,
        "deleted_tasks": 0,
        "annotation_rows": 0,
        "invalid_annotations": 0,
        "seconds": {"check": seconds},
    }
    summary["routed_back"] = 0
    summary["unchanged_since"] = record["collected_at"]
    dataset = dict(summary.get("dataset", {}))
    if "version" in dataset:
        dataset["published"] = False
        dataset["reason"] = f"nothing changed since the collect of {record['collected_at']}"
    summary["dataset"] = dataset
    return summary
