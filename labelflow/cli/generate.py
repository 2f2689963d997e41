"""`labelflow generate`: candidate responses to prompt records, written into the spec's source for the next ingest."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from labelflow.cli.errors import console_logs_without_tracebacks_of, json_stdout, reported_failures
from labelflow.cli.render import console
from labelflow.runtime import prefect_connection


def generate(
    spec: Annotated[Path, typer.Argument(help="Labeling project spec (YAML) with a `generate:` section")],
    limit: Annotated[int | None, typer.Option(help="Generate for at most this many new prompts in this run")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the run summary as JSON")] = False,
) -> None:
    """Ask an OpenAI-compatible endpoint for K candidates per new prompt; write them as records into the source."""
    from labelflow.integrations.object_store import ObjectStoreError
    from labelflow.integrations.openai_compatible import MalformedAnswerError, OpenAICompatibleError
    from labelflow.tasks.generate import GenerateError, check_generate
    from labelflow.tasks.spec import SpecError, load_spec

    # A spec that cannot generate (a GenerateError is a SpecError) or an endpoint answering garbage is bad input
    # (exit 2), reported before anything is written; an outage or a refused request after the retries, exit 1.
    with (
        json_stdout(as_json) as print_json,
        reported_failures("generate", OpenAICompatibleError, ObjectStoreError, bad_input=(MalformedAnswerError,)),
    ):
        check_generate(load_spec(spec))  # before any server is contacted
        with prefect_connection():
            from labelflow.flows.generate import generate as generate_flow

            console_logs_without_tracebacks_of(SpecError, GenerateError, OpenAICompatibleError, ObjectStoreError)
            summary = generate_flow(str(spec.resolve()), limit=limit)
        if as_json:
            print_json(summary)
            return
    _render(summary)


def _render(summary: dict[str, Any]) -> None:
    """What the run did, in a few lines."""
    console.print(
        f"[bold]{summary['project']}[/bold]: {summary['prompts_generated']} prompts x {summary['k']} candidates "
        f"from {summary['model']} ({summary['candidates']} responses, {summary['records_written']} records)"
    )
    console.print(
        f"prompt files {summary['prompt_files']} ({summary['prompt_files_unchanged']} unchanged), prompts read "
        f"{summary['prompts_read']}, already generated {summary['already_generated']}"
    )
    if summary["quarantined"]:
        console.print("prompt records left out: " + ", ".join(f"{k} {v}" for k, v in summary["quarantined"].items()))
    for uri in summary["files_written"]:
        console.print(f"wrote {uri}")
    if summary["limited"]:
        console.print("stopped at --limit: run again for the rest")
    console.print(f"next: labelflow ingest SPEC turns the records under {summary['output']} into tasks")
