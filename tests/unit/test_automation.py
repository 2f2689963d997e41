"""Calibration and the automation threshold on fixed data (issue 19's decision logic, before any wiring)."""

from __future__ import annotations

import numpy as np
import pytest

from labelflow.tasks.automation import (
    choose_threshold,
    cross_fitted_calibration,
    expected_calibration_error,
    wilson_lower,
)


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A model whose true accuracy at confidence c is c squared: confident, but less right than it says."""
    rng = np.random.default_rng(seed)
    confidence = rng.uniform(0.5, 1.0, n)
    correct = (rng.uniform(size=n) < confidence**2).astype(float)
    return confidence, correct


def test_cross_fitted_isotonic_calibration_lowers_the_calibration_error_and_never_sees_its_own_item() -> None:
    confidence, correct = overconfident(4000, 1)
    calibrated = cross_fitted_calibration(confidence, correct, folds=5, seed=0)
    assert expected_calibration_error(confidence, correct) > 0.08
    assert expected_calibration_error(calibrated, correct) < 0.03
    assert np.all((calibrated >= 0) & (calibrated <= 1))
    # Cross-fitting: flipping one item's outcome leaves its own calibrated value almost unchanged (a curve fitted on
    # the item itself would move towards the new outcome).
    flipped = correct.copy()
    flipped[0] = 1 - flipped[0]
    again = cross_fitted_calibration(confidence, flipped, folds=5, seed=0)
    assert again[0] == pytest.approx(calibrated[0], abs=1e-12)
    with pytest.raises(ValueError, match="at least 10 items"):
        cross_fitted_calibration(confidence[:9], correct[:9], folds=5)


def test_wilson_lower_bound() -> None:
    assert wilson_lower(0, 0) == 0.0
    assert wilson_lower(100, 100) == pytest.approx(0.9737, abs=1e-3)  # one-sided 95 %: 100/100 is not 1.0
    assert wilson_lower(50, 100) < 0.5 < wilson_lower(500, 600)


def test_the_threshold_uses_the_lower_bound_not_the_point_estimate() -> None:
    # 200 items at confidence 0.99, 196 right (98 %), then 200 at 0.9 with 170 right.
    confidence = np.r_[np.full(200, 0.99), np.full(200, 0.9)]
    correct = np.r_[np.ones(196), np.zeros(4), np.ones(170), np.zeros(30)]
    point_ok = choose_threshold(confidence, correct, target_accuracy=0.95)
    assert point_ok.confidence == 0.99 and point_ok.covered == 200 and point_ok.accuracy == pytest.approx(0.98)
    assert point_ok.accuracy_low >= 0.95
    # At 0.98 the point estimate meets the target exactly, its lower bound does not: automation waits.
    waits = choose_threshold(confidence, correct, target_accuracy=0.98)
    assert waits.confidence is None and waits.covered == 0
    # Too few items never qualify, however right they are.
    assert choose_threshold(np.full(10, 0.99), np.ones(10), 0.5, min_items=30).confidence is None


@pytest.mark.parametrize("target", [0.0, 1.0, 1.5, -0.1])
def test_a_target_outside_zero_one_is_refused(target: float) -> None:
    with pytest.raises(ValueError, match="not between 0 and 1"):
        choose_threshold(np.full(40, 0.9), np.ones(40), target)
