"""Issue 18 section 5: the weighted kappa headline, intervals in the CLI table, the Dawid-Skene prior, and cost."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from crowdkit.aggregation import DawidSkene
from rich.console import Console

from labelflow.cli.render import _annotators_table
from labelflow.tasks.agreement import kappa_headline, mean_or_none, pairwise_cohen_kappa
from labelflow.tasks.consensus import (
    DS_PRIOR_ACCURACY,
    DS_PRIOR_STRENGTH,
    confusion_prior,
    dawid_skene,
    estimated_accuracy,
)
from labelflow.tasks.dataset import build_dataset, manifest
from labelflow.tasks.quality import judge
from labelflow.tasks.quality_report import html_report, markdown
from labelflow.tasks.simulate import simulated_votes
from labelflow.tasks.spec import SpecError, parse_spec
from tests.unit.stage_fixtures import collect
from tests.unit.test_consensus_quality import choice, judge_inputs, ls_task, spec_for
from tests.unit.test_dataset import classification_inputs
from tests.unit.test_quality_report import stats_stub

NEWS = ["world", "sports", "business", "science", "culture"]


# --- the kappa headline -------------------------------------------------------------------------------------------


def demo_votes() -> pd.DataFrame:
    """Three annotators on every one of 80 five-class tasks (the demo's shape)."""
    votes, _ = simulated_votes(80, [0.75, 0.7, 0.65], NEWS, seed=3, per_task=3)
    return votes


def with_stray(votes: pd.DataFrame) -> pd.DataFrame:
    """The votes plus one annotation by a fourth person, on task 0, disagreeing with everyone there."""
    used = set(votes.loc[votes["task_id"] == 0, "label"])
    stray = next(label for label in NEWS if label not in used)
    return pd.concat([votes, pd.DataFrame([(0, 99, stray)], columns=votes.columns)], ignore_index=True)


def test_a_stray_annotation_no_longer_moves_the_kappa_headline() -> None:
    votes = demo_votes()
    before = pairwise_cohen_kappa(votes)
    after = pairwise_cohen_kappa(with_stray(votes))
    # The old headline, an unweighted mean over pairs, halves: three new pairs with kappa 0 on one task each.
    assert len(after) == 6 and (after.loc[after["annotator_b"] == 99, "cohen_kappa"] == 0.0).all()
    assert mean_or_none(after["cohen_kappa"]) == pytest.approx(mean_or_none(before["cohen_kappa"]) / 2)
    headline_before = kappa_headline(before, min_shared=10)
    headline_after = kappa_headline(after, min_shared=10)
    assert headline_after["mean_cohen_kappa"] == pytest.approx(headline_before["mean_cohen_kappa"])
    assert headline_after["cohen_kappa_pairs"] == 3 and headline_after["cohen_kappa_pairs_left_out"] == 3
    assert headline_before["cohen_kappa_pairs_left_out"] == 0
    # Without the minimum the stray pairs still count, but only by their one shared task each.
    weighted = kappa_headline(after, min_shared=1)["mean_cohen_kappa"]
    assert weighted == pytest.approx(headline_before["mean_cohen_kappa"] * 240 / 243)


def test_pairs_weigh_by_their_shared_tasks() -> None:
    pairwise = pd.DataFrame(
        {
            "annotator_a": [1, 1, 2],
            "annotator_b": [2, 3, 3],
            "shared_tasks": [200, 20, 4],
            "observed_agreement": [0.5, 1.0, 1.0],
            "cohen_kappa": [0.2, 0.9, 1.0],
        }
    )
    headline = kappa_headline(pairwise, min_shared=10)
    assert headline["mean_cohen_kappa"] == pytest.approx((200 * 0.2 + 20 * 0.9) / 220)
    assert (headline["cohen_kappa_pairs"], headline["cohen_kappa_pairs_left_out"]) == (2, 1)
    none_left = kappa_headline(pairwise, min_shared=500)
    assert none_left["mean_cohen_kappa"] is None and none_left["cohen_kappa_pairs_left_out"] == 3
    assert kappa_headline(pairwise.iloc[:0], min_shared=10)["mean_cohen_kappa"] is None


def test_judge_reports_the_weighted_headline_and_the_pairs_left_out() -> None:
    spec = spec_for("text-classification", NEWS, quality={"min_shared_tasks_for_kappa": 3})
    tasks = [
        ls_task(t, [choice(t * 10 + u, u, NEWS[(t + (u == 3 and t % 2)) % 5]) for u in (1, 2, 3)]) for t in range(1, 7)
    ]
    tasks.append(ls_task(7, [choice(71, 1, "world"), choice(72, 2, "world"), choice(73, 4, "sports")]))
    report = judge(*judge_inputs(spec, tasks), spec)
    metrics = report.metrics
    kept = report.pairwise[report.pairwise["shared_tasks"] >= 3]
    expected = float(np.average(kept["cohen_kappa"], weights=kept["shared_tasks"]))
    assert metrics["mean_cohen_kappa"] == pytest.approx(expected)
    assert metrics["cohen_kappa_pairs"] == 3 and metrics["cohen_kappa_pairs_left_out"] == 2
    assert len(report.pairwise) == 5  # pairwise.csv still lists every pair
    assert parse_spec({"name": "t", "source": "s3://raw/x/", "task": "text-classification", "labels": NEWS}).quality
    assert spec_for("text-classification", NEWS).quality.min_shared_tasks_for_kappa == 10


# --- intervals in the CLI table ----------------------------------------------------------------------------------


def table_text(rows: list[dict[str, Any]]) -> str:
    console = Console(width=250, record=True, file=open("/dev/null", "w"))  # noqa: SIM115 - closed with the console
    console.print(_annotators_table(rows))
    return console.export_text()


def test_the_cli_table_shows_each_score_with_its_interval() -> None:
    spec = spec_for("text-classification", NEWS, quality={"min_annotations_for_tier": 1})
    tasks = [ls_task(t, [choice(t * 10 + u, u, NEWS[t % 5]) for u in (1, 2, 3)]) for t in range(1, 9)]
    tasks.append(ls_task(9, [choice(91, 1, "world"), choice(92, 2, "world"), choice(93, 3, "sports")]))
    report = judge(*judge_inputs(spec, tasks), spec)
    rows = report.annotators.to_dict("records")
    text = table_text(rows)
    assert "95% interval" in text
    for row in rows:
        assert f"{row['score_low']:.1%}–{row['score_high']:.1%}" in text
    # A summary written before intervals existed (a cached run) still prints.
    old = [{k: v for k, v in row.items() if k not in ("score_low", "score_high")} for row in rows]
    assert "annotator" in table_text(old)


# --- the Dawid-Skene prior ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_classes", [2, 5, 10])
def test_the_prior_has_the_same_strength_and_accuracy_whatever_the_number_of_classes(n_classes: int) -> None:
    prior = confusion_prior(n_classes, strength=2.0, accuracy=0.7)
    assert prior.shape == (n_classes, n_classes)
    assert prior.sum(axis=1) == pytest.approx(np.full(n_classes, 2.0))
    assert np.diag(prior) == pytest.approx(np.full(n_classes, 1.4))
    off = prior[~np.eye(n_classes, dtype=bool)]
    assert off == pytest.approx(np.full(off.shape, 0.6 / (n_classes - 1)))


def observed_accuracy(votes: pd.DataFrame, truth: list[str]) -> pd.Series:
    right = votes["label"].to_numpy() == np.asarray(truth)[votes["task_id"].to_numpy()]
    return pd.Series(right, index=votes.index).groupby(votes["annotator_id"]).mean()


def accuracy_gaps(n_classes: int, strength: float, accuracy: float) -> np.ndarray:
    """Estimated minus observed accuracy of four simulated annotators (0.95 to 0.6), 500 tasks, three seeds."""
    labels = [f"c{i}" for i in range(n_classes)]
    gaps = []
    for seed in range(3):
        votes, truth = simulated_votes(500, [0.95, 0.85, 0.7, 0.6], labels, seed=seed, per_task=3)
        result = dawid_skene(votes, labels, prior_strength=strength, prior_accuracy=accuracy)
        priors = result.posterior.mean(axis=0)
        observed = observed_accuracy(votes, truth)
        assert result.annotator_confusion is not None
        gaps += [estimated_accuracy(m, priors) - observed[a] for a, m in result.annotator_confusion.items()]
    return np.array(gaps)


@pytest.mark.parametrize("n_classes", [2, 5, 10])
def test_estimated_accuracy_tracks_observed_accuracy(n_classes: int) -> None:
    gaps = accuracy_gaps(n_classes, DS_PRIOR_STRENGTH, DS_PRIOR_ACCURACY)
    assert np.abs(gaps).max() <= 0.05
    assert abs(gaps.mean()) < 0.01  # no bias: as often above as below
    if n_classes > 2:
        # The old prior (+2 on the diagonal, +1 elsewhere) is this prior with strength K+1 and accuracy 2/(K+1).
        old = accuracy_gaps(n_classes, n_classes + 1.0, 2.0 / (n_classes + 1))
        assert old.mean() < -0.03


def test_the_issue_case_five_classes_four_annotators_is_no_longer_biased_low() -> None:
    votes, truth = simulated_votes(600, [0.95, 0.86, 0.68, 0.9], NEWS, seed=11, per_task=3)
    result = dawid_skene(votes, NEWS)
    priors = result.posterior.mean(axis=0)
    assert result.annotator_confusion is not None
    estimates = pd.Series({a: estimated_accuracy(m, priors) for a, m in result.annotator_confusion.items()})
    gaps = estimates - observed_accuracy(votes, truth)
    assert gaps.abs().max() < 0.03 and abs(gaps.mean()) < 0.015


def crowdkit_accuracies(votes: pd.DataFrame) -> tuple[pd.Series, pd.Series]:
    """crowd-kit's (unsmoothed) Dawid-Skene: labels per task and prior-weighted accuracy per annotator."""
    model = DawidSkene(n_iter=200, tol=1e-7).fit(votes.rename(columns={"task_id": "task", "annotator_id": "worker"}))
    priors = model.priors_
    accuracy = {
        worker: sum(priors[k] * model.errors_.loc[(worker, k), k] for k in priors.index)
        for worker in votes["annotator_id"].unique()
    }
    return model.labels_, pd.Series(accuracy)


@pytest.mark.parametrize("n_classes", [2, 5])
def test_dawid_skene_agrees_with_crowd_kit_where_the_prior_hardly_matters(n_classes: int) -> None:
    labels = [f"c{i}" for i in range(n_classes)]
    votes, _ = simulated_votes(2000, [0.9, 0.8, 0.7, 0.6], labels, seed=5, per_task=3)
    ours = dawid_skene(votes, labels, tie_policy="first")
    reference_labels, reference_accuracy = crowdkit_accuracies(votes)
    same = np.mean(np.array(ours.labels) == reference_labels.reindex(ours.task_ids).to_numpy())
    assert same >= 0.99
    priors = ours.posterior.mean(axis=0)
    assert ours.annotator_confusion is not None
    for annotator, matrix in ours.annotator_confusion.items():
        assert estimated_accuracy(matrix, priors) == pytest.approx(reference_accuracy[annotator], abs=0.015)


# --- cost ---------------------------------------------------------------------------------------------------------


def cost_tasks() -> list[dict[str, Any]]:
    """Ten tasks by users 1-3 (all agree), one task split three ways (flagged) and one unfinished task."""
    tasks = [ls_task(t, [choice(t * 10 + u, u, NEWS[t % 5]) for u in (1, 2, 3)]) for t in range(1, 11)]
    tasks.append(ls_task(11, [choice(111, 1, "world"), choice(112, 2, "sports"), choice(113, 4, "science")]))
    tasks.append(ls_task(12, [choice(121, 1, "world")]))
    return tasks


def test_cost_per_tier_and_per_published_row() -> None:
    quality = {
        "min_annotations_for_tier": 5,
        "tiers": {"trainee": 0.0, "qualified": 0.8, "expert": 0.95},
        "cost_per_annotation": {"trainee": 0.05, "qualified": 0.08, "expert": 0.12},
    }
    spec = spec_for("text-classification", NEWS, quality=quality)
    report = judge(*judge_inputs(spec, cost_tasks()), spec)
    people = report.annotators.set_index("annotator_id")
    price = {"trainee": 0.05, "qualified": 0.08, "expert": 0.12, "unrated": 0.05}  # unrated: the lowest tier's price
    expected_total = sum(price[people.loc[a, "tier"]] * people.loc[a, "annotations"] for a in people.index)
    cost = report.metrics["cost"]
    assert people.loc[4, "tier"] == "unrated"
    assert cost["total"] == pytest.approx(expected_total)
    published = int((report.consensus["finished"] & ~report.consensus["flagged"]).sum())
    assert cost["published_rows"] == published == 10
    assert cost["per_published_row"] == pytest.approx(expected_total / 10)
    by_tier = {row["tier"]: row for row in cost["by_tier"]}
    assert sum(row["annotations"] for row in cost["by_tier"]) == int(people["annotations"].sum())
    assert by_tier["unrated"]["cost"] == pytest.approx(0.05) and by_tier["unrated"]["annotators"] == 1
    assert sum(row["cost"] for row in cost["by_tier"]) == pytest.approx(expected_total)
    page = html_report(spec, report)
    assert "Cost" in page and f"{expected_total / 10:.4g}" in page
    assert "per published row" in markdown(spec, report, stats_stub(), 0, "s3://b/r/")


def test_one_price_for_everyone_and_no_cost_without_a_price() -> None:
    spec = spec_for("text-classification", NEWS, quality={"cost_per_annotation": 0.1})
    report = judge(*judge_inputs(spec, cost_tasks()), spec)
    annotations = len(judge_inputs(spec, cost_tasks())[1])
    assert report.metrics["cost"]["total"] == pytest.approx(0.1 * annotations)
    plain = spec_for("text-classification", NEWS)
    assert "cost" not in judge(*judge_inputs(plain, cost_tasks()), plain).metrics


def test_cost_prices_must_name_the_tiers() -> None:
    with pytest.raises(SpecError, match="no price for tier"):
        spec_for("text-classification", NEWS, quality={"cost_per_annotation": {"trainee": 0.05}})
    with pytest.raises(SpecError, match="not a tier"):
        spec_for(
            "text-classification",
            NEWS,
            quality={"cost_per_annotation": {"trainee": 0.05, "qualified": 0.1, "expert": 0.2, "guru": 1.0}},
        )
    with pytest.raises(SpecError):
        spec_for("text-classification", NEWS, quality={"cost_per_annotation": -1})


def test_the_manifest_carries_the_cost_per_published_row(tmp_path: Path) -> None:
    spec = spec_for("text-classification", ["cat", "dog"])
    published, annotations, tasks, ledger = classification_inputs()
    built = build_dataset(tmp_path, spec, published, annotations, tasks, ledger)
    cost = {"total": 0.9, "published_rows": 2, "per_published_row": 0.45, "by_tier": [{"tier": "trainee"}]}
    document = manifest("d", 1, built, spec, {}, cost=cost)
    assert document["cost"]["total"] == 0.9 and document["cost"]["per_published_row"] == pytest.approx(0.45)
    assert document["cost"]["by_tier"] == [{"tier": "trainee"}]
    assert "cost" not in manifest("d", 1, built, spec, {})


def test_a_published_version_carries_the_collects_cost(tmp_path: Path) -> None:
    from tests.unit.test_collect_stage import annotated, registry_of

    quality = {"route_low_agreement": False, "cost_per_annotation": 0.25}
    clients, spec, _ = annotated(6, quality=quality)
    summary, _ = collect(clients, spec)
    cost = summary["quality"]["cost"]
    assert cost["annotations"] == 18 and cost["total"] == pytest.approx(18 * 0.25)
    assert cost["published_rows"] == 6 and cost["per_published_row"] == pytest.approx(0.75)
    pulled = registry_of(clients).pull("reviews", 1, tmp_path / "v1")
    assert pulled.manifest["cost"]["total"] == pytest.approx(4.5)
    assert pulled.manifest["cost"]["per_published_row"] == pytest.approx(0.75)
    assert pulled.manifest["rows"] == pulled.manifest["cost"]["published_rows"] == 6
