"""Skill levels of the talent pool: the ladder, the accuracy interval behind a level, and the level it earns.

A person's accuracy interval combines two kinds of evidence (`combined_interval`):

- gold: `gold_correct` right answers out of `gold_answered` gold tasks, observed directly;
- the model: the Dawid-Skene estimated accuracy `ds_accuracy` on the person's other (non-gold) annotations,
  `ds_tasks` of them, counted as `DS_WEIGHT` pseudo-observations each: an inferred answer is worth less than an
  observed one, because the estimate leans on the other annotators and on the model's assumptions.

The two are pooled as counts, trials = gold_answered + DS_WEIGHT x ds_tasks and successes = gold_correct +
ds_accuracy x DS_WEIGHT x ds_tasks, and the interval is Wilson's (95 %) on that share and that number of trials.
Without a Dawid-Skene estimate (majority vote, text answers) it is gold's Wilson interval alone.

A level is earned on the interval's LOWER bound, never on the point estimate: with little evidence the interval
is wide and keeps a person low; it narrows, and the person climbs, as evidence accumulates.
"""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING, Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

if TYPE_CHECKING:
    import numpy as np

# Each non-gold annotation judged by Dawid-Skene counts as half a gold answer (see the module docstring).
DS_WEIGHT = 0.5
Z_95 = 1.96


class Level(BaseModel):
    """One rung of the ladder: its name and what it takes (evidence, accuracy's lower bound, agreement)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, Field(pattern=r"^[a-z][a-z0-9_-]{0,31}$")]
    min_evidence: Annotated[int, Field(ge=0)] = 0  # annotations, all projects of the domain and task type together
    min_accuracy: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # the interval's lower bound must reach it
    min_agreement: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0  # agreement with consensus must reach it


DEFAULT_LADDER: tuple[Level, ...] = (
    Level(name="trainee"),
    Level(name="junior", min_evidence=20, min_accuracy=0.60, min_agreement=0.50),
    Level(name="qualified", min_evidence=50, min_accuracy=0.75, min_agreement=0.60),
    Level(name="senior", min_evidence=100, min_accuracy=0.85, min_agreement=0.70),
    Level(name="expert", min_evidence=200, min_accuracy=0.92, min_agreement=0.80),
)


class LadderError(ValueError):
    """The ladder is not a list of increasingly demanding levels."""


def check_ladder(levels: list[Level] | tuple[Level, ...]) -> list[Level]:
    """The ladder as given, or LadderError when its levels do not increase from the first to the last."""
    if not levels:
        raise LadderError("the ladder needs at least one level, e.g. [{name: trainee}]")
    names = [level.name for level in levels]
    if len(set(names)) != len(names):
        raise LadderError(f"the ladder names a level twice: {sorted({n for n in names if names.count(n) > 1})}")
    for lower, upper in itertools.pairwise(levels):
        if not upper.min_accuracy > lower.min_accuracy:
            raise LadderError(
                f"levels must increase: {upper.name!r} asks min_accuracy {upper.min_accuracy:g}, "
                f"not more than {lower.name!r} below it ({lower.min_accuracy:g})"
            )
        for criterion in ("min_evidence", "min_agreement"):
            if getattr(upper, criterion) < getattr(lower, criterion):
                raise LadderError(
                    f"levels must increase: {upper.name!r} asks {criterion} {getattr(upper, criterion):g}, "
                    f"less than {lower.name!r} below it ({getattr(lower, criterion):g})"
                )
    return list(levels)


def parse_ladder(data: Any) -> list[Level]:
    """A ladder from YAML data (a list of levels), validated; LadderError in one line otherwise."""
    from pydantic import ValidationError

    if not isinstance(data, list):
        raise LadderError(f"a ladder is a list of levels ({{name, min_evidence, min_accuracy, min_agreement}}), "
                          f"not {type(data).__name__}")  # fmt: skip
    levels = []
    for index, item in enumerate(data):
        try:
            levels.append(Level.model_validate(item))
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise LadderError(f"ladder level {index} {where}: {first['msg']}".replace("  ", " ")) from None
    return check_ladder(levels)


def wilson_bounds(successes: np.ndarray, trials: np.ndarray, z: float = Z_95) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score intervals, element-wise (NaN where there are no trials): the vector form of quality's."""
    import numpy as np

    successes = np.asarray(successes, dtype=float)
    trials = np.asarray(trials, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.clip(successes / trials, 0.0, 1.0)
        z2 = z * z
        denominator = 1.0 + z2 / trials
        centre = (share + z2 / (2 * trials)) / denominator
        half = z * np.sqrt(share * (1.0 - share) / trials + z2 / (4 * trials * trials)) / denominator
    low = np.where(trials > 0, np.maximum(0.0, centre - half), np.nan)
    high = np.where(trials > 0, np.minimum(1.0, centre + half), np.nan)
    return low, high


def combined_counts(
    gold_correct: np.ndarray, gold_answered: np.ndarray, ds_accuracy: np.ndarray, ds_tasks: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """(successes, trials) pooling gold answers with DS_WEIGHT pseudo-counts per DS-judged annotation."""
    import numpy as np

    ds_accuracy = np.asarray(ds_accuracy, dtype=float)
    known = np.isfinite(ds_accuracy)
    pseudo = np.where(known, DS_WEIGHT * np.asarray(ds_tasks, dtype=float), 0.0)
    successes = np.nan_to_num(np.asarray(gold_correct, dtype=float)) + np.where(known, ds_accuracy, 0.0) * pseudo
    trials = np.nan_to_num(np.asarray(gold_answered, dtype=float)) + pseudo
    return successes, trials


def combined_interval(
    gold_correct: np.ndarray, gold_answered: np.ndarray, ds_accuracy: np.ndarray, ds_tasks: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(point estimate, lower, upper) of accuracy from gold and the Dawid-Skene estimate (module docstring)."""
    import numpy as np

    successes, trials = combined_counts(gold_correct, gold_answered, ds_accuracy, ds_tasks)
    with np.errstate(invalid="ignore", divide="ignore"):
        point = np.where(trials > 0, successes / np.where(trials > 0, trials, 1.0), np.nan)
    low, high = wilson_bounds(successes, trials)
    return point, low, high


def assign_levels(
    ladder: list[Level], evidence: np.ndarray, accuracy_low: np.ndarray, agreement: np.ndarray
) -> np.ndarray:
    """The index of each person's level: the highest rung whose criteria they meet, climbing from the first.

    A missing accuracy bound or agreement (NaN) meets only criteria of 0. The first rung is everyone's floor.
    """
    import numpy as np

    evidence = np.asarray(evidence, dtype=float)
    low = np.nan_to_num(np.asarray(accuracy_low, dtype=float), nan=-1.0)
    agree = np.nan_to_num(np.asarray(agreement, dtype=float), nan=-1.0)
    index = np.zeros(len(evidence), dtype=np.int64)
    climbing = np.ones(len(evidence), dtype=bool)
    for rung, level in enumerate(ladder[1:], start=1):
        meets = (
            (evidence >= level.min_evidence)
            & ((low >= level.min_accuracy) | (level.min_accuracy == 0))
            & ((agree >= level.min_agreement) | (level.min_agreement == 0))
        )
        climbing &= meets  # the ladder increases, so a rung missed leaves every rung above it missed too
        index[climbing] = rung
    return index
