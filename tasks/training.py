"""Baseline classifiers trained on a published version: features per medium, the model, and its pyfunc contract.

Pure functions (no MLflow, no Prefect): `flows/train.py` pulls the version and logs what `train_baseline` returns
through the tracking adapter, which wraps `BaselineClassifier` into an MLflow pyfunc model.

The model's input is a DataFrame with a `text` column (text) or a `content` column of the raw file bytes (image,
audio); its output has one probability column per class, named by the class, in the spec's label order, plus
`label`, the most probable class.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from labelflow.tasks.spec import SpecError

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd
    from sklearn.pipeline import Pipeline

    from labelflow.tasks.ports import TrackingPort
    from labelflow.tasks.registry import DatasetRegistry, DatasetVersion
    from labelflow.tasks.spec import ProjectSpec

ModelMedia = Literal["text", "image", "audio"]
MODEL_MEDIA: tuple[str, ...] = ("text", "image", "audio")
IMAGE_SIDE = 16  # images become 16x16 grayscale: 256 features, fast on 2 CPU cores
AUDIO_BANDS = 32  # log-spaced frequency bands between AUDIO_LOW_HZ and min(AUDIO_HIGH_HZ, Nyquist)
AUDIO_LOW_HZ, AUDIO_HIGH_HZ = 50.0, 8000.0
AUDIO_FRAME, AUDIO_HOP = 1024, 512
AUDIO_MAX_SECONDS = 60.0  # features read at most the first minute of a clip
MIN_ROWS_PER_CLASS = 5  # at least one held out and a few to learn from
HOLDOUT_SHARE = 0.2
TRAINING_EXPERIMENT_PREFIX = "training/"  # MLflow experiment of a dataset's baselines: training/<dataset>
MODEL_SUFFIX = "-baseline"  # registered model of a dataset's baselines: <dataset>-baseline
# The inputs column the model reads, by medium.
INPUT_COLUMN: dict[str, str] = {"text": "text", "image": "content", "audio": "content"}


def media_of(spec_or_media: ProjectSpec | str) -> ModelMedia:
    """The medium a model reads: a spec's task type's, or the name given; ValueError for one it cannot read."""
    media = spec_or_media if isinstance(spec_or_media, str) else spec_or_media.task_type.media
    if media not in MODEL_MEDIA:
        raise ValueError(f"no baseline model reads {media} tasks (only {', '.join(MODEL_MEDIA)})")
    return media  # type: ignore[return-value]


def image_features(payload: bytes) -> np.ndarray:
    """An image as IMAGE_SIDE x IMAGE_SIDE grayscale intensities in [0, 1] (box-averaged, so no detail aliases)."""
    import numpy as np
    from PIL import Image

    with Image.open(io.BytesIO(payload)) as image:
        image.draft("L", (IMAGE_SIDE * 4, IMAGE_SIDE * 4))  # JPEGs decode at a reduced size: faster, same result
        small = image.convert("L").resize((IMAGE_SIDE, IMAGE_SIDE), Image.Resampling.BOX)
    return (np.asarray(small, dtype=np.float32) / 255.0).reshape(-1)


def audio_features(payload: bytes) -> np.ndarray:
    """A clip's spectrum: mean and standard deviation over frames of the log energy in AUDIO_BANDS bands (in Hz,
    so clips of any sample rate compare), and the log duration."""
    import numpy as np
    import soundfile as sf

    with sf.SoundFile(io.BytesIO(payload)) as clip:
        rate = clip.samplerate
        samples = clip.read(frames=int(AUDIO_MAX_SECONDS * rate), dtype="float32", always_2d=True)
    mono = samples.mean(axis=1)
    if len(mono) < AUDIO_FRAME:
        mono = np.pad(mono, (0, AUDIO_FRAME - len(mono)))
    starts = np.arange(0, len(mono) - AUDIO_FRAME + 1, AUDIO_HOP)
    frames = np.stack([mono[s : s + AUDIO_FRAME] for s in starts]) * np.hanning(AUDIO_FRAME).astype(np.float32)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    frequencies = np.fft.rfftfreq(AUDIO_FRAME, 1.0 / rate)
    edges = np.geomspace(AUDIO_LOW_HZ, min(AUDIO_HIGH_HZ, rate / 2), AUDIO_BANDS + 1)
    band = np.digitize(frequencies, edges) - 1  # -1 and AUDIO_BANDS: outside the bands
    energy = np.zeros((len(frames), AUDIO_BANDS), dtype=np.float64)
    for index in range(AUDIO_BANDS):
        inside = band == index
        if inside.any():
            energy[:, index] = power[:, inside].sum(axis=1)
    log_energy = np.log(energy + 1e-10)
    duration = len(samples) / rate
    return np.concatenate([log_energy.mean(axis=0), log_energy.std(axis=0), [np.log1p(duration)]]).astype(np.float32)


FEATURES: dict[str, Callable[[bytes], Any]] = {"image": image_features, "audio": audio_features}


def content_features(media: str, payloads: Sequence[bytes]) -> np.ndarray:
    """The feature matrix of raw image or audio files."""
    import numpy as np

    extract = FEATURES[media]
    return np.stack([extract(bytes(payload)) for payload in payloads])


def model_inputs(spec_or_media: ProjectSpec | str, frame: pd.DataFrame, read_object: Callable[[str], bytes]) -> Any:
    """A dataset table's rows as the classifier's inputs: the texts (column `text`), or the features of each row's
    image or clip, read once from its `source_uri`."""
    media = media_of(spec_or_media)
    if media == "text":
        return frame["text"].fillna("").astype(str).tolist()
    return content_features(media, [read_object(str(uri)) for uri in frame["source_uri"]])


def classifier(media: str) -> Pipeline:
    """An untrained scikit-learn pipeline for the medium's inputs (those of `model_inputs`)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    media = media_of(media)
    if media == "text":
        # Character 1-3-grams within word boundaries: no word segmentation needed, so Chinese works as is.
        return make_pipeline(
            TfidfVectorizer(analyzer="char_wb", ngram_range=(1, 3), sublinear_tf=True),
            LogisticRegression(max_iter=2000, C=4.0),
        )
    if media == "image":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=0.1))
    return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000, C=1.0))


class BaselineClassifier:
    """A trained pipeline with the pyfunc contract: DataFrame in (`text`, or `content` bytes), class probabilities
    (one column per class, the spec's label order) and `label` out. The tracking adapter logs it as a pyfunc model."""

    def __init__(
        self,
        media: str,
        pipeline: Pipeline,
        classes: Sequence[str],
        out_of_fold: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        self.media = media_of(media)
        self.pipeline = pipeline
        self.classes = [str(c) for c in classes]
        # (task ids, probabilities) of the training rows, each scored by a model fitted on the other folds: the
        # scores automated labeling calibrates on for these tasks, since the model's own are in-sample.
        self.out_of_fold = out_of_fold
        learned = [str(c) for c in pipeline.classes_]
        if set(learned) - set(self.classes):
            raise ValueError(
                f"the model learned classes outside {self.classes}: {sorted(set(learned) - set(self.classes))}"
            )
        # Where each learned class's probability goes among `classes` (a class never seen stays at 0).
        self._columns = [self.classes.index(c) for c in learned]

    @property
    def input_column(self) -> str:
        """The input DataFrame's column: `text`, or `content` (raw bytes)."""
        return INPUT_COLUMN[self.media]

    @property
    def metadata(self) -> dict[str, Any]:
        """What the registered model declares: its classes (checked against a spec's labels at load) and input."""
        return {"classes": list(self.classes), "media": self.media, "input": self.input_column}

    @property
    def input_types(self) -> dict[str, str]:
        """The input column and its MLflow type: the model signature's inputs."""
        return {self.input_column: "string" if self.media == "text" else "binary"}

    @property
    def output_types(self) -> dict[str, str]:
        """A probability column per class and `label`: the model signature's outputs."""
        return {**dict.fromkeys(self.classes, "double"), "label": "string"}

    def features(self, frame: pd.DataFrame) -> Any:
        """The pipeline's inputs from a pyfunc input frame."""
        if self.input_column not in frame.columns:
            raise ValueError(f"the model reads a column {self.input_column!r}; the input has {list(frame.columns)}")
        values = frame[self.input_column].tolist()
        if self.media == "text":
            return ["" if v is None else str(v) for v in values]
        return content_features(self.media, values)

    def probabilities(self, inputs: Any) -> np.ndarray:
        """P(class) per input row, columns in `classes` order."""
        import numpy as np

        learned = self.pipeline.predict_proba(inputs)
        out = np.zeros((learned.shape[0], len(self.classes)))
        out[:, self._columns] = learned
        return out

    def predict(self, frame: pd.DataFrame) -> pd.DataFrame:
        """One row per input: a probability column per class and `label`, the most probable class."""
        import pandas as pd

        probabilities = self.probabilities(self.features(frame))
        out = pd.DataFrame(probabilities, columns=self.classes, index=frame.index)
        out["label"] = [self.classes[i] for i in probabilities.argmax(axis=1)] if len(out) else []
        return out


@dataclass(frozen=True)
class TrainedBaseline:
    """A baseline trained on a version: the model (fitted on every row), its held-out accuracy, the row counts."""

    model: BaselineClassifier
    accuracy: float
    train_rows: int
    holdout_rows: int
    class_counts: dict[str, int]


def training_rows(spec: ProjectSpec, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows a baseline learns from: a consensus label among the spec's labels, people's (not a model's) labels."""
    rows = frame[frame["label"].notna() & frame["label"].astype(str).isin(spec.labels)]
    if "method" in rows.columns:
        # Machine labels (method `model`) would teach the next model the previous model's mistakes.
        rows = rows[rows["method"].astype(str) != "model"]
    return rows.reset_index(drop=True)


class TrainingError(ValueError):
    """A published version a baseline cannot be trained on (too few labeled rows of some class)."""


def check_class_counts(spec: ProjectSpec, labels: Sequence[str]) -> dict[str, int]:
    """Rows per spec label; TrainingError naming the classes with fewer than MIN_ROWS_PER_CLASS."""
    counts = {label: 0 for label in spec.labels}
    for label in labels:
        counts[label] += 1
    short = {label: n for label, n in counts.items() if n < MIN_ROWS_PER_CLASS}
    if short:
        listed = ", ".join(f"{label} has {n}" for label, n in short.items())
        raise TrainingError(f"too few labeled rows to train: {listed} (at least {MIN_ROWS_PER_CLASS} per class)")
    return counts


def train_baseline(
    spec: ProjectSpec,
    frame: pd.DataFrame,
    read_object: Callable[[str], bytes],
    holdout_share: float = HOLDOUT_SHARE,
    seed: int = 0,
) -> TrainedBaseline:
    """Train the medium's classifier on a version's consensus labels: accuracy on a stratified held-out share, then
    the model refitted on every row."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    media = media_of(spec)
    rows = training_rows(spec, frame)
    labels = rows["label"].astype(str).to_numpy()
    counts = check_class_counts(spec, labels.tolist())
    inputs = model_inputs(media, rows, read_object)
    positions = np.arange(len(rows))
    holdout = max(len(spec.labels), round(holdout_share * len(rows)))
    fit_at, test_at = train_test_split(positions, test_size=holdout, stratify=labels, random_state=seed)

    def subset(at: np.ndarray) -> Any:
        return [inputs[i] for i in at] if media == "text" else inputs[at]

    scored = classifier(media).fit(subset(fit_at), labels[fit_at])
    accuracy = float((scored.predict(subset(test_at)) == labels[test_at]).mean())
    final = classifier(media).fit(inputs, labels)
    out_of_fold = out_of_fold_scores(media, inputs, labels, spec.labels, seed)
    task_ids = rows["task_id"].astype("int64").to_numpy() if "task_id" in rows.columns else None
    model = BaselineClassifier(media, final, spec.labels, (task_ids, out_of_fold) if task_ids is not None else None)
    return TrainedBaseline(model, accuracy, len(fit_at), len(test_at), counts)


def out_of_fold_scores(media: str, inputs: Any, labels: np.ndarray, classes: Sequence[str], seed: int) -> np.ndarray:
    """P(class) of every training row from a model fitted on the other folds (stratified), in `classes` order."""
    import numpy as np
    from sklearn.model_selection import StratifiedKFold, cross_val_predict

    folds = StratifiedKFold(n_splits=min(5, int(np.unique(labels, return_counts=True)[1].min())), shuffle=True,
                            random_state=seed)  # fmt: skip
    learned = cross_val_predict(classifier(media), inputs, labels, cv=folds, method="predict_proba")
    order = sorted(set(labels.tolist()))  # predict_proba's columns: the classes seen, sorted
    out = np.zeros((len(labels), len(classes)))
    out[:, [list(classes).index(c) for c in order]] = learned
    return out


# --- the `labelflow train` stage: its steps, called by flows/train.py ------------------------------------------


def model_name(spec: ProjectSpec) -> str:
    """The registered model of the spec's dataset's baselines: `<dataset>-baseline`."""
    return f"{trainable_dataset(spec)}{MODEL_SUFFIX}"


def trainable_dataset(spec: ProjectSpec) -> str:
    """The dataset a baseline of this spec trains on; SpecError when the spec publishes none or its type has none."""
    if not spec.task_type.model_in_the_loop:
        raise SpecError(
            f"task {spec.task} has no baseline model: labelflow train covers text-, image- and audio-classification"
        )
    if spec.dataset is None:
        raise SpecError(f"spec {spec.name!r} has no dataset section: it publishes no version to train on")
    return spec.dataset.name


def pull_training_table(
    registry: DatasetRegistry, spec: ProjectSpec, version: int | None
) -> tuple[DatasetVersion, pd.DataFrame]:
    """The published version (the latest when `version` is None) and its consensus table, pulled and verified
    (DatasetNotFound, one line, when there is none)."""
    import tempfile
    from pathlib import Path

    import pandas as pd

    resolved = registry.resolve(trainable_dataset(spec), version)
    with tempfile.TemporaryDirectory(prefix="labelflow-train-") as scratch:
        pulled = registry.pull_version(resolved, Path(scratch))
        frame = pd.read_parquet(pulled.path("consensus"))
    return resolved, frame


@dataclass(frozen=True)
class RegisteredBaseline:
    """A baseline logged to MLflow and registered: its models:/ URI, where to see it, and how it did."""

    model_uri: str
    model_name: str
    model_version: str
    run_url: str
    model_url: str


def log_baseline(
    tracking: TrackingPort, spec: ProjectSpec, dataset: DatasetVersion, frame: pd.DataFrame, trained: TrainedBaseline
) -> RegisteredBaseline:
    """Log the baseline to the dataset's training experiment (its input: the dataset version, as the version's own
    run records it) and register it as `<dataset>-baseline`; a failed upload leaves the run FAILED."""
    name = model_name(spec)
    experiment_id = tracking.ensure_experiment(f"{TRAINING_EXPERIMENT_PREFIX}{dataset.name}")
    tags = {
        "labelflow.dataset.name": dataset.name,
        "labelflow.dataset.version": str(dataset.version),
        "labelflow.dataset.run_id": dataset.run_id,
        "labelflow.model.name": name,
        "mlflow.note.content": f"Baseline {trained.model.media} classifier trained on {dataset.name} v{dataset.version}",
    }
    run_id = tracking.start_run(experiment_id, f"{name} on v{dataset.version}", tags)
    try:
        tracking.log_params_and_metrics(
            run_id,
            {
                "dataset": dataset.name,
                "dataset_version": dataset.version,
                "media": trained.model.media,
                "classes": ",".join(trained.model.classes),
                "classifier": " + ".join(type(step).__name__ for _, step in trained.model.pipeline.steps),
                "train_rows": trained.train_rows,
                "holdout_rows": trained.holdout_rows,
            },
            {"holdout_accuracy": trained.accuracy},
        )
        # The same name, digest and source as the version's run logs: MLflow shows both runs on one dataset.
        tracking.log_dataset_input(
            run_id, frame, name=dataset.name, source=f"{dataset.location}consensus.parquet", digest=dataset.digest[:32]
        )
        model = trained.model
        version = tracking.log_model(run_id, model, name, model.metadata, model.input_types, model.output_types)
        tracking.set_tags(run_id, {"labelflow.model.version": version})
    except BaseException:
        tracking.finish_run(run_id, "FAILED")
        raise
    tracking.finish_run(run_id)
    return RegisteredBaseline(
        model_uri=f"models:/{name}/{version}",
        model_name=name,
        model_version=version,
        run_url=tracking.run_url(experiment_id, run_id),
        model_url=tracking.model_url(name, version),
    )
