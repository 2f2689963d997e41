"""`labelflow generate`: K candidate responses per prompt from an OpenAI-compatible endpoint, written as record files
into the spec's source, so that the next ingest turns them into preference, ranking or response-grading tasks.

The steps, in order:
- `check_generate` (no I/O): the spec has a `generate:` section with an endpoint, its type takes candidates, and its
  `records.fields` map the layout written below; each error is one line naming the field to change.
- `plan_prompts` streams the prompt record files (tasks/records.py, chunk by chunk from the object store) and keeps
  the prompts that have no K candidates yet. A prompt is known by the SHA-256 of its text; a marker object per
  prompt under the spec's state location (generate/<model digest>/prompts/<sha256>.json) says it is done, and a
  marker per prompt file (its ETag) lets an unchanged file be skipped without reading it. So a re-run costs a
  listing and one small read per prompt file, plus one per prompt of a new or changed file: it grows with new
  prompts, not with the history of the output.
- `generate_candidates` asks for each candidate with its own seed, sha256(spec seed, prompt hash, candidate index),
  so a re-run (or a retry after a crash) asks for exactly the same candidates.
- `write_generated` writes one JSONL file per batch of prompts, named by a digest of its prompts and settings (a
  retried batch overwrites its own file), then the prompts' markers.
- `mark_prompt_files` records the prompt files read in full.

Layout of the written records (derived from the type's record fields, see `layout`):
- types with several responses (preference: response_a, response_b; ranking: responses): one record per prompt,
  {"id", "prompt_id", "prompt", "candidates": [{"text", "model", "params", "seed", "prompt_sha256"}, ...],
  "generation": {...}}, mapped as response_a: candidates.0.text, responses: [candidates.0.text, ...];
- types with one response (response-grading): one record per candidate, {"id", "prompt_id", "prompt", "response",
  "model", "generation"}.
`generation` is the lineage (model, params, seeds, prompt hash, prompt file and record); the spec maps it as the
optional record field `generation`, so it is kept in the task's record and reaches the published version.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from labelflow.tasks.records import ParsedRecord, RecordsSummary, format_from_name, iter_records
from labelflow.tasks.spec import GenerateSpec, ProjectSpec, RecordsSpec, S3Location, SpecError
from labelflow.tasks.task_types import TASK_TYPES, TaskType
from labelflow.tasks.task_types.sft import chat_messages

if TYPE_CHECKING:
    from labelflow.integrations.object_store import StoredObject
    from labelflow.integrations.openai_compatible import OpenAICompatibleClient
    from labelflow.tasks.ports import ObjectStorePort

MARKER_READERS = 16  # prompt markers read at once
GENERATOR = "labelflow generate"


class GenerateError(SpecError):
    """The spec or the prompts cannot be used for generation; the message names the field to change, on one line."""


# --- the layout, derived from the task type's record fields ---------------------------------------------------------
# A type takes candidates when its records have response fields (`response...`): one response field that holds one
# value (response-grading) gets one record per candidate; several (response_a, response_b) or a list field
# (responses) get one record per prompt holding all K. The model behind a response goes in the type's optional
# `model...` field of the same suffix (model_a for response_a, models for responses, model for response).
@dataclass(frozen=True)
class Layout:
    """How generated records map onto a task type's record fields."""

    required: dict[str, str | list[str]]  # task field -> record path
    optional: dict[str, str | list[str]]
    per_candidate: bool  # one record per candidate (else one per prompt)
    response_field: str  # per candidate: the record key holding the response
    model_field: str | None  # per candidate: the record key holding the model

    @property
    def fields(self) -> dict[str, str | list[str]]:
        """Every field generated records can fill."""
        return {**self.required, **self.optional}

    def text(self) -> str:
        """The whole `records.fields` mapping in YAML flow style (what an error tells to map)."""

        def flow(value: str | list[str]) -> str:
            return value if isinstance(value, str) else f"[{', '.join(value)}]"

        return "{" + ", ".join(f"{name}: {flow(path)}" for name, path in self.fields.items()) + "}"


def response_fields(task_type: TaskType) -> list[str]:
    """The record fields of a type that hold responses (empty: the type takes no generated candidates)."""
    return [name for name in task_type.record_fields if name.startswith("response")]


def generating_types() -> list[str]:
    """The registered types whose tasks generated candidates can fill."""
    return [name for name, kind in TASK_TYPES.items() if kind.media == "record" and response_fields(kind)]


def layout(task_type: TaskType, candidates: int) -> Layout:
    """The records generate writes for this type and K, as the type's `records.fields` must map them."""
    responses = response_fields(task_type)
    if task_type.media != "record" or not responses:
        raise GenerateError(
            f"task: generate writes candidates for tasks with responses ({', '.join(generating_types())}), "
            f"not {task_type.name}"
        )
    prompt = task_type.data_key
    optional_names = set(task_type.optional_record_fields)

    def model_of(response: str) -> str | None:
        name = "model" + response.removeprefix("response")
        return name if name in optional_names else None

    lineage = {"generation": "generation"} if "generation" in optional_names else {}
    listed = [name for name in responses if name in task_type.list_record_fields]
    if len(responses) == 1 and not listed:
        response, model = responses[0], model_of(responses[0])
        optional: dict[str, str | list[str]] = {model: model} if model else {}
        return Layout({prompt: prompt, response: response}, optional | lineage, True, response, model)
    if listed:
        texts = [f"candidates.{i}.text" for i in range(candidates)]
        models = [f"candidates.{i}.model" for i in range(candidates)]
        required: dict[str, str | list[str]] = {prompt: prompt, listed[0]: texts}
        optional = {model: models} if (model := model_of(listed[0])) else {}
        return Layout(required, optional | lineage, False, "", None)
    if candidates != len(responses):
        raise GenerateError(
            f"generate.candidates: task {task_type.name} shows {len(responses)} responses ({', '.join(responses)}); "
            f"set candidates: {len(responses)}, not {candidates}"
        )
    required = {prompt: prompt} | {name: f"candidates.{i}.text" for i, name in enumerate(responses)}
    optional = {model: f"candidates.{i}.model" for i, name in enumerate(responses) if (model := model_of(name))}
    return Layout(required, optional | lineage, False, "", None)


def check_layout(task_type: TaskType, candidates: int, records: RecordsSpec) -> Layout:
    """The layout, once `records` reads the records generate writes for this type; GenerateError otherwise."""
    found = layout(task_type, candidates)
    if records.format not in ("auto", "jsonl"):
        raise GenerateError(
            f"records.format: generate writes JSONL files; set format: jsonl (or auto), not {records.format}"
        )
    if records.id not in (None, "id"):
        raise GenerateError(
            f"records.id: generated records carry their id in `id`; set id: id or remove it, not {records.id!r}"
        )
    name = task_type.name
    for field_name, paths in records.fields.items():
        if field_name not in found.fields:
            raise GenerateError(
                f"records.fields.{field_name}: generated {name} records have no such field; map {found.text()}"
            )
        if paths != found.fields[field_name]:
            raise GenerateError(
                f"records.fields.{field_name}: generated {name} records hold it at "
                f"{json.dumps(found.fields[field_name])}, not {json.dumps(paths)}; map {found.text()}"
            )
    missing = [field_name for field_name in found.required if field_name not in records.fields]
    if missing:
        raise GenerateError(f"records.fields.{missing[0]}: generated {name} records need it; map {found.text()}")
    if "generation" in found.fields and "generation" not in records.fields:
        raise GenerateError(
            "records.fields.generation: map `generation: generation`, so each task keeps its candidates' lineage "
            "(model, parameters, seed, prompt hash) into the published version"
        )
    return found


def check_generate(spec: ProjectSpec) -> GenerateSpec:
    """The spec's `generate:` section once it is usable for `labelflow generate`; GenerateError otherwise (no I/O)."""
    settings = spec.generate
    if settings is None:
        raise GenerateError(
            "generate: the spec has no `generate:` section; add one with endpoint, model and prompts "
            "(see examples/specs/generated-preference.yaml)"
        )
    if not settings.endpoint:
        raise GenerateError(
            "generate.endpoint: labelflow generate needs the base URL of an OpenAI-compatible API, "
            "e.g. endpoint: http://127.0.0.1:8000/v1"
        )
    if spec.records is None:
        raise GenerateError(f"records: task {spec.task_type.name} does not read files of records")
    check_layout(spec.task_type, settings.candidates, spec.records)
    if settings.api_key_env and not os.environ.get(settings.api_key_env):
        raise GenerateError(f"generate.api_key_env names {settings.api_key_env}, which is not set")
    return settings


def output_location(spec: ProjectSpec) -> S3Location:
    """Where generated record files go: `generate.output` under the spec's first source (a folder)."""
    assert spec.generate is not None
    source = spec.sources[0]
    return S3Location(bucket=source.bucket, prefix=source.join(spec.generate.output) + "/")


def marker_location(spec: ProjectSpec) -> S3Location:
    """Where the prompt and prompt-file markers of this model live, under the spec's state location."""
    assert spec.generate is not None
    model = hashlib.sha256(spec.generate.model.encode("utf-8")).hexdigest()[:16]
    return S3Location(bucket=spec.state_location.bucket, prefix=spec.state_location.join("generate", model))


# --- hashes and seeds -------------------------------------------------------------------------------------------------
def prompt_sha256(text: str) -> str:
    """The prompt's identity: the SHA-256 of its text (NFC, as the records parser gives it) in UTF-8."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def candidate_seed(seed: int, prompt_hash: str, index: int) -> int:
    """The seed of one candidate: from the spec's seed, the prompt's hash and the candidate's index (31 bits)."""
    digest = hashlib.sha256(f"{seed}:{prompt_hash}:{index}".encode()).hexdigest()
    return int(digest[:8], 16) & 0x7FFFFFFF


# --- planning ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class PendingPrompt:
    """A prompt that needs candidates: its hash, id, value (text, or a chat's messages) and where it was read."""

    sha256: str
    prompt_id: str
    prompt: str | list[dict[str, str]]
    source_uri: str
    record_index: int


@dataclass(frozen=True)
class PromptFile:
    """A prompt file read in full, recorded so an unchanged file is skipped next time."""

    uri: str
    etag: str
    marker_key: str


@dataclass
class PromptPlan:
    """What planning found: the prompts to generate for, and the files to mark once they are done."""

    pending: list[PendingPrompt] = field(default_factory=list)
    files: list[PromptFile] = field(default_factory=list)
    files_listed: int = 0
    files_unchanged: int = 0
    prompts_read: int = 0  # prompt records read, left out ones included
    already_generated: int = 0
    quarantined: Counter[str] = field(default_factory=Counter)
    limited: bool = False  # `limit` stopped planning before every file was read

    def batches(self, size: int) -> Iterator[list[PendingPrompt]]:
        """The pending prompts, `size` at a time."""
        for start in range(0, len(self.pending), size):
            yield self.pending[start : start + size]


def _prompt_marker_key(markers: S3Location, sha256: str) -> str:
    return markers.join("prompts", f"{sha256}.json")


def _file_marker_key(markers: S3Location, uri: str) -> str:
    return markers.join("files", f"{hashlib.sha256(uri.encode('utf-8')).hexdigest()[:32]}.json")


def _read_json(store: ObjectStorePort, bucket: str, key: str) -> dict[str, Any] | None:
    """A small JSON marker, or None when there is none (or it is unreadable: then the work is simply redone)."""
    from labelflow.integrations.object_store import ObjectStoreError

    try:
        data = store.get_bytes(bucket, key)
    except ObjectStoreError as exc:
        if exc.not_found:
            return None
        raise
    try:
        value = json.loads(data)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return value if isinstance(value, dict) else None


def _prompt_value(text: str) -> str | list[dict[str, str]]:
    """A mapped prompt as written to the output: a chat (JSON list of {role, content}) as its messages, else text."""
    return chat_messages(text) or text


def _prompt_files(store: ObjectStorePort, settings: GenerateSpec) -> list[StoredObject]:
    """The record files under `generate.prompts`, in key order (other objects are not prompts)."""
    location = S3Location.parse(settings.prompts)
    if not store.bucket_exists(location.bucket):
        raise GenerateError(f"generate.prompts: bucket {location.bucket!r} of {settings.prompts} does not exist")
    return [
        obj
        for obj in store.list_objects(location.bucket, location.prefix)
        if format_from_name(obj.key, settings.prompts_format) is not None
    ]


def plan_prompts(store: ObjectStorePort, spec: ProjectSpec, limit: int | None = None) -> PromptPlan:
    """Read the prompt files (unchanged ones skipped) and keep the prompts without K candidates, in file order.

    `limit` caps the prompts kept; files then read only in part are not marked, so the next run reads them again.
    """
    settings = check_generate(spec)
    output = output_location(spec)
    if not store.bucket_exists(output.bucket):
        raise GenerateError(f"source: bucket {output.bucket!r} of {spec.source[0]} does not exist; create it first")
    markers = marker_location(spec)
    plan = PromptPlan()
    records_spec = RecordsSpec(
        format=settings.prompts_format,
        fields={"prompt": settings.prompt_field},
        id=settings.prompt_id_field,
        max_chars=spec.records.max_chars if spec.records else 100_000,
    )
    seen: set[str] = set()  # prompts kept or found done in this run: a repeat is left out
    for obj in _prompt_files(store, settings):
        plan.files_listed += 1
        marker_key = _file_marker_key(markers, obj.uri)
        marker = _read_json(store, markers.bucket, marker_key)
        if marker and marker.get("etag") == obj.etag and int(marker.get("candidates", 0)) >= settings.candidates:
            plan.files_unchanged += 1
            continue
        complete = _plan_file(store, spec, settings, obj, records_spec, markers, seen, plan, limit)
        if not complete:
            plan.limited = True
            break
        plan.files.append(PromptFile(obj.uri, obj.etag, marker_key))
    return plan


def _plan_file(
    store: ObjectStorePort,
    spec: ProjectSpec,
    settings: GenerateSpec,
    obj: StoredObject,
    records_spec: RecordsSpec,
    markers: S3Location,
    seen: set[str],
    plan: PromptPlan,
    limit: int | None,
) -> bool:
    """Add one file's new prompts to the plan; False when `limit` stopped it before the file's end."""
    summary = RecordsSummary()
    candidates: list[tuple[ParsedRecord, str]] = []

    def settle() -> bool:
        """Keep the collected prompts that have no marker yet; False once the limit is reached."""
        hashes = [sha for _, sha in candidates]
        with ThreadPoolExecutor(max_workers=MARKER_READERS) as pool:
            found = list(
                pool.map(lambda sha: _read_json(store, markers.bucket, _prompt_marker_key(markers, sha)), hashes)
            )
        for (record, sha), marker in zip(candidates, found, strict=True):
            if marker and int(marker.get("candidates", 0)) >= settings.candidates:
                plan.already_generated += 1
                continue
            if limit is not None and len(plan.pending) >= limit:
                return False
            text = str(record.fields["prompt"])
            plan.pending.append(
                PendingPrompt(sha, record.record_id or sha[:16], _prompt_value(text), obj.uri, record.index)
            )
        candidates.clear()
        return True

    chunks = store.iter_chunks(obj.bucket, obj.key)
    for result in iter_records(chunks, obj.uri, records_spec, spec.ingest.text_encodings, summary=summary):
        if result.index is not None:
            plan.prompts_read += 1
        if not isinstance(result, ParsedRecord):
            plan.quarantined[str(result.reason)] += 1
            continue
        sha = prompt_sha256(str(result.fields["prompt"]))
        if sha in seen:
            plan.quarantined["duplicate"] += 1
            continue
        seen.add(sha)
        candidates.append((result, sha))
        if len(candidates) >= 256 and not settle():
            return False
    if summary.missing_in_every_record("prompt"):
        raise GenerateError(
            f"generate.prompt_field: field {settings.prompt_field!r} is missing in every record of {obj.uri}; "
            "set prompt_field to the path of the prompt in the prompt records"
        )
    return settle()


# --- generation -------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Candidate:
    """One generated response with its lineage."""

    text: str
    model: str
    seed: int
    finish_reason: str | None


@dataclass(frozen=True)
class GeneratedPrompt:
    """A prompt and its K candidates, in candidate order."""

    prompt: PendingPrompt
    candidates: tuple[Candidate, ...]


def generation_params(settings: GenerateSpec) -> dict[str, Any]:
    """The sampling parameters every candidate was asked with."""
    return {"temperature": settings.temperature, "top_p": settings.top_p, "max_tokens": settings.max_tokens}


def request_messages(settings: GenerateSpec, prompt: str | list[dict[str, str]]) -> list[dict[str, str]]:
    """The chat sent for a prompt: the optional system message, then the prompt (a chat's own turns)."""
    system = [{"role": "system", "content": settings.system}] if settings.system else []
    turns = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
    return [*system, *turns]


def generate_candidates(
    client: OpenAICompatibleClient, spec: ProjectSpec, prompts: Sequence[PendingPrompt]
) -> list[GeneratedPrompt]:
    """K candidates for each prompt, `max_concurrency` requests at a time; the first failure stops the batch."""
    settings = spec.generate
    assert settings is not None

    def one(job: tuple[PendingPrompt, int]) -> Candidate:
        prompt, index = job
        seed = candidate_seed(settings.seed, prompt.sha256, index)
        answer = client.chat(
            request_messages(settings, prompt.prompt),
            temperature=settings.temperature,
            top_p=settings.top_p,
            max_tokens=settings.max_tokens,
            seed=seed,
        )
        return Candidate(answer.text, answer.model or settings.model, seed, answer.finish_reason)

    jobs = [(prompt, index) for prompt in prompts for index in range(settings.candidates)]
    with ThreadPoolExecutor(max_workers=settings.max_concurrency) as pool:
        answers = list(pool.map(one, jobs))
    k = settings.candidates
    return [
        GeneratedPrompt(prompt, tuple(answers[position * k : (position + 1) * k]))
        for position, prompt in enumerate(prompts)
    ]


def generated_records(spec: ProjectSpec, generated: Sequence[GeneratedPrompt]) -> list[dict[str, Any]]:
    """The records to write: one per prompt (all K candidates), or one per candidate for a one-response type."""
    settings = spec.generate
    assert settings is not None
    shape = layout(spec.task_type, settings.candidates)
    prompt_key = spec.task_type.data_key
    params = generation_params(settings)
    records: list[dict[str, Any]] = []
    for item in generated:
        prompt = item.prompt
        lineage = {
            "generator": GENERATOR,
            "model": settings.model,
            "params": params,
            "prompt_sha256": prompt.sha256,
            "prompt_source": prompt.source_uri,
            "prompt_record_index": prompt.record_index,
        }
        if shape.per_candidate:
            for index, candidate in enumerate(item.candidates):
                record = {"id": f"{prompt.prompt_id}-{index}", "prompt_id": prompt.prompt_id, prompt_key: prompt.prompt}
                record[shape.response_field] = candidate.text
                if shape.model_field:
                    record[shape.model_field] = candidate.model
                record["generation"] = {
                    **lineage,
                    "candidate": index,
                    "seed": candidate.seed,
                    "served_by": candidate.model,
                }
                records.append(record)
            continue
        candidates = [
            {
                "text": candidate.text,
                "model": candidate.model,
                "params": params,
                "seed": candidate.seed,
                "prompt_sha256": prompt.sha256,
            }
            for candidate in item.candidates
        ]
        generation = {
            **lineage,
            "seeds": [candidate.seed for candidate in item.candidates],
            "served_by": [candidate.model for candidate in item.candidates],
        }
        records.append(
            {
                "id": prompt.prompt_id,
                "prompt_id": prompt.prompt_id,
                prompt_key: prompt.prompt,
                "candidates": candidates,
                "generation": generation,
            }
        )
    return records


def batch_key(spec: ProjectSpec, generated: Sequence[GeneratedPrompt]) -> str:
    """The output file of a batch, named by its prompts and the settings (a retried batch writes the same key)."""
    settings = spec.generate
    assert settings is not None
    identity = json.dumps(
        [settings.model, settings.candidates, settings.seed, generation_params(settings), spec.task_type.name]
        + [item.prompt.sha256 for item in generated]
    )
    return output_location(spec).join(f"{hashlib.sha256(identity.encode('utf-8')).hexdigest()[:32]}.jsonl")


@dataclass(frozen=True)
class WrittenBatch:
    """One written record file."""

    uri: str
    prompts: int
    records: int
    candidates: int


def write_generated(store: ObjectStorePort, spec: ProjectSpec, generated: Sequence[GeneratedPrompt]) -> WrittenBatch:
    """Write one batch's records as a JSONL file into the source, then mark its prompts done (a retry is harmless)."""
    settings = spec.generate
    assert settings is not None
    records = generated_records(spec, generated)
    output = output_location(spec)
    key = batch_key(spec, generated)
    payload = "".join(json.dumps(record, ensure_ascii=False, sort_keys=True) + "\n" for record in records)
    store.put_bytes(output.bucket, key, payload.encode("utf-8"), "application/x-ndjson; charset=utf-8")
    uri = f"s3://{output.bucket}/{key}"
    markers = marker_location(spec)
    store.ensure_bucket(markers.bucket)
    marker = json.dumps({"candidates": settings.candidates, "output": uri}).encode("utf-8")

    def mark(item: GeneratedPrompt) -> None:
        store.put_bytes(markers.bucket, _prompt_marker_key(markers, item.prompt.sha256), marker, "application/json")

    with ThreadPoolExecutor(max_workers=MARKER_READERS) as pool:
        list(pool.map(mark, generated))
    return WrittenBatch(uri, len(generated), len(records), sum(len(item.candidates) for item in generated))


def mark_prompt_files(store: ObjectStorePort, spec: ProjectSpec, files: Sequence[PromptFile]) -> int:
    """Record the prompt files read in full (their ETag), so the next run skips them while they are unchanged."""
    settings = spec.generate
    assert settings is not None
    if not files:
        return 0
    markers = marker_location(spec)
    store.ensure_bucket(markers.bucket)
    for item in files:
        marker = {"uri": item.uri, "etag": item.etag, "candidates": settings.candidates, "at": time.time()}
        store.put_bytes(markers.bucket, item.marker_key, json.dumps(marker).encode("utf-8"), "application/json")
    return len(files)


def summary_markdown(summary: dict[str, Any]) -> str:
    """The run summary as the flow run's Markdown artifact."""
    lines = [
        f"# labelflow generate: {summary['project']}",
        "",
        "| prompt files | unchanged | prompts read | already generated | prompts generated | candidates | files written |",
        "|---:|---:|---:|---:|---:|---:|---:|",
        f"| {summary['prompt_files']} | {summary['prompt_files_unchanged']} | {summary['prompts_read']} | "
        f"{summary['already_generated']} | {summary['prompts_generated']} | {summary['candidates']} | "
        f"{len(summary['files_written'])} |",
        "",
        f"Output: {summary['output']} (model {summary['model']}, K = {summary['k']}).",
    ]
    if summary["quarantined"]:
        lines.append("Prompt records left out: " + ", ".join(f"{k} {v}" for k, v in summary["quarantined"].items()))
    return "\n".join(lines)
