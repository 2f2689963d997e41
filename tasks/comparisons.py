"""Agreement and aggregation for LLM data: pairwise preferences, rankings, ordinal grades and written answers.

Pure NumPy functions, vectorised where the data can be large: Bradley-Terry runs on a win matrix built in one pass,
so a million comparisons cost one `np.add.at` and a few hundred small matrix iterations.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from labelflow.tasks.agreement import pairable_counts

_EPS = 1e-12


def krippendorff_alpha_ordinal(counts: np.ndarray) -> float:
    """Krippendorff's alpha for ordinal data from an items x ordered-categories count matrix (missing allowed).

    The ordinal distance between categories c < k is (sum of n_g for g in c..k - (n_c + n_k) / 2)^2, with n_g the
    pairable values in category g (Krippendorff 2011, "Computing Krippendorff's alpha-reliability", section E).
    """
    counts, m, n = pairable_counts(counts)
    if n <= 1:
        return math.nan
    # Coincidence matrix: o_ck = sum over items of n_ic * n_ik / (m_i - 1), minus the diagonal self-pairs.
    weighted = counts / (m - 1)[:, None]
    coincidence = weighted.T @ counts
    coincidence[np.diag_indices_from(coincidence)] -= weighted.sum(axis=0)
    n_c = coincidence.sum(axis=0)
    cumulative = np.concatenate([[0.0], np.cumsum(n_c)])
    k = len(n_c)
    low, high = np.minimum.outer(np.arange(k), np.arange(k)), np.maximum.outer(np.arange(k), np.arange(k))
    delta = (cumulative[high + 1] - cumulative[low] - (n_c[low] + n_c[high]) / 2.0) ** 2
    observed = float((coincidence * delta).sum())
    expected = float((np.outer(n_c, n_c) * delta).sum()) / (n - 1)
    if expected == 0:
        return 1.0 if observed == 0 else math.nan
    return 1.0 - observed / expected


def kendalls_w(ranks: np.ndarray) -> float:
    """Kendall's coefficient of concordance W for a raters x items matrix of ranks (ties as mid-ranks, corrected)."""
    ranks = np.asarray(ranks, dtype=np.float64)
    m, n = ranks.shape
    if m < 2 or n < 2:
        return math.nan
    totals = ranks.sum(axis=0)
    spread = float(((totals - totals.mean()) ** 2).sum())
    ties = 0.0
    for row in ranks:
        sizes = np.array(list(Counter(row.tolist()).values()), dtype=np.float64)
        ties += float((sizes**3 - sizes).sum())
    denominator = m**2 * (n**3 - n) - m * ties
    if denominator <= 0:
        return math.nan
    return 12.0 * spread / denominator


def borda_scores(orders: Sequence[Sequence[int]], n_items: int) -> np.ndarray:
    """Borda count: an item ranked r-th (0 = best) of n gets n - 1 - r points from each order."""
    scores = np.zeros(n_items, dtype=np.float64)
    for order in orders:
        for position, item in enumerate(order):
            scores[item] += n_items - 1 - position
    return scores


def bradley_terry(
    first: np.ndarray,
    second: np.ndarray,
    outcome: np.ndarray,
    n_items: int,
    iterations: int = 1000,
    tolerance: float = 1e-8,
) -> tuple[np.ndarray, int]:
    """Bradley-Terry strengths (summing to 1) and iterations, by Hunter's (2004) MM algorithm.

    Comparison k is between items `first[k]` and `second[k]`; `outcome[k]` is 1.0 when the first won, 0.0 when the
    second won and 0.5 for a tie (half a win each). An item that never won gets a strength near 0.
    """
    first = np.asarray(first, dtype=np.int64)
    second = np.asarray(second, dtype=np.int64)
    outcome = np.asarray(outcome, dtype=np.float64)
    wins = np.zeros((n_items, n_items))
    np.add.at(wins, (first, second), outcome)
    np.add.at(wins, (second, first), 1.0 - outcome)
    games = wins + wins.T
    total_wins = wins.sum(axis=1)
    strength = np.full(n_items, 1.0 / max(n_items, 1))
    done = 0
    for done in range(1, iterations + 1):  # noqa: B007 - the count is returned
        denominator = (games / (strength[:, None] + strength[None, :] + _EPS)).sum(axis=1)
        updated = np.where(denominator > 0, total_wins / np.maximum(denominator, _EPS), strength)
        updated = np.maximum(updated, _EPS)
        updated /= updated.sum()
        change = float(np.abs(updated - strength).max())
        strength = updated
        if change < tolerance:
            break
    return strength, done


def chrf(hypothesis: str, reference: str, max_order: int = 6, beta: float = 2.0) -> float:
    """chrF (Popović 2015) in 0..1: the F-beta of character n-grams (n = 1..6), whitespace removed, as sacreBLEU.

    Character n-grams need no tokenizer, so the score works the same for Chinese, Japanese and spaced scripts.
    """
    hyp = "".join(hypothesis.split())
    ref = "".join(reference.split())
    if not hyp and not ref:
        return 1.0
    precisions, recalls = [], []
    for order in range(1, max_order + 1):
        hyp_grams = Counter(hyp[i : i + order] for i in range(len(hyp) - order + 1))
        ref_grams = Counter(ref[i : i + order] for i in range(len(ref) - order + 1))
        if not hyp_grams or not ref_grams:
            continue
        matches = sum((hyp_grams & ref_grams).values())
        precisions.append(matches / sum(hyp_grams.values()))
        recalls.append(matches / sum(ref_grams.values()))
    if not precisions:
        return 0.0
    precision, recall = float(np.mean(precisions)), float(np.mean(recalls))
    if precision + recall == 0:
        return 0.0
    return (1 + beta**2) * precision * recall / (beta**2 * precision + recall)


def pairwise_similarity(texts: Sequence[str]) -> np.ndarray:
    """Symmetric matrix of chrF similarities (the mean of both directions); 1 on the diagonal."""
    n = len(texts)
    matrix = np.eye(n)
    for i in range(n):
        for j in range(i + 1, n):
            matrix[i, j] = matrix[j, i] = (chrf(texts[i], texts[j]) + chrf(texts[j], texts[i])) / 2.0
    return matrix


def medoid(texts: Sequence[str]) -> tuple[int, float]:
    """(index of the text most similar to all the others, mean pairwise similarity of the texts)."""
    if len(texts) == 1:
        return 0, math.nan
    matrix = pairwise_similarity(texts)
    n = len(texts)
    mean_to_others = (matrix.sum(axis=1) - 1.0) / (n - 1)
    return int(np.argmax(mean_to_others)), float(matrix[np.triu_indices(n, 1)].mean())
