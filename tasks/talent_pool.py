"""The talent pool: every collect's evidence about each annotator, kept across projects, and profiles built from it.

The record lives in the object store next to labelflow's other state, one folder per domain:
`s3://labelflow-state/pool/evidence/<domain>/part-<time>-<project>-<id>.parquet`. It is append-only: a collect
writes one new part (unique name: time, project, random id) and never changes another, so collects of different
projects can write at once. When a domain holds more than COMPACT_AFTER_PARTS live parts, the writer merges them
into a `compacted-<time>-<id>.parquet` part whose Parquet metadata lists the parts it replaces; readers ignore
replaced parts, so a part written while compaction runs is never lost (it is not in the list), and two compactions
at once only duplicate rows, which readers drop by `evidence_id`. Replaced parts are deleted once the compacted part
that replaced them is older than REPLACED_GRACE_SECONDS, so a reader that listed them just before still finds them.

Each evidence row is a snapshot: one annotator's figures on one project as judged at one collect (the quality
report's annotator table covers the project's whole current table). A profile therefore sums the LATEST snapshot
of each project, and the trend reads the differences between successive snapshots of a project (the work done in
between: its gold answers exactly, its other annotations at the snapshot's Dawid-Skene estimate), as the
weighted least-squares slope of each period's accuracy over time, in accuracy points per 30 days. Levels, intervals and trends are in tasks/levels.py and `build_profiles` below.
"""

from __future__ import annotations

import io
import json
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from labelflow.integrations.object_store import ObjectStoreError
from labelflow.tasks.levels import DEFAULT_LADDER, DS_WEIGHT, Level, assign_levels, combined_interval
from labelflow.tasks.ports import ObjectStorePort
from labelflow.tasks.spec import STATE_BUCKET, ProjectSpec, S3Location
from labelflow.tasks.tables import conform, read_parquet

if TYPE_CHECKING:
    import pandas as pd

POOL_LOCATION = S3Location(bucket=STATE_BUCKET, prefix="pool")
TIMESTAMP = pa.timestamp("us", tz="UTC")
EVIDENCE_SCHEMA = pa.schema(
    [
        ("evidence_id", pa.string()),  # unique per row: readers drop the duplicates two concurrent compactions leave
        ("collected_at", TIMESTAMP),
        ("project", pa.string()),  # the spec's name
        ("project_id", pa.int64()),  # the Label Studio project
        ("task_type", pa.string()),
        ("domain", pa.string()),
        ("annotator_email", pa.string()),
        ("label_studio_user_id", pa.int64()),
        ("annotations", pa.int64()),
        ("invalid_annotations", pa.int64()),
        ("gold_answered", pa.int64()),
        ("gold_correct", pa.float64()),  # a sum of per-task scores for types whose gold score is not right/wrong
        ("agreement", pa.float64()),  # with consensus, where someone else also answered
        ("estimated_accuracy", pa.float64()),  # Dawid-Skene's, for types that aggregate with it
        ("median_lead_time_seconds", pa.float64()),
        ("first_annotation_at", TIMESTAMP),
        ("last_annotation_at", TIMESTAMP),
        ("guideline_version", pa.string()),  # of the person's latest annotation, when annotations are stamped
    ]
)
COMPACT_AFTER_PARTS = 32
REPLACED_GRACE_SECONDS = 600.0
REPLACES = b"labelflow.replaces"
PARQUET = "application/vnd.apache.parquet"
READ_ATTEMPTS = 3
TREND_MIN_SPAN_DAYS = 1.0  # a slope over less time than this says nothing about a month
TREND_STEADY = 0.02  # accuracy points per 30 days within which a trend is called steady


def _part_time(key: str) -> float:
    """Seconds since the epoch when a part was written, from its name (`part-<ns>-...`, `compacted-<ns>-...`)."""
    try:
        return int(key.rsplit("/", 1)[-1].split("-")[1]) / 1e9
    except (IndexError, ValueError):
        return 0.0


def _is_compacted(key: str) -> bool:
    return key.rsplit("/", 1)[-1].startswith("compacted-")


@dataclass(frozen=True)
class Listing:
    """One domain's parts at one moment: every key, and which of them a compacted part replaced."""

    keys: list[str]
    replaced: dict[str, str]  # replaced part -> the compacted part (the oldest) that replaced it
    compacted: dict[str, pa.Table]

    @property
    def live(self) -> list[str]:
        """The parts a reader reads."""
        return [key for key in self.keys if key not in self.replaced]


class TalentPool:
    """The pool's evidence record in the object store: append-only Parquet parts per domain, compacted."""

    # The pool's area, its rows' schema and unique id column (tasks/exams.py keeps certificates the same way).
    area = "evidence"
    schema = EVIDENCE_SCHEMA
    id_column = "evidence_id"

    def __init__(self, store: ObjectStorePort, location: S3Location = POOL_LOCATION) -> None:
        self.store = store
        self.location = location
        self.evidence_prefix = location.join(self.area) + "/"

    def domain_prefix(self, domain: str) -> str:
        """The folder of one domain's parts."""
        return f"{self.evidence_prefix}{domain}/"

    def domains(self) -> list[str]:
        """Every domain with evidence."""
        if not self.store.bucket_exists(self.location.bucket):
            return []
        found = {
            obj.key.removeprefix(self.evidence_prefix).split("/", 1)[0]
            for obj in self.store.list_objects(self.location.bucket, self.evidence_prefix)
        }
        return sorted(found)

    def _write(self, table: pa.Table, key: str, replaces: list[str] | None = None) -> str:
        if replaces is not None:
            table = table.replace_schema_metadata({REPLACES: json.dumps(sorted(replaces)).encode()})
        buffer = io.BytesIO()
        pq.write_table(table, buffer, compression="zstd")
        self.store.put_bytes(self.location.bucket, key, buffer.getvalue(), content_type=PARQUET)
        return key

    def append(self, table: pa.Table, domain: str, project_slug: str) -> str | None:
        """Write one collect's evidence as a new part of its domain (then compact if parts piled up); its key."""
        if not table.num_rows:
            return None
        self.store.ensure_bucket(self.location.bucket)
        name = f"part-{time.time_ns():020d}-{project_slug[:60]}-{uuid.uuid4().hex[:8]}.parquet"
        key = self._write(conform(table, self.schema), self.domain_prefix(domain) + name)
        self.maybe_compact(domain)
        return key

    def maybe_compact(self, domain: str, now: float | None = None) -> str | None:
        """Compact when parts piled up, or clear parts replaced long ago; decided from the listing alone.

        The names' times only decide whether to run `compact`, which reads the replaced lists and is exact.
        """
        keys = [obj.key for obj in self.store.list_objects(self.location.bucket, self.domain_prefix(domain))]
        newest_key = max((k for k in keys if _is_compacted(k)), key=_part_time, default=None)
        newest = _part_time(newest_key) if newest_key else 0.0
        fresh = sum(1 for key in keys if not _is_compacted(key) and _part_time(key) > newest)
        older = any(key != newest_key and _part_time(key) <= newest for key in keys)
        now = time.time() if now is None else now
        if fresh > COMPACT_AFTER_PARTS:
            return self.compact(domain, now=now)
        if older and now - newest > REPLACED_GRACE_SECONDS:
            return self.compact(domain, force=True, now=now)
        return None

    def _listing(self, domain: str) -> Listing:
        keys = [obj.key for obj in self.store.list_objects(self.location.bucket, self.domain_prefix(domain))]
        compacted, replaced = {}, {}
        for key in sorted((k for k in keys if _is_compacted(k)), key=_part_time):
            table = read_parquet(self.store.get_bytes(self.location.bucket, key))
            compacted[key] = table
            for old in json.loads((table.schema.metadata or {}).get(REPLACES, b"[]")):
                replaced.setdefault(old, key)  # the oldest replacer decides when the old part may go
        return Listing(keys, replaced, compacted)

    def _read_domain(self, domain: str) -> tuple[Listing, list[pa.Table]]:
        listing = self._listing(domain)
        tables = [
            listing.compacted[key]
            if key in listing.compacted
            else read_parquet(self.store.get_bytes(self.location.bucket, key))
            for key in listing.live
        ]
        return listing, [conform(table.replace_schema_metadata(None), self.schema) for table in tables]

    def read(self, domain: str | None = None) -> pa.Table:
        """Every evidence row (of one domain, or all), each once."""
        if not self.store.bucket_exists(self.location.bucket):
            return self.schema.empty_table()
        tables = []
        for name in [domain] if domain else self.domains():
            for attempt in range(READ_ATTEMPTS):
                try:
                    tables += self._read_domain(name)[1]
                    break
                except ObjectStoreError as exc:
                    # A part deleted between the listing and the read was replaced meanwhile: list again.
                    if not exc.not_found or attempt == READ_ATTEMPTS - 1:
                        raise
        return _unique_rows(pa.concat_tables(tables), self.id_column) if tables else self.schema.empty_table()

    def compact(self, domain: str, force: bool = False, now: float | None = None) -> str | None:
        """Merge a domain's live parts into one when there are many (or `force`); delete parts replaced long ago."""
        listing, tables = self._read_domain(domain)
        written = None
        if len(listing.live) > (1 if force else COMPACT_AFTER_PARTS):
            merged = _unique_rows(pa.concat_tables(tables), self.id_column)
            # It replaces what it read and what the parts it read had replaced, so deleting those stays safe.
            replaces = [key for key in listing.keys if key in listing.replaced] + listing.live
            name = f"compacted-{time.time_ns():020d}-{uuid.uuid4().hex[:8]}.parquet"
            written = self._write(merged, self.domain_prefix(domain) + name, replaces)
        now = time.time() if now is None else now
        for old, replacer in listing.replaced.items():
            if old in listing.keys and now - _part_time(replacer) > REPLACED_GRACE_SECONDS:
                self.store.delete(self.location.bucket, old)
        return written


def _unique_rows(table: pa.Table, id_column: str = "evidence_id") -> pa.Table:
    """The rows with distinct ids (`evidence_id`), the first of each kept."""
    import pyarrow.compute as pc

    ids = table.column(id_column)
    if pc.count_distinct(ids).as_py() == table.num_rows:
        return table
    import pandas as pd

    keep = ~pd.Series(ids.to_numpy(zero_copy_only=False)).duplicated().to_numpy()
    return table.filter(pa.array(keep))


# --- evidence from a collect ---------------------------------------------------------------------------------------


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if np.isnan(number) else number


def evidence_table(
    spec: ProjectSpec,
    annotators: pd.DataFrame,
    annotations: pd.DataFrame,
    collected_at: datetime,
    project_id: int | None = None,
) -> pa.Table:
    """One evidence row per annotator of the quality report's annotator table, with their time window."""
    import pandas as pd

    rows: list[dict[str, Any]] = []
    if annotators.empty:
        return EVIDENCE_SCHEMA.empty_table()
    own = annotations[annotations["annotator_id"].notna()]
    created = pd.to_datetime(own["created_at"], utc=True)
    updated = pd.to_datetime(own["updated_at"], utc=True).fillna(created)
    by_person = own.assign(_created=created, _updated=updated).groupby("annotator_id")
    first, last = by_person["_created"].min(), by_person["_updated"].max()
    guideline: dict[Any, Any] = {}
    if "guideline_version" in own.columns:
        latest = own.assign(_updated=updated).sort_values("_updated").drop_duplicates("annotator_id", keep="last")
        guideline = dict(zip(latest["annotator_id"], latest["guideline_version"], strict=True))
    for person in annotators.to_dict("records"):
        if _number(person.get("annotator_id")) is None:
            continue
        user_id = int(person["annotator_id"])
        gold_answered = int(_number(person.get("gold_tasks")) or 0)
        gold_accuracy = _number(person.get("gold_accuracy"))
        start, end = first.get(user_id), last.get(user_id)
        rows.append(
            {
                "evidence_id": uuid.uuid4().hex,
                "collected_at": collected_at,
                "project": spec.name,
                "project_id": project_id,
                "task_type": spec.task,
                "domain": spec.pool_domain,
                "annotator_email": person.get("annotator_email") or None,
                "label_studio_user_id": user_id,
                "annotations": int(_number(person.get("annotations")) or 0),
                "invalid_annotations": int(_number(person.get("invalid_annotations")) or 0),
                "gold_answered": gold_answered,
                "gold_correct": gold_accuracy * gold_answered if gold_accuracy is not None else 0.0,
                "agreement": _number(person.get("agreement_with_consensus")),
                "estimated_accuracy": _number(person.get("estimated_accuracy")),
                "median_lead_time_seconds": _number(person.get("median_lead_time_seconds")),
                "first_annotation_at": None if start is None or pd.isna(start) else start.to_pydatetime(),
                "last_annotation_at": None if end is None or pd.isna(end) else end.to_pydatetime(),
                "guideline_version": guideline.get(user_id) if isinstance(guideline.get(user_id), str) else None,
            }
        )
    return pa.Table.from_pylist(rows, schema=EVIDENCE_SCHEMA)


def record_evidence(
    store: ObjectStorePort,
    spec: ProjectSpec,
    annotators: pd.DataFrame,
    annotations: pd.DataFrame,
    project_id: int | None = None,
    collected_at: datetime | None = None,
    pool: S3Location = POOL_LOCATION,
) -> int:
    """Append a collect's evidence about each annotator to the talent pool; how many rows were written."""
    table = evidence_table(spec, annotators, annotations, collected_at or datetime.now(UTC), project_id)
    TalentPool(store, pool).append(table, spec.pool_domain, spec.slug)
    return table.num_rows


# --- profiles ------------------------------------------------------------------------------------------------------

PROFILE_KEYS = ["person", "domain", "task_type"]


def _frame(evidence: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Evidence with integer ids of its profile and of its series (profile and project), ordered by series, time."""
    import pandas as pd

    frame = evidence.to_pandas() if isinstance(evidence, pa.Table) else evidence.copy()
    email = frame["annotator_email"].astype("string").str.strip().str.lower()
    frame["person"] = email.fillna("user-" + frame["label_studio_user_id"].astype("Int64").astype("string"))
    # Strings are factorized once; every later grouping and sort is on these integers (1M rows: seconds saved).
    frame["profile_id"] = frame.groupby(PROFILE_KEYS, sort=False).ngroup()
    frame["series_id"] = frame.groupby(["profile_id", "project"], sort=False).ngroup()
    # What Dawid-Skene judged beyond gold: the person's other valid annotations (gold answers count as themselves).
    has_ds = frame["estimated_accuracy"].notna()
    others = (frame["annotations"] - frame["invalid_annotations"].fillna(0) - frame["gold_answered"]).clip(lower=0)
    frame["ds_tasks"] = np.where(has_ds, others, 0.0)
    frame["ds_correct"] = np.where(has_ds, frame["estimated_accuracy"].fillna(0.0) * others, 0.0)
    frame["agreement_weight"] = np.where(frame["agreement"].notna(), frame["annotations"], 0.0)
    frame["agreement_sum"] = frame["agreement"].fillna(0.0) * frame["agreement_weight"]
    frame["lead_weight"] = np.where(frame["median_lead_time_seconds"].notna(), frame["annotations"], 0.0)
    frame["lead_sum"] = frame["median_lead_time_seconds"].fillna(0.0) * frame["lead_weight"]
    when = frame["last_annotation_at"].fillna(frame["collected_at"])
    frame["at"] = pd.to_datetime(when, utc=True)
    return frame.sort_values(["series_id", "collected_at"], kind="stable").reset_index(drop=True)


def periods(evidence: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """The work between successive snapshots of each person's project: its time, trials and accuracy."""
    return _periods(_frame(evidence)).drop(columns=["profile_id"])


def _periods(frame: pd.DataFrame) -> pd.DataFrame:
    series = frame["series_id"].to_numpy()
    first = np.ones(len(series), dtype=bool)
    first[1:] = series[1:] != series[:-1]  # the frame is ordered by series, then time
    delta = {}
    for column in ("gold_answered", "gold_correct", "ds_tasks"):
        values = frame[column].to_numpy(dtype=float)
        before = np.concatenate([[0.0], values[:-1]])
        delta[column] = np.clip(np.where(first, values, values - before), 0.0, None)
    # Gold answers of the period are exact; the model's part is the snapshot's estimate applied to the period's new
    # annotations (Dawid-Skene re-estimates the whole project each time: differencing its totals amplifies noise).
    gold_correct = np.minimum(delta["gold_correct"], delta["gold_answered"])
    ds_correct = np.nan_to_num(frame["estimated_accuracy"].to_numpy(dtype=float)) * delta["ds_tasks"]
    trials = delta["gold_answered"] + DS_WEIGHT * delta["ds_tasks"]
    result = frame[["profile_id", *PROFILE_KEYS, "project", "annotator_email", "at"]].copy()
    result["trials"] = trials
    with np.errstate(invalid="ignore", divide="ignore"):
        result["accuracy"] = np.where(trials > 0, (gold_correct + DS_WEIGHT * ds_correct) / trials, np.nan)
    return result[trials > 0].reset_index(drop=True)


def _trends(period_rows: pd.DataFrame) -> pd.Series:
    """Per profile id: the weighted least-squares slope of period accuracy over time, in points per 30 days."""
    import pandas as pd

    if period_rows.empty:
        return pd.Series(dtype=float, name="trend_per_30_days")
    days = (period_rows["at"] - period_rows["at"].min()).dt.total_seconds().to_numpy() / 86400.0
    w = period_rows["trials"].to_numpy(dtype=float)
    y = period_rows["accuracy"].to_numpy(dtype=float)
    sums = pd.DataFrame(
        {"w": w, "wt": w * days, "wy": w * y, "wtt": w * days * days, "wty": w * days * y, "t": days, "n": 1.0}
    )
    grouped = sums.groupby(period_rows["profile_id"].to_numpy(), sort=False)
    totals = grouped[["w", "wt", "wy", "wtt", "wty", "n"]].sum()
    span = grouped["t"].max() - grouped["t"].min()
    with np.errstate(invalid="ignore", divide="ignore"):
        denominator = totals["w"] * totals["wtt"] - totals["wt"] ** 2
        slope = (totals["w"] * totals["wty"] - totals["wt"] * totals["wy"]) / denominator
    usable = (totals["n"] >= 2) & (span >= TREND_MIN_SPAN_DAYS) & (denominator > 0)
    return pd.Series(np.where(usable, slope * 30.0, np.nan), index=totals.index, name="trend_per_30_days")


def trend_word(per_30_days: float | None) -> str:
    """ "improving", "declining" or "steady", or "–" without enough history."""
    if per_30_days is None or np.isnan(per_30_days):
        return "–"
    if per_30_days >= TREND_STEADY:
        return "improving"
    if per_30_days <= -TREND_STEADY:
        return "declining"
    return "steady"


PROFILE_COLUMNS = [
    "annotator_email", "label_studio_user_id", "domain", "task_type", "level", "level_rank", "accuracy",
    "accuracy_low", "accuracy_high", "evidence", "gold_answered", "gold_accuracy", "estimated_accuracy",
    "ds_annotations", "agreement", "projects", "collects", "trend_per_30_days", "trend", "first_annotation_at",
    "last_annotation_at", "lead_time_seconds", "guideline_version",
]  # fmt: skip


def build_profiles(
    evidence: pa.Table | pd.DataFrame, ladder: Iterable[Level] = DEFAULT_LADDER, with_trend: bool = True
) -> pd.DataFrame:
    """One profile per person, domain and task type: level on the ladder, the interval behind it, the trend."""
    import pandas as pd

    ladder = list(ladder)
    if (evidence.num_rows if isinstance(evidence, pa.Table) else len(evidence)) == 0:
        return pd.DataFrame(columns=PROFILE_COLUMNS)
    frame = _frame(evidence)
    latest = frame.drop_duplicates("series_id", keep="last")  # ordered by series, then time: the newest snapshot
    grouped = latest.groupby("profile_id", sort=True)
    sums = grouped[
        ["annotations", "gold_answered", "gold_correct", "ds_tasks", "ds_correct", "agreement_weight",
         "agreement_sum", "lead_weight", "lead_sum"]
    ].sum()  # fmt: skip
    newest = latest.sort_values("collected_at", kind="stable").groupby("profile_id", sort=True)
    last = newest[[*PROFILE_KEYS, "annotator_email", "label_studio_user_id"]].last()
    guideline = latest[latest["guideline_version"].notna()].sort_values("collected_at", kind="stable")
    window = frame.groupby("profile_id", sort=True).agg(
        first_annotation_at=("first_annotation_at", "min"),
        last_annotation_at=("last_annotation_at", "max"),
        collects=("collected_at", "nunique"),
    )
    profiles = sums.join(last).join(window)
    profiles["projects"] = grouped.size()  # one latest snapshot per project
    profiles["guideline_version"] = guideline.groupby("profile_id")["guideline_version"].last()
    with np.errstate(invalid="ignore", divide="ignore"):
        ds_accuracy = np.where(profiles["ds_tasks"] > 0, profiles["ds_correct"] / profiles["ds_tasks"], np.nan)
        point, low, high = combined_interval(
            profiles["gold_correct"], profiles["gold_answered"], ds_accuracy, profiles["ds_tasks"]
        )
        agreement = np.where(
            profiles["agreement_weight"] > 0, profiles["agreement_sum"] / profiles["agreement_weight"], np.nan
        )
        profiles["gold_accuracy"] = np.where(
            profiles["gold_answered"] > 0, profiles["gold_correct"] / profiles["gold_answered"], np.nan
        )
        profiles["lead_time_seconds"] = np.where(
            profiles["lead_weight"] > 0, profiles["lead_sum"] / profiles["lead_weight"], np.nan
        )
    profiles["estimated_accuracy"] = ds_accuracy
    profiles["ds_annotations"] = profiles["ds_tasks"].astype("int64")
    profiles["accuracy"], profiles["accuracy_low"], profiles["accuracy_high"] = point, low, high
    profiles["agreement"] = agreement
    profiles["evidence"] = profiles["annotations"].astype("int64")
    rank = assign_levels(ladder, profiles["evidence"].to_numpy(), low, agreement)
    profiles["level_rank"] = rank
    profiles["level"] = np.array([level.name for level in ladder], dtype=object)[rank]
    if with_trend:
        profiles = profiles.join(_trends(_periods(frame)))
    else:
        profiles["trend_per_30_days"] = np.nan
    profiles["trend"] = [trend_word(value) for value in profiles["trend_per_30_days"]]
    profiles = profiles.reset_index(drop=True)
    profiles["annotator_email"] = profiles["annotator_email"].fillna(profiles["person"])
    profiles["label_studio_user_id"] = profiles["label_studio_user_id"].astype("Int64")
    ordered = profiles.sort_values(
        ["domain", "task_type", "level_rank", "accuracy_low", "annotator_email"],
        ascending=[True, True, False, False, True],
        kind="stable",
    )
    return ordered[PROFILE_COLUMNS].reset_index(drop=True)


def load_profiles(
    store: ObjectStorePort,
    domain: str | None = None,
    ladder: Iterable[Level] = DEFAULT_LADDER,
    pool: S3Location = POOL_LOCATION,
) -> pd.DataFrame:
    """The pool's profiles (of one domain, or all) from the record in the object store."""
    return build_profiles(TalentPool(store, pool).read(domain.lower() if domain else None), ladder)
