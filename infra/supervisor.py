"""Process supervision for the local stack: start a service detached, find it again by pid, wait for it, stop it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil

from labelflow.infra.credentials import write_private_json
from labelflow.infra.health_probe import get_health
from labelflow.infra.health_wait import HealthWait, HealthWaitError, WaitPolicy, Watched
from labelflow.infra.services import Service
from labelflow.infra.stack_config import StackConfig, StackError, log_tail

# 1: services start with umask 077; 2: Label Studio also saves exports and uploads 0600. A running service started
# with less is restarted by `up`: its umask and settings are fixed at start.
FILE_PRIVACY_VERSION = 2


class ServiceSupervisor:
    """Starts, watches and stops service processes; their state files (run/) and logs (logs/) live under the home."""

    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self._echo: Callable[[str], None] = lambda _: None

    # --- files -----------------------------------------------------------------------------------
    def _state_path(self, name: str) -> Path:
        return self.config.run_dir / f"{name}.json"

    def log_path(self, name: str) -> Path:
        """Log file of one service."""
        return self.config.logs_dir / f"{name}.log"

    def _read_state(self, name: str) -> dict[str, Any] | None:
        path = self._state_path(name)
        if not path.is_file():
            return None
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError:
            return None

    def _process(self, name: str) -> psutil.Process | None:
        """The live process this stack started for `name`, or None (never a recycled pid)."""
        state = self._read_state(name)
        if not state:
            return None
        try:
            proc = psutil.Process(int(state["pid"]))
            if abs(proc.create_time() - float(state["create_time"])) > 1.0:
                return None
            if proc.status() == psutil.STATUS_ZOMBIE:
                return None
            return proc
        except (psutil.NoSuchProcess, psutil.AccessDenied, KeyError, ValueError):
            return None

    # --- lifecycle -------------------------------------------------------------------------------
    def _state_extras(self, service: Service) -> dict[str, Any]:
        """More facts to record in a service's state file when it starts (none here; see LocalStack)."""
        return {}

    def _start(self, service: Service) -> None:
        self.config.logs_dir.mkdir(parents=True, exist_ok=True)
        self.config.run_dir.mkdir(parents=True, exist_ok=True)
        executable = service.command[0]
        if not (Path(executable).exists() or shutil.which(executable)):
            raise StackError(f"{service.name}: `{executable}` is not installed; run `uv sync` first")
        log = self.log_path(service.name)
        fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as out:
            out.write(f"\n=== labelflow: starting {service.name} at {time.strftime('%Y-%m-%dT%H:%M:%S')}\n".encode())
            out.flush()
            proc = subprocess.Popen(
                service.command,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=service.env,
                cwd=self.config.home,
                start_new_session=True,
                # Everything a service writes (Label Studio's database with its stored S3 key and tokens,
                # SeaweedFS's volumes, MLflow's and Prefect's databases) is readable by its owner only.
                umask=0o077,
                **_run_as(service.run_as),
            )
        state = {
            "pid": proc.pid,
            "create_time": psutil.Process(proc.pid).create_time(),
            "command": service.command,
            "ports": service.ports,
            "url": service.url,
            "file_privacy": FILE_PRIVACY_VERSION,  # how its files were made private (see LocalStack._up)
        }
        state.update(self._state_extras(service))
        write_private_json(self._state_path(service.name), state)

    def _probe(self, service: Service, timeout: float = 3.0) -> tuple[bool, str]:
        """(healthy, detail) of one service: its own check, else a GET of its health URL judged by `healthy_when`."""
        if service.probe is not None:
            return service.probe()
        try:
            answer = get_health(service.health_url, timeout)
        except OSError as exc:  # refused, timed out, reset, not HTTP
            return False, f"{type(exc).__name__}: {exc}"
        if service.healthy_when(answer):
            return True, "healthy"
        return False, f"health check answered HTTP {answer.status_code}"

    def _progress(self, name: str) -> tuple[int, int]:
        """Log size and whole CPU seconds of the service's process tree: either moves while it works."""
        log = self.log_path(name)
        size = log.stat().st_size if log.is_file() else 0
        proc = self._process(name)
        cpu = 0.0
        if proc is not None:
            with contextlib.suppress(psutil.Error):
                for member in [proc, *proc.children(recursive=True)]:
                    with contextlib.suppress(psutil.Error):
                        times = member.cpu_times()
                        cpu += times.user + times.system
        return size, int(cpu)

    def _wait_healthy(self, services: list[Service], started: dict[str, float]) -> dict[str, float]:
        """Wait while each service starts and makes progress; fail naming one that died, stalled or hit the cap."""
        watched = [
            Watched(
                name=service.name,
                healthy=lambda service=service: self._probe(service, timeout=2.0),
                alive=lambda name=service.name: self._process(name) is not None,
                progress=lambda name=service.name: self._progress(name),
                started_at=started[service.name],
            )
            for service in services
        ]
        policy = WaitPolicy(stall_seconds=self.config.start_stall_seconds, max_seconds=self.config.start_max_seconds)
        # time.monotonic and time.sleep are looked up now, so a test can substitute a fake clock.
        wait = HealthWait(policy=policy, clock=time.monotonic, sleep=time.sleep, echo=self._echo)
        try:
            return wait.wait(watched)
        except HealthWaitError as exc:
            log = self.log_path(exc.name)
            raise StackError(f"{exc}; see {log}\n{log_tail(log)}") from None

    def running(self, name: str) -> bool:
        """Whether this stack's process for `name` is alive."""
        return self._process(name) is not None

    def stop(self, name: str) -> str:
        """Stop one service this stack started (e.g. the worker); the others keep running."""
        proc = self._process(name)
        if proc is not None:
            _stop_process_tree(proc)
        self._state_path(name).unlink(missing_ok=True)
        return "not running" if proc is None else "stopped"


def _run_as(user: str | None) -> dict[str, Any]:
    """Popen arguments that start a process as `user` (root only), with that user's group."""
    if user is None:
        return {}
    import pwd

    account = pwd.getpwnam(user)
    return {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}


def _stop_process_tree(proc: psutil.Process, timeout: float = 15.0) -> None:
    """SIGTERM the service's process group and children, then SIGKILL what is left."""
    try:
        children = proc.children(recursive=True)
    except psutil.NoSuchProcess:
        return
    family = [proc, *children]
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except (ProcessLookupError, PermissionError):
        for member in family:
            with contextlib.suppress(psutil.NoSuchProcess):
                member.terminate()
    _, alive = psutil.wait_procs(family, timeout=timeout)
    for member in alive:
        with contextlib.suppress(psutil.NoSuchProcess):
            member.kill()
    psutil.wait_procs(alive, timeout=5)
