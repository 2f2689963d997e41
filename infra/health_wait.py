"""Waiting for freshly started services: patient while they make progress, quick to report one that died or hangs."""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field


class HealthWaitError(RuntimeError):
    """A service died, stopped making progress, or hit the overall cap; `name` says which."""

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


@dataclass
class Watched:
    """How to judge one starting service, all as callables so the logic runs on fakes in tests."""

    name: str
    healthy: Callable[[], tuple[bool, str]]  # (passed, detail of the last probe)
    alive: Callable[[], bool]  # its process still runs
    progress: Callable[[], Hashable]  # changes while it works (log size, CPU time): a stall shows as no change
    started_at: float = 0.0


@dataclass
class WaitPolicy:
    """Stall limit (no progress for this long fails), overall cap, poll and report intervals, in seconds."""

    stall_seconds: float = 120.0
    max_seconds: float = 900.0
    poll_seconds: float = 0.5
    report_every_seconds: float = 15.0


@dataclass
class HealthWait:
    """Poll services until all are healthy; fail on death, on a stall, or at the cap, with progress lines between."""

    policy: WaitPolicy = field(default_factory=WaitPolicy)
    clock: Callable[[], float] = time.monotonic
    sleep: Callable[[float], None] = time.sleep
    echo: Callable[[str], None] = lambda _: None

    def wait(self, services: list[Watched]) -> dict[str, float]:
        """Seconds from each service's start until it answered healthy."""
        now = self.clock()
        pending = {s.name: s for s in services}
        last_progress = {s.name: (s.progress(), now) for s in services}
        details: dict[str, str] = {}
        ready: dict[str, float] = {}
        began, next_report = now, now + self.policy.report_every_seconds
        while pending:
            now = self.clock()
            for name, service in list(pending.items()):
                if not service.alive():
                    raise HealthWaitError(name, "the process exited during start-up")
                ok, details[name] = service.healthy()
                if ok:
                    ready[name] = self.clock() - service.started_at
                    del pending[name]
                    continue
                marker, since = last_progress[name]
                current = service.progress()
                if current != marker:
                    last_progress[name] = (current, now)
                elif now - since > self.policy.stall_seconds:
                    raise HealthWaitError(
                        name,
                        f"not healthy and no progress (log and CPU time unchanged) for "
                        f"{self.policy.stall_seconds:.0f} s ({details[name]})",
                    )
            if not pending:
                break
            if now - began > self.policy.max_seconds:
                name = next(iter(pending))
                raise HealthWaitError(name, f"not healthy after {self.policy.max_seconds:.0f} s ({details[name]})")
            if now >= next_report:
                waiting = ", ".join(
                    f"{name} {now - s.started_at:.0f} s"
                    + (" (working)" if now - last_progress[name][1] < self.policy.report_every_seconds else " (idle)")
                    for name, s in pending.items()
                )
                self.echo(f"waiting for {waiting} ...")
                next_report = now + self.policy.report_every_seconds
            self.sleep(self.policy.poll_seconds)
        return ready
