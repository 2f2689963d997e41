"""A dataset registry on plain MLflow: one experiment per dataset, one run per immutable version, files in S3."""

from __future__ import annotations

import hashlib
import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from integrations.mlflow_tracking import MLflowTracking
from integrations.object_store import ObjectStore, ObjectStoreError, content_type_of
from tasks.dataset import MANIFEST, READY_MARKER, BuiltDataset, file_sha256
from tasks.spec import S3Location

EXPERIMENT_PREFIX = "datasets/"
TAG = {
    "name": "labelflow.dataset.name",
    "version": "labelflow.dataset.version",
    "digest": "labelflow.dataset.digest",
    "status": "labelflow.dataset.status",
    "location": "labelflow.dataset.location",
    "manifest": "labelflow.dataset.manifest_sha256",
    "rows": "labelflow.dataset.rows",
}
READY = "ready"
PUBLISHING = "publishing"


class DatasetNotFound(LookupError):
    """No ready version of that name (or number) is registered."""


class DatasetIntegrityError(RuntimeError):
    """A published file is missing or differs from the manifest: the copy must not be used."""


def experiment_name(dataset: str) -> str:
    """The MLflow experiment that holds a dataset's versions."""
    return f"{EXPERIMENT_PREFIX}{dataset}"


def parse_reference(reference: str) -> tuple[str, int | None]:
    """`NAME`, `NAME:latest` or `NAME:3` -> (name, version or None for latest)."""
    name, _, version = reference.partition(":")
    if not name:
        raise ValueError(f"{reference!r}: expected NAME[:VERSION|latest]")
    if version in ("", "latest"):
        return name, None
    if not version.removeprefix("v").isdigit():
        raise ValueError(f"{reference!r}: the version must be a number or `latest`")
    return name, int(version.removeprefix("v"))


def pipeline_revision(cwd: Path | None = None) -> str:
    """The git commit of the pipeline code that publishes, or `unknown` outside a git checkout."""
    try:
        result = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd or Path(__file__).parent, capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return result.stdout.strip() if result.returncode == 0 else "unknown"


@dataclass
class DatasetVersion:
    """One registered version: its MLflow run and its folder in the object store."""

    name: str
    version: int
    run_id: str
    experiment_id: str
    location: str
    digest: str
    status: str
    manifest_sha256: str | None
    tags: dict[str, str] = field(default_factory=dict)

    @property
    def folder(self) -> S3Location:
        """The version's folder."""
        return S3Location.parse(self.location)


@dataclass
class PulledDataset:
    """A verified local copy of one version."""

    name: str
    version: int
    folder: Path
    files: dict[str, Path]
    manifest: dict[str, Any]

    def path(self, role: str) -> Path:
        """The local file with a manifest role (consensus, annotations, sources, training-export)."""
        for entry in self.manifest["files"]:
            if entry["role"] == role:
                return self.files[entry["path"]]
        raise KeyError(role)


def _version_of(run: Any, experiment_id: str) -> DatasetVersion:
    tags = run.data.tags
    return DatasetVersion(
        name=tags.get(TAG["name"], ""),
        version=int(tags.get(TAG["version"], "0")),
        run_id=run.info.run_id,
        experiment_id=experiment_id,
        location=tags.get(TAG["location"], ""),
        digest=tags.get(TAG["digest"], ""),
        status=tags.get(TAG["status"], ""),
        manifest_sha256=tags.get(TAG["manifest"]),
        tags=dict(tags),
    )


class DatasetRegistry:
    """Publish and resolve dataset versions; a version is visible only once all its files are verified."""

    def __init__(self, store: ObjectStore, tracking: MLflowTracking) -> None:
        self.store = store
        self.tracking = tracking

    # --- reading -------------------------------------------------------------------------------------
    def versions(self, name: str, ready_only: bool = True) -> list[DatasetVersion]:
        """Registered versions of a dataset, oldest first (only ready ones unless asked)."""
        experiment_id = self.tracking.experiment_id(experiment_name(name))
        if experiment_id is None:
            return []
        query = f"tags.`{TAG['status']}` = '{READY}'" if ready_only else ""
        found = [_version_of(run, experiment_id) for run in self.tracking.search_runs(experiment_id, query)]
        return sorted(found, key=lambda v: v.version)

    def resolve(self, name: str, version: int | None = None) -> DatasetVersion:
        """One ready version (the latest when `version` is None)."""
        ready = self.versions(name)
        if not ready:
            raise DatasetNotFound(f"no published version of dataset {name!r} in {self.tracking.settings.tracking_uri}")
        if version is None:
            return ready[-1]
        for candidate in ready:
            if candidate.version == version:
                return candidate
        raise DatasetNotFound(
            f"dataset {name!r} has no published version {version} (published: {[v.version for v in ready]})"
        )

    # --- publishing ----------------------------------------------------------------------------------
    def discard_incomplete(self, name: str) -> list[int]:
        """Remove versions whose publication never finished (files and run): nobody could have used them."""
        discarded = []
        for version in self.versions(name, ready_only=False):
            if version.status == READY:
                continue
            if version.location:
                folder = version.folder
                for item in list(self.store.list_objects(folder.bucket, folder.prefix.rstrip("/") + "/")):
                    self.store.delete(folder.bucket, item.key)
            self.tracking.finish_run(version.run_id, status="KILLED")
            self.tracking.delete_run(version.run_id)
            discarded.append(version.version)
        return discarded

    def begin(self, name: str, digest: str, base: S3Location, tags: dict[str, str]) -> DatasetVersion:
        """Reserve the next version number: an MLflow run marked `publishing`, invisible to readers."""
        self.discard_incomplete(name)
        experiment_id = self.tracking.ensure_experiment(experiment_name(name), tags={"labelflow.kind": "dataset"})
        ready = self.versions(name)
        number = (ready[-1].version if ready else 0) + 1
        folder = S3Location(bucket=base.bucket, prefix=base.join(f"v{number}"))
        run_tags = {
            **tags,
            TAG["name"]: name,
            TAG["version"]: str(number),
            TAG["digest"]: digest,
            TAG["status"]: PUBLISHING,
            TAG["location"]: f"s3://{folder.bucket}/{folder.prefix}/",
        }
        self.store.ensure_bucket(folder.bucket)
        run_id = self.tracking.start_run(experiment_id, run_name=f"v{number}", tags=run_tags)
        return DatasetVersion(
            name, number, run_id, experiment_id, run_tags[TAG["location"]], digest, PUBLISHING, None, run_tags
        )

    def upload(self, version: DatasetVersion, built: BuiltDataset) -> None:
        """Upload every data file and check what the store holds against the local size and SHA-256."""
        folder = version.folder
        for entry in built.files:
            key = folder.join(entry.path)
            local = built.folder / entry.path
            self.store.upload_file(folder.bucket, key, local, content_type_of(local))
            self._verify(folder.bucket, key, entry.bytes, entry.sha256)

    def _verify(self, bucket: str, key: str, size: int, sha256: str) -> None:
        stored = self.store.stat(bucket, key)
        if stored.size != size:
            raise DatasetIntegrityError(f"s3://{bucket}/{key}: stored {stored.size} bytes, wrote {size}")
        with tempfile.TemporaryDirectory(prefix="labelflow-verify-") as scratch:
            copy = Path(scratch) / "copy"
            self.store.download_file(bucket, key, copy)
            if file_sha256(copy) != sha256:
                raise DatasetIntegrityError(f"s3://{bucket}/{key}: the stored copy's SHA-256 differs from the upload")

    def finish(
        self,
        version: DatasetVersion,
        manifest: dict[str, Any],
        frame: pd.DataFrame,
        artifacts: dict[str, bytes],
        params: dict[str, Any],
        metrics: dict[str, float],
    ) -> DatasetVersion:
        """Write and verify the manifest, record the run's input and artifacts, then mark the version ready."""
        folder = version.folder
        payload = json.dumps(manifest, indent=2, ensure_ascii=False, sort_keys=True).encode("utf-8")
        manifest_sha = hashlib.sha256(payload).hexdigest()
        self.store.put_bytes(folder.bucket, folder.join(MANIFEST), payload, "application/json")
        self._verify(folder.bucket, folder.join(MANIFEST), len(payload), manifest_sha)
        run_id = version.run_id
        self.tracking.log_params_and_metrics(run_id, params, metrics)
        self.tracking.log_dataset_input(
            run_id, frame, name=version.name, source=f"{version.location}consensus.parquet", digest=version.digest[:32]
        )
        with tempfile.TemporaryDirectory(prefix="labelflow-artifacts-") as scratch:
            for name, content in {MANIFEST: payload, **artifacts}.items():
                path = Path(scratch) / name
                path.write_bytes(content)
                self.tracking.log_artifact(run_id, path)
        # The marker is written last: a reader that finds it knows every file above was verified.
        marker = json.dumps({"manifest_sha256": manifest_sha, "version": version.version}).encode()
        self.store.put_bytes(folder.bucket, folder.join(READY_MARKER), marker, "application/json")
        self.tracking.set_tags(
            run_id, {TAG["manifest"]: manifest_sha, TAG["rows"]: str(manifest["rows"]), TAG["status"]: READY}
        )
        self.tracking.finish_run(run_id)
        version.status, version.manifest_sha256 = READY, manifest_sha
        return version

    # --- pulling -------------------------------------------------------------------------------------
    def pull(self, name: str, version: int | None, out_dir: Path) -> PulledDataset:
        """Download one version into `out_dir` and verify every file's SHA-256 against its manifest."""
        return self.pull_version(self.resolve(name, version), out_dir)

    def pull_version(self, found: DatasetVersion, out_dir: Path) -> PulledDataset:
        """Download a resolved version into `out_dir` and verify every file's SHA-256 against its manifest."""
        name = found.name
        folder = found.folder
        where = f"{name}:{found.version} ({found.location})"
        try:
            marker = json.loads(self.store.get_bytes(folder.bucket, folder.join(READY_MARKER)))
            payload = self.store.get_bytes(folder.bucket, folder.join(MANIFEST))
        except ObjectStoreError as exc:
            if exc.not_found:
                raise DatasetIntegrityError(f"{where}: the manifest or ready marker is missing: {exc}") from None
            raise
        manifest_sha = hashlib.sha256(payload).hexdigest()
        if manifest_sha != marker.get("manifest_sha256") or manifest_sha != found.manifest_sha256:
            raise DatasetIntegrityError(
                f"{where}: manifest.json was modified after publication (SHA-256 {manifest_sha})"
            )
        manifest = json.loads(payload)
        out_dir.mkdir(parents=True, exist_ok=True)
        files: dict[str, Path] = {}
        for entry in manifest["files"]:
            target = out_dir / entry["path"]
            if not (
                target.is_file() and target.stat().st_size == entry["bytes"] and file_sha256(target) == entry["sha256"]
            ):
                partial = target.with_name(target.name + ".part")
                try:
                    self.store.download_file(folder.bucket, folder.join(entry["path"]), partial)
                except ObjectStoreError as exc:
                    if exc.not_found:
                        raise DatasetIntegrityError(f"{where}: {entry['path']} is missing from the store") from None
                    raise
                actual = file_sha256(partial)
                if actual != entry["sha256"] or partial.stat().st_size != entry["bytes"]:
                    partial.unlink()
                    raise DatasetIntegrityError(
                        f"{where}: {entry['path']} does not match its manifest (SHA-256 {actual}, expected "
                        f"{entry['sha256']}): the published file was changed; do not use this copy"
                    )
                partial.replace(target)
            files[entry["path"]] = target
        (out_dir / MANIFEST).write_bytes(payload)
        return PulledDataset(name, found.version, out_dir, files, manifest)
