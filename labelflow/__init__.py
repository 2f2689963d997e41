"""labelflow: object storage -> Label Studio -> quality -> Great Expectations -> versioned datasets in MLflow."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import sys
from pathlib import Path
from typing import Any

__all__ = ["load_dataset", "pull_dataset"]

# The repository keeps these folders at its top level (the project's layout); the wheel carries them inside this
# package. In a checkout they are imported as labelflow.<folder> too, so no generic top-level `tasks` or `flows`
# module is ever needed, and an installed labelflow cannot clash with a user's own `flows/` package.
CHECKOUT_FOLDERS = ("flows", "tasks", "integrations", "infra", "expectations")
_PACKAGE_DIR = Path(__file__).resolve().parent


class _CheckoutFolders:
    """A meta path finder: labelflow.<folder> is the repository's top-level folder of that name (checkouts only)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def find_spec(self, fullname: str, path: Any = None, target: Any = None) -> importlib.machinery.ModuleSpec | None:
        """The spec of a mapped folder's package; None for every other module."""
        prefix, _, folder = fullname.partition(".")
        if prefix != __name__ or folder not in CHECKOUT_FOLDERS:
            return None
        package = self.root / folder
        return importlib.util.spec_from_file_location(
            fullname, package / "__init__.py", submodule_search_locations=[str(package)]
        )


def _map_checkout_folders() -> None:
    """In a checkout (folders beside this package, not inside it), make labelflow.<folder> import them."""
    root = _PACKAGE_DIR.parent
    if (_PACKAGE_DIR / "tasks").is_dir() or not (root / "tasks" / "__init__.py").is_file():
        return  # an installed wheel: the folders are real subpackages
    if not any(isinstance(finder, _CheckoutFolders) for finder in sys.meta_path):
        sys.meta_path.insert(0, _CheckoutFolders(root))


_map_checkout_folders()


def __getattr__(name: str) -> Any:
    """`load_dataset` and `pull_dataset`, imported on first use so the CLI starts fast."""
    if name in __all__:
        from labelflow import datasets

        return getattr(datasets, name)
    raise AttributeError(f"module 'labelflow' has no attribute {name!r}")
