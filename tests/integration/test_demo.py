"""The README's main command, `labelflow demo`, end to end on the real stack (smaller sample)."""

from __future__ import annotations

import re

from typer.testing import CliRunner

from labelflow.cli import app
from tests.conftest import RunningStack


def test_demo_publishes_four_datasets_and_prints_accuracies_the_dpo_rows_and_the_transcripts(
    local_stack: RunningStack,
) -> None:
    result = CliRunner().invoke(app, ["demo", "--images", "100", "--texts", "200"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    accuracies = [float(a) for a in re.findall(r"model accuracy on \d+ held-out examples: ([\d.]+)%", text)]
    assert len(accuracies) == 2, text[-2000:]
    assert accuracies[0] > 60.0  # digits, 10 classes from 100 images labelled by simulated annotators
    # reviews, 2 classes from 200 texts: 67 % on a fresh stack (71 % on true labels); 50 texts gave a coin toss
    assert accuracies[1] > 58.0
    assert len(re.findall(r"dataset demo-(?:digits|reviews) version \d+", text)) == 2
    # `labelflow train` on each classification version: a registered baseline the next batch can be pre-labeled with
    baselines = re.findall(r"registered baseline models:/(demo-(?:digits|reviews)-baseline)/\d+ \(held-out", text)
    assert sorted(baselines) == ["demo-digits-baseline", "demo-reviews-baseline"], text[-3000:]
    assert "model_uri: models:/demo-reviews-baseline/latest" in text
    # preferences: 163 real pairs with their human preference, annotated by the same simulated annotators
    match = re.search(r"matches the corpus's human preference on ([\d.]+)% of (\d+) published pairs", text)
    assert match and float(match.group(1)) > 80.0 and int(match.group(2)) > 100, text[-3000:]
    pairs = re.search(r"dataset demo-preferences version \d+: (\d+) DPO pairs in \S+preference\.jsonl", text)
    assert pairs and int(pairs.group(1)) > 100
    assert len(re.findall(r'\{"prompt": ".+?", "chosen": ".+?", "rejected": ".+?"\}', text)) == 3
    # speech: 24 generated clips with Chinese reference transcripts; 5 %, 15 % and 40 % character errors
    assert "the clips are generated tones; the reference transcripts are the simulator's truth" in text
    cer = re.search(
        r"consensus \(medoid\) transcripts have a character error rate of ([\d.]+)% against the reference on (\d+) "
        r"published clips, a random annotator's transcript ([\d.]+)%",
        text,
    )
    assert cer, text[-3000:]
    assert int(cer.group(2)) >= 18  # clips under min_agreement 0.5 are held back: about one in twenty
    assert float(cer.group(1)) < 12.0 < float(cer.group(3))  # the medoid beats a random annotator's transcript
    manifest = re.search(
        r"dataset demo-speech version \d+: (\d+) rows; (\d+) transcripts in \S+transcripts\.jsonl", text
    )
    assert manifest and int(manifest.group(1)) == int(manifest.group(2)) >= 18, text[-3000:]
    clip = r'\{"audio": "s3://labelflow-demo/speech/utterance-\d+\.(?:wav|flac)", "duration": [\d.]+, "text": "[^"]+"'
    assert len(re.findall(clip, text)) == 2  # the manifest's first two lines
    assert text.count("Label Studio project: http://127.0.0.1:") == 4 and text.count("MLflow dataset:") == 4
    assert "Prefect flow runs:" in text
    # It ends with the talent pool: each simulated annotator has a profile in every demo domain.
    pool = text[text.index("Talent pool: the demo's annotators across its projects") :]
    for domain in ("image-classification", "text-classification", "preference", "transcription"):
        assert pool.count(domain) >= 3, pool
