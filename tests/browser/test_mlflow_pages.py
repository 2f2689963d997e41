"""The MLflow pages labelflow links to, as a person opens them in a real headless Chromium.

A spec is ingested, annotated and collected against the running stack, which publishes version 1 of its dataset. The
links the collect summary prints are opened: the versions link shows the runs table (MLflow 3's model-training pages,
not its GenAI dashboard) with the version's run, and the version link shows the run with its description. The publish
itself emits no MLflow schema warning. Screenshots go to $LABELFLOW_SCREENSHOTS (default: the test's tmp_path).
"""

from __future__ import annotations

import json
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import (
    EXPERIMENT_KIND_TAG,
    MODEL_TRAINING_KIND,
    RUN_DESCRIPTION_TAG,
    MLflowTracking,
)
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.registry import DatasetRegistry, experiment_name
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import ProjectSpec, parse_spec

pytestmark = [pytest.mark.integration, pytest.mark.browser]

LABELS = ["positive", "negative"]
PAGE_SECONDS = 45.0  # MLflow's UI loads its JavaScript chunks on first use; a busy machine takes a while
# Items only MLflow 3's GenAI navigation has: a page showing them is the dashboard labelflow's links must avoid.
GENAI_ONLY = ("Observability", "Evaluation runs")
SCHEMA_WARNING = "Inferred schema contains integer column"


@pytest.fixture
def published_spec(
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    unique_name: str,
    tmp_path: Path,
) -> Iterator[tuple[Path, ProjectSpec]]:
    """A spec whose 4 reviews are ingested; afterwards its project, buckets' objects and experiment go."""
    source, state = f"{unique_name}-src", f"{unique_name}-state"
    object_store.ensure_bucket(source)
    for i in range(4):
        label = LABELS[i % 2]
        object_store.put_bytes(source, f"reviews/{label}/{i:02d}.txt", f"评论 {i}: a {label} review".encode())
    body = {
        "name": f"mlflow pages {unique_name}",
        "source": f"s3://{source}/reviews/",
        "state": f"s3://{state}/labelflow/",
        "task": "text-classification",
        "labels": LABELS,
        "overlap": 2,
        "quality": {"route_low_agreement": False},
        "dataset": {"name": unique_name},
    }
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(body, allow_unicode=True), encoding="utf-8")
    yield path, parse_spec(body)
    spec = parse_spec(body)
    record = read_project_record(object_store, spec)
    if record is not None:
        label_studio.delete_project(int(record["project_id"]))
    experiment_id = mlflow_tracking.experiment_id(experiment_name(unique_name))
    if experiment_id is not None:
        mlflow_tracking.client.delete_experiment(experiment_id)
    for bucket, prefix in ((source, ""), (state, ""), ("labelflow-datasets", f"{unique_name}/")):
        if object_store.bucket_exists(bucket):
            for item in list(object_store.list_objects(bucket, prefix)):
                object_store.delete(bucket, item.key)


def wait_for(driver: Any, condition: Any, message: str) -> Any:
    """Wait until `condition(driver)` is truthy; its value."""
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, PAGE_SECONDS, poll_frequency=0.3, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition, message)


def page_text(driver: Any) -> str:
    from selenium.webdriver.common.by import By

    return " ".join(driver.find_element(By.TAG_NAME, "body").text.split())


def screenshot(driver: Any, folder: Path, name: str) -> Path:
    path = folder / f"{name}.png"
    assert driver.save_screenshot(str(path)), f"no screenshot written to {path}"
    assert path.stat().st_size > 10_000  # a blank page compresses to far less
    return path


def test_the_printed_links_open_the_runs_table_and_the_described_version_run(
    published_spec: tuple[Path, ProjectSpec],
    object_store: ObjectStore,
    label_studio: LabelStudioClient,
    mlflow_tracking: MLflowTracking,
    browser: Any,
    screenshots: Path,
    unique_name: str,
    prefect_api: str,
) -> None:
    from selenium.webdriver.common.by import By

    from labelflow.flows.collect import collect
    from labelflow.flows.ingest import ingest

    path, spec = published_spec
    assert ingest(str(path))["tasks_created"] == 4
    record = read_project_record(object_store, spec)
    assert record is not None
    annotators = build_annotators([1.0, 1.0], spammers=0, prefix=unique_name)
    assert run(label_studio, spec, int(record["project_id"]), annotators, seed=3)["annotations_created"] == 8

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        summary = collect(str(path))
    assert not [str(w.message) for w in caught if SCHEMA_WARNING in str(w.message)]
    dataset = summary["dataset"]
    assert dataset["published"] and dataset["version"] == 1, dataset

    version = DatasetRegistry(object_store, mlflow_tracking).resolve(unique_name)
    experiment = mlflow_tracking.client.get_experiment(version.experiment_id)
    assert experiment.tags[EXPERIMENT_KIND_TAG] == MODEL_TRAINING_KIND
    note = mlflow_tracking.client.get_run(version.run_id).data.tags[RUN_DESCRIPTION_TAG]
    assert f"{dataset['rows']} rows" in note and dataset["digest"] in note and spec.name in note
    project_line = f"From Label Studio project {record['project_id']}"
    assert project_line in note and "Validation passed" in note
    (dataset_input,) = mlflow_tracking.client.get_run(version.run_id).inputs.dataset_inputs
    columns = {c["name"]: c for c in json.loads(dataset_input.dataset.schema)["mlflow_colspec"]}
    assert columns["task_id"]["type"] == "long" and columns["label"]["type"] == "string"  # the schema it was given

    # The versions link: the runs table of the dataset's experiment, version 1 in it, on the model-training pages.
    browser.get(dataset["mlflow_versions_url"])
    v1_row = wait_for(
        browser,
        lambda driver: next(
            iter(
                driver.find_elements(By.XPATH, "//*[@role='grid']//*[@role='row'][.//*[normalize-space(text())='v1']]")
            ),
            False,
        ),
        f"the runs table at {dataset['mlflow_versions_url']} never showed the run v1",
    )
    assert v1_row.is_displayed()
    time.sleep(1)  # the navigation renders with the table; give it a moment before reading the page
    shown = page_text(browser)
    assert "1 matching run" in shown
    assert not [item for item in GENAI_ONLY if item in shown], shown[:400]
    assert f"/#/experiments/{version.experiment_id}/runs" in browser.current_url
    screenshot(browser, screenshots, "mlflow-versions-runs-table")

    # The version link: the run's page, with the description of what was published.
    browser.get(dataset["mlflow_url"])
    wait_for(
        browser,
        lambda driver: "Validation passed" in page_text(driver) and project_line in page_text(driver),
        f"the run page at {dataset['mlflow_url']} never showed the version's description",
    )
    shown = page_text(browser)
    assert f"version 1: {dataset['rows']} rows" in shown
    assert not [item for item in GENAI_ONLY if item in shown], shown[:400]
    screenshot(browser, screenshots, "mlflow-version-run")
