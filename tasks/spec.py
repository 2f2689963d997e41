"""The labeling project spec: one YAML file that drives every stage of the pipeline."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from pathlib import Path
from typing import Annotated, Any, Literal
from xml.etree import ElementTree

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from labelflow.tasks.guidelines import GuidelineFileError, read_guideline_file
from labelflow.tasks.levels import DEFAULT_LADDER, Level, check_ladder
from labelflow.tasks.task_types import TASK_TYPES, Media, TaskType

# The spec's `task` accepts exactly the registered task types (tasks/task_types/__init__.py).
TaskTypeName = Literal[tuple(TASK_TYPES)]  # type: ignore[valid-type]
# Buckets labelflow writes its own data to by default: project state, dataset versions, MLflow artifacts. A source
# inside one would turn labelflow's (and other projects') private files into tasks.
STATE_BUCKET = "labelflow-state"
DATASETS_BUCKET = "labelflow-datasets"
MLFLOW_ARTIFACTS_BUCKET = "labelflow-mlflow"
MANAGED_BUCKETS = (STATE_BUCKET, DATASETS_BUCKET, MLFLOW_ARTIFACTS_BUCKET)
XML_DECLARATIONS = re.compile(r"<!\s*(DOCTYPE|ENTITY|ELEMENT|ATTLIST)", re.IGNORECASE)
S3_URI = re.compile(r"^s3://(?P<bucket>[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9])(?:/(?P<prefix>.*))?$")


class SpecError(ValueError):
    """The spec file is missing, is not YAML, or fails validation; the message gives each field path."""


class S3Location(BaseModel):
    """A bucket and a key prefix."""

    model_config = ConfigDict(frozen=True)

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Parse `s3://bucket/prefix`."""
        match = S3_URI.match(uri.strip())
        if not match:
            raise ValueError(f"{uri!r} is not an s3://bucket/prefix URI")
        return cls(bucket=match["bucket"], prefix=match["prefix"] or "")

    def join(self, *parts: str) -> str:
        """Key under this prefix."""
        base = self.prefix.rstrip("/")
        return "/".join(p for p in (base, *parts) if p)

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"

    @property
    def folder(self) -> S3Location:
        """This location as a folder: the prefix ends in `/` (empty for a whole bucket), so it covers only keys below."""
        base = self.prefix.rstrip("/")
        return S3Location(bucket=self.bucket, prefix=f"{base}/" if base else "")

    def overlaps(self, other: S3Location) -> bool:
        """True when a listing of one could return keys of the other (S3 prefixes are plain string prefixes)."""
        if self.bucket != other.bucket:
            return False
        mine, theirs = self.prefix, other.prefix
        return mine.startswith(theirs) or theirs.startswith(mine)


def _parsable_s3_uri(value: str) -> str:
    """Refuse what `S3Location.parse` cannot read; keep the text as written."""
    S3Location.parse(value)
    return value


S3Uri = Annotated[str, AfterValidator(_parsable_s3_uri)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class IngestOptions(_Section):
    """How new objects are cleaned and imported."""

    max_object_bytes: Annotated[int, Field(gt=0)] = 20 * 1024 * 1024
    batch_size: Annotated[int, Field(ge=1, le=1000)] = 500
    max_request_bytes: Annotated[int, Field(ge=64 * 1024, le=200 * 1024 * 1024)] = 8 * 1024 * 1024
    download_workers: Annotated[int, Field(ge=1, le=64)] = 16
    chunk_objects: Annotated[int, Field(ge=1, le=100_000)] = 2000
    # Images with more pixels are quarantined as too_large from their header, before any decoding. 100 MP covers
    # the largest camera sensors in common use (about 60-100 MP) and is more than browsers show in Label Studio;
    # decoded, such an image takes up to 400 MB (Pillow keeps 4 bytes a pixel for RGB and RGBA).
    max_image_pixels: Annotated[int, Field(gt=0)] = 100_000_000
    # Bytes the download workers may hold at once, together: objects being downloaded plus the decoded size of
    # images being decoded (width x height x bytes per pixel, from the header). 512 MiB fits the largest image
    # max_image_pixels lets through (400 MB) plus a max_object_bytes download, and keeps ingest under 1 GB of RSS
    # whatever download_workers is. An object that alone needs more is quarantined as too_large.
    memory_budget_bytes: Annotated[int, Field(gt=0)] = 512 * 1024 * 1024
    # Audio longer than this is quarantined as too_long, judged from the header before decoding. 30 minutes covers
    # a long interview segment; longer recordings are better cut before labeling (annotators lose their place).
    max_duration_seconds: Annotated[float, Field(gt=0)] = 1800.0
    # Encodings tried, in order, for text that is not UTF-8, before automatic detection (which needs
    # a few dozen characters to be reliable): e.g. [gb18030] for a GBK corpus, [big5], [shift_jis].
    text_encodings: list[str] = Field(default_factory=list)

    @field_validator("text_encodings")
    @classmethod
    def _known_codecs(cls, value: list[str]) -> list[str]:
        import codecs

        for name in value:
            try:
                codecs.lookup(name)
            except LookupError:
                raise ValueError(f"unknown text encoding {name!r}") from None
        return value


# A record field path: dot-separated keys and list indexes, e.g. `messages.0.content`.
FIELD_PATH = re.compile(r"^[^.\s][^.]*(\.[^.]+)*$")


class RecordsSpec(_Section):
    """Sources are files of records (JSONL, JSON array, CSV, TSV, Parquet): each record becomes one task."""

    format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet"] = "auto"
    # Task field -> the record's field (a dotted path such as `messages.0.content`), or a list of paths for a task
    # field that holds several values (a ranking's responses).
    fields: Annotated[dict[str, str | Annotated[list[str], Field(min_length=1)]], Field(min_length=1)]
    id: str | None = None  # the record's own id column, kept as `record_id` for lineage
    max_chars: Annotated[int, Field(gt=0)] = 100_000  # per field; a longer value quarantines the record as too_long
    field_max_chars: dict[str, Annotated[int, Field(gt=0)]] = Field(default_factory=dict)  # per-field overrides

    @field_validator("fields")
    @classmethod
    def _paths(cls, value: dict[str, str | list[str]]) -> dict[str, str | list[str]]:
        for name, paths in value.items():
            for path in [paths] if isinstance(paths, str) else paths:
                if not FIELD_PATH.match(path):
                    raise ValueError(f"{name}: {path!r} is not a field path (keys and indexes joined by dots)")
        return value

    @model_validator(mode="after")
    def _known_limits(self) -> RecordsSpec:
        unknown = sorted(set(self.field_max_chars) - set(self.fields))
        if unknown:
            raise ValueError(f"field_max_chars names fields not in `fields`: {unknown}")
        return self

    def paths(self, name: str) -> list[str]:
        """The record paths of one task field (one, or several for a list field)."""
        value = self.fields[name]
        return [value] if isinstance(value, str) else list(value)

    def limit(self, name: str) -> int:
        """The character limit of one task field."""
        return self.field_max_chars.get(name, self.max_chars)


class StorageOptions(_Section):
    """The Label Studio storage connection that resolves s3:// URIs in tasks."""

    presign: bool = True
    presign_ttl_minutes: Annotated[int, Field(ge=1, le=10080)] = 60


class QualitySpec(_Section):
    """Agreement, consensus and annotator scoring (collect stage)."""

    min_agreement: Annotated[float, Field(ge=0.0, le=1.0)] = 0.6
    aggregation: Literal["majority", "dawid-skene"] = "majority"
    tie_policy: Literal["flag", "first", "random"] = "flag"
    gold: S3Uri | None = None
    tiers: dict[str, Annotated[float, Field(ge=0.0, le=1.0)]] = Field(
        default_factory=lambda: {"trainee": 0.0, "qualified": 0.8, "expert": 0.95}
    )
    reviewers: list[str] = Field(default_factory=list)  # emails whose annotation accepts a task and sets its label
    # Where flagged tasks go: `overlap` gives them one more annotation slot in Label Studio, `expert` sends them to
    # the review project `<title> · review` (tasks/escalation.py), `both` does both, `off` neither. Older specs'
    # true / false read as overlap / off.
    route_low_agreement: Literal["off", "overlap", "expert", "both"] = "overlap"
    # A share of accepted tasks (stable per task and seed) also sent to the review project, to audit annotators.
    review_sample: Annotated[float, Field(ge=0.0, le=1.0)] = 0.0
    # Talent-pool level (a ladder name) whose holders decide in the review project like `reviewers` do.
    expert_level: str | None = None
    # Admission (tasks/exams.py): annotations by people below this ladder level (the higher of their talent-pool
    # level and any valid exam certificate for the spec's domain and task type) are kept but marked `uncertified`:
    # they count neither towards consensus nor towards a task being finished.
    min_level: str | None = None
    # How long an exam certificate (`labelflow exam grade`) stays valid.
    certificate_valid_days: Annotated[int, Field(ge=1)] = 365
    max_overlap: Annotated[int, Field(ge=1, le=50)] | None = None  # cap for routing; default overlap + 2
    iou_threshold: Annotated[float, Field(gt=0.0, le=1.0)] = 0.5
    min_annotations_for_tier: Annotated[int, Field(ge=0)] = 10
    min_gold_for_tier: Annotated[int, Field(ge=1)] = 5
    # `current`: labels made under an older version of the spec's `guidelines` do not count; their tasks are flagged
    # and routed back for new labels. `any`: every label counts, whatever version it was made under.
    require_guideline: Literal["any", "current"] = "any"
    # Annotator pairs sharing fewer tasks are left out of the headline Cohen's kappa (and counted). Below about ten
    # shared tasks a pair's kappa is mostly noise: its 95% interval is about +-0.4 wide or more, and on one task it
    # is exactly 0 or 1. The headline also weighs each pair by its shared tasks.
    min_shared_tasks_for_kappa: Annotated[int, Field(ge=1)] = 10
    # What one annotation costs: one number for everyone, or a price per tier ({trainee: 0.05, qualified: 0.08,
    # expert: 0.12}) naming every tier; `unrated` people are paid the lowest tier's price unless `unrated` is given.
    # The report and the dataset manifest then show the cost per tier and per published row.
    cost_per_annotation: Annotated[float, Field(ge=0.0)] | dict[str, Annotated[float, Field(ge=0.0)]] | None = None
    seed: int = 0
    # The talent pool's skill levels, lowest first (tasks/levels.py): each asks more evidence, accuracy, agreement.
    ladder: list[Level] = Field(default_factory=lambda: list(DEFAULT_LADDER))
    # Label-error detection (tasks/label_errors.py) on the types a classifier can learn: consensus labels that
    # out-of-fold predictions call probably wrong are listed in the report. With `review_suspects` they are also
    # sent to review and held back from published versions until a review decides them.
    find_label_errors: bool = True
    review_suspects: bool = False

    @field_validator("gold")
    @classmethod
    def _gold_uri(cls, value: str | None) -> str | None:
        if value is not None and not value.endswith((".csv", ".jsonl", ".ndjson")):
            raise ValueError("gold must be an s3:// URI of a .csv or .jsonl file")
        return value

    @field_validator("route_low_agreement", mode="before")
    @classmethod
    def _routing_bool(cls, value: Any) -> Any:
        if isinstance(value, bool):  # specs written before the routing modes
            return "overlap" if value else "off"
        return value

    @field_validator("ladder")
    @classmethod
    def _increasing_ladder(cls, value: list[Level]) -> list[Level]:
        return check_ladder(value)

    @field_validator("tiers")
    @classmethod
    def _some_tier(cls, value: dict[str, float]) -> dict[str, float]:
        if not value:
            raise ValueError("define at least one tier, e.g. {trainee: 0.0}")
        return value

    @model_validator(mode="after")
    def _priced_tiers(self) -> QualitySpec:
        prices = self.cost_per_annotation
        if isinstance(prices, dict):
            unknown = sorted(set(prices) - set(self.tiers) - {"unrated"})
            if unknown:
                raise ValueError(f"cost_per_annotation: {unknown} is not a tier (tiers: {sorted(self.tiers)})")
            missing = [tier for tier in self.tiers if tier not in prices]
            if missing:
                raise ValueError(f"cost_per_annotation has no price for tier {missing[0]!r}")
        return self

    @model_validator(mode="after")
    def _expert_level_on_ladder(self) -> QualitySpec:
        names = [level.name for level in self.ladder]
        if self.expert_level is not None and self.expert_level not in names:
            raise ValueError(f"expert_level: {self.expert_level!r} is not a level of the ladder {names}")
        if self.min_level is not None and self.min_level not in names:
            raise ValueError(f"min_level: {self.min_level!r} is not a level of the ladder {names}")
        return self

    @property
    def escalates(self) -> bool:
        """Whether flagged tasks go to the review project."""
        return self.route_low_agreement in ("expert", "both")

    @property
    def raises_overlap(self) -> bool:
        """Whether flagged tasks get one more annotation slot."""
        return self.route_low_agreement in ("overlap", "both")

    def annotation_price(self, tier: str) -> float | None:
        """What one annotation by someone in `tier` costs; None without `cost_per_annotation`."""
        prices = self.cost_per_annotation
        if prices is None or not isinstance(prices, dict):
            return prices
        if tier in prices:
            return prices[tier]
        # An unrated person (too little evidence yet) is paid as the lowest tier.
        return prices[min(self.tiers, key=self.tiers.__getitem__)]


class GuidelineFile(BaseModel):
    """The spec's guideline file: its path as written, its version (SHA-256 of the normalised text), its text."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str
    sha256: str
    text: str = Field(exclude=True, repr=False)  # kept out of dumps: the spec's YAML and fingerprints hold the version


class CollectOptions(_Section):
    """Pulling annotations out of Label Studio."""

    window_seconds: Annotated[float, Field(ge=0, le=86400)] = 60.0  # re-read this much before the watermark
    timeout_seconds: Annotated[float, Field(gt=0)] = 1800.0  # how long one snapshot export may take


class DatasetSpec(_Section):
    """The registered dataset (register stage)."""

    name: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")]
    min_rows_per_class: Annotated[int, Field(ge=0)] = 0
    location: S3Uri | None = None  # s3://bucket/prefix for the version folders; default s3://labelflow-datasets/<name>
    # A dataset belongs to the project that first published it. Another project (another spec `name`) may publish
    # versions of it only when both the owner's spec and its own say `shared: true`, with the same `location`.
    shared: bool = False
    # annotations.parquet names annotators by stable pseudonyms unless this is true (tasks/dataset.py pseudonymous).
    include_annotator_ids: bool = False


class ValidationOptions(_Section):
    """Where the Great Expectations suites are and how much a failure report shows."""

    expectations: str | None = None  # folder of suites; relative to the spec file; default: labelflow's expectations/
    examples: Annotated[int, Field(ge=1, le=100)] = 5


MODEL_URI = re.compile(r"^models:/([^/\s@]+)(?:/([^/\s]+)|@([^/\s]+))$")


class PrelabelSpec(_Section):
    """Optional pre-annotation by a model, imported as Label Studio predictions."""

    predictor: Literal["keyword", "openai", "mlflow"]
    # The version stamped on every prediction. The mlflow predictor stamps `<model_uri> v<resolved version>` itself.
    model_version: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    # The mlflow predictor's registered model: models:/<name>/<version>, models:/<name>@<alias> or
    # models:/<name>/latest. An alias or `latest` is resolved again by every ingest and collect, so a newly
    # registered version takes over (and re-scores the queue) without a spec change.
    model_uri: str | None = None
    keywords: dict[str, list[str]] = Field(default_factory=dict)
    endpoint: str | None = None
    model: str | None = None
    api_key_env: str | None = None
    timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 30.0
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4

    @field_validator("model_uri")
    @classmethod
    def _registered_model_uri(cls, value: str | None) -> str | None:
        if value is not None and not MODEL_URI.match(value):
            raise ValueError(
                f"{value!r} is not a registered model's URI: models:/<name>/<version>, models:/<name>@<alias> "
                "or models:/<name>/latest"
            )
        return value

    @model_validator(mode="after")
    def _predictor_options(self) -> PrelabelSpec:
        if self.predictor == "keyword" and not self.keywords:
            raise ValueError("the keyword predictor needs `keywords`: a list of words for each label")
        if self.predictor == "openai" and not (self.endpoint and self.model):
            raise ValueError("the openai predictor needs `endpoint` (base URL ending in /v1) and `model`")
        if self.predictor == "mlflow" and not self.model_uri:
            raise ValueError("the mlflow predictor needs `model_uri`, e.g. models:/reviews-baseline/latest")
        if self.predictor != "mlflow" and not self.model_version:
            raise ValueError(f"the {self.predictor} predictor needs `model_version`, stamped on its predictions")
        return self


class AutomateSpec(_Section):
    """Automated labeling: the prelabel model labels the items it is sure of; a random share is still audited."""

    # The accuracy the machine-labeled rows must reach, checked on the lower end of a one-sided 95% interval.
    target_accuracy: Annotated[float, Field(gt=0.0, lt=1.0)]
    audit_share: Annotated[float, Field(ge=0.0, le=1.0)] = 0.05  # of the items above the threshold, still labeled
    min_human_labels: Annotated[int, Field(ge=1)] = 200  # consensus labels by people before any machine label
    # Threshold candidates need at least this many human-labeled items at or above them.
    min_items_above_threshold: Annotated[int, Field(ge=1)] = 30
    folds: Annotated[int, Field(ge=2, le=20)] = 5  # cross-fitting folds of the calibration


class QueueSpec(_Section):
    """The order annotators are served the tasks still to label."""

    # `least-confident`: 1 - top probability; `margin`: top minus runner-up (smallest first); `entropy`: of the
    # class probabilities. Needs the mlflow predictor; `off` keeps Label Studio's own order.
    order: Literal["off", "least-confident", "margin", "entropy"] = "off"


class GenerateSpec(_Section):
    """`labelflow generate`: K candidate responses per prompt from an OpenAI-compatible endpoint, as record files."""

    # Base URL of the API (ending in /v1). Only `labelflow generate` needs it, and says so when it is missing.
    endpoint: str | None = None
    model: Annotated[str, Field(min_length=1, max_length=200)]
    candidates: Annotated[int, Field(ge=2, le=10)] = 2  # K responses per prompt
    temperature: Annotated[float, Field(ge=0.0, le=2.0)] = 1.0
    top_p: Annotated[float, Field(gt=0.0, le=1.0)] = 1.0
    max_tokens: Annotated[int, Field(ge=1, le=32768)] = 512
    seed: int = 0  # each candidate's seed is derived from it, the prompt's hash and the candidate's index
    system: str | None = None  # a system message sent before every prompt
    api_key_env: str | None = None  # the environment variable holding the API key, read only when generate runs
    prompts: S3Uri  # a prefix (or one file) of prompt record files: JSONL, JSON, CSV, TSV or Parquet
    prompt_field: Annotated[str, Field(pattern=FIELD_PATH.pattern)] = "prompt"  # the prompt's field (a dotted path)
    prompt_id_field: Annotated[str, Field(pattern=FIELD_PATH.pattern)] | None = None  # kept as prompt_id
    prompts_format: Literal["auto", "jsonl", "json", "csv", "tsv", "parquet"] = "auto"
    output: Annotated[str, Field(pattern=r"^[^/\s][^\s]*$")] = "generated"  # prefix under the spec's first source
    timeout_seconds: Annotated[float, Field(gt=0, le=3600)] = 120.0
    max_retries: Annotated[int, Field(ge=0, le=10)] = 3
    max_concurrency: Annotated[int, Field(ge=1, le=64)] = 4
    batch_prompts: Annotated[int, Field(ge=1, le=10_000)] = 100  # prompts per written record file

    @field_validator("endpoint")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        from urllib.parse import urlsplit

        if value is not None:
            parts = urlsplit(value.strip())
            if parts.scheme not in ("http", "https") or not parts.netloc:
                raise ValueError(f"{value!r} is not an http(s) base URL such as http://127.0.0.1:8000/v1")
        return value

    @field_validator("output")
    @classmethod
    def _relative_prefix(cls, value: str) -> str:
        if ".." in value.split("/"):
            raise ValueError("output is a prefix under the spec's source; `..` is not allowed")
        return value.strip("/")


class ProjectSpec(_Section):
    """One labeling project: where raw data is, what annotators do, how quality is judged, what is published."""

    name: Annotated[str, Field(min_length=1, max_length=200)]
    source: Annotated[list[str], Field(min_length=1)]
    task: TaskTypeName
    # The talent pool's domain of this project's work (e.g. zh-sentiment, medical-ct); default: the task type.
    domain: Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")] | None = None
    # Required by the task types that label; validated even when absent, so a missing list is reported.
    labels: list[str] = Field(default_factory=list, validate_default=True)
    label_config: str | None = None
    overlap: Annotated[int, Field(ge=1, le=50)] = 1
    instructions: str | None = None
    # A Markdown file (relative to the spec file) shown to annotators as the project's instructions; its SHA-256 is
    # the guideline version every annotation is stamped with (tasks/guidelines.py).
    guidelines: GuidelineFile | None = None
    state: S3Uri | None = None
    ingest: IngestOptions = Field(default_factory=IngestOptions)
    storage: StorageOptions = Field(default_factory=StorageOptions)
    quality: QualitySpec = Field(default_factory=QualitySpec)
    collect: CollectOptions = Field(default_factory=CollectOptions)
    dataset: DatasetSpec | None = None
    validation: ValidationOptions = Field(default_factory=ValidationOptions)
    prelabel: PrelabelSpec | None = None
    automate: AutomateSpec | None = None
    queue: QueueSpec = Field(default_factory=QueueSpec)
    records: RecordsSpec | None = None
    generate: GenerateSpec | None = None
    options: dict[str, Any] = Field(default_factory=dict)  # the task type's own settings, checked by the type

    @field_validator("source", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("source")
    @classmethod
    def _s3_uris(cls, value: list[str]) -> list[str]:
        for uri in value:
            S3Location.parse(uri)
        return value

    @field_validator("guidelines", mode="before")
    @classmethod
    def _read_guidelines(cls, value: Any, info: ValidationInfo) -> Any:
        if value is None or isinstance(value, GuidelineFile):
            return value
        if not isinstance(value, str) or not value.strip():
            raise ValueError("guidelines is the path of a Markdown file, relative to the spec file")
        folder = (info.context or {}).get("spec_folder")
        text, version = read_guideline_file(value, Path(folder) if folder else Path.cwd())
        return GuidelineFile(path=value, sha256=version, text=text)

    @field_validator("labels")
    @classmethod
    def _clean_labels(cls, value: list[str], info: ValidationInfo) -> list[str]:
        task = info.data.get("task")  # validated before labels (field order), absent only when it is invalid
        if not value and task in TASK_TYPES and TASK_TYPES[task].uses_labels:
            raise ValueError(f"List should have at least 1 item (task {task} chooses among labels)")
        labels = [unicodedata.normalize("NFC", label.strip()) for label in value]
        if any(not label for label in labels):
            raise ValueError("labels must not be empty")
        duplicates = sorted({label for label in labels if labels.count(label) > 1})
        if duplicates:
            raise ValueError(f"duplicate labels: {duplicates}")
        return labels

    @field_validator("label_config")
    @classmethod
    def _parsable_xml(cls, value: str | None) -> str | None:
        if value is None:
            return value
        if XML_DECLARATIONS.search(value):
            # Label Studio refuses DTDs anyway, but only after every server was contacted; entities are also how
            # XML bombs and external-entity reads work, so nothing with a declaration gets past the spec.
            raise ValueError("label_config must not contain a DOCTYPE or entity declarations (<!DOCTYPE ...>)")
        try:
            root = ElementTree.fromstring(value)
        except ElementTree.ParseError as exc:
            raise ValueError(f"label_config is not valid XML: {exc}") from None
        if root.tag != "View":
            raise ValueError("label_config must have <View> as its root element")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> ProjectSpec:
        self.task_type.check_records(self.records)
        self.task_type.parse_options(self.options)
        if self.label_config is not None and self.task_type.uses_labels:  # record types refuse it in check_spec
            variable = f"${self.data_key}"
            if variable not in self.label_config:
                raise ValueError(f"label_config for task {self.task!r} must read the task's {variable} field")
            values = {
                element.get("value")
                for element in ElementTree.fromstring(self.label_config).iter()
                if element.tag in {"Choice", "Label"}
            }
            missing = sorted(set(self.labels) - values)
            extra = sorted(values - set(self.labels))
            if missing or extra:
                raise ValueError(
                    f"label_config and labels disagree: missing in label_config {missing}, not in labels {extra}"
                )
        for source in self.sources:
            managed = self.managed_location_in(source)
            if managed:
                raise ValueError(f"source {source} overlaps {managed}: labelflow never ingests its own files")
        if self.generate is not None:
            prompts = S3Location.parse(self.generate.prompts)
            for source in self.sources:
                if prompts.overlaps(source):
                    raise ValueError(
                        f"generate.prompts: {self.generate.prompts} overlaps the source {source}, whose files ingest "
                        "turns into tasks; keep the prompt files outside the spec's sources"
                    )
        if self.quality.require_guideline == "current" and self.guidelines is None:
            raise ValueError("quality.require_guideline: current needs a `guidelines` file")
        if self.quality.max_overlap is not None and self.quality.max_overlap < self.overlap:
            raise ValueError(f"quality.max_overlap ({self.quality.max_overlap}) is below overlap ({self.overlap})")
        self._check_model_in_the_loop()  # before the predictor's own check: `automate` names what is wrong better
        if self.prelabel is not None:
            predictor = self.prelabel.predictor
            if predictor == "keyword":
                unknown = sorted(set(self.prelabel.keywords) - set(self.labels))
                if unknown:
                    raise ValueError(f"prelabel.keywords names labels not in `labels`: {unknown}")
            if predictor not in self.task_type.predictors:
                able = [name for name, kind in TASK_TYPES.items() if predictor in kind.predictors]
                raise ValueError(
                    f"prelabel.predictor: the {predictor} predictor supports {', '.join(able)} tasks, not {self.task}"
                )
        self.task_type.check_spec(self)
        return self

    def _check_model_in_the_loop(self) -> None:
        looped = [name for name, kind in TASK_TYPES.items() if kind.model_in_the_loop]
        uses_model = self.prelabel is not None and self.prelabel.predictor == "mlflow"
        for section, wanted in (("automate", self.automate is not None), ("queue.order", self.queue.order != "off")):
            if not wanted:
                continue
            if not self.task_type.model_in_the_loop:
                raise ValueError(f"{section}: task {self.task} does not support it (supported: {', '.join(looped)})")
            if not uses_model:
                raise ValueError(f"{section}: needs a model; set prelabel: {{predictor: mlflow, model_uri: ...}}")

    @property
    def task_type(self) -> TaskType:
        """The registered task type that owns everything specific to `task`."""
        return TASK_TYPES[self.task]

    @property
    def task_options(self) -> Any:
        """The task type's settings (`options:`), validated by the type's own model; None for a type without any."""
        return self.task_type.parse_options(self.options)

    @property
    def modality(self) -> Media:
        """Whether tasks carry text or refer to images (the task type's media)."""
        return self.task_type.media

    @property
    def data_key(self) -> str:
        """The task data field annotators see: `text` or `image`."""
        return self.task_type.data_key

    @property
    def sources(self) -> list[S3Location]:
        """Parsed source locations."""
        return [S3Location.parse(uri) for uri in self.source]

    @property
    def pool_domain(self) -> str:
        """The talent pool domain this project's evidence counts for: `domain` (lower case), or the task type."""
        return (self.domain or self.task).lower()

    @property
    def slug(self) -> str:
        """A stable, ASCII, path-safe identifier for the project (its state lives under it)."""
        ascii_name = unicodedata.normalize("NFKD", self.name).encode("ascii", "ignore").decode()
        slug = re.sub(r"[^a-z0-9]+", "-", ascii_name.lower()).strip("-")[:60]
        digest = hashlib.sha256(self.name.encode("utf-8")).hexdigest()[:8]
        return f"{slug}-{digest}" if slug else f"project-{digest}"

    @property
    def state_location(self) -> S3Location:
        """Where labelflow keeps this project's ledger, reports and other state."""
        if self.state:
            return S3Location.parse(self.state)
        return S3Location(bucket=STATE_BUCKET, prefix=f"projects/{self.slug}")

    @property
    def dataset_location(self) -> S3Location | None:
        """Where the dataset's versions live: `dataset.location`, or s3://labelflow-datasets/<name>."""
        if self.dataset is None:
            return None
        if self.dataset.location:
            return S3Location.parse(self.dataset.location)
        return S3Location(bucket=DATASETS_BUCKET, prefix=self.dataset.name)

    def managed_location_in(self, source: S3Location) -> str | None:
        """What labelflow-managed location a source would read, described for the error, or None."""
        if source.bucket in MANAGED_BUCKETS:
            return f"labelflow's own bucket s3://{source.bucket}/ (project state, datasets or MLflow artifacts)"
        state = self.state_location
        if source.overlaps(state.folder):
            return f"this project's state location {state}"
        dataset = self.dataset_location
        if dataset is not None and source.overlaps(dataset.folder):
            return f"this project's dataset location {dataset}"
        return None


# "records.fields: ..." or "labels: ...": a model-level message that starts with the spec field it is about.
SPEC_FIELD_MESSAGE = re.compile(r"^[a-z_]+(\.[a-z_]+)*: ")


def describe_error(error: Any) -> tuple[str, str]:
    """(dotted field path, message a person reads) of one pydantic error."""
    message = error["msg"].removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown field (check the spelling)"
    return ".".join(str(part) for part in error["loc"]), message


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: the field path and what is wrong."""
    lines = []
    for error in exc.errors():
        path, message = describe_error(error)
        if not path and SPEC_FIELD_MESSAGE.match(message):
            lines.append(f"  {message}")  # a cross-field check that names its field itself
        else:
            lines.append(f"  {path or '(top level)'}: {message}")
    return "\n".join(lines)


def parse_spec(data: Any, origin: str = "spec", folder: Path | None = None) -> ProjectSpec:
    """Validate already-parsed YAML/JSON data as a project spec (`folder`: where relative paths start, e.g.
    `guidelines`; the working directory by default)."""
    if not isinstance(data, dict):
        raise SpecError(f"{origin}: expected a mapping of fields at the top level, got {type(data).__name__}")
    try:
        return ProjectSpec.model_validate(data, context={"spec_folder": str(folder) if folder else None})
    except ValidationError as exc:
        raise SpecError(f"{origin} is invalid:\n{format_validation_error(exc)}") from None
    except GuidelineFileError as exc:
        raise SpecError(f"{origin}: {exc}") from None


def load_spec(path: str | Path) -> ProjectSpec:
    """Read and validate a spec file."""
    spec_path = Path(path)
    try:
        text = spec_path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise SpecError(f"{spec_path}: no such spec file") from None
    except UnicodeDecodeError as exc:
        raise SpecError(f"{spec_path}: not UTF-8 text ({exc})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise SpecError(f"{spec_path}: not valid YAML: {exc}") from None
    return parse_spec(data, origin=str(spec_path), folder=spec_path.resolve().parent)


DEFAULT_EXPECTATIONS_DIR = Path(__file__).resolve().parent.parent / "expectations"


def expectations_dir(spec: ProjectSpec, spec_path: str | None) -> Path:
    """The spec's suite folder (relative to the spec file), or labelflow's own `expectations/`."""
    if spec.validation.expectations is None:
        return DEFAULT_EXPECTATIONS_DIR
    folder = Path(spec.validation.expectations)
    if not folder.is_absolute() and spec_path:
        folder = Path(spec_path).resolve().parent / folder
    return folder
