"""Steps that prove each service of a stack really works, used by the smoke flow and the tests.

They take the real adapters, not ports: what they check is the adapters against real servers.
"""

from __future__ import annotations

import hashlib
import tempfile
import uuid
from pathlib import Path

import httpx

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore

SMOKE_TEXT = "labelflow smoke check: 数据标注 ✓\n"


def check_object_store(store: ObjectStore, bucket: str) -> str:
    """Create a bucket, write, list and read back an object through a presigned URL."""
    store.ensure_bucket(bucket)
    key = f"smoke/{uuid.uuid4().hex}.txt"
    data = SMOKE_TEXT.encode("utf-8")
    store.put_bytes(bucket, key, data, content_type="text/plain; charset=utf-8")
    listed = [obj.key for obj in store.list_objects(bucket, prefix="smoke/")]
    if key not in listed:
        raise RuntimeError(f"object store: {key} written but not listed under s3://{bucket}/smoke/")
    fetched = httpx.get(store.presigned_get_url(bucket, key), timeout=10)
    if fetched.content != data:
        raise RuntimeError(f"object store: presigned GET returned HTTP {fetched.status_code}, not the object")
    return f"object store: wrote, listed and presigned-read s3://{bucket}/{key}"


def check_label_studio(ls: LabelStudioClient, store: ObjectStore, bucket: str) -> str:
    """Create a project with an S3 storage connection and have Label Studio serve an s3:// task URI."""
    key = f"smoke/{uuid.uuid4().hex}.txt"
    data = SMOKE_TEXT.encode("utf-8")
    store.ensure_bucket(bucket)
    store.put_bytes(bucket, key, data, content_type="text/plain")
    user = ls.whoami()
    config = '<View><Text name="text" value="$text" valueType="url"/><Choices name="label" toName="text"><Choice value="ok"/></Choices></View>'
    project_id = ls.create_project(title=f"labelflow smoke {uuid.uuid4().hex[:8]}", label_config=config)
    try:
        ls.add_s3_import_storage(project_id, bucket=bucket, prefix="smoke/", s3=store.settings)
        uri = f"s3://{bucket}/{key}"
        (task_id,) = ls.import_tasks(project_id, [{"text": uri}])
        served = ls.resolve_uri(task_id, uri)
        if served.status_code != 200 or served.content != data:
            raise RuntimeError(
                f"Label Studio: resolving {uri} for task {task_id} gave HTTP {served.status_code}: {served.text[:200]}"
            )
    finally:
        ls.delete_project(project_id)
    return f"Label Studio: token of {user.get('email')} accepted; task {task_id} resolved {uri} through S3 storage"


def check_mlflow(tracking: MLflowTracking, experiment: str) -> str:
    """Log a run with one artifact and read it back through the tracking server."""
    experiment_id = tracking.ensure_experiment(experiment)
    run = tracking.client.create_run(experiment_id, tags={"labelflow.smoke": "true"})
    with tempfile.TemporaryDirectory() as tmp:
        artifact = Path(tmp) / "smoke.txt"
        artifact.write_text(SMOKE_TEXT, encoding="utf-8")
        tracking.client.log_artifact(run.info.run_id, str(artifact))
        tracking.client.set_terminated(run.info.run_id)
        downloaded = Path(tracking.client.download_artifacts(run.info.run_id, "smoke.txt", tmp + "/out"))
        if hashlib.sha256(downloaded.read_bytes()).digest() != hashlib.sha256(SMOKE_TEXT.encode()).digest():
            raise RuntimeError("MLflow: the downloaded artifact differs from the logged one")
    return f"MLflow: run {run.info.run_id} logged an artifact to {run.info.artifact_uri}"
