"""Data Docs as a reader sees them: the run and the tables named after the project, every expectation as a sentence."""

from __future__ import annotations

import html
import re

from labelflow.integrations.great_expectations import GreatExpectations
from labelflow.tasks.validate import DEFAULT_EXPECTATIONS_DIR, run_validation
from tests.unit.fakes import FakeObjectStore
from tests.unit.test_validate import LABELS, annotation, choice, ls_task, spec_for, tables, text_data

RUN = "20261130T020727673871Z"


def page_text(document: str) -> str:
    """The words of a page (tags, scripts and styles removed), with the index table's data kept."""
    document = re.sub(r"<style.*?</style>", " ", document, flags=re.S)
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", document)).split())  # a value in its own tag: "cat , dog"


def test_data_docs_name_the_run_and_tables_after_the_project_and_render_the_custom_expectation() -> None:
    spec = spec_for(
        "text-classification", LABELS, name="Shop reviews", dataset={"name": "reviews", "min_rows_per_class": 1}
    )
    tasks = [
        ls_task(i, [annotation(10 * i, 1, choice(label)), annotation(10 * i + 1, 2, choice(label))], text_data(i, "t"))
        for i, label in enumerate(LABELS, start=1)
    ]
    annotations, consensus, task_rows = tables(spec, tasks)
    store = FakeObjectStore()
    store.ensure_bucket(spec.state_location.bucket)
    summary = run_validation(
        store, spec, GreatExpectations(DEFAULT_EXPECTATIONS_DIR), annotations, consensus, task_rows, RUN
    )
    assert summary.success, summary.text()

    bucket, prefix = summary.docs_uri.removeprefix("s3://").split("/", 1)
    pages = {key[len(prefix) :]: data for (b, key), (data, _) in store.objects.items() if b == bucket}
    pages = {path: data.decode("utf-8") for path, data in pages.items() if path.endswith(".html")}
    run_name = f"{spec.slug}-{RUN}"
    index = pages["index.html"]
    for table in ("annotations", "consensus"):
        assert f"'asset_name': '{spec.slug}.{table}'" in index
    assert index.count(f"'run_name': '{run_name}'") == 2
    assert "__none__" not in index

    (validation_page,) = [page for path, page in pages.items() if path.startswith("validations/consensus/")]
    shown = page_text(validation_page)
    assert f"Data asset: {spec.slug}.consensus" in shown and f"Run Name {run_name}" in shown
    assert "Data asset: None" not in shown and "__none__" not in shown
    # Under its column's heading the sentence leaves the column out (Great Expectations' own renderers do the same).
    assert "must have at least 1 rows for each of these values: cat , dog , bird" in shown
    assert "cat: 1, dog: 1, bird: 1" in shown  # the observed counts, per value
    assert "**{" not in shown
    suite_page = page_text(pages["expectations/consensus.html"])
    assert "must have at least 1 rows for each of these values: cat , dog , bird" in suite_page
    assert "**{" not in suite_page
