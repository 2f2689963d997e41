"""Certification exams and admission: gold items in a Label Studio exam project, graded into certificates.

- `create_exam` draws N items from the spec's gold set, stratified by label and seeded, among the main project's
  tasks (the exam tasks copy their data, so stored media read from the same storage), and builds
  `<title> · exam <level> v<k>` with the spec's label config and guidelines. The exam's items and their gold
  labels stay in labelflow's state (`exams/exams.json`), never in Label Studio.
- `grade_exam` scores each person who answered: accuracy on the exam's items (an item left unanswered counts as
  wrong) with its 95 % Wilson interval. The person PASSES when the interval's lower bound reaches the level's
  `min_accuracy` on the ladder, the same rule the talent pool's levels use. Each grade is a certificate in the pool,
  `pool/certificates/<domain>/`, append-only parts like the evidence; it expires `quality.certificate_valid_days`
  after the grade.
- Admission (`quality.min_level`): a person's level for a project is the higher of their talent-pool level and their
  valid certificates' levels for the spec's domain and task type; annotations by people below `min_level` are
  marked `uncertified` and do not count (tasks/quality.py). Label Studio Community cannot restrict who opens a
  project, so this is enforced in the pipeline.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.run_records import read_run_record, write_run_record
from labelflow.tasks.spec import ProjectSpec
from labelflow.tasks.talent_pool import POOL_LOCATION, TIMESTAMP, TalentPool

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.integrations.settings import S3StorageSettings
    from labelflow.tasks.escalation import ReviewLabelStudio
    from labelflow.tasks.spec import S3Location

EXAM_MARK = " · exam "
TITLE_LIMIT = 50  # Label Studio's longest project title
ITEM_KEY = "labelflow_exam_item"  # the item's number, in each exam task's data
EXAM_TAKERS = 100  # Label Studio's `maximum_annotations` for an exam: everyone answers every item

CERTIFICATE_SCHEMA = pa.schema(
    [
        ("certificate_id", pa.string()),
        ("certified_at", TIMESTAMP),
        ("expires_at", TIMESTAMP),
        ("annotator_email", pa.string()),
        ("label_studio_user_id", pa.int64()),
        ("project", pa.string()),  # the spec whose gold set the exam drew from
        ("domain", pa.string()),
        ("task_type", pa.string()),
        ("level", pa.string()),
        ("exam_version", pa.int64()),
        ("exam_project_id", pa.int64()),
        ("items", pa.int64()),
        ("answered", pa.int64()),
        ("correct", pa.int64()),
        ("score", pa.float64()),
        ("score_low", pa.float64()),
        ("score_high", pa.float64()),
        ("min_accuracy", pa.float64()),  # the level's, that the lower bound had to reach
        ("passed", pa.bool_()),
    ]
)


class ExamError(ValueError):
    """An exam cannot be built or graded from this spec and these options (bad input)."""


class CertificateStore(TalentPool):
    """Certificates in the pool: `pool/certificates/<domain>/`, append-only parts like the evidence."""

    area = "certificates"
    schema = CERTIFICATE_SCHEMA
    id_column = "certificate_id"


@dataclass
class ExamState:
    """The spec's exams: each version's level, Label Studio project, items with their gold labels, creation time."""

    exams: list[dict[str, Any]] = field(default_factory=list)

    NAME = "exams/exams.json"  # under the spec's state location

    @classmethod
    def load(cls, store: ObjectStorePort, spec: ProjectSpec) -> ExamState:
        """The spec's exams; none when no exam was ever created."""
        document = read_run_record(store, spec.state_location, cls.NAME)
        return cls(exams=document.get("exams", [])) if document is not None else cls()

    def save(self, store: ObjectStorePort, spec: ProjectSpec) -> None:
        """Write the state file."""
        store.ensure_bucket(spec.state_location.bucket)
        write_run_record(store, spec.state_location, self.NAME, {"exams": self.exams})

    def next_version(self) -> int:
        """The version a new exam gets."""
        return max((int(exam["version"]) for exam in self.exams), default=0) + 1

    def exam(self, version: int | None = None) -> dict[str, Any]:
        """One exam (the newest without `version`); ExamError when there is none."""
        if not self.exams:
            raise ExamError("no exam for this spec yet: run `labelflow exam create SPEC --level L --items N` first")
        if version is None:
            return max(self.exams, key=lambda exam: int(exam["version"]))
        for exam in self.exams:
            if int(exam["version"]) == version:
                return exam
        raise ExamError(f"no exam version {version} (versions: {sorted(int(e['version']) for e in self.exams)})")


def exam_title(spec: ProjectSpec, level: str, version: int) -> str:
    """`<title> · exam <level> v<k>`, the title shortened to fit Label Studio's limit."""
    tail = f"{EXAM_MARK}{level} v{version}"
    return spec.name[: max(1, TITLE_LIMIT - len(tail))] + tail


def level_index(spec: ProjectSpec, level: str) -> int:
    """The rank of a ladder level; ExamError when the ladder has no such level."""
    names = [rung.name for rung in spec.quality.ladder]
    if level not in names:
        raise ExamError(f"--level {level!r} is not a level of the ladder {names}")
    return names.index(level)


def draw_items(gold_tasks: pd.DataFrame, count: int, seed: int) -> pd.DataFrame:
    """`count` gold rows, each label its share of the set (largest remainders), seeded; ExamError when too many."""
    import numpy as np
    import pandas as pd

    available = len(gold_tasks)
    if count < 1:
        raise ExamError(f"--items must be at least 1, not {count}")
    if count > available:
        raise ExamError(
            f"--items {count} is more than the gold set holds: {available} gold item(s) match tasks of the project"
        )
    sizes = gold_tasks.groupby("gold_label").size().sort_index()
    exact = sizes * count / available
    quota = np.floor(exact).astype(int)
    remainder = (exact - quota).sort_values(ascending=False, kind="stable")
    for label in remainder.index[: count - int(quota.sum())]:
        quota[label] += 1
    over = [label for label in quota.index if quota[label] > sizes[label]]
    if over:  # cannot happen with proportional quotas; kept so a changed rule cannot silently draw fewer
        raise ExamError(f"--items {count}: label {over[0]!r} holds only {sizes[over[0]]} gold item(s)")
    rng = np.random.default_rng(seed)
    ordered = gold_tasks.sort_values("task_id", kind="stable")
    picked = [
        group.iloc[rng.choice(len(group), size=int(quota[label]), replace=False)]
        for label, group in ordered.groupby("gold_label", sort=True)
        if quota[label] > 0
    ]
    drawn = pd.concat(picked)
    return drawn.iloc[rng.permutation(len(drawn))].reset_index(drop=True)


def gold_tasks_of(exported: list[dict[str, Any]], gold: pd.DataFrame) -> pd.DataFrame:
    """The main project's tasks that are gold items: task_id, gold_label and the task's data."""
    import pandas as pd

    from labelflow.tasks.quality import attach_gold

    frame = pd.DataFrame(
        {
            "task_id": [int(task["id"]) for task in exported],
            "source_uri": [(task.get("data") or {}).get("source_uri") for task in exported],
            "content_sha256": [(task.get("data") or {}).get("content_sha256") for task in exported],
            "data": [task.get("data") or {} for task in exported],
        }
    )
    if frame.empty:
        return frame.assign(gold_label=pd.Series(dtype=object))
    frame["gold_label"] = attach_gold(frame, gold)
    return frame[frame["gold_label"].notna()].reset_index(drop=True)


def exam_settings(spec: ProjectSpec, level: str) -> dict[str, Any]:
    """The main project's settings (label config, guidelines) for an exam everyone takes, without predictions."""
    from labelflow.tasks.ingest import project_settings

    settings = project_settings(spec)
    note = f"<p>Certification exam for <b>{spec.name}</b>, level <b>{level}</b>: answer every item.</p>"
    return {
        **settings,
        "maximum_annotations": EXAM_TAKERS,
        "show_collab_predictions": False,
        "expert_instruction": note + str(settings.get("expert_instruction") or ""),
        "show_instruction": True,
    }


def _check_gradable(spec: ProjectSpec) -> None:
    if not spec.task_type.uses_labels:
        raise ExamError(f"exams grade a label from the spec's label set; task type {spec.task!r} has none")
    if spec.quality.gold is None:
        raise ExamError("the spec has no quality.gold file to draw exam items from")


def create_exam(
    ls: ReviewLabelStudio,
    store: ObjectStorePort,
    spec: ProjectSpec,
    project_id: int,
    gold: pd.DataFrame,
    level: str,
    items: int,
    seed: int = 0,
    reader: S3StorageSettings | None = None,
) -> dict[str, Any]:
    """Build the next exam version: checks first (nothing is created on bad input), then the project and state."""
    _check_gradable(spec)
    level_index(spec, level)
    exported, _ = ls.export_snapshot(project_id, timeout=spec.collect.timeout_seconds)
    drawn = draw_items(gold_tasks_of(exported, gold), items, seed)
    state = ExamState.load(store, spec)
    version = state.next_version()
    title = exam_title(spec, level, version)
    exam_project = ls.create_project(title=title, **exam_settings(spec, level))
    if spec.task_type.stored_media and reader is not None:
        from labelflow.tasks.ingest import ensure_storage_connections

        ensure_storage_connections(ls, store, spec, exam_project, reader)  # type: ignore[arg-type]
    tasks = [{"data": {**row.data, ITEM_KEY: number}} for number, row in enumerate(drawn.itertuples(), start=1)]
    created = ls.import_tasks(exam_project, tasks)
    exam = {
        "version": version,
        "level": level,
        "project_id": exam_project,
        "title": title,
        "seed": seed,
        "created_at": datetime.now(UTC).isoformat(),
        "items": [
            {
                "exam_task_id": int(exam_task),
                "main_task_id": int(row.task_id),
                "source_uri": row.source_uri,
                "gold_label": str(row.gold_label),
            }
            for exam_task, row in zip(created, drawn.itertuples(), strict=True)
        ],
    }
    state.exams.append(exam)
    state.save(store, spec)
    labels = drawn["gold_label"].value_counts().sort_index()
    return {**{k: v for k, v in exam.items() if k != "items"}, "items": len(created), "by_label": labels.to_dict()}


def grade_answers(
    answers: pd.DataFrame, exam: dict[str, Any], spec: ProjectSpec, certified_at: datetime
) -> list[dict[str, Any]]:
    """One certificate per person who answered: score on the exam's items, its interval, passed or not.

    `answers`: rows with task_id (exam task), annotator_email, label_studio_user_id, label, updated_at.
    """
    from labelflow.tasks.quality import wilson_interval

    ladder = list(spec.quality.ladder)
    level = ladder[level_index(spec, exam["level"])]
    gold = {int(item["exam_task_id"]): item["gold_label"] for item in exam["items"]}
    total = len(gold)
    own = answers[answers["task_id"].isin(gold) & answers["annotator_email"].notna()]
    latest = own.sort_values("updated_at", kind="stable").drop_duplicates(["annotator_email", "task_id"], keep="last")
    expires = certified_at + timedelta(days=spec.quality.certificate_valid_days)
    certificates = []
    for email, rows in latest.groupby("annotator_email", sort=True):
        correct = int(
            sum(str(label) == gold[int(task)] for task, label in zip(rows["task_id"], rows["label"], strict=True))
        )
        score = correct / total  # an item left unanswered counts as wrong
        low, high = wilson_interval(score, total)
        user_id = rows["label_studio_user_id"].dropna()
        certificates.append(
            {
                "certificate_id": uuid.uuid4().hex,
                "certified_at": certified_at,
                "expires_at": expires,
                "annotator_email": str(email).strip().lower(),
                "label_studio_user_id": int(user_id.iloc[0]) if len(user_id) else None,
                "project": spec.name,
                "domain": spec.pool_domain,
                "task_type": spec.task,
                "level": level.name,
                "exam_version": int(exam["version"]),
                "exam_project_id": int(exam["project_id"]),
                "items": total,
                "answered": len(rows),
                "correct": correct,
                "score": score,
                "score_low": low,
                "score_high": high,
                "min_accuracy": level.min_accuracy,
                "passed": bool(low is not None and low >= level.min_accuracy),
            }
        )
    return certificates


def exam_answers(ls: ReviewLabelStudio, spec: ProjectSpec, exam: dict[str, Any]) -> pd.DataFrame:
    """The valid answers in an exam project, as rows (task_id, annotator_email, label_studio_user_id, label, ...)."""
    import pandas as pd

    from labelflow.tasks.annotations import AnnotationNormalizer
    from labelflow.tasks.label_config import label_interface

    project_id = int(exam["project_id"])
    if ls.get_project(project_id) is None:
        raise ExamError(f"the exam project {project_id} ({exam['title']}) is gone from Label Studio")
    exported, _ = ls.export_snapshot(project_id, timeout=spec.collect.timeout_seconds)
    normalizer = AnnotationNormalizer(spec, project_id, ls.users(), label_interface(spec).from_name)
    rows = [row for seq, item in enumerate(exported) for row in normalizer.task(item, seq).annotations]
    frame = pd.DataFrame(rows, columns=["task_id", "annotator_id", "annotator_email", "label", "problem", "updated_at"])
    frame = frame[frame["problem"].isna()].rename(columns={"annotator_id": "label_studio_user_id"})
    return frame.reset_index(drop=True)


def grade_exam(
    ls: ReviewLabelStudio,
    store: ObjectStorePort,
    spec: ProjectSpec,
    version: int | None = None,
    now: datetime | None = None,
    pool: S3Location = POOL_LOCATION,
) -> dict[str, Any]:
    """Grade one exam version (the newest by default) and record a certificate per person in the pool."""
    _check_gradable(spec)
    exam = ExamState.load(store, spec).exam(version)
    certificates = grade_answers(exam_answers(ls, spec, exam), exam, spec, now or datetime.now(UTC))
    if certificates:
        table = pa.Table.from_pylist(certificates, schema=CERTIFICATE_SCHEMA)
        CertificateStore(store, pool).append(table, spec.pool_domain, spec.slug)
    return {
        "exam_version": int(exam["version"]),
        "level": exam["level"],
        "project_id": int(exam["project_id"]),
        "items": len(exam["items"]),
        "certificates": certificates,
    }


def valid_certificates(
    certificates: pa.Table | pd.DataFrame, ladder: list[Any], now: datetime | None = None
) -> pd.DataFrame:
    """Per person, domain and task type: the highest level of a passed certificate not expired at `now`."""
    import pandas as pd

    frame = certificates.to_pandas() if isinstance(certificates, pa.Table) else certificates.copy()
    columns = ["annotator_email", "domain", "task_type", "certified_level", "certified_rank", "certificate_expires_at"]
    if frame.empty:
        return pd.DataFrame(columns=columns)
    now = now or datetime.now(UTC)
    ranks = {rung.name: index for index, rung in enumerate(ladder)}
    expires = pd.to_datetime(frame["expires_at"], utc=True)
    valid = frame[frame["passed"].astype(bool) & (expires > pd.Timestamp(now)) & frame["level"].isin(ranks)].copy()
    if valid.empty:
        return pd.DataFrame(columns=columns)
    valid["annotator_email"] = valid["annotator_email"].str.strip().str.lower()
    valid["certified_rank"] = valid["level"].map(ranks).astype(int)
    valid["certificate_expires_at"] = pd.to_datetime(valid["expires_at"], utc=True)
    best = valid.sort_values(["certified_rank", "certificate_expires_at"]).drop_duplicates(
        ["annotator_email", "domain", "task_type"], keep="last"
    )
    return best.rename(columns={"level": "certified_level"})[columns].reset_index(drop=True)


def load_certificates(store: ObjectStorePort, domain: str | None = None, pool: S3Location = POOL_LOCATION) -> pa.Table:
    """Every certificate in the pool (of one domain, or all)."""
    return CertificateStore(store, pool).read(domain.lower() if domain else None)


def admitted_ranks(profiles: pd.DataFrame, certificates: pd.DataFrame, spec: ProjectSpec) -> dict[str, int]:
    """Per email: the higher of the pool level's rank and valid certificates' for the spec's domain and task type."""
    ranks: dict[str, int] = {}
    for frame, column in ((profiles, "level_rank"), (certificates, "certified_rank")):
        if frame.empty:
            continue
        mine = frame[(frame["domain"] == spec.pool_domain) & (frame["task_type"] == spec.task)]
        for email, rank in zip(mine["annotator_email"], mine[column], strict=True):
            key = str(email).strip().lower()
            ranks[key] = max(ranks.get(key, 0), int(rank))
    return ranks


def admission_ranks(store: ObjectStorePort, spec: ProjectSpec, now: datetime | None = None) -> dict[str, int]:
    """The ranks `mark_uncertified` compares with `quality.min_level`, from the pool in the object store."""
    from labelflow.tasks.talent_pool import load_profiles

    ladder = list(spec.quality.ladder)
    profiles = load_profiles(store, spec.pool_domain, ladder)
    certificates = valid_certificates(load_certificates(store, spec.pool_domain), ladder, now)
    return admitted_ranks(profiles, certificates, spec)


def mark_uncertified(annotations: pd.DataFrame, spec: ProjectSpec, ranks: dict[str, int]) -> pd.DataFrame:
    """The annotations with `uncertified`: by people below `quality.min_level` (reviewers, experts' decisions exempt).

    Unchanged without `min_level`, so other projects publish the same files as before.
    """
    if spec.quality.min_level is None:
        return annotations
    needed = [rung.name for rung in spec.quality.ladder].index(spec.quality.min_level)
    exempt = {email.strip().lower() for email in spec.quality.reviewers}
    email = annotations["annotator_email"].fillna("").astype(str).str.strip().str.lower()
    below = email.map(lambda person: ranks.get(person, 0) < needed and person not in exempt)
    if "expert_decision" in annotations.columns:
        below &= ~annotations["expert_decision"].fillna(False).astype(bool)
    return annotations.assign(uncertified=below.astype(bool) & annotations["annotator_id"].notna())


def with_certified_levels(profiles: pd.DataFrame, valid: pd.DataFrame) -> pd.DataFrame:
    """The profiles with `certified_level` and `certificate_expires_at` (None without a valid certificate)."""
    keys = ["annotator_email", "domain", "task_type"]
    if profiles.empty:
        return profiles.assign(certified_level=None, certificate_expires_at=None)
    mine = profiles.assign(_email=profiles["annotator_email"].astype(str).str.strip().str.lower())
    merged = mine.merge(
        valid[[*keys, "certified_level", "certificate_expires_at"]].rename(columns={"annotator_email": "_email"}),
        on=["_email", "domain", "task_type"],
        how="left",
    )
    merged["certified_level"] = merged["certified_level"].astype(object).where(merged["certified_level"].notna(), None)
    return merged.drop(columns=["_email"])
