"""A dataset registry on plain MLflow: one experiment per dataset, one run per immutable version, files in S3.

A dataset belongs to one project (recorded on its experiment); each version number is won by exactly one publisher
through a conditional write of the version folder's claim object, and only that publisher writes the folder.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import socket
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelflow.integrations.errors import AdapterError
from labelflow.integrations.object_store import ObjectStoreError, content_type_of
from labelflow.tasks.dataset_files import MANIFEST, READY_MARKER, file_sha256
from labelflow.tasks.ports import DatasetStorePort, TrackingPort
from labelflow.tasks.spec import S3Location, SpecError

if TYPE_CHECKING:
    # Type hints only: reading a version (`labelflow datasets`, `pull`) must not import pandas (about a second).
    import pandas as pd

    from labelflow.tasks.dataset import BuiltDataset

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
# The dataset's owner, on its MLflow experiment.
OWNER_TAG = {
    "project": "labelflow.dataset.owner",
    "project_name": "labelflow.dataset.owner_name",
    "shared": "labelflow.dataset.shared",
    "location": "labelflow.dataset.location",
}
READY = "ready"
PUBLISHING = "publishing"
CLAIM = "_CLAIM.json"  # in a version folder: who won that version number
OWNER_RECORD = "_OWNER.json"  # next to the version folders: the owner, also when MLflow's record is lost
HEARTBEAT_SECONDS = 20.0
# A claim whose heartbeat is this old is abandoned (its publisher died on another host); on this host a dead pid
# tells at once. Much longer than a heartbeat period, so a slow but live publisher is never taken over.
ABANDONED_AFTER_SECONDS = 300.0
MAX_CLAIM_ATTEMPTS = 1000

logger = logging.getLogger(__name__)

# Claim tokens this process's publishers hold: on this host and pid, any other claim is no one's any more.
_HELD_CLAIMS: set[str] = set()
_HELD_LOCK = threading.Lock()
# Object-store endpoints checked to honour conditional writes (a store that ignores them would let two win).
_CONDITIONAL_WRITES_CHECKED: set[str] = set()


class DatasetNotFound(LookupError):
    """No ready version of that name (or number) is registered."""


class DatasetIntegrityError(RuntimeError):
    """A published file is missing or differs from the manifest: the copy must not be used."""


class VersionClaimLost(DatasetIntegrityError):
    """Another publisher took over this version (it judged this one abandoned): this publication must not finish."""


class DatasetOwnershipError(SpecError):
    """The spec publishes under a dataset name another project owns, and the two do not both share it."""


@dataclass(frozen=True)
class DatasetPublisher:
    """The project that publishes: its slug (the identity), its spec name, and whether its spec shares the dataset."""

    project: str
    project_name: str
    shared: bool = False


@dataclass(frozen=True)
class DatasetOwner:
    """The project a dataset belongs to, whether it lets other projects publish, and where versions live."""

    project: str
    project_name: str
    shared: bool
    location: str

    @classmethod
    def from_record(cls, record: dict[str, Any]) -> DatasetOwner | None:
        """From experiment tags (`labelflow.dataset.owner`, ...) or an owner object; None when it names no owner."""
        values = {key: record.get(tag, record.get(key)) for key, tag in OWNER_TAG.items()}
        if not values["project"]:
            return None
        return cls(
            project=str(values["project"]),
            project_name=str(values["project_name"] or values["project"]),
            shared=str(values["shared"]).lower() == "true",
            location=str(values["location"] or ""),
        )

    def tags(self) -> dict[str, str]:
        """The experiment tags that record this owner."""
        return {
            OWNER_TAG["project"]: self.project,
            OWNER_TAG["project_name"]: self.project_name,
            OWNER_TAG["shared"]: str(self.shared).lower(),
            OWNER_TAG["location"]: self.location,
        }


def base_uri(base: S3Location) -> str:
    """The canonical `s3://bucket/prefix/` of a dataset's version folders."""
    return f"s3://{base.bucket}/{base.prefix.strip('/')}/" if base.prefix.strip("/") else f"s3://{base.bucket}/"


def ownership_refusal(name: str, owner: DatasetOwner, publisher: DatasetPublisher, location: str) -> str | None:
    """Why `publisher` may not publish versions of a dataset `owner` owns, in one line; None when it may."""
    if owner.project == publisher.project:
        return None
    if not (owner.shared and publisher.shared):
        missing = " and ".join(repr(p.project_name) for p in (owner, publisher) if not p.shared)
        return (
            f"dataset {name!r} belongs to project {owner.project_name!r}; project {publisher.project_name!r} may "
            f"publish to it only if both specs set `dataset.shared: true` (not set by {missing}), "
            "otherwise choose another dataset.name"
        )
    if location != owner.location:
        return (
            f"dataset {name!r} of project {owner.project_name!r} is shared at {owner.location}: project "
            f"{publisher.project_name!r} must publish to that dataset.location, not {location}"
        )
    return None


def claim_is_abandoned(
    record: dict[str, Any],
    now: float,
    host: str,
    pid: int,
    held: set[str],
    pid_alive: Callable[[int], bool],
) -> bool:
    """True when no live publisher holds a claim any more (judged from this host and process)."""
    if record.get("state") == READY:
        return False
    if record.get("token") in held:
        return False
    same_host = record.get("host") == host and isinstance(record.get("pid"), int)
    if same_host and (record["pid"] == pid or not pid_alive(record["pid"])):
        return True  # this process holds no such claim, or its process is gone
    try:
        heartbeat = float(record.get("heartbeat_at", 0))
    except (TypeError, ValueError):
        heartbeat = 0.0
    return now - heartbeat > ABANDONED_AFTER_SECONDS


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    except OSError:
        return False
    return True


@dataclass
class VersionClaim:
    """The claim object that makes one publisher the only writer of a version folder."""

    bucket: str
    key: str
    token: str
    record: dict[str, Any]
    etag: str
    conflicts: int = 0  # lower version numbers lost to other live publishers before this one was won
    lost: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False, compare=False)


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


def pipeline_revision() -> str:
    """labelflow's own version, with the git commit when it runs from labelflow's own checkout (never a user's repo)."""
    try:
        version = importlib.metadata.version("labelflow")
    except importlib.metadata.PackageNotFoundError:
        version = "unknown"
    checkout = Path(__file__).resolve().parents[1]
    pyproject = checkout / "pyproject.toml"
    # An installed labelflow may sit inside a user's repository: its HEAD says nothing about labelflow's code.
    if not (checkout / ".git").exists() or 'name = "labelflow"' not in _read_text(pyproject):
        return version
    try:
        result = subprocess.run(["git", "rev-parse", "HEAD"], cwd=checkout, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return version
    return f"{version}+git.{result.stdout.strip()}" if result.returncode == 0 else version


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        return ""


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
    claim: VersionClaim | None = field(default=None, repr=False, compare=False)

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

    def __init__(self, store: DatasetStorePort, tracking: TrackingPort) -> None:
        self.store = store
        self.tracking = tracking
        # What judges a claim abandoned; tests replace them.
        self.host = socket.gethostname()
        self.clock: Callable[[], float] = time.time
        self.pid_alive: Callable[[int], bool] = _pid_alive

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

    # --- ownership -----------------------------------------------------------------------------------
    def owner(self, name: str) -> DatasetOwner | None:
        """The project a dataset belongs to, or None (no such dataset, or registered before ownership existed)."""
        experiment_id = self.tracking.experiment_id(experiment_name(name))
        if experiment_id is None:
            return None
        return DatasetOwner.from_record(self.tracking.experiment_tags(experiment_id))

    def check_owner(self, name: str, publisher: DatasetPublisher, base: S3Location) -> None:
        """Refuse, before anything is written, a publisher that may not publish versions of this dataset.

        The owner's own spec is the one that says whether the dataset is shared: its choice is recorded here, at
        each of its collections, also when there is nothing new to publish.
        """
        experiment_id = self.tracking.experiment_id(experiment_name(name))
        if experiment_id is None:
            return
        owner = DatasetOwner.from_record(self.tracking.experiment_tags(experiment_id))
        if owner is None:
            return  # registered before ownership existed: claimed by this publisher's `begin`
        mine = DatasetOwner(publisher.project, publisher.project_name, publisher.shared, base_uri(base))
        refusal = ownership_refusal(name, owner, publisher, mine.location)
        if refusal:
            raise DatasetOwnershipError(refusal)
        if owner.project == mine.project and owner != mine:
            self.tracking.set_experiment_tags(experiment_id, mine.tags())

    def claim_ownership(self, name: str, publisher: DatasetPublisher, base: S3Location) -> str:
        """The dataset's experiment id, once `publisher` owns the dataset or may share it; refuse otherwise."""
        mine = DatasetOwner(publisher.project, publisher.project_name, publisher.shared, base_uri(base))
        # The server's unique experiment name makes the first publication's claim atomic.
        experiment_id, created = self.tracking.create_experiment_once(
            experiment_name(name), tags={"labelflow.kind": "dataset", **mine.tags()}
        )
        if created:
            self._record_owner(base, mine)
            return experiment_id
        owner = DatasetOwner.from_record(self.tracking.experiment_tags(experiment_id))
        if owner is None:
            owner = self._claim_unowned(experiment_id, base, mine)
        refusal = ownership_refusal(name, owner, publisher, mine.location)
        if refusal:
            raise DatasetOwnershipError(refusal)
        if owner.project == mine.project and owner != mine:
            self.tracking.set_experiment_tags(experiment_id, mine.tags())  # the owner's spec decides sharing
        return experiment_id

    def _record_owner(self, base: S3Location, owner: DatasetOwner) -> DatasetOwner:
        """Write the owner object next to the versions unless one exists; return the owner it names."""
        key = base.join(OWNER_RECORD)
        self.store.ensure_bucket(base.bucket)
        payload = json.dumps({**owner.tags(), "recorded_at": self.clock()}, sort_keys=True).encode()
        if self.store.put_conditional(base.bucket, key, payload) is not None:
            return owner
        try:
            recorded = DatasetOwner.from_record(json.loads(self.store.get_bytes(base.bucket, key)))
        except (ObjectStoreError, ValueError):
            recorded = None
        return recorded or owner

    def _claim_unowned(self, experiment_id: str, base: S3Location, mine: DatasetOwner) -> DatasetOwner:
        """A dataset registered before ownership existed goes to its first publisher since (atomically, in S3)."""
        owner = self._record_owner(base, mine)
        if owner.project == mine.project:
            self.tracking.set_experiment_tags(experiment_id, mine.tags())
        # A claimant at another location writes another owner object: the experiment's tag settles it.
        return DatasetOwner.from_record(self.tracking.experiment_tags(experiment_id)) or owner

    # --- claims: one publisher per version folder ------------------------------------------------------
    def _require_conditional_writes(self, bucket: str) -> None:
        """Refuse to publish on a store that ignores `If-None-Match` (two publishers could then win a version)."""
        endpoint = f"{self.store.settings.endpoint}|{bucket}"
        if endpoint in _CONDITIONAL_WRITES_CHECKED:
            return
        key = f"_labelflow-claim-probe/{uuid.uuid4().hex}"
        try:
            first = self.store.put_conditional(bucket, key, b"{}")
            second = self.store.put_conditional(bucket, key, b"{}")
        finally:
            self.store.delete(bucket, key)
        if first is None or second is not None:
            raise ObjectStoreError(
                f"the object store at {self.store.settings.endpoint} ignores conditional writes (If-None-Match): "
                "labelflow cannot allocate dataset versions safely on it"
            )
        _CONDITIONAL_WRITES_CHECKED.add(endpoint)

    def _claim_record(self, name: str, number: int, token: str, publisher: DatasetPublisher | None) -> dict[str, Any]:
        now = self.clock()
        return {
            "token": token,
            "dataset": name,
            "version": number,
            "project": publisher.project if publisher else None,
            "project_name": publisher.project_name if publisher else None,
            "host": self.host,
            "pid": os.getpid(),
            "claimed_at": now,
            "heartbeat_at": now,
            "state": PUBLISHING,
        }

    def _read_claim(self, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
        """A claim and its ETag (the ETag first: if the claim changes in between, a takeover with it fails)."""
        try:
            etag = self.store.stat(bucket, key).etag
            payload = self.store.get_bytes(bucket, key)
        except ObjectStoreError as exc:
            if exc.not_found:
                return None
            raise
        try:
            record = json.loads(payload)
        except ValueError:
            record = {}
        return (record if isinstance(record, dict) else {}), etag

    def _is_published(self, name: str, number: int) -> bool:
        return any(v.version == number for v in self.versions(name))

    def _try_claim(
        self, name: str, folder: S3Location, number: int, publisher: DatasetPublisher | None, hold: bool
    ) -> VersionClaim | None:
        """Win version `number` (a new claim, or a takeover of an abandoned one), or None when another holds it."""
        token = uuid.uuid4().hex
        record = self._claim_record(name, number, token, publisher)
        if hold:  # held before it exists: no other thread of this process may think it abandoned
            with _HELD_LOCK:
                _HELD_CLAIMS.add(token)
        won = None
        try:
            won = self._claim_or_take_over(name, folder, number, record)
        finally:
            if hold and won is None:
                with _HELD_LOCK:
                    _HELD_CLAIMS.discard(token)
        return won

    def _claim_or_take_over(
        self, name: str, folder: S3Location, number: int, record: dict[str, Any]
    ) -> VersionClaim | None:
        key = folder.join(CLAIM)
        payload = json.dumps(record, sort_keys=True).encode()
        for _ in range(3):  # the claim may be released between our two requests
            etag = self.store.put_conditional(folder.bucket, key, payload)
            if etag is not None:
                return VersionClaim(folder.bucket, key, record["token"], record, etag)
            current = self._read_claim(folder.bucket, key)
            if current is None:
                continue
            existing, existing_etag = current
            with _HELD_LOCK:
                held = set(_HELD_CLAIMS)
            if not claim_is_abandoned(existing, self.clock(), self.host, os.getpid(), held, self.pid_alive):
                return None
            if self._is_published(name, number):
                return None  # a finished version whose claim was never marked ready
            # Compare-and-swap on the abandoned claim's ETag: of several takers exactly one succeeds.
            etag = self.store.put_conditional(folder.bucket, key, payload, if_match=existing_etag)
            if etag is None:
                return None
            logger.info("version %d of %s: took over a claim abandoned by %s", number, name, existing)
            return VersionClaim(folder.bucket, key, record["token"], record, etag)
        return None

    def _update_claim(self, claim: VersionClaim, **changes: Any) -> bool:
        """Rewrite our own claim (heartbeat, run id, state) only if it is still ours; False once it was taken over."""
        with claim.lock:
            if claim.lost:
                return False
            record = {**claim.record, **changes}
            etag = self.store.put_conditional(
                claim.bucket, claim.key, json.dumps(record, sort_keys=True).encode(), if_match=claim.etag
            )
            if etag is None:
                claim.lost = True
                return False
            claim.record, claim.etag = record, etag
            return True

    def _clear_folder(self, name: str, folder: S3Location, number: int, keep: str | None) -> None:
        """Remove what abandoned publications of a version left: files (except our claim) and unfinished runs.

        Only the holder of the version's claim calls this, so nothing it deletes belongs to a live publisher.
        """
        for item in list(self.store.list_objects(folder.bucket, folder.prefix.rstrip("/") + "/")):
            if item.key != keep:
                self.store.delete(folder.bucket, item.key)
        location = f"s3://{folder.bucket}/{folder.prefix.rstrip('/')}/"
        for stale in self.versions(name, ready_only=False):
            if stale.version == number and stale.status != READY and stale.location == location:
                self.tracking.finish_run(stale.run_id, status="KILLED")
                self.tracking.delete_run(stale.run_id)

    def _release(self, claim: VersionClaim) -> None:
        with _HELD_LOCK:
            _HELD_CLAIMS.discard(claim.token)

    # --- publishing ----------------------------------------------------------------------------------
    def discard_incomplete(self, name: str) -> list[int]:
        """Remove versions whose publication was abandoned (files and run); live publications are left alone."""
        discarded = []
        for version in self.versions(name, ready_only=False):
            if version.status == READY:
                continue
            if not version.location:
                self.tracking.finish_run(version.run_id, status="KILLED")
                self.tracking.delete_run(version.run_id)
                continue
            folder = version.folder
            claim = self._try_claim(name, folder, version.version, None, hold=True)
            if claim is None:
                continue  # a live publisher holds it
            try:
                self._clear_folder(name, folder, version.version, keep=claim.key)
                self.store.delete(claim.bucket, claim.key)  # last: the number is free only once the folder is empty
            finally:
                self._release(claim)
            discarded.append(version.version)
        return discarded

    def begin(
        self,
        name: str,
        digest: str,
        base: S3Location,
        tags: dict[str, str],
        publisher: DatasetPublisher | None = None,
    ) -> DatasetVersion:
        """Claim the next free version number: an MLflow run marked `publishing`, invisible to readers.

        Nothing keeps this claim alive: use `publishing()` to publish; a bare `begin` is what a crash leaves.
        """
        return self._begin(name, digest, base, tags, publisher, hold=False)

    @contextmanager
    def publishing(
        self, name: str, digest: str, base: S3Location, tags: dict[str, str], publisher: DatasetPublisher | None
    ) -> Iterator[DatasetVersion]:
        """Claim a version and keep the claim alive (a heartbeat) until `finish`; on failure remove the version."""
        version = self._begin(name, digest, base, tags, publisher, hold=True)
        claim = version.claim
        assert claim is not None
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(claim, stop), name=f"claim-{name}-v{version.version}")
        beat.daemon = True
        beat.start()
        try:
            yield version
        except BaseException:
            stop.set()
            beat.join()
            if version.status != READY:
                self._abandon(version)
            raise
        finally:
            stop.set()
            beat.join()
            self._release(claim)

    def _heartbeat(self, claim: VersionClaim, stop: threading.Event) -> None:
        while not stop.wait(HEARTBEAT_SECONDS):
            try:
                if not self._update_claim(claim, heartbeat_at=self.clock()):
                    logger.warning("lost the claim s3://%s/%s to another publisher", claim.bucket, claim.key)
                    return
            except ObjectStoreError as exc:  # a brief outage: the publication's own writes will fail if it lasts
                logger.warning("claim heartbeat failed: %s", exc)

    def _abandon(self, version: DatasetVersion) -> None:
        """Best effort: remove a failed publication's files, run and claim (what is left, a later run removes)."""
        claim = version.claim
        if claim is None or claim.lost:
            return
        try:
            self._clear_folder(version.name, version.folder, version.version, keep=claim.key)
            self.store.delete(claim.bucket, claim.key)
        except AdapterError as exc:  # the object store's or MLflow's: the original error matters more
            logger.warning("could not remove the failed version %s:%d: %s", version.name, version.version, exc)

    def _begin(
        self,
        name: str,
        digest: str,
        base: S3Location,
        tags: dict[str, str],
        publisher: DatasetPublisher | None,
        hold: bool,
    ) -> DatasetVersion:
        if publisher is not None:
            experiment_id = self.claim_ownership(name, publisher, base)
        else:
            experiment_id, _ = self.tracking.create_experiment_once(
                experiment_name(name), tags={"labelflow.kind": "dataset"}
            )
        self.store.ensure_bucket(base.bucket)
        self._require_conditional_writes(base.bucket)
        self.discard_incomplete(name)
        ready = self.versions(name)
        number = (ready[-1].version if ready else 0) + 1
        conflicts = 0
        for _ in range(MAX_CLAIM_ATTEMPTS):
            folder = S3Location(bucket=base.bucket, prefix=base.join(f"v{number}"))
            claim = self._try_claim(name, folder, number, publisher, hold)
            if claim is not None:
                break
            conflicts += 1  # another publisher holds this number: try the next one
            number += 1
        else:
            raise DatasetIntegrityError(f"{name}: no free version number after {MAX_CLAIM_ATTEMPTS} claims")
        claim.conflicts = conflicts
        try:
            self._clear_folder(name, folder, number, keep=claim.key)
            run_tags = {
                **tags,
                TAG["name"]: name,
                TAG["version"]: str(number),
                TAG["digest"]: digest,
                TAG["status"]: PUBLISHING,
                TAG["location"]: f"s3://{folder.bucket}/{folder.prefix}/",
            }
            run_id = self.tracking.start_run(experiment_id, run_name=f"v{number}", tags=run_tags)
            self._update_claim(claim, run_id=run_id)
        except BaseException:
            if hold:
                self._release(claim)
            raise
        return DatasetVersion(
            name, number, run_id, experiment_id, run_tags[TAG["location"]], digest, PUBLISHING, None, run_tags, claim
        )

    def upload(self, version: DatasetVersion, built: BuiltDataset) -> None:
        """Upload every data file and check what the store holds against the local size and SHA-256."""
        folder = version.folder
        for entry in built.files:
            self._still_claimed(version)  # a publisher that stalled past ABANDONED_AFTER_SECONDS stops here
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
        self._still_claimed(version)
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
        self._still_claimed(version)
        marker = json.dumps({"manifest_sha256": manifest_sha, "version": version.version}).encode()
        self.store.put_bytes(folder.bucket, folder.join(READY_MARKER), marker, "application/json")
        self.tracking.set_tags(
            run_id, {TAG["manifest"]: manifest_sha, TAG["rows"]: str(manifest["rows"]), TAG["status"]: READY}
        )
        self.tracking.finish_run(run_id)
        version.status, version.manifest_sha256 = READY, manifest_sha
        if version.claim is not None:
            try:  # a ready claim is never taken over (the ready MLflow run protects it as well)
                self._update_claim(version.claim, state=READY)
            except ObjectStoreError as exc:
                logger.warning(
                    "version %s:%d is ready but its claim was not marked so: %s", version.name, version.version, exc
                )
        return version

    def _still_claimed(self, version: DatasetVersion) -> None:
        """Refuse to go on once another publisher has taken this version over (it judged this one abandoned)."""
        claim = version.claim
        if claim is not None and not self._update_claim(claim, heartbeat_at=self.clock()):
            raise VersionClaimLost(
                f"{version.name}:{version.version} ({version.location}): another publisher took over this version's "
                "claim; nothing was marked ready"
            )

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
