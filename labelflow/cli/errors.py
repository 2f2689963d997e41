"""How commands fail: one line on stderr and an exit code, without Prefect's tracebacks of errors they expect."""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import typer
from rich.markup import escape

from labelflow.cli.render import err_console
from labelflow.integrations.errors import SettingsError


@dataclass
class Failure:
    """What a command reported when it failed: the kind of failure, its message and the exit code."""

    kind: str
    message: str
    exit_code: int


# The failure `fail` reported last, for `--json` output (a CLI process runs one command).
last_failure: Failure | None = None


def fail(kind: str, exc: Exception, code: int) -> typer.Exit:
    """Print `kind: message` on stderr; the Exit to raise with `code`."""
    global last_failure
    last_failure = Failure(kind, str(exc), code)
    # One line at any terminal width (no soft wrapping), and the error's own text is never read as markup.
    err_console.print(f"[bold red]{kind}[/bold red]: {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code)


class JsonDocument:
    """The one JSON document a `--json` command prints on stdout."""

    def __init__(self) -> None:
        self.payload: Any = None
        self.set = False

    def __call__(self, payload: Any) -> None:
        """The command's result, printed when the command ends."""
        self.payload, self.set = payload, True


@contextmanager
def json_stdout(enabled: bool) -> Iterator[JsonDocument]:
    """With `--json`: stdout carries exactly one JSON document, the result or the failure; all else goes to stderr.

    Everything written to stdout while the command runs (MLflow's run links, a library's print, a subprocess) is
    sent to stderr at the file-descriptor level; on failure the document is `{"error": {kind, message, exit_code}}`.
    """
    document = JsonDocument()
    if not enabled:
        yield document
        return
    global last_failure
    last_failure = None
    sys.stdout.flush()
    saved_stdout = os.dup(1)
    os.dup2(2, 1)
    exit_code = 0
    try:
        yield document
    except typer.Exit as exc:
        exit_code = exc.exit_code
        raise
    except BaseException as exc:
        exit_code = exc.code if isinstance(exc, SystemExit) and isinstance(exc.code, int) else 1
        if not isinstance(exc, SystemExit | KeyboardInterrupt):
            last_failure = Failure("error", f"{type(exc).__name__}: {exc}", 1)
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved_stdout, 1)
        os.close(saved_stdout)
        if not document.set:
            failure = last_failure or Failure("error", "the command failed", exit_code or 1)
            document(failure_document(failure, exit_code))
        typer.echo(json.dumps(document.payload, indent=2, ensure_ascii=False, default=str))


def failure_document(failure: Failure, exit_code: int) -> dict[str, Any]:
    """What `--json` prints on stdout when the command failed."""
    return {"error": {"kind": failure.kind, "message": failure.message, "exit_code": exit_code or failure.exit_code}}


class WithoutTracebacksOf(logging.Formatter):
    """Prefect's console format, minus the traceback of errors the CLI reports itself in one line."""

    def __init__(self, inner: logging.Formatter | None, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.inner = inner or logging.Formatter()
        self.expected = expected

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info and isinstance(record.exc_info[1], self.expected)):
            return self.inner.format(record)
        exc_info, exc_text = record.exc_info, record.exc_text
        record.exc_info, record.exc_text = None, None
        try:
            return self.inner.format(record)
        finally:  # other handlers (the Prefect API's run logs) still get the traceback
            record.exc_info, record.exc_text = exc_info, exc_text


class CommandLineConsole(logging.Filter):
    """What a command's terminal shows of the flow's logs: the flow run's lines, warnings, and no expected failure.

    The command prints an expected failure itself, once; Prefect would repeat it in the task's and the flow's error
    records and in their final states. Task runs' progress and other libraries' info stay in the Prefect UI.
    """

    def __init__(self, expected: tuple[type[BaseException], ...]) -> None:
        super().__init__()
        self.expected = expected

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], self.expected):
            return "Retry " in record.getMessage()  # a retry is news; the final failure the command prints itself
        if record.levelno >= logging.WARNING:
            return not self.repeats_an_expected_failure(record)
        if record.name == "prefect.flow_runs" or record.name.startswith("labelflow"):
            return not self.repeats_an_expected_failure(record)
        return False

    def repeats_an_expected_failure(self, record: logging.LogRecord) -> bool:
        """A run's final state or error line that quotes an expected error (`Failed('... CollectError: ...')`)."""
        message = record.getMessage()
        if "Failed(" not in message and "exception" not in message:
            return False
        return any(f"{kind.__name__}:" in message or f"{kind.__name__}(" in message for kind in self.expected)


def console_logs_without_tracebacks_of(*expected: type[BaseException]) -> None:
    """Prefect logs failed tasks and flows with tracebacks on stderr; expected errors are left to the command."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, WithoutTracebacksOf):
            handler.setFormatter(WithoutTracebacksOf(handler.formatter, expected))
            handler.addFilter(CommandLineConsole(expected))


@contextmanager
def reported_failures(
    stage: str, *failures: type[Exception], bad_input: tuple[type[Exception], ...] = ()
) -> Iterator[None]:
    """Expected errors as one line and an exit code: 2 for a bad spec, configuration or input, 1 for a failed run."""
    from labelflow.tasks.spec import SpecError

    try:
        yield
    except SpecError as exc:
        raise fail("spec", exc, 2) from None
    except SettingsError as exc:
        raise fail("configuration", exc, 2) from None
    except bad_input as exc:
        raise fail(stage, exc, 2) from None
    except failures as exc:
        raise fail(f"{stage} failed", exc, 1) from None
