"""How flows run the plain steps of tasks/: each as a Prefect task run, under labelflow's one retry policy."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from typing import Any, ParamSpec, Protocol, TypeVar

from prefect import Task, get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote

from labelflow.integrations.errors import AdapterError

P = ParamSpec("P")
R = TypeVar("R")

# The one retry policy. An adapter error marked transient (an outage, a timeout, a 5xx or 429 of Label Studio,
# MLflow or the object store) fails the step's attempt and is retried twice, after 2 s and then 10 s; any other
# error (a 4xx, a bad spec, a failed validation, a bug) fails the step at once.
RETRIES = 2
RETRY_DELAY_SECONDS = [2, 10]


def retry_if_transient(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry what an adapter marks transient (outages, timeouts, 5xx), fail fast on the rest."""
    try:
        state.result()
    except AdapterError as exc:
        return exc.transient
    except Exception:
        return False
    return False


# `step(fn)` is the Prefect task of a plain step under the policy. No result cache: every step reads or writes an
# external system, so a cached result would skip work that must be done.
step = functools.partial(
    task,
    cache_policy=NO_CACHE,
    retries=RETRIES,
    retry_delay_seconds=RETRY_DELAY_SECONDS,
    retry_condition_fn=retry_if_transient,
)


@functools.cache
def as_task(fn: Callable[P, R], retried: bool = True) -> Task[P, R]:
    """The one Prefect task of a plain step (`retried=False`: a step that must not be repeated as a whole)."""
    return step(fn) if retried else step(fn, retries=0)


class StepRunner(Protocol):
    """How a stage runs its steps and reports on them: Prefect task runs in a flow, plain calls in unit tests."""

    @property
    def log(self) -> logging.Logger | logging.LoggerAdapter[Any]:
        """Where the stage logs its progress."""
        ...

    def __call__(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one step under the retry policy."""
        ...

    def once(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one step that must not be repeated as a whole (it retries its own requests idempotently)."""
        ...

    def on_dask(self, address: str, fn: Callable[..., R], /, **kwargs: Any) -> R:
        """Run one CPU-heavy step on the Dask cluster at `address`."""
        ...

    def artifact(self, key: str, markdown: str, description: str) -> None:
        """Publish a Markdown report of the run."""
        ...


class PrefectSteps:
    """Each step a Prefect task run of the current flow run, retried by the policy.

    Arguments are quoted: Prefect otherwise walks every argument of every task call, and walking the ledger index
    made each call cost time proportional to the project's whole history (10 s per call at 100k objects).
    """

    @property
    def log(self) -> logging.Logger | logging.LoggerAdapter[Any]:
        """The flow run's logger (its lines reach the Prefect UI)."""
        return get_run_logger()

    def __call__(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one step as a task run under the retry policy."""
        return as_task(fn)(*[quote(a) for a in args], **{k: quote(v) for k, v in kwargs.items()})

    def once(self, fn: Callable[P, R], /, *args: P.args, **kwargs: P.kwargs) -> R:
        """Run one step as a task run that Prefect never retries."""
        return as_task(fn, retried=False)(*[quote(a) for a in args], **{k: quote(v) for k, v in kwargs.items()})

    def on_dask(self, address: str, fn: Callable[..., R], /, **kwargs: Any) -> R:
        """Run one step as a task run on a Dask cluster (its arguments travel to a remote worker)."""
        from prefect_dask import DaskTaskRunner

        # Unquoted: Dask serializes Prefect's `quote` wrapper as a bare tuple; tables are not walked anyway.
        with DaskTaskRunner(address=address) as runner:
            return runner.submit(as_task(fn), parameters=kwargs).result()

    def artifact(self, key: str, markdown: str, description: str) -> None:
        """A Markdown artifact of the flow run (the key in Prefect's allowed form: lower case, at most 100)."""
        create_markdown_artifact(key=key[:100].lower(), markdown=markdown, description=description)
