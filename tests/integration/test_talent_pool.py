"""The talent pool on the real stack: two projects of one domain, annotated by the same people and collected
through the collect flow, build one profile per person across both, listed by `labelflow annotators`."""

from __future__ import annotations

import json
from pathlib import Path

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from labelflow.tasks.ingest import read_project_record
from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.talent_pool import TalentPool
from tests.integration.test_cli_output import labelflow, one_json_document
from tests.integration.test_collect import LABELS, collect, make_project
from tests.unit.test_cli_imports import READ_ONLY_MUST_NOT_LOAD, modules_loaded_by

TASKS = 12
GOLD = 6


def gold_file(store: ObjectStore, name: str) -> str:
    """A gold CSV naming the first GOLD texts of make_project's source by their folder (their true label)."""
    lines = ["source_uri,label"]
    for i in range(GOLD):
        label = LABELS[i % len(LABELS)]
        lines.append(f"s3://{name}-src/reviews/{label}/{i:04d}.txt,{label}")
    store.ensure_bucket(f"{name}-gold")
    store.put_bytes(f"{name}-gold", "gold.csv", "\n".join(lines).encode())
    return f"s3://{name}-gold/gold.csv"


def test_two_projects_in_one_domain_build_one_profile_per_person(
    object_store: ObjectStore, label_studio: LabelStudioClient, unique_name: str, tmp_path: Path, prefect_api: str
) -> None:
    domain = f"pool-{unique_name}"
    people = build_annotators([1.0, 0.9, 0.6], spammers=0, prefix=unique_name)
    for part in ("a", "b"):
        name = f"{unique_name}-{part}"
        folder = tmp_path / part
        folder.mkdir()
        quality = {"route_low_agreement": False, "aggregation": "dawid-skene", "gold": gold_file(object_store, name)}
        path, spec = make_project(object_store, folder, name, TASKS, domain=domain, quality=quality)
        record = read_project_record(object_store, spec)
        assert record is not None
        done = run(label_studio, spec, int(record["project_id"]), people, seed=3)
        assert done["annotations_created"] == 3 * TASKS
        summary = collect(path)
        assert summary["quality"]["finished_tasks"] == TASKS

    evidence = TalentPool(object_store).read(domain).to_pandas()
    assert sorted(evidence["project"].unique()) == [f"collect {unique_name}-a", f"collect {unique_name}-b"]
    assert len(evidence) == 6 and set(evidence["annotator_email"]) == {p.email for p in people}
    assert evidence["estimated_accuracy"].notna().all() and evidence["gold_answered"].eq(GOLD).all()

    page = tmp_path / "pool.html"
    result = labelflow("annotators", "--domain", domain, "--json", "--html", str(page))
    assert result.returncode == 0, result.stderr
    listed = one_json_document(result)
    profiles = {p["annotator_email"]: p for p in listed["profiles"]}
    assert set(profiles) == {p.email for p in people}  # one profile per person, not one per project
    for person in people:
        profile = profiles[person.email]
        assert profile["domain"] == domain and profile["task_type"] == "text-classification"
        assert profile["projects"] == 2 and profile["evidence"] == 2 * TASKS and profile["gold_answered"] == 2 * GOLD
        assert profile["accuracy_low"] <= profile["accuracy"] <= profile["accuracy_high"]
        assert profile["level"] in {level["name"] for level in listed["ladder"]}
    best, worst = profiles[people[0].email], profiles[people[2].email]
    assert best["accuracy"] > worst["accuracy"] and best["level_rank"] >= worst["level_rank"]
    html = page.read_text(encoding="utf-8")
    assert people[0].email in html and 'id="labelflow-charts"' in html and "pool-intervals" in html

    # Read-only: listing the pool starts no Prefect engine and imports neither Great Expectations nor MLflow.
    assert modules_loaded_by(("annotators", "--domain", domain, "--json"), READ_ONLY_MUST_NOT_LOAD) == []
    table = labelflow("annotators", "--domain", domain)
    assert table.returncode == 0 and people[0].email in table.stdout and domain in table.stdout
    bad = tmp_path / "ladder.yaml"
    bad.write_text(json.dumps([{"name": "a", "min_accuracy": 0.5}, {"name": "b", "min_accuracy": 0.4}]))
    refused = labelflow("annotators", "--ladder", str(bad))
    assert refused.returncode == 2 and "levels must increase" in refused.stderr
    assert len(refused.stderr.strip().splitlines()) == 1
