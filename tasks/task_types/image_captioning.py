"""Image captioning: annotators write a caption for an image; exported as image-caption pairs for image-text models.

Captions are free text, judged as SFT answers are: chrF similarity (character n-grams, so Chinese captions work),
the medoid caption or a reviewer's as consensus, mean pairwise chrF as agreement. Two good captions written
independently share less wording than two edits of one draft, so a spec usually lowers quality.min_agreement.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

from labelflow.tasks.task_types.base import FROM_NAME
from labelflow.tasks.task_types.free_text import WrittenAnswerTask, answer_text
from labelflow.tasks.task_types.sft import _light_edit, _random_words, _truncated

if TYPE_CHECKING:
    import random

    import pandas as pd

    from labelflow.tasks.spec import ProjectSpec

# A consensus caption "matches" its reference from this chrF on: light edits score far above, a caption cut to
# its first words or an unrelated one far below (the same threshold as SFT answers).
GOLD_MATCH_CHRF = 0.5


class ImageCaptioning(WrittenAnswerTask):
    """One written caption per image."""

    name: ClassVar[str] = "image-captioning"
    media = "image"
    export_file = "captions.jsonl"
    expectation_suite = "image-captioning"
    answer_noun = "caption"
    similarity_measure = "mean pairwise chrF (character 1..6-grams, beta 2)"
    gold_match = GOLD_MATCH_CHRF

    def label_config(self, labels: list[str]) -> str:
        """The image and a required caption box."""
        return (
            '<View>\n  <Image name="image" value="$image" zoom="true"/>\n'
            '  <Header value="Caption"/>\n'
            f'  <TextArea name="{FROM_NAME}" toName="image" editable="true" maxSubmissions="1" rows="3" '
            'required="true" placeholder="Describe the image in one or two sentences"/>\n</View>'
        )

    def simulated_text(self, truth: str, accuracy: float, spammer: bool, rng: random.Random) -> str:
        """A light edit of the reference caption with probability `accuracy`, else a cut one; spammers, a few words."""
        if spammer:
            return _random_words(truth, rng)
        if rng.random() < accuracy:
            return _light_edit(truth, rng)
        return _truncated(truth, rng)

    @property
    def consensus_columns(self) -> tuple[str, ...]:
        """The image size, the caption's digest and the caption."""
        return ("image_width", "image_height", "label", "answer")

    def write_training_export(self, rows: pd.DataFrame, spec: ProjectSpec, folder: Path) -> Path:
        """captions.jsonl: {image (s3 URI), caption, task_id, width, height} per task."""
        path = folder / self.export_file
        columns = ["task_id", "source_uri", "answer", "image_width", "image_height"]
        with path.open("w", encoding="utf-8") as handle:
            for task_id, uri, answer, width, height in rows[columns].itertuples(index=False):
                record = {
                    "image": uri,
                    "caption": answer_text(answer) or "",
                    "task_id": int(task_id),
                    "width": None if width is None or width != width else int(width),
                    "height": None if height is None or height != height else int(height),
                }
                handle.write(json.dumps(record, ensure_ascii=False) + "\n")
        return path
