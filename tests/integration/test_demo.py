"""The README's main command, `labelflow demo`, end to end on the real stack (smaller sample)."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from labelflow.cli import app
from tests.conftest import RunningStack


def test_demo_publishes_both_datasets_and_prints_the_trained_models_accuracy(local_stack: RunningStack) -> None:
    result = CliRunner().invoke(app, ["demo", "--images", "100", "--texts", "200"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    accuracies = [float(a) for a in re.findall(r"model accuracy on \d+ held-out examples: ([\d.]+)%", text)]
    assert len(accuracies) == 2, text[-2000:]
    assert accuracies[0] > 60.0  # digits, 10 classes from 100 images labelled by simulated annotators
    # reviews, 2 classes from 200 texts: 67 % on a fresh stack (71 % on true labels); 50 texts gave a coin toss
    assert accuracies[1] > 58.0
    assert len(re.findall(r"dataset demo-(?:digits|reviews) version \d+", text)) == 2
    assert "Label Studio project: http://127.0.0.1:" in text and "Prefect flow runs:" in text
