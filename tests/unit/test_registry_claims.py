"""Dataset ownership and version claims on in-memory fakes of the object store and MLflow (no servers)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.registry import (
    ABANDONED_AFTER_SECONDS,
    CLAIM,
    PUBLISHING,
    READY,
    TAG,
    DatasetOwner,
    DatasetOwnershipError,
    DatasetPublisher,
    DatasetRegistry,
    DatasetVersion,
    VersionClaimLost,
    claim_is_abandoned,
    experiment_name,
    ownership_refusal,
)
from labelflow.tasks.spec import S3Location, SpecError
from tests.unit.fakes import FakeObjectStore, FakeTracking

BASE = S3Location(bucket="datasets", prefix="reviews")
OWNER = DatasetPublisher("owner-1a2b3c4d", "Owner project")
OTHER = DatasetPublisher("other-5e6f7a8b", "Other project")


@pytest.fixture
def registry() -> DatasetRegistry:
    return DatasetRegistry(FakeObjectStore(), FakeTracking())  # type: ignore[arg-type]


def claim_of(registry: DatasetRegistry, number: int) -> dict[str, Any]:
    return json.loads(registry.store.get_bytes(BASE.bucket, BASE.join(f"v{number}", CLAIM)))


def mark_ready(registry: DatasetRegistry, version: DatasetVersion) -> None:
    """What `finish` does to the run and the claim, without files."""
    registry.tracking.set_tags(version.run_id, {TAG["status"]: READY})
    assert version.claim is not None and registry._update_claim(version.claim, state=READY)
    version.status = READY


def owner_at(project: DatasetPublisher, shared: bool, location: str = "s3://datasets/reviews/") -> DatasetOwner:
    return DatasetOwner(project.project, project.project_name, shared, location)


# --- the ownership rule ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("owner_shares", "publisher_shares", "location", "allowed"),
    [
        (False, False, "s3://datasets/reviews/", False),
        (False, True, "s3://datasets/reviews/", False),
        (True, False, "s3://datasets/reviews/", False),
        (True, True, "s3://datasets/reviews/", True),
        (True, True, "s3://elsewhere/reviews/", False),
    ],
)
def test_another_project_publishes_only_when_both_specs_share_at_the_same_location(
    owner_shares: bool, publisher_shares: bool, location: str, allowed: bool
) -> None:
    publisher = DatasetPublisher(OTHER.project, OTHER.project_name, publisher_shares)
    refusal = ownership_refusal("reviews", owner_at(OWNER, owner_shares), publisher, location)
    assert (refusal is None) == allowed
    if refusal:
        assert "\n" not in refusal and "'Owner project'" in refusal and "'Other project'" in refusal


def test_the_owner_always_publishes_whatever_it_shares() -> None:
    assert ownership_refusal("reviews", owner_at(OWNER, False), OWNER, "s3://elsewhere/x/") is None


def test_an_ownership_refusal_is_a_spec_error_so_the_cli_prints_one_line_and_exits_2() -> None:
    assert issubclass(DatasetOwnershipError, SpecError)


def test_owner_round_trips_through_experiment_tags() -> None:
    owner = owner_at(OWNER, True)
    assert DatasetOwner.from_record(owner.tags()) == owner
    assert DatasetOwner.from_record({"labelflow.kind": "dataset"}) is None


# --- when a claim is abandoned -----------------------------------------------------------------------
def record(**changes: Any) -> dict[str, Any]:
    return {"token": "t", "host": "here", "pid": 4242, "heartbeat_at": 1000.0, "state": PUBLISHING} | changes


@pytest.mark.parametrize(
    ("claim", "now", "held", "alive", "abandoned"),
    [
        (record(), 1010.0, set(), True, False),  # another live process on this host
        (record(), 1010.0, set(), False, True),  # its process is gone
        (record(pid=99), 1010.0, set(), True, True),  # this very process (pid 99) holds no such claim
        (record(pid=99), 1010.0, {"t"}, True, False),  # ... unless one of its publishers holds it
        (record(host="there"), 1010.0, set(), False, False),  # another host: its pid means nothing here
        (record(host="there"), 1000.0 + ABANDONED_AFTER_SECONDS + 1, set(), True, True),  # no heartbeat for long
        (record(state=READY, pid=99), 10**9, set(), False, False),  # a finished version's claim, never
        ({"token": "x"}, 1010.0, set(), True, True),  # unreadable: no heartbeat at all
    ],
)
def test_claim_is_abandoned(claim: dict[str, Any], now: float, held: set[str], alive: bool, abandoned: bool) -> None:
    assert claim_is_abandoned(claim, now, "here", 99, held, lambda pid: alive) is abandoned


# --- allocation --------------------------------------------------------------------------------------
def test_concurrent_publishers_win_distinct_consecutive_numbers(registry: DatasetRegistry) -> None:
    count = 8
    barrier = threading.Barrier(count)
    numbers: list[int] = []
    conflicts: list[int] = []
    release = threading.Event()

    def publish() -> None:
        barrier.wait()
        with registry.publishing("reviews", "digest", BASE, {}, OWNER) as version:
            numbers.append(version.version)
            assert version.claim is not None
            conflicts.append(version.claim.conflicts)
            release.wait(10)  # hold every claim at once
            mark_ready(registry, version)

    threads = [threading.Thread(target=publish) for _ in range(count)]
    for thread in threads:
        thread.start()
    while len(numbers) < count and any(t.is_alive() for t in threads):
        threading.Event().wait(0.01)
    release.set()
    for thread in threads:
        thread.join()
    assert sorted(numbers) == list(range(1, count + 1))
    assert sorted(conflicts) == list(range(count))  # each lost the numbers its faster peers had won
    tokens = {claim_of(registry, n)["token"] for n in numbers}
    assert len(tokens) == count


def test_a_crashed_publication_in_this_process_is_taken_over_and_its_leftovers_removed(
    registry: DatasetRegistry,
) -> None:
    orphan = registry.begin("reviews", "digest", BASE, {}, OWNER)  # a bare begin: what a kill leaves behind
    registry.store.put_bytes(BASE.bucket, BASE.join("v1", "consensus.parquet"), b"half written")
    with registry.publishing("reviews", "digest", BASE, {}, OWNER) as version:
        assert version.version == 1 and version.claim is not None and version.claim.conflicts == 0
        assert registry.store.keys(BASE.bucket, "reviews/v1/") == ["reviews/v1/_CLAIM.json"]
        assert registry.tracking.runs[orphan.run_id].deleted
        mark_ready(registry, version)


def test_a_live_publisher_elsewhere_is_never_discarded_until_its_heartbeat_stops(registry: DatasetRegistry) -> None:
    registry.host = "this-host"
    registry.clock = lambda: 1000.0
    elsewhere = DatasetRegistry(registry.store, registry.tracking)
    elsewhere.host, elsewhere.clock = "other-host", (lambda: 1000.0)
    live = elsewhere.begin("reviews", "digest", BASE, {}, OWNER)
    registry.store.put_bytes(BASE.bucket, BASE.join("v1", "consensus.parquet"), b"being written")

    assert registry.discard_incomplete("reviews") == []
    with registry.publishing("reviews", "digest", BASE, {}, OWNER) as version:
        assert version.version == 2 and version.claim is not None and version.claim.conflicts == 1
        mark_ready(registry, version)
    assert "reviews/v1/consensus.parquet" in registry.store.keys(BASE.bucket, "reviews/v1/")
    assert not registry.tracking.runs[live.run_id].deleted

    registry.clock = lambda: 1000.0 + ABANDONED_AFTER_SECONDS + 1  # no heartbeat for five minutes: it died
    assert registry.discard_incomplete("reviews") == [1]
    assert registry.store.keys(BASE.bucket, "reviews/v1/") == [] and registry.tracking.runs[live.run_id].deleted


def test_a_dead_process_on_this_host_is_taken_over_at_once(registry: DatasetRegistry) -> None:
    registry.begin("reviews", "digest", BASE, {}, OWNER)
    registry.store.put_bytes(
        BASE.bucket, BASE.join("v1", CLAIM), json.dumps(claim_of(registry, 1) | {"pid": 1}).encode()
    )
    registry.pid_alive = lambda pid: pid != 1
    with registry.publishing("reviews", "digest", BASE, {}, OWNER) as version:
        assert version.version == 1
        mark_ready(registry, version)


def test_a_publisher_whose_claim_was_taken_over_marks_nothing_ready(registry: DatasetRegistry) -> None:
    lost = pytest.raises(VersionClaimLost, match="took over")
    with lost, registry.publishing("reviews", "digest", BASE, {}, OWNER) as version:
        claim = claim_of(registry, 1) | {"token": "someone else"}
        registry.store.put_bytes(BASE.bucket, BASE.join("v1", CLAIM), json.dumps(claim).encode())
        registry.finish(version, {"rows": 0, "files": []}, None, {}, {}, {})  # type: ignore[arg-type]
    assert registry.versions("reviews") == []
    assert claim_of(registry, 1)["token"] == "someone else"  # the new holder's claim and folder are untouched


def test_a_failed_publication_removes_its_own_version(registry: DatasetRegistry) -> None:
    with pytest.raises(ObjectStoreError), registry.publishing("reviews", "digest", BASE, {}, OWNER) as version:
        registry.store.put_bytes(BASE.bucket, BASE.join("v1", "consensus.parquet"), b"x")
        raise ObjectStoreError("upload failed", transient=True)
    assert registry.store.keys(BASE.bucket, "reviews/") == ["reviews/_OWNER.json"]
    assert registry.tracking.runs[version.run_id].deleted


def test_a_store_that_ignores_conditional_writes_is_refused() -> None:
    registry = DatasetRegistry(FakeObjectStore(honours_conditions=False), FakeTracking())  # type: ignore[arg-type]
    with pytest.raises(ObjectStoreError, match="ignores conditional writes"):
        registry.begin("reviews", "digest", BASE, {}, OWNER)
    assert registry.store.keys(BASE.bucket, "reviews/v") == []


# --- ownership ---------------------------------------------------------------------------------------
def test_the_first_publisher_owns_the_dataset_and_another_project_creates_nothing(registry: DatasetRegistry) -> None:
    with registry.publishing("reviews", "digest", BASE, {}, OWNER) as version:
        mark_ready(registry, version)
    tags = registry.tracking.experiment_tags(version.experiment_id)
    assert tags["labelflow.dataset.owner"] == OWNER.project and tags["labelflow.dataset.shared"] == "false"
    assert json.loads(registry.store.get_bytes(BASE.bucket, "reviews/_OWNER.json"))["labelflow.dataset.owner"] == (
        OWNER.project
    )
    before, runs = registry.store.keys(BASE.bucket), len(registry.tracking.runs)
    with pytest.raises(DatasetOwnershipError, match="belongs to project 'Owner project'"):
        registry.check_owner("reviews", OTHER, BASE)
    with pytest.raises(DatasetOwnershipError, match="'Other project'"):
        registry.begin("reviews", "digest", BASE, {}, OTHER)
    assert registry.store.keys(BASE.bucket) == before and len(registry.tracking.runs) == runs


def test_sharing_needs_both_specs_and_the_owner_records_its_choice(registry: DatasetRegistry) -> None:
    sharing_owner = DatasetPublisher(OWNER.project, OWNER.project_name, shared=True)
    sharing_other = DatasetPublisher(OTHER.project, OTHER.project_name, shared=True)
    registry.begin("reviews", "digest", BASE, {}, OWNER)
    with pytest.raises(DatasetOwnershipError, match="not set by 'Owner project'"):
        registry.check_owner("reviews", sharing_other, BASE)
    registry.check_owner("reviews", sharing_owner, BASE)  # the owner's next collection records `shared: true`
    registry.check_owner("reviews", sharing_other, BASE)
    with pytest.raises(DatasetOwnershipError, match=r"must publish to that dataset\.location"):
        registry.check_owner("reviews", sharing_other, S3Location(bucket="elsewhere", prefix="reviews"))
    assert registry.begin("reviews", "digest", BASE, {}, sharing_other).version >= 1


def test_a_dataset_registered_before_ownership_goes_to_its_first_publisher(registry: DatasetRegistry) -> None:
    registry.tracking.create_experiment_once(experiment_name("reviews"), {"labelflow.kind": "dataset"})
    registry.check_owner("reviews", OTHER, BASE)  # no owner yet: nothing to refuse
    registry.begin("reviews", "digest", BASE, {}, OWNER)
    experiment_id = registry.tracking.experiment_id(experiment_name("reviews"))
    assert registry.tracking.experiment_tags(experiment_id)["labelflow.dataset.owner"] == OWNER.project
    with pytest.raises(DatasetOwnershipError):
        registry.begin("reviews", "digest", BASE, {}, OTHER)


def test_versions_are_tagged_with_their_number_and_location(registry: DatasetRegistry) -> None:
    version = registry.begin("reviews", "digest", BASE, {}, OWNER)
    run = registry.tracking.runs[version.run_id]
    assert run.tags[TAG["version"]] == "1" and run.tags[TAG["location"]] == "s3://datasets/reviews/v1/"
    assert claim_of(registry, 1)["run_id"] == version.run_id
