"""Great Expectations behind one small class: suites from JSON files, pandas validation, offline Data Docs."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import re
import shutil
import sys
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pandas as pd

ASSETS_DIR = Path(__file__).with_name("datadocs_assets")
VENDOR_FOLDER = "static/vendor"
# External addresses in rendered pages that are links for a reader, not assets a browser fetches.
_EXTERNAL_ASSET = re.compile(r"""<(?:script|img|link)\b[^>]*?\b(?:src|href)=["'](https?:)?//[^"']+["'][^>]*>""", re.I)
_GX_LOGO = re.compile(
    r"https://great-expectations-web-assets\.s3\.[a-z0-9-]+\.amazonaws\.com/[a-z_-]+\.png(\?[^\"']*)?"
)
_STATIC_REF = re.compile(r"""\b(src|href)=(["'])(?:\./|\.\./)*static/""")
_DARK_THEME = re.compile(r"<link[^>]*bootstrap-prefers-dark\.css[^>]*>\s*", re.I)


class SuiteError(ValueError):
    """A suite file cannot be used as written: the message names the file and the expectation."""


class OfflineDocsError(RuntimeError):
    """Rendered Data Docs still reference an external asset."""


@dataclass(frozen=True)
class ExpectationDefinition:
    """One expectation as the team wrote it (or as the spec implies), before Great Expectations parses it."""

    type: str
    kwargs: dict[str, Any]
    notes: str
    origin: str  # the suite file, or "spec"


@dataclass
class BatchToValidate:
    """One table, the expectations it must meet, and the columns that identify a row in failure examples."""

    name: str
    frame: pd.DataFrame
    expectations: list[ExpectationDefinition]
    id_columns: list[str] = field(default_factory=list)
    project: str | None = None  # the project the table is from: Data Docs call the table "<project>.<name>"
    run_name: str | None = None  # the Data Docs run name (Great Expectations says `__none__` without one)

    @property
    def asset_name(self) -> str:
        """The table's data asset name in Data Docs: the project and the table."""
        return f"{self.project}.{self.name}" if self.project else self.name


@dataclass
class ExpectationOutcome:
    """The result of one expectation on one batch, in plain data."""

    batch: str
    type: str
    column: str | None
    notes: str
    origin: str
    success: bool
    element_count: int | None
    unexpected_count: int | None
    unexpected_percent: float | None
    observed: Any
    examples: list[dict[str, Any]]
    exception: str | None = None


@dataclass
class ValidationRun:
    """Every outcome of one validation run, plus Great Expectations' own JSON results per batch."""

    success: bool
    outcomes: list[ExpectationOutcome]
    results: dict[str, dict[str, Any]]


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, str | bytes):
        try:
            return value.item()
        except (ValueError, AttributeError):
            return str(value)
    if isinstance(value, float) and value != value:
        return None
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)


def _columns_of(kwargs: dict[str, Any]) -> str | None:
    if kwargs.get("column"):
        return str(kwargs["column"])
    columns = kwargs.get("column_list") or [kwargs[k] for k in ("column_A", "column_B") if kwargs.get(k)]
    return ", ".join(map(str, columns)) or None


class GreatExpectations:
    """Suites kept as files in one directory (plus custom expectations in its `custom/`), run on pandas frames."""

    def __init__(self, expectations_dir: Path, examples: int = 5) -> None:
        self.expectations_dir = Path(expectations_dir)
        self.examples = examples
        os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
        self._custom_loaded = False

    def load_custom_expectations(self) -> list[str]:
        """Import every module in `<expectations_dir>/custom/` so its expectation classes are registered."""
        custom = self.expectations_dir / "custom"
        names = []
        for path in sorted(custom.glob("*.py")) if custom.is_dir() else []:
            if path.name.startswith("_"):
                continue
            module_name = f"labelflow_custom_expectations.{path.stem}"
            if module_name not in sys.modules:
                spec = importlib.util.spec_from_file_location(module_name, path)
                if spec is None or spec.loader is None:
                    raise SuiteError(f"{path}: cannot be imported as a Python module")
                module = importlib.util.module_from_spec(spec)
                try:
                    spec.loader.exec_module(module)
                except Exception as exc:
                    raise SuiteError(f"{path}: custom expectation module fails to import: {exc!r}") from exc
                sys.modules[module_name] = module
            names.append(path.stem)
        self._custom_loaded = True
        return names

    def suite_files(self, table: str, task_type: str) -> list[Path]:
        """The suite files for a table: `<table>.json` and `<table>.<task type>.json`, those that exist."""
        candidates = [self.expectations_dir / f"{table}.json", self.expectations_dir / f"{table}.{task_type}.json"]
        return [path for path in candidates if path.is_file()]

    def read_suite(self, path: Path) -> list[ExpectationDefinition]:
        """The expectations of one suite file; each must have a type, kwargs and notes saying what it guards."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise SuiteError(f"{path}: not a readable JSON suite: {exc}") from None
        if not isinstance(data, dict) or not isinstance(data.get("expectations"), list):
            raise SuiteError(f"{path}: expected an object with an `expectations` list")
        definitions = []
        for index, item in enumerate(data["expectations"]):
            where = f"{path.name}: expectation {index + 1}"
            if not isinstance(item, dict) or not isinstance(item.get("type"), str):
                raise SuiteError(f"{where}: needs a `type`")
            notes = item.get("notes")
            if not isinstance(notes, str) or not notes.strip():
                raise SuiteError(f"{where} ({item['type']}): needs `notes` saying what it guards")
            kwargs = item.get("kwargs", {})
            if not isinstance(kwargs, dict):
                raise SuiteError(f"{where} ({item['type']}): `kwargs` must be an object")
            definitions.append(ExpectationDefinition(item["type"], kwargs, notes.strip(), path.name))
        return definitions

    def suite_for(self, table: str, task_type: str) -> list[ExpectationDefinition]:
        """All file-defined expectations for a table and task type."""
        return [d for path in self.suite_files(table, task_type) for d in self.read_suite(path)]

    def build_expectation(self, definition: ExpectationDefinition) -> Any:
        """A Great Expectations expectation object; unknown types and bad arguments raise, never vanish."""
        from great_expectations.exceptions import ExpectationNotFoundError
        from great_expectations.expectations.registry import get_expectation_impl

        if not self._custom_loaded:
            self.load_custom_expectations()
        try:
            implementation = get_expectation_impl(definition.type)
        except ExpectationNotFoundError:
            raise SuiteError(
                f"{definition.origin}: expectation type {definition.type!r} is not known to Great Expectations and no "
                f"module in {self.expectations_dir / 'custom'} defines it; the run stops rather than skip it"
            ) from None
        try:
            return implementation(**definition.kwargs, notes=definition.notes, meta={"origin": definition.origin})
        except Exception as exc:  # pydantic validation errors name the bad argument
            raise SuiteError(f"{definition.origin}: {definition.type} has invalid arguments: {exc}") from None

    def validate(self, batches: list[BatchToValidate], docs_dir: Path | None = None) -> ValidationRun:
        """Validate each batch against its expectations; render Data Docs into `docs_dir` when given."""
        import great_expectations as gx
        from great_expectations.core.run_identifier import RunIdentifier
        from great_expectations.data_context.types.base import ProgressBarsConfig

        logging.getLogger("great_expectations").setLevel(logging.WARNING)
        built = {b.name: [self.build_expectation(d) for d in b.expectations] for b in batches}  # fail before running
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        for site in list(context.get_site_names()):
            context.delete_data_docs_site(site)
        if docs_dir is not None:
            context.add_data_docs_site(
                "labelflow",
                {
                    "class_name": "SiteBuilder",
                    "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(docs_dir)},
                    "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
                },
            )
        source = context.data_sources.add_pandas("labelflow")
        outcomes: list[ExpectationOutcome] = []
        results: dict[str, dict[str, Any]] = {}
        for batch in batches:
            asset = source.add_dataframe_asset(batch.asset_name)
            definition = asset.add_batch_definition_whole_dataframe("current")
            suite = gx.ExpectationSuite(name=batch.name)
            for expectation in built[batch.name]:
                suite.add_expectation(expectation)
            suite = context.suites.add(suite)
            validation = context.validation_definitions.add(
                gx.ValidationDefinition(name=batch.name, data=definition, suite=suite)
            )
            id_columns = [c for c in batch.id_columns if c in batch.frame.columns]
            result = validation.run(
                batch_parameters={"dataframe": batch.frame},
                result_format={
                    "result_format": "SUMMARY",
                    "partial_unexpected_count": self.examples,
                    **({"unexpected_index_column_names": id_columns} if id_columns else {}),
                },
                run_id=RunIdentifier(run_name=batch.run_name, run_time=datetime.now(UTC)),
            )
            results[batch.name] = _jsonable(result.to_json_dict())
            outcomes += [self._outcome(batch.name, item) for item in result.results]
        if docs_dir is not None:
            name_data_assets(context, {b.asset_name for b in batches})
            context.build_data_docs(site_names=["labelflow"])
            make_docs_offline(Path(docs_dir))
        return ValidationRun(success=all(o.success for o in outcomes), outcomes=outcomes, results=results)

    def _outcome(self, batch: str, item: Any) -> ExpectationOutcome:
        config = item.expectation_config
        raw = item.result or {}
        examples = raw.get("partial_unexpected_index_list") or [
            {"value": v} for v in (raw.get("partial_unexpected_list") or [])
        ]
        exception = None
        info = item.exception_info or {}
        if info.get("raised_exception"):
            exception = str(info.get("exception_message"))
        return ExpectationOutcome(
            batch=batch,
            type=config.type,
            column=_columns_of(config.kwargs),
            notes=config.notes or "",
            origin=(config.meta or {}).get("origin", ""),
            success=bool(item.success),
            element_count=raw.get("element_count"),
            unexpected_count=raw.get("unexpected_count"),
            unexpected_percent=raw.get("unexpected_percent"),
            observed=_jsonable({k: raw[k] for k in ("observed_value", "details") if k in raw}) or None,
            examples=_jsonable(list(examples)[: self.examples]),
            exception=exception,
        )


def name_data_assets(context: Any, asset_names: set[str]) -> None:
    """Write each stored result's data asset name where the validation page reads it (its batch spec).

    A dataframe's batch spec holds only the data, so the page would say "Data asset: None"; the name is in the
    result's batch definition.
    """
    store = context.validation_results_store
    for key in store.list_keys():
        result = store.get(key)
        asset = (result.meta.get("active_batch_definition") or {}).get("data_asset_name")
        spec = result.meta.get("batch_spec")
        if asset in asset_names and isinstance(spec, dict) and not spec.get("data_asset_name"):
            result.meta["batch_spec"] = {**spec, "data_asset_name": asset}
            store.set(key, result)


def make_docs_offline(site_dir: Path, assets_dir: Path = ASSETS_DIR) -> None:
    """Copy the vendored assets next to the pages and point every CDN address at them; fail if one remains."""
    vendor = site_dir / VENDOR_FOLDER
    if vendor.exists():
        shutil.rmtree(vendor)
    shutil.copytree(assets_dir, vendor, ignore=shutil.ignore_patterns("*.md", "cdn_map.json"))
    cdn_map: dict[str, str] = json.loads((assets_dir / "cdn_map.json").read_text(encoding="utf-8"))
    remaining: list[str] = []
    for page in site_dir.rglob("*.html"):
        html = page.read_text(encoding="utf-8")
        root = os.path.relpath(site_dir, page.parent).replace(os.sep, "/")
        for url, local in cdn_map.items():
            html = html.replace(url, f"{VENDOR_FOLDER}/{local}")
        html = _GX_LOGO.sub("static/images/logo-long.png", html)
        html = _DARK_THEME.sub("", html)
        # GX's own relative links to static/ are one level short on validation pages: anchor them at the site root.
        html = _STATIC_REF.sub(rf"\1=\2{root}/static/", html)
        remaining += [f"{page.relative_to(site_dir)}: {m.group(0)[:160]}" for m in _EXTERNAL_ASSET.finditer(html)]
        page.write_text(html, encoding="utf-8")
    if remaining:
        raise OfflineDocsError("Data Docs still load external assets:\n  " + "\n  ".join(remaining[:20]))
