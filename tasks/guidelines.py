"""Labeling guidelines as a versioned standard: the spec's Markdown file, its version, its history, its stamps.

The version of a guideline file is the SHA-256 of its text as UTF-8 after normalising: BOM dropped, line endings
made `\\n`, Unicode NFC. So an editor that saves the same text with CRLF or decomposed accents does not make a
new version, and the `guidelines.md` shipped with a dataset (that normalised text) hashes to its version.
"""

from __future__ import annotations

import hashlib
import html
import unicodedata
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from labelflow.tasks.timestamps import parse_time

if TYPE_CHECKING:
    import pandas as pd

    from labelflow.tasks.ports import LabelStudioPort, ObjectStorePort
    from labelflow.tasks.spec import ProjectSpec

# The spec module imports this one to read the guideline file: the object store, pandas and markdown-it are imported
# by the functions that use them, so validating a spec loads none of them.

GUIDELINES_FILE = "guidelines.md"  # the guideline text's name in a dataset version and in the project's state
HISTORY_KEY = "guidelines/history.json"
UNKNOWN_VERSION = "unknown"  # how counts name annotations made before any guideline version was recorded
OUTDATED_REASON = "label(s) under an older guideline"


class GuidelineFileError(Exception):
    """The spec's guideline file is missing or unreadable; the message is one line naming the path.

    Not a ValueError on purpose: raised inside spec validation, it passes through pydantic, so the spec error is
    this one line and not a field report.
    """


def normalized_text(data: bytes) -> str:
    """A guideline file's text as versioned: strict UTF-8 (BOM dropped), `\\n` line endings, NFC."""
    text = data.decode("utf-8-sig")
    return unicodedata.normalize("NFC", text.replace("\r\n", "\n").replace("\r", "\n"))


def text_version(text: str) -> str:
    """The version of a normalised guideline text: the SHA-256 of its UTF-8 bytes."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def read_guideline_file(written: str, folder: Path) -> tuple[str, str]:
    """(normalised text, version) of the guideline file `written` (relative to `folder`, the spec's folder)."""
    path = Path(written)
    if not path.is_absolute():
        path = folder / path
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise GuidelineFileError(f"guidelines: {written}: no such file ({path})") from None
    except IsADirectoryError:
        raise GuidelineFileError(f"guidelines: {written}: is a folder, not a Markdown file ({path})") from None
    except OSError as exc:
        raise GuidelineFileError(f"guidelines: {written}: cannot be read ({exc.strerror})") from None
    try:
        text = normalized_text(data)
    except UnicodeDecodeError as exc:
        raise GuidelineFileError(
            f"guidelines: {written}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8"
        ) from None
    if not text.strip():
        raise GuidelineFileError(f"guidelines: {written}: the file is empty")
    return text, text_version(text)


# --- what annotators see ------------------------------------------------------------------------------------
def markdown_html(text: str) -> str:
    """Markdown as HTML that cannot run script: raw HTML is shown as text, javascript:/vbscript: links are refused."""
    from markdown_it import MarkdownIt

    # `js-default`: CommonMark plus tables and strikethrough, with `html` off (tags in the text are escaped) and
    # markdown-it's link validation (no javascript:, vbscript:, file: or non-image data: URLs).
    return MarkdownIt("js-default").render(text)


def version_marker(version: str) -> str:
    """The footer that names the version in the project's instructions (how a pushed version is recognised)."""
    return f"<hr>\n<p>Guidelines version <code>{version}</code></p>\n"


def instruction_html(spec: ProjectSpec) -> str:
    """The project's `expert_instruction`: the spec's short instructions (escaped), the guidelines, their version."""
    assert spec.guidelines is not None
    lead = f"<p>{html.escape(spec.instructions)}</p>\n" if spec.instructions else ""
    return lead + markdown_html(spec.guidelines.text) + version_marker(spec.guidelines.sha256)


def instruction_is_current(spec: ProjectSpec, current: Any) -> bool:
    """Whether Label Studio's instructions show the spec's guideline version.

    Label Studio cleans the HTML it is given (bleach: some attributes go), so what it holds is compared by the
    version in its footer, not byte for byte, or every run would push the same guidelines again.
    """
    if spec.guidelines is None:
        return False
    return isinstance(current, str) and version_marker(spec.guidelines.sha256) in current


# --- history ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class GuidelineVersion:
    """One version of a project's guidelines and when labelflow first pushed it to Label Studio."""

    version: str
    first_seen: str  # ISO 8601, UTC, microseconds
    path: str = ""

    def as_dict(self) -> dict[str, str]:
        """The history entry."""
        return {"version": self.version, "first_seen": self.first_seen, "path": self.path}


@dataclass(frozen=True)
class GuidelineHistory:
    """The versions of a project's guidelines in the order they came into effect."""

    versions: tuple[GuidelineVersion, ...] = ()

    @property
    def current(self) -> str | None:
        """The version in effect now (the last one pushed), or None before any."""
        return self.versions[-1].version if self.versions else None

    def version_at(self, when: datetime | None) -> str | None:
        """The version in effect at `when`: the last one first seen at or before it; None before the first."""
        if when is None:
            return None
        found = None
        for entry in self.versions:
            seen = parse_time(entry.first_seen)
            if seen is not None and seen <= when:
                found = entry.version
        return found

    def as_document(self) -> dict[str, Any]:
        """The stored form."""
        return {"versions": [v.as_dict() for v in self.versions]}

    @classmethod
    def from_document(cls, document: dict[str, Any]) -> GuidelineHistory:
        """Parse the stored form."""
        entries = document.get("versions") or []
        return cls(tuple(GuidelineVersion(e["version"], e["first_seen"], e.get("path", "")) for e in entries))


def utc_now() -> datetime:
    """labelflow's clock, which a push's `first_seen` is read from (compared with Label Studio's annotation times)."""
    return datetime.now(UTC)


def read_history(store: ObjectStorePort, spec: ProjectSpec) -> GuidelineHistory:
    """The project's guideline history (empty before any guideline was pushed)."""
    from labelflow.tasks.run_records import read_run_record

    # Only a missing file is "none": any other error is raised, or every stamp would be lost.
    document = read_run_record(store, spec.state_location, HISTORY_KEY)
    return GuidelineHistory() if document is None else GuidelineHistory.from_document(document)


def record_version(store: ObjectStorePort, spec: ProjectSpec, now: datetime | None = None) -> GuidelineHistory:
    """Add the spec's guideline version to the history when it is not the one in effect; keep its text by version."""
    if spec.guidelines is None:
        return GuidelineHistory()  # nothing read: a project without guidelines pays no request for them
    history = read_history(store, spec)
    if history.current == spec.guidelines.sha256:
        return history
    from labelflow.tasks.run_records import write_run_record

    version = spec.guidelines.sha256
    # The text of every version stays in the state, so an audit can read what annotators were shown.
    store.put_bytes(
        spec.state_location.bucket,
        spec.state_location.join(f"guidelines/{version}.md"),
        spec.guidelines.text.encode(),
        "text/markdown; charset=utf-8",
    )
    stamp = (now or utc_now()).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    history = GuidelineHistory((*history.versions, GuidelineVersion(version, stamp, spec.guidelines.path)))
    write_run_record(store, spec.state_location, HISTORY_KEY, history.as_document())
    return history


def sync_guidelines(
    ls: LabelStudioPort, store: ObjectStorePort, spec: ProjectSpec, project_id: int
) -> GuidelineHistory | None:
    """Show the spec's guidelines in the Label Studio project when it does not yet, and record their version.

    None for a spec without guidelines: nothing is stamped then.
    """
    if spec.guidelines is None:
        return None
    # Taken before the push: an annotation saved once the push is done was made under the new version.
    now = utc_now()
    current = ls.get_project(project_id) or {}
    if not instruction_is_current(spec, current.get("expert_instruction")) or not current.get("show_instruction"):
        ls.update_project(project_id, expert_instruction=instruction_html(spec), show_instruction=True)
    return record_version(store, spec, now)


# --- stamps, flags and counts -------------------------------------------------------------------------------
def made_at(annotation: dict[str, Any]) -> datetime | None:
    """When an annotation's current answer was saved: its last update, else its creation.

    An annotation edited after a guideline change was made again under the new version, so its update counts.
    """
    return annotation.get("updated_at") or annotation.get("created_at")


def stamp_rows(rows: list[dict[str, Any]], history: GuidelineHistory | None) -> list[dict[str, Any]]:
    """Set each annotation row's `guideline_version` from the history (rows are changed in place and returned)."""
    if history is None or not history.versions:
        return rows
    for row in rows:
        row["guideline_version"] = history.version_at(made_at(row))
    return rows


def fill_missing_stamps(annotations: pd.DataFrame, history: GuidelineHistory | None) -> pd.DataFrame:
    """The table with `guideline_version` filled from the history where it is null (rows collected before stamping)."""
    if history is None or not history.versions or annotations.empty:
        return annotations
    stamps = annotations["guideline_version"] if "guideline_version" in annotations.columns else None
    missing = stamps.isna() if stamps is not None else None
    if missing is not None and not missing.any():
        return annotations
    when = annotations["updated_at"].where(annotations["updated_at"].notna(), annotations["created_at"])
    computed = [history.version_at(None if _is_null(t) else t.to_pydatetime()) for t in when]
    import pandas as pd

    computed_series = pd.Series(computed, index=annotations.index, dtype=object)
    filled = computed_series if stamps is None else stamps.where(~missing, computed_series)
    return annotations.assign(guideline_version=filled)


def _is_null(value: Any) -> bool:
    import pandas as pd

    return value is None or bool(pd.isna(value))


def outdated_mask(votes: pd.DataFrame, spec: ProjectSpec) -> pd.Series:
    """Which votes were made under another guideline version than the spec's, when the spec requires the current one."""
    import pandas as pd

    if spec.quality.require_guideline != "current" or spec.guidelines is None or votes.empty:
        return pd.Series(False, index=votes.index)
    if "guideline_version" not in votes.columns:
        return pd.Series(True, index=votes.index)
    return votes["guideline_version"].ne(spec.guidelines.sha256) | votes["guideline_version"].isna()


def version_counts(annotations: pd.DataFrame) -> dict[str, int]:
    """Annotations per guideline version (`unknown` for those made before any version was recorded), most first."""
    if annotations.empty:
        return {}
    if "guideline_version" not in annotations.columns:
        return {UNKNOWN_VERSION: len(annotations)}
    counts = annotations["guideline_version"].fillna(UNKNOWN_VERSION).value_counts()
    return {str(version): int(n) for version, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))}


def votes_needed(consensus: pd.DataFrame, spec: ProjectSpec) -> pd.Series:
    """Current-guideline votes a task needs: its overlap, less the slots outdated labels hold, at least the spec's.

    Label Studio counts outdated labels towards a task's overlap; routing raises the overlap by what they hold.
    """
    import numpy as np

    outdated = consensus["outdated_annotations"]
    fresh = np.maximum(consensus["required"] - outdated, spec.overlap)
    return consensus["required"].where(outdated == 0, fresh)


def with_outdated_reasons(consensus: pd.DataFrame) -> pd.Series:
    """The flag reasons with `N label(s) under an older guideline` added for unfinished tasks holding outdated labels."""
    pending = (consensus["outdated_annotations"] > 0) & ~consensus["finished"]
    reasons = consensus["flag_reason"].astype(object).copy()
    for index in consensus.index[pending]:
        note = f"{int(consensus.at[index, 'outdated_annotations'])} {OUTDATED_REASON}"
        reasons.at[index] = f"{reasons.at[index]}; {note}" if isinstance(reasons.at[index], str) else note
    return reasons


def outdated_pending(consensus: pd.DataFrame) -> pd.Series:
    """Tasks flagged because their labels were made under an older guideline and too few current ones exist yet."""
    if "outdated_annotations" not in consensus.columns:
        return consensus["task_id"] != consensus["task_id"]
    return (consensus["outdated_annotations"] > 0) & ~consensus["finished"]


def guideline_routes(consensus: pd.DataFrame, spec: ProjectSpec) -> list[tuple[int, int]]:
    """(task id, new overlap) giving outdated-label tasks slots for current labels (quality.max_overlap does not cap
    these: one guideline change asks each task for at most its overlap again)."""
    if spec.quality.route_low_agreement == "off" or spec.quality.require_guideline != "current":
        return []
    rows = consensus[outdated_pending(consensus) & ~consensus["reviewed"]]
    target = rows["outdated_annotations"] + votes_needed(rows, spec)
    wanted = rows.assign(target=target)[target > rows["required"]]
    return [(int(t), int(n)) for t, n in wanted[["task_id", "target"]].itertuples(index=False)]
