"""Wheel build hook: the repository's top-level folders and prefect.yaml go inside the labelflow package."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hatchling.builders.hooks.plugin.interface import BuildHookInterface

# Kept in step with labelflow.CHECKOUT_FOLDERS, which maps the same names in a checkout.
PACKAGE_DATA = ("flows", "tasks", "integrations", "infra", "expectations", "prefect.yaml")


class CustomBuildHook(BuildHookInterface):
    """Maps each top-level folder to labelflow/<folder> in a standard wheel; editable installs read the checkout."""

    def initialize(self, version: str, build_data: dict[str, Any]) -> None:
        """Add the folders to the wheel's forced inclusions (standard builds only)."""
        if version != "standard":
            return
        root = Path(self.root)
        for name in PACKAGE_DATA:
            build_data["force_include"][str(root / name)] = f"labelflow/{name}"
