"""The adaptive health wait, on a fake clock with fake probes: patient while a service works, quick when it cannot."""

from __future__ import annotations

import pytest

from labelflow.infra.health_wait import HealthWait, HealthWaitError, WaitPolicy, Watched


class FakeClock:
    """Time that only moves when the wait sleeps."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds


def _wait(clock: FakeClock, lines: list[str], stall: float = 60.0, cap: float = 900.0) -> HealthWait:
    policy = WaitPolicy(stall_seconds=stall, max_seconds=cap, poll_seconds=1.0, report_every_seconds=15.0)
    return HealthWait(policy=policy, clock=clock, sleep=clock.sleep, echo=lines.append)


def test_a_slow_service_that_keeps_working_is_waited_for_past_180_s() -> None:
    # Label Studio's first start on a busy 2-core machine: migrations write to its log for minutes.
    clock, lines = FakeClock(), []
    service = Watched(
        name="label-studio",
        healthy=lambda: (clock.now >= 400, "ConnectError"),
        alive=lambda: True,
        progress=lambda: int(clock.now // 10),  # a log line every 10 s
    )
    ready = _wait(clock, lines).wait([service])
    assert ready["label-studio"] == pytest.approx(400, abs=1)
    assert any("label-studio" in line and "(working)" in line for line in lines), lines
    assert 20 <= len(lines) <= 30, "one progress line about every 15 s"


def test_a_dead_process_fails_at_once() -> None:
    clock, lines = FakeClock(), []
    service = Watched(
        name="mlflow", healthy=lambda: (False, "refused"), alive=lambda: clock.now < 3, progress=lambda: 0
    )
    with pytest.raises(HealthWaitError, match="mlflow: the process exited during start-up"):
        _wait(clock, lines).wait([service])
    assert clock.now <= 4


def test_a_hung_process_fails_after_the_stall_limit() -> None:
    clock, lines = FakeClock(), []
    service = Watched(name="prefect", healthy=lambda: (False, "ReadTimeout"), alive=lambda: True, progress=lambda: 7)
    with pytest.raises(HealthWaitError, match=r"prefect: not healthy and no progress .* for 60 s \(ReadTimeout\)"):
        _wait(clock, lines, stall=60).wait([service])
    assert 60 <= clock.now <= 62
    assert any("(idle)" in line for line in lines)


def test_the_overall_cap_stops_an_endless_start() -> None:
    clock, lines = FakeClock(), []
    service = Watched(name="s3", healthy=lambda: (False, "503"), alive=lambda: True, progress=lambda: clock.now)
    with pytest.raises(HealthWaitError, match=r"s3: not healthy after 300 s \(503\)"):
        _wait(clock, lines, cap=300).wait([service])


def test_services_become_ready_independently() -> None:
    clock, lines = FakeClock(), []
    fast = Watched(name="listener", healthy=lambda: (clock.now >= 2, ""), alive=lambda: True, progress=lambda: 0)
    slow = Watched(name="mlflow", healthy=lambda: (clock.now >= 30, ""), alive=lambda: True, progress=lambda: clock.now)
    ready = _wait(clock, lines).wait([fast, slow])
    assert ready == {"listener": 2.0, "mlflow": 30.0}
