"""Generate flow: prompt records -> K candidate responses each from an OpenAI-compatible endpoint -> record files in
the spec's source, which the next ingest turns into tasks. Incremental and idempotent (tasks/generate.py)."""

from __future__ import annotations

from typing import Any

from prefect import flow

from labelflow.flows.locks import stage_lock
from labelflow.flows.steps import PrefectSteps, StepRunner
from labelflow.integrations.openai_compatible import OpenAICompatibleClient
from labelflow.integrations.resources import Resources
from labelflow.tasks.generate import (
    check_generate,
    generate_candidates,
    mark_prompt_files,
    output_location,
    plan_prompts,
    summary_markdown,
    write_generated,
)
from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.prelabel import chat_client
from labelflow.tasks.spec import ProjectSpec, load_spec

GENERATE_TIMEOUT_SECONDS = 12 * 3600  # K requests per prompt to a model: far slower than ingest


@flow(
    name="labelflow-generate",
    # No flow retries: the steps retry transient errors, and a re-run skips the prompts already done.
    timeout_seconds=GENERATE_TIMEOUT_SECONDS,
    persist_result=True,
)
def generate(spec_path: str, limit: int | None = None) -> dict[str, Any]:
    """Generate candidates for the new prompts of a spec's `generate:` section; returns the run summary."""
    spec = load_spec(spec_path)
    with stage_lock("generate", spec):
        return generate_spec(spec, limit=limit)


def generate_spec(
    spec: ProjectSpec,
    limit: int | None = None,
    store: ObjectStorePort | None = None,
    client: OpenAICompatibleClient | None = None,
    steps: StepRunner | None = None,
) -> dict[str, Any]:
    """The generate stage for a loaded spec: plan, then per batch generate and write, then mark the prompt files."""
    settings = check_generate(spec)  # before anything is read or written
    steps = steps or PrefectSteps()
    store = store or Resources.from_settings().store
    plan = steps(plan_prompts, store, spec, limit)
    written = []
    if plan.pending:
        own_client = client is None
        client = client or chat_client(
            "generate",
            settings.endpoint or "",
            settings.model,
            settings.api_key_env,
            settings.timeout_seconds,
            settings.max_retries,
        )
        try:
            for batch in plan.batches(settings.batch_prompts):
                # A retried generation asks for the same seeds; a retried write overwrites its own file.
                generated = steps(generate_candidates, client, spec, batch)
                written.append(steps(write_generated, store, spec, generated))
                steps.log.info("generated %d of %d prompts", sum(w.prompts for w in written), len(plan.pending))
        finally:
            if own_client:
                client.close()
    steps(mark_prompt_files, store, spec, plan.files)
    summary = {
        "project": spec.name,
        "model": settings.model,
        "k": settings.candidates,
        "output": str(output_location(spec)),
        "prompt_files": plan.files_listed,
        "prompt_files_unchanged": plan.files_unchanged,
        "prompts_read": plan.prompts_read,
        "already_generated": plan.already_generated,
        "prompts_generated": sum(batch.prompts for batch in written),
        "candidates": sum(batch.candidates for batch in written),
        "records_written": sum(batch.records for batch in written),
        "files_written": [batch.uri for batch in written],
        "quarantined": dict(plan.quarantined),
        "limited": plan.limited,
    }
    steps.artifact(f"generate-{spec.slug}", summary_markdown(summary), f"labelflow generate summary for {spec.name}")
    return summary
