"""Suspect labels in a classification dataset: consensus labels that are probably wrong (issue 19, section 4).

Out-of-fold predicted probabilities from a model trained on the other folds (so no row judges itself) go to
cleanlab's confident learning (`cleanlab.filter.find_label_issues`, release 2.9, Apache-2.0), which flags the rows
whose given label the model finds improbable relative to the per-class confidence thresholds it estimates.

Collect runs `find_suspects` on the current consensus after judging; the report lists the suspects. With
`quality.review_suspects` `hold_back_suspects` also sends them to review (the expert review project when the spec
escalates, one more annotation otherwise) and keeps them out of published versions until resolved.
`bench/label_errors_bench.py` measures precision and recall on a real corpus with planted flips.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labelflow.tasks.run_records import now_iso, read_run_record, write_run_record

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

    from labelflow.tasks.ports import ObjectStorePort
    from labelflow.tasks.quality import QualityReport
    from labelflow.tasks.spec import ProjectSpec

FOLDS = 5
MIN_ROWS = 50  # fewer consensus rows than this: too little for a model to say anything about a label
MIN_CLASS_ROWS = 5  # each class needs a row in each of the five folds
# Bounds on time and memory: each fold's model learns from at most MAX_TRAIN_ROWS rows (a seeded sample of the
# other folds), and a text counts by its first MAX_TEXT_CHARACTERS characters. Fitting then costs at most five fits
# of MAX_TRAIN_ROWS texts, whatever the project's size; predicting is linear in the rows, in PREDICT_CHUNK pieces.
MAX_TRAIN_ROWS = 10_000
MAX_TEXT_CHARACTERS = 2_000
PREDICT_CHUNK = 10_000
MAX_MEDIA_ROWS = 5_000  # image and audio: objects read per collect, at most
# Methods whose label a review decided: learned from, never suspected (the review is the resolution).
REVIEWED_METHODS = frozenset({"review", "expert"})
SUSPECT_REASON = "suspected label error"  # the flag reason of a held-back suspect (escalation matches it)
STATE_NAME = "collect/suspects.json"  # under the project's state location
SUSPECT_COLUMNS = ["task_id", "given_label", "suggested_label", "label_quality", "given_probability", "votes"]


def out_of_fold_text_probabilities(
    texts: Sequence[str],
    labels: Sequence[str],
    classes: Sequence[str],
    max_train_rows: int = MAX_TRAIN_ROWS,
    seed: int = 0,
) -> np.ndarray:
    """P(class | text) for each row from a model that never saw it: character 1-3-gram TF-IDF + logistic
    regression (works for Chinese, which has no spaces), cross-fitted over stratified folds; each fold's model
    learns from at most `max_train_rows` rows of the other folds."""
    clipped = [text[:MAX_TEXT_CHARACTERS] for text in texts]
    return out_of_fold_probabilities(clipped, labels, classes, _text_model, max_train_rows, seed)


def out_of_fold_probabilities(
    inputs: Any,
    labels: Sequence[str],
    classes: Sequence[str],
    make_model: Callable[[], Any],
    max_train_rows: int = MAX_TRAIN_ROWS,
    seed: int = 0,
) -> np.ndarray:
    """P(class | row) for each row from a model (`make_model()`, a scikit-learn classifier) that never saw it,
    cross-fitted over stratified folds. `inputs`: a list (texts) or an array with one row per row (features)."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold

    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[label] for label in labels])

    def take(at: np.ndarray) -> Any:
        return [inputs[i] for i in at] if isinstance(inputs, list) else inputs[at]

    folds = StratifiedKFold(n_splits=min(FOLDS, int(np.bincount(y).min())), shuffle=True, random_state=seed)
    rng = np.random.default_rng(seed)
    probabilities = np.zeros((len(y), len(classes)))
    for train, held in folds.split(np.zeros(len(y)), y):
        if len(train) > max_train_rows:
            train = np.sort(rng.choice(train, max_train_rows, replace=False))
        model = make_model().fit(take(train), y[train])
        columns = model.classes_  # a sample may miss a class: its probability stays 0
        for start in range(0, len(held), PREDICT_CHUNK):
            rows = held[start : start + PREDICT_CHUNK]
            probabilities[np.ix_(rows, columns)] = model.predict_proba(take(rows))
    return probabilities


def _text_model() -> Any:
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(
        TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), min_df=2, sublinear_tf=True),
        LogisticRegression(max_iter=2000, C=4.0),
    )


def suspect_rows(labels: Sequence[str], probabilities: np.ndarray, classes: Sequence[str]) -> np.ndarray:
    """Positions of rows whose label is probably wrong, most suspicious first (cleanlab's self-confidence order)."""
    import numpy as np
    from cleanlab.filter import find_label_issues

    index = {label: i for i, label in enumerate(classes)}
    y = np.array([index[label] for label in labels])
    # n_jobs=1: by default cleanlab forks a multiprocessing pool, and a fork of a process with threads (Prefect's,
    # the HTTP clients') can inherit a lock held mid-call and hang for ever; it did in a collect on the test stack.
    found = find_label_issues(y, probabilities, return_indices_ranked_by="self_confidence", n_jobs=1)
    return np.asarray(found, dtype=int)


@dataclass(frozen=True)
class Suspects:
    """One collect's suspected label errors, most suspicious first, and what was done with them."""

    table: pd.DataFrame  # SUSPECT_COLUMNS, plus `status` once `hold_back_suspects` has run
    rows: int = 0  # consensus rows the out-of-fold model learned from and judged
    skipped: str | None = None  # why nothing was looked at (too little data, an unsupported type)
    held_back: int = 0  # suspects kept out of the next version until resolved (`quality.review_suspects`)
    routed_to: str | None = None  # "review" (the expert review project) or "annotators" (one more annotation)
    resolved: int = 0  # suspects a review decision or new annotations have resolved so far
    held_votes: dict[int, int] = field(default_factory=dict)  # held-back task -> its human votes when first held

    def task_ids(self) -> list[int]:
        """The suspects' task ids, most suspicious first."""
        return [int(t) for t in self.table["task_id"]]

    def summary(self) -> dict[str, Any]:
        """The run summary's and metrics' `label_errors` entry."""
        found: dict[str, Any] = {"suspects": len(self.table), "rows_checked": self.rows}
        if self.skipped:
            found["skipped"] = self.skipped
        if self.routed_to is not None:
            found.update(held_back=self.held_back, routed_to=self.routed_to, resolved=self.resolved)
        return found


def empty_suspects(skipped: str | None = None, rows: int = 0) -> Suspects:
    """No suspects, with the reason none were looked for."""
    import pandas as pd

    return Suspects(pd.DataFrame(columns=SUSPECT_COLUMNS), rows, skipped)


def looks_for_suspects(spec: ProjectSpec) -> bool:
    """Whether collect looks for suspected label errors: a type a classifier can learn, and the spec asks."""
    return spec.task_type.model_in_the_loop and spec.quality.find_label_errors


def judged_rows(consensus: pd.DataFrame, spec: ProjectSpec) -> pd.DataFrame:
    """The consensus rows people decided (automation's `human_decided`) whose label is one of the spec's labels."""
    from labelflow.tasks.automation import human_decided

    keep = human_decided(consensus) & consensus["label"].isin(list(spec.labels))
    return consensus[keep].reset_index(drop=True)


def find_suspects(
    spec: ProjectSpec,
    consensus: pd.DataFrame,
    tasks: pd.DataFrame,
    read_object: Callable[[str], bytes] | None = None,
) -> Suspects:
    """Consensus labels out-of-fold predictions call probably wrong, most suspicious first (cleanlab 2.9).

    Learns from and judges the rows people decided (`judged_rows`); rows a review decided are learned from but never
    suspected. Texts are read from `tasks`; images and audio through `read_object` (an s3:// URI's bytes) into the
    baseline's features (tasks/training.py). Scales with the current consensus: at most five fits of MAX_TRAIN_ROWS
    rows each, then one linear pass to predict, so a large project costs a bounded fit plus time linear in its rows
    (bench/label_error_suspects_bench.py prints figures); image and audio also read each object, so at most
    MAX_MEDIA_ROWS of them.
    """
    import numpy as np
    import pandas as pd
    from cleanlab.rank import get_label_quality_scores

    if not looks_for_suspects(spec):
        return empty_suspects(f"task {spec.task} does not support label-error detection or the spec turns it off")
    media = spec.task_type.media
    rows = judged_rows(consensus, spec)
    if media == "text":
        texts = rows["task_id"].map(tasks.drop_duplicates("task_id", keep="last").set_index("task_id")["text"])
        rows = rows[texts.notna()].assign(text=texts[texts.notna()]).reset_index(drop=True)
    elif read_object is None:
        return empty_suspects(f"{media} tasks need their objects read, and no reader was given")
    elif len(rows) > MAX_MEDIA_ROWS:
        # Every object is read again each collect (no feature cache yet): beyond this, a collect would spend
        # minutes on reads.
        return empty_suspects(
            f"{len(rows)} {media} consensus labels; label-error detection reads at most {MAX_MEDIA_ROWS} objects",
            len(rows),
        )
    if len(rows) < MIN_ROWS:
        return empty_suspects(f"{len(rows)} consensus labels by people; label-error detection needs {MIN_ROWS}")
    counts = rows["label"].value_counts()
    classes = [label for label in spec.labels if label in counts.index]
    if len(classes) < 2:
        return empty_suspects("every consensus label is the same class: nothing to tell apart", len(rows))
    rare = [label for label in classes if counts[label] < MIN_CLASS_ROWS]
    if rare:
        return empty_suspects(
            f"class {rare[0]!r} has {counts[rare[0]]} consensus labels; each class needs {MIN_CLASS_ROWS}", len(rows)
        )
    labels = rows["label"].tolist()
    if media == "text":
        probabilities = out_of_fold_text_probabilities(rows["text"].tolist(), labels, classes, seed=spec.quality.seed)
    else:
        # The baseline's feature pipeline (tasks/training.py, `labelflow train`): the same features the model sees.
        from labelflow.tasks.training import classifier, model_inputs

        inputs = model_inputs(spec, rows, read_object)
        probabilities = out_of_fold_probabilities(
            inputs, labels, classes, lambda: classifier(media), seed=spec.quality.seed
        )
    found = suspect_rows(labels, probabilities, classes)
    given = np.array([classes.index(label) for label in labels])
    table = pd.DataFrame(
        {
            "task_id": rows["task_id"].to_numpy()[found].astype(int),
            "given_label": [labels[i] for i in found],
            "suggested_label": [classes[int(probabilities[i].argmax())] for i in found],
            # cleanlab's normalized margin: 0.5 + (P(given) - the largest other P) / 2; below 0.5 the model prefers
            # another class. Suspects are ordered by P(given) (cleanlab's self-confidence), lowest first.
            "label_quality": get_label_quality_scores(given, probabilities, method="normalized_margin")[found],
            "given_probability": probabilities[found, given[found]],
            "votes": rows["annotations"].to_numpy()[found].astype(int),
        },
        columns=SUSPECT_COLUMNS,
    )
    if "method" in rows.columns:  # a review decided these: that is the resolution, not a suspect
        reviewed = set(rows.loc[rows["method"].isin(list(REVIEWED_METHODS)), "task_id"].astype(int))
        table = table[~table["task_id"].isin(reviewed)]
    return Suspects(table.reset_index(drop=True), len(rows))


# Detection fits five models on the whole consensus, so it runs again only once the people-decided rows grew by
# this share since the last run: the cost per new label stays constant however long the history (amortised), and
# between runs the last suspects whose label is still the same stay listed.
RECHECK_GROWTH = 0.05
CHECKED_NAME = "collect/label-errors.json"  # the last detection: rows it judged and its suspects


def suspects_for_collect(
    store: ObjectStorePort,
    spec: ProjectSpec,
    consensus: pd.DataFrame,
    tasks: pd.DataFrame,
    read_object: Callable[[str], bytes] | None = None,
) -> Suspects:
    """This collect's suspects: detection afresh when the rows people decided grew by RECHECK_GROWTH (or more)
    since the last run, else the last run's suspects that still carry the label they were suspected under."""
    import pandas as pd

    rows = judged_rows(consensus, spec)
    last = read_run_record(store, spec.state_location, CHECKED_NAME)
    if last is not None and last.get("rows") and len(rows) < last["rows"] * (1 + RECHECK_GROWTH):
        table = pd.DataFrame(last.get("suspects") or [], columns=SUSPECT_COLUMNS)
        current = rows.set_index("task_id")["label"]
        same = table["task_id"].map(current).eq(table["given_label"])
        return Suspects(table[same].reset_index(drop=True), int(last["rows"]), last.get("skipped"))
    found = find_suspects(spec, consensus, tasks, read_object)
    record = {
        "rows": len(rows),
        "checked_at": now_iso(),
        "skipped": found.skipped,
        "suspects": json.loads(found.table[SUSPECT_COLUMNS].to_json(orient="records")),
    }
    write_run_record(store, spec.state_location, CHECKED_NAME, record)
    return found


# --- review and hold-back (quality.review_suspects) --------------------------------------------------------------


def hold_back_suspects(
    store: ObjectStorePort, spec: ProjectSpec, report: QualityReport, suspects: Suspects
) -> Suspects:
    """Flag the unresolved suspects in the consensus (so they are not published and escalation sees them), record
    them in `collect/suspects.json`, and say what was done; unchanged without `quality.review_suspects`.

    The rule, kept simple: a suspect is held back from the first collect that finds it until it is resolved, whatever
    later models say of it. Resolved means a review decided its task (a reviewer's or an expert's answer), or it has
    more human votes than when it was first held back (it was routed back and someone labeled it again, changing or
    confirming the label). A resolved task is not held back again.
    """
    if not spec.quality.review_suspects:
        return suspects
    routed_to = "review" if spec.quality.escalates else "annotators"
    document = read_run_record(store, spec.state_location, STATE_NAME) or {}
    held: dict[str, dict[str, Any]] = dict(document.get("held") or {})
    resolved: dict[str, dict[str, Any]] = dict(document.get("resolved") or {})
    consensus = report.consensus
    by_task = consensus.set_index("task_id")
    for key, entry in list(held.items()):
        task_id = int(key)
        if task_id not in by_task.index:  # deleted in Label Studio: nothing to hold back
            del held[key]
            continue
        row = by_task.loc[task_id]
        decided = bool(row["reviewed"]) or row.get("method") in REVIEWED_METHODS
        if decided or int(row["annotations"]) > int(entry["votes"]):
            resolved[key] = {**entry, "label": _text(row["label"]), "resolved_at": now_iso()}
            del held[key]
    for row in suspects.table.itertuples(index=False):
        key = str(int(row.task_id))
        if key in held or key in resolved:
            continue
        held[key] = {
            "votes": int(row.votes),
            "label": str(row.given_label),
            "suggested": str(row.suggested_label),
            "route": routed_to,
            "held_at": now_iso(),
        }
    hold = consensus["task_id"].astype(str).isin(held) & consensus["finished"].astype(bool)
    hold &= ~consensus["flagged"].astype(bool)  # already held back for its own reason
    suggested = consensus["task_id"].astype(str).map({k: v["suggested"] for k, v in held.items()})
    consensus.loc[hold, "flagged"] = True
    consensus.loc[hold, "flag_reason"] = SUSPECT_REASON + ": the model suggests " + suggested[hold].astype(str)
    report.metrics["flagged_tasks"] = int(consensus["flagged"].sum())
    if hold.any():  # the distribution the next version would have
        from labelflow.tasks.dataset import label_distribution

        finished = consensus[consensus["finished"].astype(bool) & ~consensus["flagged"].astype(bool)]
        report.metrics["label_distribution"] = label_distribution(finished, spec)
    write_run_record(store, spec.state_location, STATE_NAME, {"held": held, "resolved": resolved})
    status = {int(k): f"held back, sent to {routed_to}" for k in held} | {int(k): "resolved" for k in resolved}
    table = suspects.table.assign(status=suspects.table["task_id"].map(status).fillna("listed"))
    outcome = Suspects(
        table,
        suspects.rows,
        suspects.skipped,
        len(held),
        routed_to,
        len(resolved),
        {int(k): int(v["votes"]) for k, v in held.items()},
    )
    report.metrics["label_errors"] = outcome.summary()
    return outcome


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def suspect_routes(consensus: pd.DataFrame, suspects: Suspects | None) -> list[tuple[int, int]]:
    """(task id, new overlap) giving each held-back suspect one more annotation, when suspects go to annotators.

    One more vote than the task had when it was first held back: `quality.max_overlap` does not cap it (a suspect
    asks for one answer, once). Tasks whose overlap already allows it are left alone.
    """
    if suspects is None or suspects.routed_to != "annotators":
        return []
    rows = consensus[consensus["task_id"].isin(list(suspects.held_votes))]
    return [
        (int(task_id), suspects.held_votes[int(task_id)] + 1)
        for task_id, required in rows[["task_id", "required"]].itertuples(index=False)
        if int(required) < suspects.held_votes[int(task_id)] + 1
    ]
