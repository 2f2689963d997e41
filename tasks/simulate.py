"""Simulated annotators with known confusion rates: real Label Studio users annotating through the API."""

from __future__ import annotations

import json
import random
import re
import zlib
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import pandas as pd

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.tasks.label_config import label_interface
from labelflow.tasks.quality import attach_gold
from labelflow.tasks.spec import ProjectSpec

# One planned annotation: a tuple whose first field is the task id.
PlannedItem = TypeVar("PlannedItem", bound=tuple)


class SimulationError(ValueError):
    """The simulation cannot run as asked."""


@dataclass(frozen=True)
class SimulatedAnnotator:
    """A user who gives the true label with probability `accuracy` (else a uniformly wrong one), or a spammer."""

    email: str
    accuracy: float
    spammer: bool = False
    seconds_per_task: float = 8.0

    def answer(self, truth: str, labels: list[str], rng: random.Random) -> str:
        """One label for a task whose true label is `truth`."""
        if self.spammer:
            return rng.choice(labels)
        if rng.random() < self.accuracy:
            return truth
        return rng.choice([label for label in labels if label != truth])


def build_annotators(accuracies: list[float], spammers: int, prefix: str = "sim") -> list[SimulatedAnnotator]:
    """Annotators for the given accuracies plus uniform-random spammers, with stable emails."""
    for accuracy in accuracies:
        if not 0.0 <= accuracy <= 1.0:
            raise SimulationError(f"accuracy {accuracy} is not between 0 and 1")
    annotators = [
        SimulatedAnnotator(
            f"{prefix}-annotator-{i + 1}-acc{round(a * 100)}@labelflow.local", a, seconds_per_task=6 + 6 * (1 - a)
        )
        for i, a in enumerate(accuracies)
    ]
    annotators += [
        SimulatedAnnotator(f"{prefix}-spammer-{i + 1}@labelflow.local", 0.0, spammer=True, seconds_per_task=1.5)
        for i in range(spammers)
    ]
    if len(annotators) < 1:
        raise SimulationError("no annotators: give --annotators/--accuracy or --spammers")
    return annotators


def simulated_votes(
    n_items: int, accuracies: list[float | None], labels: list[str], seed: int, per_task: int = 3
) -> tuple[pd.DataFrame, list[str]]:
    """Votes (task_id, annotator_id, label) and the true labels, without a server; None in `accuracies` is a spammer."""
    annotators = [
        SimulatedAnnotator(f"w{i}", accuracy or 0.0, spammer=accuracy is None) for i, accuracy in enumerate(accuracies)
    ]
    rng = random.Random(seed)
    rows, truth = [], []
    for item in range(n_items):
        true = rng.choice(labels)
        truth.append(true)
        for worker in rng.sample(range(len(annotators)), per_task):
            rows.append((item, worker, annotators[worker].answer(true, labels, rng)))
    return pd.DataFrame(rows, columns=["task_id", "annotator_id", "label"]), truth


def truth_from_key(source_uri: str | None, labels: list[str], pattern: str | None) -> str | None:
    """The true label encoded in a source key: a regex group `label`, or a folder named after a label."""
    if not source_uri:
        return None
    if pattern:
        match = re.search(pattern, source_uri)
        return match.group("label") if match and match.group("label") in labels else None
    for part in reversed(source_uri.split("/")[:-1]):
        if part in labels:
            return part
    return None


@dataclass
class SimulationPlan:
    """Which simulated annotator labels which task with what."""

    items: list[tuple[int, SimulatedAnnotator, str, float]] = field(default_factory=list)  # task, who, label, lead
    skipped_no_truth: int = 0


def plan(
    tasks: list[dict[str, Any]],
    truths: dict[int, str],
    annotators: list[SimulatedAnnotator],
    user_ids: dict[str, int],
    labels: list[str],
    per_task: int,
    seed: int,
) -> SimulationPlan:
    """Assign up to `per_task` annotators to each task, skipping those who already annotated it."""
    result = SimulationPlan()
    for item in tasks:
        task_id = int(item["id"])
        truth = truths.get(task_id)
        if truth is None:
            result.skipped_no_truth += 1
            continue
        # Seeded by the task's content, not its id, so the same data gets the same answers in every project.
        data = item.get("data") or {}
        identity = data.get("content_sha256") or data.get("source_uri") or task_id
        rng = random.Random(zlib.crc32(f"{seed}:{identity}".encode()))
        done = {a.get("completed_by") for a in item.get("annotations") or [] if not a.get("was_cancelled")}
        missing = per_task - len(done)
        candidates = [a for a in annotators if user_ids[a.email] not in done]
        rng.shuffle(candidates)
        for annotator in candidates[: max(0, missing)]:
            label = annotator.answer(truth, labels, rng)
            lead = max(0.5, rng.lognormvariate(0, 0.4) * annotator.seconds_per_task)
            result.items.append((task_id, annotator, label, round(lead, 2)))
    return result


def ensure_users(ls: LabelStudioClient, annotators: list[SimulatedAnnotator]) -> dict[str, int]:
    """Label Studio user ids of the simulated annotators, creating the missing users."""
    existing = {email: user_id for user_id, email in ls.users().items()}
    ids = {}
    for annotator in annotators:
        name = annotator.email.split("@")[0]
        ids[annotator.email] = existing.get(annotator.email) or ls.create_user(annotator.email, first_name=name)
    return ids


def run(
    ls: LabelStudioClient,
    spec: ProjectSpec,
    project_id: int,
    annotators: list[SimulatedAnnotator],
    truth: pd.DataFrame | None = None,
    key_pattern: str | None = None,
    per_task: int | None = None,
    limit: int | None = None,
    seed: int = 0,
    workers: int = 4,
    progress: Callable[[int, int], None] | None = None,
    hidden: dict[int, str] | None = None,
    held: frozenset[int] = frozenset(),
) -> dict[str, Any]:
    """Have the simulated annotators annotate the project's tasks through the API; returns what was done.

    `hidden` (record tasks): task id -> the record's fields kept out of Label Studio, where its gold answer is.
    `held`: tasks automated labeling took out of people's queue, which annotators are never served.
    """
    if spec.task_type.media == "record":
        return run_records(ls, spec, project_id, annotators, per_task, limit, seed, workers, progress, hidden)
    if spec.task_type.structured_answers:
        # Written answers about stored media (captions, transcripts): the truth file's `label` is the reference
        # text, handed to the type's simulated answer as the task's `gold`, as a record's gold answer is.
        tasks = ls.export_tasks(project_id, timeout=spec.collect.timeout_seconds)
        references = attach_gold(_task_frame(tasks), truth)
        known = {int(t["id"]): json.dumps({"gold": r}) for t, r in zip(tasks, references, strict=True) if r}
        if not known:
            raise SimulationError(
                f"no task has a known reference: pass --truth with a CSV/JSONL of source_uri,label holding each "
                f"{spec.task} task's reference text"
            )
        return run_records(
            ls, spec, project_id, annotators, per_task, limit, seed, workers, progress, known, exported=tasks
        )
    interface = label_interface(spec)
    if spec.task_type.simulated_result(interface.from_name, interface.to_name, spec.labels[0]) is None:
        raise SimulationError(f"the simulator supports classification tasks, not {spec.task!r}")
    user_ids = ensure_users(ls, annotators)
    tasks = ls.export_tasks(project_id, timeout=spec.collect.timeout_seconds)
    tasks = [task for task in tasks if int(task["id"]) not in held]
    tasks.sort(key=lambda t: int(t["id"]))
    frame = _task_frame(tasks)
    from_file = attach_gold(frame, truth)
    truths: dict[int, str] = {}
    for task_id, uri, known in zip(frame["task_id"], frame["source_uri"], from_file, strict=True):
        label = known or truth_from_key(uri, spec.labels, key_pattern)
        if label is not None:
            truths[int(task_id)] = label
    if not truths:
        raise SimulationError(
            "no task has a known true label: pass --truth with a CSV/JSONL of source_uri,label, or keep each object "
            "under a folder named after its label (or give --truth-pattern with a (?P<label>...) group)"
        )
    wanted = per_task or min(spec.overlap, len(annotators))
    work = plan(tasks, truths, annotators, user_ids, spec.labels, wanted, seed)
    if limit is not None:
        work.items = work.items[:limit]

    done = iter(range(1, len(work.items) + 1))  # next() on a range iterator is atomic under the GIL

    def annotate(item: tuple[int, SimulatedAnnotator, str, float]) -> None:
        task_id, annotator, label, lead = item
        result = spec.task_type.simulated_result(interface.from_name, interface.to_name, label)
        ls.create_annotation(task_id, result, user_ids[annotator.email], lead)
        if progress is not None:
            progress(next(done), len(work.items))

    post_per_task(work.items, annotate, workers)
    done_by = [(item[1].email, truths[item[0]] == item[2]) for item in work.items]
    return simulation_summary(project_id, len(tasks), len(truths), annotators, user_ids, done_by)


def _task_frame(tasks: list[dict[str, Any]]) -> pd.DataFrame:
    """task_id, source_uri and content_sha256 of exported tasks (what a truth file's rows are matched on)."""
    return pd.DataFrame(
        {
            "task_id": [int(t["id"]) for t in tasks],
            "source_uri": [(t.get("data") or {}).get("source_uri") for t in tasks],
            "content_sha256": [(t.get("data") or {}).get("content_sha256") for t in tasks],
        }
    )


def post_per_task(items: Sequence[PlannedItem], post: Callable[[PlannedItem], None], workers: int) -> None:
    """Post each task's annotations one after another, different tasks in parallel on `workers` threads.

    Label Studio recounts a task's annotations (`total_annotations`) on every save: two saves racing on one task
    each count without the other and leave the counter short (2 of 3), so one task is never posted to twice at once.
    """
    by_task: dict[int, list[PlannedItem]] = {}
    for item in items:
        by_task.setdefault(int(item[0]), []).append(item)

    def post_in_order(task_items: list[PlannedItem]) -> None:
        for item in task_items:
            post(item)

    with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
        list(pool.map(post_in_order, by_task.values()))


def simulation_summary(
    project_id: int,
    tasks: int,
    with_truth: int,
    annotators: list[SimulatedAnnotator],
    user_ids: dict[str, int],
    done_by: list[tuple[str, bool]],
) -> dict[str, Any]:
    """What a simulation did: its counts, and per annotator the annotations made and how many matched the truth."""
    per_annotator = Counter(email for email, _ in done_by)
    correct = Counter(email for email, right in done_by if right)
    return {
        "project_id": project_id,
        "tasks": tasks,
        "tasks_with_truth": with_truth,
        "annotations_created": len(done_by),
        "annotators": [
            {
                "email": a.email,
                "user_id": user_ids[a.email],
                "configured_accuracy": None if a.spammer else a.accuracy,
                "spammer": a.spammer,
                "annotations": per_annotator[a.email],
                "observed_accuracy": correct[a.email] / per_annotator[a.email] if per_annotator[a.email] else None,
            }
            for a in annotators
        ],
    }


def plan_records(
    tasks: list[dict[str, Any]],
    spec: ProjectSpec,
    annotators: list[SimulatedAnnotator],
    user_ids: dict[str, int],
    per_task: int,
    seed: int,
    hidden: dict[int, str] | None = None,
) -> tuple[list[tuple[int, SimulatedAnnotator, list[dict[str, Any]], float, bool]], int]:
    """(task, who, result, lead, agrees with gold) for record tasks with a `gold` answer; and how many had none."""
    task_type = spec.task_type
    items = []
    skipped = 0
    for item in tasks:
        task_id, data = int(item["id"]), item.get("data") or {}
        if hidden and task_id in hidden:  # the record's gold answer is kept out of Label Studio
            data = {**data, **json.loads(hidden[task_id])}
        gold = task_type.gold_of(data)  # type: ignore[attr-defined]
        if gold is None:
            skipped += 1
            continue
        rng = random.Random(zlib.crc32(f"{seed}:{data.get('content_sha256') or task_id}".encode()))
        done = {a.get("completed_by") for a in item.get("annotations") or [] if not a.get("was_cancelled")}
        candidates = [a for a in annotators if user_ids[a.email] not in done]
        rng.shuffle(candidates)
        for annotator in candidates[: max(0, per_task - len(done))]:
            result = task_type.simulated_answer(data, spec, annotator.accuracy, annotator.spammer, rng)
            if result is None:
                continue
            label, answer, _ = task_type.parse_answer(result, data, spec)
            lead = max(0.5, rng.lognormvariate(0, 0.4) * annotator.seconds_per_task * 3)  # reading takes longer
            items.append((task_id, annotator, result, round(lead, 2), task_type.agrees_with_gold(label, answer, gold)))  # type: ignore[attr-defined]
    return items, skipped


def run_records(
    ls: LabelStudioClient,
    spec: ProjectSpec,
    project_id: int,
    annotators: list[SimulatedAnnotator],
    per_task: int | None,
    limit: int | None,
    seed: int,
    workers: int,
    progress: Callable[[int, int], None] | None,
    hidden: dict[int, str] | None = None,
    exported: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Simulated annotation of tasks with a known `gold` answer: records (preference, ranking, grading, SFT), or
    written answers whose references `hidden` holds; `exported`: the project's tasks when already read."""
    user_ids = ensure_users(ls, annotators)
    tasks = exported if exported is not None else ls.export_tasks(project_id, timeout=spec.collect.timeout_seconds)
    tasks.sort(key=lambda t: int(t["id"]))
    wanted = per_task or min(spec.overlap, len(annotators))
    items, skipped = plan_records(tasks, spec, annotators, user_ids, wanted, seed, hidden)
    if not items and skipped:
        raise SimulationError(
            f"no task has a known answer: map a `gold` field in records.fields so the simulator knows what a "
            f"{spec.task} task's true answer is"
        )
    if limit is not None:
        items = items[:limit]
    done = iter(range(1, len(items) + 1))

    def annotate(item: tuple[int, SimulatedAnnotator, list[dict[str, Any]], float, bool]) -> None:
        task_id, annotator, result, lead, _ = item
        ls.create_annotation(task_id, result, user_ids[annotator.email], lead)
        if progress is not None:
            progress(next(done), len(items))

    post_per_task(items, annotate, workers)
    done_by = [(item[1].email, item[4]) for item in items]
    return simulation_summary(project_id, len(tasks), len(tasks) - skipped, annotators, user_ids, done_by)
