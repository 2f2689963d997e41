"""The README's main command, `labelflow demo`, end to end on the real stack (smaller sample)."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from labelflow.cli import app
from tests.conftest import RunningStack


def test_demo_publishes_three_datasets_and_prints_accuracies_and_the_dpo_rows(local_stack: RunningStack) -> None:
    result = CliRunner().invoke(app, ["demo", "--images", "100", "--texts", "200"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    accuracies = [float(a) for a in re.findall(r"model accuracy on \d+ held-out examples: ([\d.]+)%", text)]
    assert len(accuracies) == 2, text[-2000:]
    assert accuracies[0] > 60.0  # digits, 10 classes from 100 images labelled by simulated annotators
    # reviews, 2 classes from 200 texts: 67 % on a fresh stack (71 % on true labels); 50 texts gave a coin toss
    assert accuracies[1] > 58.0
    assert len(re.findall(r"dataset demo-(?:digits|reviews) version \d+", text)) == 2
    # preferences: 163 real pairs with their human preference, annotated by the same simulated annotators
    match = re.search(r"matches the corpus's human preference on ([\d.]+)% of (\d+) published pairs", text)
    assert match and float(match.group(1)) > 80.0 and int(match.group(2)) > 100, text[-3000:]
    pairs = re.search(r"dataset demo-preferences version \d+: (\d+) DPO pairs in \S+preference\.jsonl", text)
    assert pairs and int(pairs.group(1)) > 100
    assert len(re.findall(r'\{"prompt": ".+?", "chosen": ".+?", "rejected": ".+?"\}', text)) == 3
    assert "Label Studio project: http://127.0.0.1:" in text and "Prefect flow runs:" in text
