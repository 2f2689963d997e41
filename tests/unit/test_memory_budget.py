"""The ingest download pool's shared memory budget: bounded as a whole, first come first served, never deadlocked."""

from __future__ import annotations

import io
import threading
import time
from typing import Any

import pytest
from PIL import Image

from labelflow.integrations.object_store import StoredObject
from labelflow.tasks.cleaning import Reason
from labelflow.tasks.ingest import clean_objects
from labelflow.tasks.ledger import LedgerIndex
from labelflow.tasks.memory_budget import MemoryBudget
from labelflow.tasks.spec import parse_spec

IMAGE_SPEC = {"name": "p", "source": "s3://raw/x/", "task": "image-classification", "labels": ["a", "b"]}


def test_reservations_are_counted_and_released() -> None:
    budget = MemoryBudget(100)
    with budget.reserve(60):
        assert budget.in_use == 60
        assert not budget.try_reserve(41)
        assert budget.try_reserve(40)
        assert budget.in_use == 100
        budget.release(40)
    assert budget.in_use == 0 and budget.peak == 100


def test_a_request_larger_than_the_whole_budget_is_refused_not_waited_for() -> None:
    budget = MemoryBudget(100)
    with pytest.raises(ValueError, match="more than the whole budget"):
        budget.acquire(101)
    assert not budget.try_reserve(101)


def test_threads_never_exceed_the_budget_together() -> None:
    budget = MemoryBudget(1000)
    sizes = [(i * 37) % 600 + 1 for i in range(200)]
    lock = threading.Lock()
    held = [0, 0]  # now, most at once

    def work(size: int) -> None:
        with budget.reserve(size):
            with lock:
                held[0] += size
                held[1] = max(held[1], held[0])
            time.sleep(0.001)
            with lock:
                held[0] -= size

    threads = [threading.Thread(target=work, args=(size,)) for size in sizes]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(thread.is_alive() for thread in threads), "deadlock"
    assert 0 < held[1] <= 1000 and budget.peak <= 1000 and budget.in_use == 0


def test_a_large_request_is_not_starved_by_small_ones() -> None:
    budget = MemoryBudget(100)
    budget.acquire(10)
    large_got_in = threading.Event()

    def large() -> None:
        with budget.reserve(100):
            large_got_in.set()

    waiter = threading.Thread(target=large)
    waiter.start()
    time.sleep(0.05)
    small_got_in = threading.Event()

    def small() -> None:
        with budget.reserve(10):
            small_got_in.set()

    latecomer = threading.Thread(target=small)
    latecomer.start()
    time.sleep(0.05)
    assert not small_got_in.is_set(), "a newcomer waits behind the large request that came first"
    budget.release(10)
    waiter.join(timeout=5)
    latecomer.join(timeout=5)
    assert large_got_in.is_set() and small_got_in.is_set()


# --- clean_objects uses one budget for the whole pool ------------------------------------------------------------
def rgb_png(size: tuple[int, int], shade: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (shade, 0, 0)).save(buffer, "PNG")
    return buffer.getvalue()


class FakeStore:
    """Serves objects from memory and records how many bytes were being read and decoded at once."""

    def __init__(self, objects: dict[str, bytes]) -> None:
        self.objects = objects
        self.reads = 0

    def get_bytes(self, bucket: str, key: str, max_bytes: int | None = None) -> bytes:
        self.reads += 1
        time.sleep(0.002)
        data = self.objects[key]
        return data[:max_bytes] if max_bytes else data


def run_clean(
    spec_overrides: dict[str, Any], objects: dict[str, bytes], budget: MemoryBudget | None = None
) -> tuple[list[Any], list[Any], FakeStore]:
    spec = parse_spec({**IMAGE_SPEC, "ingest": spec_overrides})
    store = FakeStore(objects)
    listed = [StoredObject("raw", key, len(data), f"etag-{key}") for key, data in objects.items()]
    cleaned = clean_objects(store, spec, listed, LedgerIndex(), budget=budget)
    return cleaned.accepted, cleaned.rejected, store


def test_downloads_and_decodes_share_one_budget() -> None:
    objects = {f"x/{i}.png": rgb_png((400, 300), i) for i in range(24)}  # each decodes to 480,000 bytes
    budget = MemoryBudget(1_200_000)  # room for two decodes at a time, whatever the number of workers
    accepted, rejected, _ = run_clean({"download_workers": 16}, objects, budget)
    assert len(accepted) == 24 and not rejected
    assert 480_000 < budget.peak <= 1_200_000
    assert budget.in_use == 0


def test_an_object_needing_more_than_the_whole_budget_is_too_large_not_a_deadlock() -> None:
    objects = {"x/big.png": rgb_png((1000, 1000), 1), "x/small.png": rgb_png((10, 10), 2)}
    accepted, rejected, _ = run_clean({"memory_budget_bytes": 1_000_000}, objects)  # the spec's budget
    assert [c.obj.key for c in accepted] == ["x/small.png"]
    assert [(r.key, r.reason) for r in rejected] == [("x/big.png", Reason.TOO_LARGE)]
    assert "1000x1000" in rejected[0].detail and "ingest.memory_budget_bytes" in rejected[0].detail


def test_waiting_for_room_never_deadlocks_when_every_worker_holds_a_download() -> None:
    # every worker downloads first and then needs most of the budget to decode: holding the download while
    # waiting for the rest would deadlock; the workers must wait holding nothing
    objects = {f"x/{i}.png": rgb_png((700, 300), i) for i in range(12)}  # 840,000 bytes decoded each
    budget = MemoryBudget(1_000_000)
    accepted, rejected, _ = run_clean({"download_workers": 8}, objects, budget)
    assert len(accepted) == 12 and not rejected
    assert budget.peak <= 1_000_000 and budget.in_use == 0
