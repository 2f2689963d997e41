"""Links a person can open to a project's latest outputs: the quality report, the Data Docs and the ingest's quarantine
report copied from the object store into a local folder, the Label Studio project and the latest dataset version's
MLflow run as URLs (what `labelflow open` prints)."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from labelflow.integrations.object_store import StoredObject
    from labelflow.tasks.ports import LabelStudioPort
    from labelflow.tasks.registry import DatasetRegistry
    from labelflow.tasks.spec import ProjectSpec

REPORT_PAGE = "report.html"
QUARANTINE_PAGE = "quarantine.csv"
DOCS_PAGE = "index.html"
MIRROR_MANIFEST = ".labelflow-mirror.json"
# Tables for machines (consensus.parquet, for `labelflow pull`) cannot be read in a browser: the copy leaves them out.
NOT_FOR_BROWSERS = (".parquet",)
# Each project keeps one copy per target (the latest run's), and a copy larger than this is refused: the cache
# stays bounded however many runs the object store holds.
MAX_COPY_BYTES = 256 * 1024 * 1024


class LinkNotFound(LookupError):
    """There is nothing to open yet (no ingest, collect or published version), or the copy would be too large."""


class BrowserStorePort(Protocol):
    """What finding and copying a run's folder needs of the object store."""

    def list_folders(self, bucket: str, prefix: str = "", start_after: str = "") -> Iterator[str]:
        """The immediate sub-folders of a prefix (those sorting after `start_after` when given)."""
        ...

    def list_objects(self, bucket: str, prefix: str = "") -> Iterator[StoredObject]:
        """Every object under a prefix."""
        ...

    def stat(self, bucket: str, key: str) -> StoredObject:
        """Size and ETag of one object; a missing one raises with `not_found` set."""
        ...

    def get_bytes(self, bucket: str, key: str, max_bytes: int | None = None) -> bytes:
        """Read one object; a missing one raises with `not_found` set."""
        ...

    def download_file(self, bucket: str, key: str, path: Path) -> None:
        """Read one object into a local file."""
        ...


@dataclass(frozen=True)
class Link:
    """Where to open one target: a URL (file:// for local copies), the local file, and what the copy cost."""

    target: str
    project: str
    url: str
    path: str | None = None
    source: str | None = None  # the s3:// folder a local copy mirrors
    run: str | None = None  # the collect run of a report or Data Docs, or the dataset version
    downloaded: int = 0
    unchanged: int = 0
    removed: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The link as `labelflow open --json` prints it."""
        return asdict(self)


@dataclass(frozen=True)
class MirrorResult:
    """What one copy of a folder did: files fetched, files already current, stale files deleted."""

    downloaded: int
    unchanged: int
    removed: int


def mlflow_run_url(tracking_uri: str, experiment_id: str, run_id: str) -> str:
    """The MLflow UI page of one version's run, as every link labelflow prints (the runs table's navigation)."""
    from labelflow.integrations.mlflow_links import version_run_url

    return version_run_url(tracking_uri, experiment_id, run_id)


def open_hint(spec_path: str | None, target: str) -> str:
    """The command that opens a target of a spec, for messages that would otherwise show only an s3:// address."""
    return f"labelflow open {shlex.quote(spec_path) if spec_path else 'SPEC'} {target}"


def latest_folder(
    store: BrowserStorePort, bucket: str, prefix: str, page: str, now: datetime | None = None
) -> str | None:
    """The newest run folder under `prefix` that holds `page`, or None.

    Run folders are named by UTC time (`20260102T030405...Z`), so they list oldest first. A project collected every
    minute holds hundreds of thousands: the runs since yesterday are listed first, the whole prefix only when none
    of them holds the page.
    """
    from labelflow.integrations.object_store import ObjectStoreError

    folder_prefix = f"{prefix.rstrip('/')}/"
    since = (now or datetime.now(UTC)) - timedelta(days=1)
    for start_after in (f"{folder_prefix}{since:%Y%m%d}", ""):
        folders = sorted(store.list_folders(bucket, folder_prefix, start_after=start_after), reverse=True)
        for folder in folders:
            try:
                store.stat(bucket, f"{folder}{page}")
            except ObjectStoreError as exc:
                if exc.not_found:
                    continue  # a run still being written, or one that wrote no page
                raise
            return folder
    return None


def _relative_path(key: str, prefix: str) -> PurePosixPath | None:
    """The key's path below the prefix, or None when it could land outside the copy ('..', absolute, empty parts)."""
    relative = key[len(prefix) :]
    parts = relative.split("/")
    if not relative or any(part in ("", ".", "..") for part in parts) or relative == MIRROR_MANIFEST:
        return None
    return PurePosixPath(relative)


def _read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    try:
        files = json.loads(path.read_text(encoding="utf-8")).get("files", {})
    except (OSError, ValueError, AttributeError):
        return {}
    return files if isinstance(files, dict) else {}


def _write_atomically(path: Path, text: str) -> None:
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(handle, "w", encoding="utf-8") as out:
        out.write(text)
    os.replace(temporary, path)


def _remove_empty_folders(root: Path) -> None:
    for folder in sorted((p for p in root.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
        if not any(folder.iterdir()):
            folder.rmdir()


def mirror_folder(
    store: BrowserStorePort,
    bucket: str,
    prefix: str,
    local: Path,
    skip_suffixes: tuple[str, ...] = (),
    max_bytes: int = MAX_COPY_BYTES,
) -> MirrorResult:
    """Make `local` a copy of the folder `prefix`: fetch only files whose ETag or size changed, delete stale ones."""
    prefix = f"{prefix.rstrip('/')}/"
    wanted: dict[PurePosixPath, StoredObject] = {}
    for stored in store.list_objects(bucket, prefix):
        relative = _relative_path(stored.key, prefix)
        if relative is not None and not relative.name.lower().endswith(skip_suffixes):
            wanted[relative] = stored
    total = sum(stored.size for stored in wanted.values())
    if total > max_bytes:
        raise LinkNotFound(
            f"s3://{bucket}/{prefix} holds {total:,} bytes, more than the {max_bytes:,} a local copy may take"
        )
    local.mkdir(parents=True, exist_ok=True)
    manifest_path = local / MIRROR_MANIFEST
    previous = _read_manifest(manifest_path)
    copied: dict[str, dict[str, Any]] = {}
    downloaded = unchanged = 0
    for relative, stored in sorted(wanted.items()):
        target = local.joinpath(*relative.parts)
        known = previous.get(str(relative)) or {}
        current = {"etag": stored.etag, "size": stored.size}
        if stored.etag and known == current and target.is_file() and target.stat().st_size == stored.size:
            unchanged += 1
        else:
            target.parent.mkdir(parents=True, exist_ok=True)
            store.download_file(bucket, stored.key, target)
            downloaded += 1
        copied[str(relative)] = current
    removed = 0
    for name in set(previous) - set(copied):
        relative = _relative_path(name, "")
        stale = local.joinpath(*relative.parts) if relative else None
        if stale is not None and stale.is_file():
            stale.unlink()
            removed += 1
    _remove_empty_folders(local)
    _write_atomically(
        manifest_path, json.dumps({"source": f"s3://{bucket}/{prefix}", "files": copied}, indent=1, sort_keys=True)
    )
    return MirrorResult(downloaded, unchanged, removed)


def _copied_page(
    store: BrowserStorePort,
    spec: ProjectSpec,
    target: str,
    runs_prefix: str,
    page: str,
    below_run: str,
    local: Path,
    missing: str,
) -> Link:
    """Copy the newest run's folder that holds `below_run + page` and link its page."""
    bucket = spec.state_location.bucket
    run_folder = latest_folder(store, bucket, runs_prefix, f"{below_run}{page}")
    if run_folder is None:
        raise LinkNotFound(f"{missing} (nothing under s3://{bucket}/{runs_prefix}/)")
    source = f"{run_folder}{below_run}"
    copied = mirror_folder(store, bucket, source, local, skip_suffixes=NOT_FOR_BROWSERS)
    path = local / page
    return Link(
        target=target,
        project=spec.name,
        url=path.as_uri(),
        path=str(path),
        source=f"s3://{bucket}/{source}",
        run=run_folder.rstrip("/").rsplit("/", 1)[-1],
        downloaded=copied.downloaded,
        unchanged=copied.unchanged,
        removed=copied.removed,
    )


def report_link(store: BrowserStorePort, spec: ProjectSpec, cache: Path, spec_path: str | None = None) -> Link:
    """The latest quality report, copied to `cache/reports/<project>/` (tables and plots; no parquet)."""
    return _copied_page(
        store,
        spec,
        "report",
        spec.state_location.join("collect", "reports"),
        REPORT_PAGE,
        "",
        cache / "reports" / spec.slug,
        f"no quality report yet for {spec.name!r}: run `labelflow collect {spec_path or 'SPEC'}` first",
    )


def docs_link(store: BrowserStorePort, spec: ProjectSpec, cache: Path, spec_path: str | None = None) -> Link:
    """The latest Great Expectations Data Docs, copied to `cache/docs/<project>/` (a few dozen files, offline)."""
    return _copied_page(
        store,
        spec,
        "docs",
        spec.state_location.join("validation"),
        DOCS_PAGE,
        "docs/",
        cache / "docs" / spec.slug,
        f"no Data Docs yet for {spec.name!r}: run `labelflow collect {spec_path or 'SPEC'}` once tasks are annotated",
    )


def quarantine_link(store: BrowserStorePort, spec: ProjectSpec, cache: Path, spec_path: str | None = None) -> Link:
    """The latest ingest run's quarantine report (CSV) and summary, copied to `cache/quarantine/<project>/`."""
    return _copied_page(
        store,
        spec,
        "quarantine",
        spec.state_location.join("ingest", "runs"),
        QUARANTINE_PAGE,
        "",
        cache / "quarantine" / spec.slug,
        f"no ingest run recorded for {spec.name!r}: run `labelflow ingest {spec_path or 'SPEC'}` first",
    )


def recorded_project_id(store: BrowserStorePort, spec: ProjectSpec, spec_path: str | None = None) -> int:
    """The Label Studio project ingest recorded for the spec; LinkNotFound before the first ingest."""
    from labelflow.integrations.object_store import ObjectStoreError

    state = spec.state_location
    key = state.join("project.json")  # tasks.ingest.project_record_key (not imported: it loads the image stack)
    try:
        record = json.loads(store.get_bytes(state.bucket, key))
    except ObjectStoreError as exc:
        if exc.not_found:
            raise LinkNotFound(
                f"no Label Studio project recorded for {spec.name!r} (s3://{state.bucket}/{key} is missing): "
                f"run `labelflow ingest {spec_path or 'SPEC'}` first"
            ) from None
        raise
    if record.get("title") != spec.name:
        raise LinkNotFound(f"s3://{state.bucket}/{key} records project {record.get('title')!r}, not {spec.name!r}")
    return int(record["project_id"])


def project_link(label_studio: LabelStudioPort, spec: ProjectSpec, project_id: int) -> Link:
    """The Label Studio project's page, once Label Studio confirms the project still exists."""
    if label_studio.get_project(project_id) is None:
        raise LinkNotFound(
            f"Label Studio project {project_id} of {spec.name!r} no longer exists at {label_studio.settings.base_url}"
        )
    return Link(
        target="project",
        project=spec.name,
        url=f"{label_studio.settings.base_url}/projects/{project_id}",
        run=str(project_id),
    )


def dataset_name(spec: ProjectSpec) -> str:
    """The dataset the spec publishes; LinkNotFound when it publishes none."""
    if spec.dataset is None:
        raise LinkNotFound(f"{spec.name!r} publishes no dataset: its spec has no `dataset` section")
    return spec.dataset.name


def dataset_link(registry: DatasetRegistry, spec: ProjectSpec, tracking_uri: str) -> Link:
    """The MLflow run of the spec's latest published dataset version."""
    from labelflow.tasks.registry import DatasetNotFound

    name = dataset_name(spec)
    try:
        version = registry.resolve(name)
    except DatasetNotFound:
        raise LinkNotFound(
            f"no published version of dataset {name!r} yet: `labelflow collect` publishes one "
            "once the batch passes validation"
        ) from None
    return Link(
        target="dataset",
        project=spec.name,
        url=mlflow_run_url(tracking_uri, version.experiment_id, version.run_id),
        source=version.location,
        run=str(version.version),
    )
