"""Collect flow: annotations out of Label Studio -> quality -> Great Expectations gate -> versioned dataset in MLflow.

One flow over the tables it collects: the spec is loaded once, the batch is written once (for audit and lineage),
and validation and registration run as steps on the tables in memory.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import flow

from labelflow.flows.locks import stage_lock
from labelflow.flows.steps import PrefectSteps, StepRunner
from labelflow.integrations.object_store import ObjectStoreError
from labelflow.integrations.resources import Resources
from labelflow.tasks.annotation_store import AnnotationStore
from labelflow.tasks.automation import AutomationOutcome
from labelflow.tasks.collect import (
    BatchRecord,
    BatchTables,
    Collection,
    collect_changes,
    judge_annotations,
    load_current,
    load_gold,
    recorded_project,
    route_back,
    tasks_to_route,
    with_hidden_record_fields,
    write_batch,
)
from labelflow.tasks.collect_shortcut import inputs_fingerprint, save_last_run
from labelflow.tasks.escalation import (
    EscalationState,
    check_reviewers,
    escalate,
    read_review,
    uses_review,
    with_decisions,
)
from labelflow.tasks.exams import admission_ranks, mark_uncertified
from labelflow.tasks.guidelines import fill_missing_stamps, guideline_routes, sync_guidelines
from labelflow.tasks.label_errors import (
    hold_back_suspects,
    looks_for_suspects,
    suspect_routes,
    suspects_for_collect,
)
from labelflow.tasks.links import open_hint
from labelflow.tasks.model_loop import apply_automation, automate_collection, refresh_queue, score_tasks
from labelflow.tasks.ports import ClientsPort, ObjectStorePort, ValidatorPort
from labelflow.tasks.prelabel import MLflowPredictor, build_predictor, object_reader, task_items
from labelflow.tasks.publish import PublishResult, check_dataset_owner, publish_dataset
from labelflow.tasks.quality import QualityReport
from labelflow.tasks.quality_report import ReportContext, markdown, write_quality_report
from labelflow.tasks.registry import DatasetRegistry
from labelflow.tasks.spec import ProjectSpec, expectations_dir, load_spec
from labelflow.tasks.talent_pool import record_evidence
from labelflow.tasks.validate import ValidationFailed, ValidationSummary, run_validation

COLLECT_TIMEOUT_SECONDS = 4 * 3600


@flow(
    name="labelflow-collect",
    # No flow retries: steps retry transient errors, a failed validation must not be retried, and the stage is
    # idempotent (watermark + content digest), so the next run completes what a failed one did not.
    timeout_seconds=COLLECT_TIMEOUT_SECONDS,
    persist_result=True,
)
def collect(spec_path: str, full: bool = False, dask_address: str | None = None) -> dict[str, Any]:
    """Collect, judge, validate and register one spec's annotations: the whole stage, in one flow."""
    spec = load_spec(spec_path)
    with stage_lock("collect", spec):
        return collect_validate_register(spec, spec_path, full, dask_address)


@flow(name="labelflow-collect-annotations", persist_result=True)
def collect_annotations(spec_path: str, full: bool = False) -> dict[str, Any]:
    """Collect a spec's new annotations and judge their quality, without validating or registering."""
    return collect_and_judge(load_spec(spec_path), full=full, spec_path=spec_path).summary()


def collect_validate_register(
    spec: ProjectSpec,
    spec_path: str | None,
    full: bool = False,
    dask_address: str | None = None,
    clients: ClientsPort | None = None,
    validator: ValidatorPort | None = None,
    steps: StepRunner | None = None,
) -> dict[str, Any]:
    """The stage under the caller's stage lock: collect and judge, validate, register; returns the run summary.

    Judging runs on the Dask cluster at `dask_address` when one is given. Without a `validator`, the spec's
    Great Expectations suites are used.
    """
    steps = steps or PrefectSteps()
    clients = clients or Resources.from_settings()
    # Taken before collecting: the record of a complete run names the inputs it ran with (the CLI's shortcut).
    fingerprint = inputs_fingerprint(clients.store, spec, spec_path)
    registry = None
    if spec.dataset is not None:
        # Another project's dataset is refused here, not after collecting, judging and validating the batch.
        registry = DatasetRegistry(clients.store, clients.tracking)
        steps(check_dataset_owner, registry, spec)
    collection = collect_and_judge(spec, full, dask_address, clients, steps, spec_path)
    if validator is None:
        from labelflow.integrations.great_expectations import GreatExpectations

        validator = GreatExpectations(expectations_dir(spec, spec_path), examples=spec.validation.examples)
    validation = validate_collection(spec, collection, validator, clients.store, steps, spec_path)
    summary = {**collection.summary(), "validation": validation.as_dict()}
    if validation.skipped:
        dataset = PublishResult(False, f"validation skipped: {validation.skipped}")
    elif registry is None:
        dataset = PublishResult(False, "the spec has no `dataset` section")
    else:
        dataset = register_collection(spec, collection, validation, clients.store, registry, steps)
    summary["dataset"] = dataset.as_dict()
    if not validation.skipped:
        try:  # a record the next collect may answer from; without it the next one just runs in full
            save_last_run(clients.store, spec, fingerprint, summary)
        except ObjectStoreError as exc:
            steps.log.warning("could not record this run for the next collect: %s", exc)
    return summary


def collect_and_judge(
    spec: ProjectSpec,
    full: bool = False,
    dask_address: str | None = None,
    clients: ClientsPort | None = None,
    steps: StepRunner | None = None,
    spec_path: str | None = None,
) -> Collection:
    """Collect the changed annotations, judge the project's current table, route disagreement back, keep the batch."""
    steps = steps or PrefectSteps()
    clients = clients or Resources.from_settings()
    store, ls = clients.store, clients.label_studio_client
    table = AnnotationStore(store, spec.state_location)
    project_id = steps(recorded_project, store, spec)
    if spec.quality.reviewers:  # a reviewer Label Studio does not know: one line, before anything changes
        steps(check_reviewers, ls, spec)
    # Before collecting: a changed guideline file is shown to annotators and its version recorded, so the rows
    # collected now are stamped against the history that includes it.
    guidelines = steps(sync_guidelines, ls, store, spec, project_id) if spec.guidelines else None
    stats = steps(collect_changes, ls, table, spec, project_id, full=full, guidelines=guidelines)
    steps.log.info(
        "%s collection: %d changed tasks, %d annotations, %d deleted tasks",
        stats.mode,
        stats.changed_tasks,
        stats.annotation_rows,
        stats.deleted_tasks,
    )
    gold = steps(load_gold, store, spec)
    tasks, annotations = steps(load_current, table)
    annotations = fill_missing_stamps(annotations, guidelines)  # rows collected before stamping existed
    if spec.task_type.media == "record":
        # Gold answers, model names and lineage never go to Label Studio: they are joined back from the ledger.
        tasks = steps(with_hidden_record_fields, store, spec, tasks)
    # The review project's decisions (tasks/escalation.py) join the table: an expert's answer decides its task.
    review_state = EscalationState.load(store, spec)
    review = steps(read_review, ls, store, spec, review_state) if uses_review(spec, review_state) else None
    if review is not None:
        annotations = with_decisions(annotations, review.decisions)
    if spec.quality.min_level is not None:  # admission: people below the level are kept, marked, and not counted
        annotations = mark_uncertified(annotations, spec, steps(admission_ranks, store, spec))
    # The one CPU-heavy step: on a Dask cluster when the flow is given `dask_address` (its inputs are plain
    # tables, so they travel to remote workers), in this process otherwise.
    if dask_address:
        report = steps.on_dask(
            dask_address, judge_annotations, tasks=tasks, annotations=annotations, spec=spec, gold=gold
        )
    else:
        report = steps(judge_annotations, tasks, annotations, spec, gold)
    # Suspected label errors (tasks/label_errors.py): listed in the report; with `quality.review_suspects` flagged
    # here, before escalation and routing read the consensus, so they go to review and stay out of the version.
    suspects = None
    if looks_for_suspects(spec):
        suspects = steps(suspects_for_collect, store, spec, report.consensus, tasks, object_reader(store))
        report.metrics["label_errors"] = suspects.summary()
        if spec.quality.review_suspects:
            suspects = steps(hold_back_suspects, store, spec, report, suspects)
    automation = None
    if spec.queue.order != "off" or spec.automate is not None:
        automation = model_in_the_loop(spec, clients, steps, project_id, tasks, report)
    if review is not None:  # before the talent pool: reviewers' verdicts are part of each annotator's record
        # Not retried as a whole: an import whose answer was lost is found by the next collect's read of the review
        # project (each review task names its main task), so nothing is imported twice.
        steps.once(escalate, ls, store, spec, project_id, report, review, annotations, clients.reader_settings)
    try:  # each row is a snapshot of the whole project: a collect that fails to record is made good by the next
        steps(record_evidence, store, spec, report.annotators, annotations, project_id)
    except ObjectStoreError as exc:
        steps.log.warning("could not add this collect's evidence to the talent pool: %s", exc)
    routes = tasks_to_route(report, spec) + guideline_routes(report.consensus, spec)
    routes += suspect_routes(report.consensus, suspects)  # held-back suspects, when they go back to annotators
    routed = steps(route_back, ls, table, routes) if routes else 0
    run_name = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    # The report links each flagged task to Label Studio and shows its content and every answer.
    context = ReportContext(
        tasks, annotations, ls.settings.base_url, project_id, suspects=suspects, automation=automation
    )
    location = steps(write_quality_report, store, spec, report, stats, run_name, context)
    record = BatchRecord(
        project=spec.name,
        project_id=project_id,
        label_studio_url=f"{ls.settings.base_url}/projects/{project_id}",
        watermark=stats.watermark or table.watermark().updated_at,
        collected_at=run_name,
        quality=report.metrics,
        batch_uri=location,
    )
    # Written once, next to the quality report, for audit and lineage; the stage goes on with the tables it holds.
    steps(write_batch, store, record, tasks, annotations)
    steps.artifact(
        f"quality-{spec.slug}",
        markdown(spec, report, stats, routed, location, context)
        + f"\n\nOpen it in a browser: `{open_hint(spec_path, 'report')}` (a local copy)",
        f"labelflow annotation quality for {spec.name}",
    )
    return Collection(stats, report, BatchTables(tasks, annotations, report.consensus), record, routed)


def model_in_the_loop(
    spec: ProjectSpec,
    clients: ClientsPort,
    steps: StepRunner,
    project_id: int,
    tasks: Any,
    report: QualityReport,
) -> AutomationOutcome | None:
    """Score the tasks with the spec's registered model, label the sure ones (`automate`: into `report`'s consensus),
    order the queue; what automation did, or None without `automate`."""
    store, ls = clients.store, clients.label_studio_client
    # Loaded here, not in a step: a model is no step result to persist. A wrong URI or unfit model stops the collect
    # with one line before anything changes.
    model = build_predictor(spec, clients.tracking, object_reader(store))
    assert isinstance(model, MLflowPredictor)
    scores = steps(score_tasks, store, spec, tasks, model, task_items)
    if scores.scored_now:
        steps.log.info("%s scored %d tasks (%d failed)", scores.model_version, scores.scored_now, model.failures)
    outcome = None
    if spec.automate is not None:
        plan = steps(automate_collection, store, spec, report.consensus, scores)
        steps(apply_automation, ls, store, spec, project_id, plan)
        report.consensus = plan.consensus
        report.metrics["automation"] = plan.outcome.as_dict()
        steps.log.info("automated labeling: %s", plan.outcome.reason)
        outcome = plan.outcome
    if spec.queue.order != "off":
        queue = steps(refresh_queue, ls, spec, project_id, report.consensus, scores)
        steps.log.info("queue by %s: %d tasks scored now, %d already", queue.order, queue.scored, queue.already_scored)
    return outcome


def validate_collection(
    spec: ProjectSpec,
    collection: Collection,
    validator: ValidatorPort,
    store: ObjectStorePort,
    steps: StepRunner,
    spec_path: str | None = None,
) -> ValidationSummary:
    """The Great Expectations gate on a collection's tables; raises ValidationFailed when they do not pass."""
    run_name = collection.record.batch_uri.rstrip("/").rsplit("/", 1)[-1]
    tables = collection.tables
    summary = steps(
        run_validation, store, spec, validator, tables.annotations, tables.consensus, tables.tasks, run_name
    )
    steps.artifact(
        f"validation-{spec.slug}",
        validation_markdown(spec, summary, spec_path),
        f"labelflow validation for {spec.name}",
    )
    if not summary.success:
        raise ValidationFailed(summary)
    steps.log.info(summary.text())
    return summary


def register_collection(
    spec: ProjectSpec,
    collection: Collection,
    validation: ValidationSummary,
    store: ObjectStorePort,
    registry: DatasetRegistry,
    steps: StepRunner,
) -> PublishResult:
    """Publish a validated collection as a new immutable dataset version (only when its content changed)."""
    result = steps(publish_dataset, store, registry, spec, collection.tables, collection.record, validation)
    if result.published:
        steps.log.info(
            "published %s version %d (%d rows) at %s", result.dataset, result.version, result.rows, result.location
        )
    else:
        steps.log.info("no new version of %s: %s", result.dataset, result.reason)
    return result


def validation_markdown(spec: ProjectSpec, summary: ValidationSummary, spec_path: str | None = None) -> str:
    """The Prefect artifact for a validation: verdict, failed expectations with examples, links to the full result."""
    lines = [f"# Validation of {spec.name}: {'passed' if summary.success else 'FAILED'}", ""]
    if summary.skipped:
        return "\n".join([*lines, f"Skipped: {summary.skipped}"])
    lines += [
        f"{summary.evaluated - len(summary.failed)} of {summary.evaluated} expectations met; rows: "
        + ", ".join(f"{k} {v}" for k, v in summary.rows.items()),
        "",
        f"Full result: `{summary.result_uri}`  ",
        f"Data Docs: `{summary.docs_index}`; open them in a browser: `{open_hint(spec_path, 'docs')}` (a local copy)",
        "",
    ]
    if summary.failed:
        lines += [
            "| table | column | expectation | from | unexpected | guards | examples |",
            "|---|---|---|---|---|---|---|",
        ]
        for f in summary.failed:
            examples = "; ".join(str(e) for e in (f.get("examples") or [])[:3]).replace("|", "/")
            lines.append(
                f"| {f['batch']} | {f.get('column') or ''} | {f['type']} | {f['origin']} | "
                f"{f.get('unexpected_count')} of {f.get('element_count')} | {f['notes']} | {examples} |"
            )
    return "\n".join(lines)
