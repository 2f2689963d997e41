"""Names and checksums of a published version's files: what a reader needs, without pandas (tasks/dataset.py)."""

from __future__ import annotations

import hashlib
from pathlib import Path

MANIFEST = "manifest.json"
READY_MARKER = "_READY"


def file_sha256(path: Path, chunk: int = 4 * 1024 * 1024) -> str:
    """SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
