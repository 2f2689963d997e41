"""Ingest flow: raw objects in S3 -> cleaned -> Label Studio tasks, incrementally and idempotently."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from labelflow.flows.locks import stage_lock
from labelflow.flows.steps import PrefectSteps, StepRunner
from labelflow.integrations.object_store import ObjectStoreError
from labelflow.integrations.resources import Resources
from labelflow.tasks.ingest import (
    IngestStats,
    check_sources,
    clean_objects,
    ensure_project,
    ensure_storage_connections,
    import_and_record,
    iter_new_objects,
    load_ledger,
    new_object_tasks,
    prelabel_objects,
    recover_interrupted_batches,
    resolve_named_keys,
    summary_markdown,
    write_run_report,
)
from labelflow.tasks.ingest_records import check_record_fields, ingest_record_file
from labelflow.tasks.ingest_shortcut import ingest_fingerprint, save_last_run
from labelflow.tasks.ledger import IngestLedger
from labelflow.tasks.links import open_hint
from labelflow.tasks.ports import ClientsPort
from labelflow.tasks.prelabel import build_predictor, object_reader
from labelflow.tasks.spec import ProjectSpec, load_spec

INGEST_TIMEOUT_SECONDS = 6 * 3600  # 100k+ objects fit comfortably; a hung run is failed, not left running


@flow(
    name="labelflow-ingest",
    # No flow retries: the steps retry transient errors themselves, and the stage is idempotent, so the next
    # scheduled or event-triggered run picks up whatever a failed run left.
    timeout_seconds=INGEST_TIMEOUT_SECONDS,
    persist_result=True,
)
def ingest(spec_path: str, limit: int | None = None, keys: list[str] | None = None) -> dict[str, Any]:
    """Ingest the new objects of a spec's sources into its Label Studio project; returns the run summary.

    `keys` (object URIs `s3://bucket/key`, or keys; the event listener passes those its events name) limits the run
    to those objects, looked up one HEAD each instead of listing the sources. Without it, the sources are listed.
    """
    spec = load_spec(spec_path)
    with stage_lock("ingest", spec):
        return ingest_spec(spec, limit=limit, keys=keys, spec_path=spec_path)


def ingest_spec(
    spec: ProjectSpec,
    limit: int | None = None,
    clients: ClientsPort | None = None,
    steps: StepRunner | None = None,
    keys: list[str] | None = None,
    spec_path: str | None = None,
) -> dict[str, Any]:
    """The ingest stage for a loaded spec: its steps in order, their results added up into the run summary.

    Given `keys`, only the named objects are looked up (no listing): the runs object-store events trigger.
    """
    steps = steps or PrefectSteps()
    clients = clients or Resources.from_settings()
    store, ls = clients.store, clients.label_studio_client
    stats = IngestStats()
    steps(check_sources, store, spec)
    named = resolve_named_keys(spec, keys) if keys is not None else None
    if named is not None:
        stats.named_keys, stats.keys_outside_sources = len(keys or []), named.outside_sources
    if spec.records is not None:
        # Before the project exists: a `records.fields` mapping that fits no record is refused, creating nothing.
        steps(check_record_fields, store, spec, files=named.objects if named is not None else None)
    # Before the project exists: a missing or unfit model (mlflow predictor) is refused, creating nothing.
    # The tracking client only for it: building one imports MLflow, which takes seconds.
    uses_model = spec.prelabel is not None and spec.prelabel.predictor == "mlflow"
    predictor = build_predictor(spec, clients.tracking if uses_model else None, object_reader(store))
    project_id = steps(ensure_project, ls, store, spec)
    if spec.task_type.stored_media:
        # The read-only identity is resolved first: without one, nothing is connected (never the admin key).
        steps(ensure_storage_connections, ls, store, spec, project_id, clients.reader_settings)
    # Taken before listing: the record of a complete run names the inputs it ran with (the CLI's shortcut).
    reader_key = clients.reader_settings.access_key if spec.task_type.stored_media else None
    fingerprint = ingest_fingerprint(spec, ls.settings.base_url, reader_key) if named is None else None
    ledger = IngestLedger(store, spec.state_location)
    with stats.timed("ledger"):
        index = steps(load_ledger, ledger)
        recovered = steps(recover_interrupted_batches, ls, ledger, index, project_id)
    index.add_rows(recovered)
    stats.recovered = len(recovered)
    for listed in iter_new_objects(store, spec, index, limit=limit, keys=keys):
        stats.add_listing(listed)
        if not listed.objects:
            continue
        if spec.records is not None:
            for obj in listed.objects:
                # Once: its chunks' imports retry inside; the next run resumes a failed file record by record.
                result = steps.once(ingest_record_file, store, ls, ledger, spec, project_id, obj, index, predictor)
                stats.add_record_file(result)
                steps.log.info(
                    "%s: %d records, %d tasks created, %d unchanged, %d quarantined",
                    obj.uri, result.records, result.tasks_created, result.unchanged, sum(result.quarantined.values()),
                )  # fmt: skip
            continue
        cleaned = steps(clean_objects, store, spec, listed.objects, index)
        stats.add_cleaning(cleaned)
        predictions = None
        if predictor and cleaned.accepted:
            prelabels = steps(prelabel_objects, predictor, spec, cleaned.accepted)
            stats.add_prelabels(prelabels)
            predictions = prelabels.predictions
        # Once: its batches retry inside, and a repeat of the whole chunk would import them a second time.
        imported = steps.once(
            import_and_record,
            ls,
            ledger,
            spec,
            project_id,
            new_object_tasks(spec, cleaned.accepted),
            cleaned.rejected,
            predictions,
        )
        stats.add_import(imported)
        # Before the next chunk is cleaned: its duplicates of this chunk's content are found through the index.
        index.add_rows([*imported.ingested, *imported.rejected])
        steps.log.info(
            "chunk done: %d tasks created, %d quarantined so far", stats.tasks_created, sum(stats.quarantined.values())
        )
    if named is not None:
        for note, uris in (("gone before the run", stats.missing_keys), ("outside the sources", named.outside_sources)):
            if uris:
                shown = ", ".join(uris[:10]) + (f" and {len(uris) - 10} more" if len(uris) > 10 else "")
                steps.log.info("%d named keys skipped, %s: %s", len(uris), note, shown)
    summary = {
        "project": spec.name,
        "project_id": project_id,
        "label_studio_url": f"{ls.settings.base_url}/projects/{project_id}",
        **stats.as_dict(),
    }
    run_name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    report_uri = steps(write_run_report, store, spec.state_location, run_name, summary, stats.quarantine_rows)
    summary["quarantine_report"] = report_uri
    steps.artifact(
        f"ingest-{spec.slug}",
        summary_markdown(spec, project_id, summary, stats.quarantine_rows, report_uri)
        + f"\n\nQuarantine report in a browser: `{open_hint(spec_path, 'quarantine')}` (a local copy)",
        f"labelflow ingest summary for {spec.name}",
    )
    if fingerprint is not None:
        try:  # a record the next ingest may answer from; without it the next one just runs the flow
            save_last_run(store, spec, fingerprint, summary)
        except ObjectStoreError as exc:
            steps.log.warning("could not record this run for the next ingest: %s", exc)
    return summary
