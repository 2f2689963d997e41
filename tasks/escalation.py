"""Expert escalation and review: hard tasks go to a companion Label Studio project where an expert's answer wins.

Collect keeps a review project, `<project title> · review`, in step with the main one:

- flagged tasks (low agreement, a tied vote, an invalid annotation, a suspected label error held back by
  `quality.review_suspects`) go to it when `quality.route_low_agreement` is `expert` or `both`, and a seeded,
  stable per task `quality.review_sample` share of accepted tasks goes to it too;
- each review task holds the main task's data (same label config, so the expert answers with the same control), the
  main task id (`labelflow_task_id`) and every annotator's answer as a prediction (model_version: their email);
- an answer there by a decider (listed in `quality.reviewers`, or at or above `quality.expert_level` in the talent
  pool) overrides consensus with `method: expert`, records its author in `decided_by` and unflags the task;
- a task is escalated once (the state file and the review project's own tasks both say which are there); a task
  that got unflagged meanwhile stays in the review project, and an expert's answer on it still wins.

State: `collect/escalation.json` next to the collect watermark.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.run_records import read_run_record, write_run_record
from labelflow.tasks.spec import ProjectSpec, SpecError
from labelflow.tasks.timestamps import parse_time

if TYPE_CHECKING:  # pandas and Arrow load inside the functions: the collect shortcut imports this module
    import pandas as pd

    from labelflow.integrations.settings import S3StorageSettings
    from labelflow.tasks.quality import QualityReport

REVIEW_SUFFIX = " · review"
TITLE_LIMIT = 50  # Label Studio's longest project title
MAIN_TASK_KEY = "labelflow_task_id"  # the main project's task id, in each review task's data
REASON_KEY = "labelflow_review_reason"
SAMPLE_REASON = "review sample (accepted task)"
# Flag reasons an expert resolves; a task flagged only for labels under an outdated guideline needs new labels.
# `suspected label error`: a consensus label held back by `quality.review_suspects` (tasks/label_errors.py).
ESCALATED_REASONS = "agreement|tied|invalid|suspected label error"
LS_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"
IMPORT_BATCH = 500
STAMP_PAGE = 1000
EARLIEST = "2000-01-01T00:00:00.000000Z"


class ReviewerError(SpecError):
    """A reviewer the spec names is not a Label Studio user."""


class ReviewLabelStudio(Protocol):
    """The Label Studio calls escalation makes."""

    def users(self) -> dict[int, str]: ...
    def find_project(self, title: str) -> int | None: ...
    def get_project(self, project_id: int) -> dict[str, Any] | None: ...
    def create_project(self, title: str, label_config: str, **options: Any) -> int: ...
    def update_project(self, project_id: int, **fields: Any) -> None: ...
    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]: ...
    def export_snapshot(
        self, project_id: int, updated_after: str | None = None, timeout: float = 1800.0
    ) -> tuple[list[dict[str, Any]], str]: ...
    def tasks_as_stored(self, project_id: int, task_ids: list[int], chunk: int = 200) -> list[dict[str, Any]]: ...
    def tasks_updated_after(self, project_id: int, since: str, limit: int) -> list[dict[str, Any]]: ...


@dataclass
class EscalationState:
    """What collect escalated: the review project, each escalated main task, the review tasks as last read."""

    review_project_id: int | None = None
    # main task id (as text) -> {review_task_id, reason, consensus_label, escalated_at}
    escalated: dict[str, dict[str, Any]] = field(default_factory=dict)
    # review task id (as text) -> updated_at, for tasks updated after `review_since` (the collect shortcut's check)
    review_stamps: dict[str, str] = field(default_factory=dict)
    review_since: str | None = None

    NAME = "collect/escalation.json"  # under the project's state location

    @classmethod
    def load(cls, store: ObjectStorePort, spec: ProjectSpec) -> EscalationState:
        """The project's state; empty when nothing was ever escalated."""
        document = read_run_record(store, spec.state_location, cls.NAME)
        if document is None:
            return cls()
        known = cls.__dataclass_fields__
        return cls(**{name: value for name, value in document.items() if name in known})

    def save(self, store: ObjectStorePort, spec: ProjectSpec) -> None:
        """Write the state file."""
        write_run_record(store, spec.state_location, self.NAME, self.__dict__)


@dataclass
class ReviewRead:
    """The review project as this collect read it: the deciders' answers (as annotation rows keyed by main task id)."""

    state: EscalationState
    decisions: pd.DataFrame
    users: dict[int, str]
    ignored: int = 0  # answers in the review project by people who may not decide
    seconds: float = 0.0


def review_title(spec: ProjectSpec) -> str:
    """`<project title> · review`, shortened to fit Label Studio's title limit."""
    return spec.name[: TITLE_LIMIT - len(REVIEW_SUFFIX)] + REVIEW_SUFFIX


def uses_review(spec: ProjectSpec, state: EscalationState) -> bool:
    """Whether this collect reads or feeds a review project."""
    return spec.quality.escalates or spec.quality.review_sample > 0 or state.review_project_id is not None


def check_reviewers(ls: ReviewLabelStudio, spec: ProjectSpec) -> None:
    """Refuse a spec whose `quality.reviewers` names someone Label Studio does not know (before anything changes)."""
    if not spec.quality.reviewers:
        return
    known = {email.strip().lower() for email in ls.users().values() if email}
    missing = [email for email in spec.quality.reviewers if email.strip().lower() not in known]
    if missing:
        raise ReviewerError(
            f"quality.reviewers: {', '.join(missing)} {'is not a Label Studio user' if len(missing) == 1 else 'are not Label Studio users'}"
            " (add them in Label Studio's Organization page, or remove them from the spec)"
        )


def level_experts(store: ObjectStorePort, spec: ProjectSpec) -> set[str]:
    """Emails whose talent-pool level (spec domain and task type) is at or above `quality.expert_level`.

    Empty without `expert_level`, or when this labelflow has no talent pool with levels (reviewers only then).
    """
    level = spec.quality.expert_level
    if level is None:
        return set()
    try:
        from labelflow.tasks import talent_pool
    except ImportError:
        return set()
    load_profiles = getattr(talent_pool, "load_profiles", None)
    if load_profiles is None:
        return set()
    ladder = list(spec.quality.ladder)
    rank = [rung.name for rung in ladder].index(level)
    profiles = load_profiles(store, spec.pool_domain, ladder)
    if profiles.empty:
        return set()
    at_level = profiles[(profiles["task_type"] == spec.task) & (profiles["level_rank"] >= rank)]
    return {str(email).strip().lower() for email in at_level["annotator_email"].dropna()}


def deciders(store: ObjectStorePort, spec: ProjectSpec) -> set[str]:
    """Emails whose answer in the review project decides a task."""
    return {email.strip().lower() for email in spec.quality.reviewers} | level_experts(store, spec)


def read_review(
    ls: ReviewLabelStudio, store: ObjectStorePort, spec: ProjectSpec, state: EscalationState | None = None
) -> ReviewRead:
    """The deciders' answers in the review project, as annotation rows of the main tasks."""
    from labelflow.tasks.annotations import annotations_table

    began = time.perf_counter()
    state = state or EscalationState.load(store, spec)
    users = ls.users()
    empty = annotations_table([]).to_pandas()
    if state.review_project_id is None:
        return ReviewRead(state, empty, users, seconds=time.perf_counter() - began)
    exported, read_at = ls.export_snapshot(state.review_project_id, timeout=spec.collect.timeout_seconds)
    rows, ignored = decision_rows(exported, spec, state.review_project_id, users, deciders(store, spec))
    for item in exported:  # what the review project holds, even if the state file missed an import
        main_id = (item.get("data") or {}).get(MAIN_TASK_KEY)
        if main_id is not None:
            state.escalated.setdefault(str(int(main_id)), {"review_task_id": int(item["id"]), "reason": None})
    since = _shifted(read_at, -spec.collect.window_seconds)
    state.review_since = since
    state.review_stamps = {str(item["id"]): str(item.get("updated_at")) for item in exported}
    decisions = annotations_table(rows).to_pandas() if rows else empty
    return ReviewRead(state, decisions, users, ignored, time.perf_counter() - began)


def _shifted(stamp: str | None, seconds: float) -> str | None:
    moment = parse_time(stamp)
    return None if moment is None else (moment + timedelta(seconds=seconds)).strftime(LS_TIME)


def decision_rows(
    exported: list[dict[str, Any]], spec: ProjectSpec, review_project_id: int, users: dict[int, str], allowed: set[str]
) -> tuple[list[dict[str, Any]], int]:
    """(The deciders' valid answers as annotation rows of the main tasks, how many other answers were ignored)."""
    from labelflow.tasks.annotations import AnnotationNormalizer
    from labelflow.tasks.label_config import label_interface

    normalizer = AnnotationNormalizer(spec, review_project_id, users, label_interface(spec).from_name)
    rows: list[dict[str, Any]] = []
    ignored = 0
    for item in exported:
        main_id = (item.get("data") or {}).get(MAIN_TASK_KEY)
        if main_id is None:
            continue  # a task someone added by hand: nothing to decide
        for row in normalizer.task(item, 0).annotations:
            if row["problem"] or str(row["annotator_email"] or "").strip().lower() not in allowed:
                ignored += 1
                continue
            rows.append({**row, "task_id": int(main_id)})
    return rows, ignored


def with_decisions(annotations: pd.DataFrame, decisions: pd.DataFrame) -> pd.DataFrame:
    """The annotation table with the review project's decisions appended, marked `expert_decision`.

    Unchanged (no new column) without decisions, so a project without review publishes the same files as before.
    """
    import pandas as pd

    if decisions.empty:
        return annotations
    marked = decisions.assign(expert_decision=True)
    return pd.concat([annotations.assign(expert_decision=False), marked], ignore_index=True)


def expert_decided(consensus: pd.DataFrame, reviews: pd.DataFrame) -> pd.DataFrame:
    """Record who decided each reviewed task (`decided_by`); an expert's decision is `method: expert`, unflagged."""
    consensus["decided_by"] = None
    if reviews.empty:
        return consensus
    by_task = reviews.drop_duplicates("task_id", keep="last").set_index("task_id")
    author = consensus["task_id"].map(by_task["annotator_email"])
    reviewed = consensus["reviewed"].astype(bool) & author.notna()
    consensus.loc[reviewed, "decided_by"] = author[reviewed]
    if "expert_decision" in by_task.columns:
        expert = reviewed & consensus["task_id"].map(by_task["expert_decision"]).fillna(False).astype(bool)
        consensus.loc[expert, "method"] = "expert"
        consensus.loc[expert, "flagged"] = False
        consensus.loc[expert, "flag_reason"] = None
    return consensus


def in_review_sample(task_ids: pd.Series, share: float, seed: int) -> pd.Series:
    """Whether each task is in the review sample: a seeded hash of its id below `share` (stable across collects)."""
    import pandas as pd

    if share <= 0:
        return pd.Series(False, index=task_ids.index)

    def draw(task_id: Any) -> float:
        digest = hashlib.sha256(f"labelflow-review:{seed}:{int(task_id)}".encode()).digest()
        return int.from_bytes(digest[:8], "big") / 2**64

    return task_ids.map(draw) < share


def tasks_to_escalate(consensus: pd.DataFrame, spec: ProjectSpec, state: EscalationState) -> list[tuple[int, str]]:
    """(main task id, reason) of the tasks to send to the review project now: not there yet, not decided yet."""
    quality = spec.quality
    waiting = ~consensus["task_id"].astype(str).isin(state.escalated) & ~consensus["reviewed"].astype(bool)
    picked: list[tuple[int, str]] = []
    if quality.escalates:
        hard = consensus["flagged"].astype(bool) & consensus["flag_reason"].str.contains(
            ESCALATED_REASONS, regex=True, na=False
        )
        picked += [
            (int(t), str(r))
            for t, r in consensus.loc[hard & waiting, ["task_id", "flag_reason"]].itertuples(index=False)
        ]
    if quality.review_sample > 0:
        accepted = consensus["finished"].astype(bool) & ~consensus["flagged"].astype(bool)
        sampled = accepted & waiting & in_review_sample(consensus["task_id"], quality.review_sample, quality.seed)
        picked += [(int(t), SAMPLE_REASON) for t in consensus.loc[sampled, "task_id"]]
    return picked


def review_task(main: dict[str, Any], reason: str, users: dict[int, str]) -> dict[str, Any]:
    """A review task: the main task's data, its id and why it is here; every annotator's answer as a prediction."""
    predictions = []
    answers = [a for a in main.get("annotations") or [] if not a.get("was_cancelled")]
    for number, annotation in enumerate(answers, start=1):
        completed_by = annotation.get("completed_by")
        user_id = completed_by.get("id") if isinstance(completed_by, dict) else completed_by
        email = users.get(int(user_id)) if user_id is not None else None
        predictions.append({"model_version": email or f"annotator {number}", "result": annotation.get("result") or []})
    data = {**(main.get("data") or {}), MAIN_TASK_KEY: int(main["id"]), REASON_KEY: reason}
    return {"data": data, "predictions": predictions}


def review_project_settings(spec: ProjectSpec) -> dict[str, Any]:
    """The main project's settings (same label config and guidelines), one decision per task, answers shown."""
    from labelflow.tasks.ingest import project_settings

    settings = project_settings(spec)
    note = (
        f"<p>Expert review of <b>{spec.name}</b>: the predictions are the annotators' answers (model version: "
        "who answered). Your answer decides the task.</p>"
    )
    return {
        **settings,
        "maximum_annotations": 1,
        "show_collab_predictions": True,
        "expert_instruction": note + str(settings.get("expert_instruction") or ""),
        "show_instruction": True,
    }


def ensure_review_project(
    ls: ReviewLabelStudio,
    store: ObjectStorePort,
    spec: ProjectSpec,
    state: EscalationState,
    reader: S3StorageSettings | None = None,
) -> int:
    """The review project (state file, then title, else created), its label config kept in step with the spec."""
    settings = review_project_settings(spec)
    current = ls.get_project(state.review_project_id) if state.review_project_id is not None else None
    if current is None:
        title = review_title(spec)
        project_id = ls.find_project(title) or ls.create_project(title=title, **settings)
        current = ls.get_project(project_id) or {}
        state.review_project_id = project_id
        state.save(store, spec)
        if spec.task_type.stored_media and reader is not None:
            from labelflow.tasks.ingest import ensure_storage_connections

            ensure_storage_connections(ls, store, spec, project_id, reader)  # type: ignore[arg-type]
    assert state.review_project_id is not None
    changed = {
        key: settings[key] for key in ("label_config", "expert_instruction") if current.get(key) != settings[key]
    }
    if changed:
        ls.update_project(state.review_project_id, **changed)
    return state.review_project_id


def escalate(
    ls: ReviewLabelStudio,
    store: ObjectStorePort,
    spec: ProjectSpec,
    project_id: int,
    report: QualityReport,
    read: ReviewRead,
    annotations: pd.DataFrame,
    reader: S3StorageSettings | None = None,
) -> dict[str, Any]:
    """Send the tasks that need an expert to the review project (each once); returns what was done."""
    import pandas as pd

    began = time.perf_counter()
    state = read.state
    wanted = tasks_to_escalate(report.consensus, spec, state)
    if wanted:
        review_id = ensure_review_project(ls, store, spec, state, reader)
        listed = ls.tasks_as_stored(project_id, [task_id for task_id, _ in wanted])
        mains = {int(task["id"]): task for task in listed}
        labels = report.consensus.set_index("task_id")["label"]
        now = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        for start in range(0, len(wanted), IMPORT_BATCH):
            batch = [(task_id, reason) for task_id, reason in wanted[start : start + IMPORT_BATCH] if task_id in mains]
            created = ls.import_tasks(review_id, [review_task(mains[t], reason, read.users) for t, reason in batch])
            for (task_id, reason), review_task_id in zip(batch, created, strict=False):
                label = labels.get(task_id)
                state.escalated[str(task_id)] = {
                    "review_task_id": review_task_id,
                    "reason": reason,
                    "consensus_label": None if label is None or pd.isna(label) else str(label),
                    "escalated_at": now,
                }
            state.save(store, spec)  # after each batch: a failed collect does not import these again
        # The new tasks' stamps, so the collect shortcut does not take them for answers (a first escalation lists
        # the project from its start; past STAMP_PAGE tasks the next collect reads the review project once more).
        state.review_since = state.review_since or EARLIEST
        for task in ls.tasks_updated_after(review_id, state.review_since, STAMP_PAGE):
            state.review_stamps[str(task["id"])] = str(task.get("updated_at"))
    if state.review_project_id is not None:
        state.save(store, spec)
    summary = review_feedback(report, read, annotations)
    summary.update(
        review_project_id=state.review_project_id,
        escalated_now=sum(1 for _, reason in wanted if reason != SAMPLE_REASON),
        sampled_now=sum(1 for _, reason in wanted if reason == SAMPLE_REASON),
        in_review=len(state.escalated),
        ignored_answers=read.ignored,
        seconds=round(read.seconds + time.perf_counter() - began, 3),
        read_seconds=round(read.seconds, 3),  # of which: reading the review project's answers
    )
    report.metrics["expert_review"] = summary
    return summary


def review_feedback(report: QualityReport, read: ReviewRead, annotations: pd.DataFrame) -> dict[str, Any]:
    """Verdicts on sampled accepted tasks (accept: the expert chose the consensus; correct: not), and per annotator
    `reviewed_accepted` / `reviewed_corrected`: their answers on those tasks that the expert did / did not choose."""
    annotators = report.annotators
    decided = (
        read.decisions[read.decisions["problem"].isna()]
        .sort_values("updated_at")
        .drop_duplicates("task_id", keep="last")
    )
    expert_label = dict(zip(decided["task_id"].astype(int), decided["label"], strict=True))
    verdicts = {"accept": 0, "correct": 0}
    audited: dict[int, str] = {}
    for key, entry in read.state.escalated.items():
        task_id = int(key)
        if entry.get("reason") != SAMPLE_REASON or task_id not in expert_label:
            continue
        chosen = expert_label[task_id]
        audited[task_id] = chosen
        verdicts["accept" if chosen == entry.get("consensus_label") else "correct"] += 1
    accepted: dict[Any, int] = {}
    corrected: dict[Any, int] = {}
    votes = annotations[annotations["problem"].isna() & annotations["task_id"].isin(audited)]
    if "expert_decision" in votes.columns:
        votes = votes[~votes["expert_decision"].astype(bool)]
    for annotator_id, task_id, label in votes[["annotator_id", "task_id", "label"]].itertuples(index=False):
        target = accepted if label == audited[int(task_id)] else corrected
        target[annotator_id] = target.get(annotator_id, 0) + 1
    if not annotators.empty:
        annotators["reviewed_accepted"] = annotators["annotator_id"].map(accepted).fillna(0).astype(int)
        annotators["reviewed_corrected"] = annotators["annotator_id"].map(corrected).fillna(0).astype(int)
    return {"decided": len(expert_label), "sample_verdicts": verdicts}


def review_changed(store: ObjectStorePort, ls: ReviewLabelStudio, spec: ProjectSpec) -> bool:
    """Whether the review project holds a task updated since collect last read it (an expert's new answer)."""
    state = EscalationState.load(store, spec)
    if state.review_project_id is None:
        return False
    if state.review_since is None:
        return True
    updated = ls.tasks_updated_after(state.review_project_id, state.review_since, 100)
    if len(updated) >= 100:
        return True
    return any(state.review_stamps.get(str(task["id"])) != task.get("updated_at") for task in updated)
