"""How commands fail: one line on stderr and an exit code, without Prefect's tracebacks of errors they expect."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

import typer
from rich.markup import escape

from labelflow.cli.render import err_console
from labelflow.integrations.errors import SettingsError


def fail(kind: str, exc: Exception, code: int) -> typer.Exit:
    """Print `kind: message` on stderr; the Exit to raise with `code`."""
    # One line at any terminal width (no soft wrapping), and the error's own text is never read as markup.
    err_console.print(f"[bold red]{kind}[/bold red]: {escape(str(exc))}", soft_wrap=True)
    return typer.Exit(code)


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


def console_logs_without_tracebacks_of(*expected: type[BaseException]) -> None:
    """Prefect logs failed tasks and flows with tracebacks on stderr; expected errors keep only their message."""
    from prefect.logging.handlers import PrefectConsoleHandler

    for handler in logging.getLogger().handlers:
        if isinstance(handler, PrefectConsoleHandler) and not isinstance(handler.formatter, WithoutTracebacksOf):
            handler.setFormatter(WithoutTracebacksOf(handler.formatter, expected))


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
