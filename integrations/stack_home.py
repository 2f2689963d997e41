"""Where the local stack keeps its state and publishes its connection values; light, as `labelflow status` reads it."""

from __future__ import annotations

import os
from pathlib import Path

# What `labelflow up` writes into the stack's home: the connection variables the other commands read.
STACK_FILE_NAME = "stack.json"


def labelflow_home() -> Path:
    """Directory holding the local stack's state: $LABELFLOW_HOME or ./.labelflow."""
    return Path(os.environ.get("LABELFLOW_HOME") or Path.cwd() / ".labelflow").resolve()
