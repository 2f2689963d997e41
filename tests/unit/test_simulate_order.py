"""The simulator posts one task's annotations one after another (Label Studio recounts a task's annotations on every
save, and two saves racing on one task leave its counter short); different tasks may be annotated in parallel."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

from labelflow.tasks.simulate import build_annotators, run
from labelflow.tasks.spec import ProjectSpec, load_spec
from tests.unit.stage_fixtures import LABELS, text_spec

TASKS = 12
POST_SECONDS = 0.02  # long enough for racing posts on one task to overlap


class RecordingLabelStudio:
    """The Label Studio calls the simulator makes; records which tasks had annotations posted at the same time."""

    def __init__(self, tasks: list[dict[str, Any]]) -> None:
        self.tasks = tasks
        self.user_emails: dict[int, str] = {}
        self.lock = threading.Lock()
        self.in_flight: Counter[int] = Counter()
        self.most_at_once: Counter[int] = Counter()  # task id -> most of its annotations in flight together
        self.tasks_at_once = 0  # most different tasks in flight together
        self.posted: Counter[int] = Counter()

    def users(self) -> dict[int, str]:
        return dict(self.user_emails)

    def create_user(self, email: str, first_name: str = "", last_name: str = "") -> int:
        user_id = len(self.user_emails) + 1
        self.user_emails[user_id] = email
        return user_id

    def export_tasks(self, project_id: int, timeout: float | None = None) -> list[dict[str, Any]]:
        return [dict(task) for task in self.tasks]

    def create_annotation(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        completed_by: int | None = None,
        lead_time: float | None = None,
    ) -> int:
        with self.lock:
            self.in_flight[task_id] += 1
            self.most_at_once[task_id] = max(self.most_at_once[task_id], self.in_flight[task_id])
            self.tasks_at_once = max(self.tasks_at_once, sum(1 for count in self.in_flight.values() if count))
        time.sleep(POST_SECONDS)
        with self.lock:
            self.in_flight[task_id] -= 1
            self.posted[task_id] += 1
            return sum(self.posted.values())


def texts() -> list[dict[str, Any]]:
    """Tasks whose source key holds their true label in a folder."""
    return [
        {"id": i, "data": {"source_uri": f"s3://raw/reviews/{LABELS[i % 3]}/{i:03d}.txt"}, "annotations": []}
        for i in range(1, TASKS + 1)
    ]


def test_one_tasks_annotations_are_posted_in_sequence_and_tasks_in_parallel() -> None:
    ls = RecordingLabelStudio(texts())
    spec: ProjectSpec = text_spec()
    annotators = build_annotators([0.9, 0.8, 0.7], spammers=0)
    done = run(ls, spec, 1, annotators, workers=8)  # type: ignore[arg-type]
    assert done["annotations_created"] == TASKS * 3
    assert ls.posted == Counter({task["id"]: 3 for task in ls.tasks})
    assert max(ls.most_at_once.values()) == 1
    assert ls.tasks_at_once > 1  # the workers still share the tasks out


def test_record_tasks_annotations_are_posted_in_sequence_too() -> None:
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    spec = load_spec(str(root / "examples" / "specs" / "preference.yaml"))
    tasks = [
        {"id": i, "data": {"prompt": f"q{i}", "response_a": "a", "response_b": "b", "gold": "A"}, "annotations": []}
        for i in range(1, TASKS + 1)
    ]
    ls = RecordingLabelStudio(tasks)
    done = run(ls, spec, 1, build_annotators([0.9, 0.8, 0.7], spammers=0), workers=8)  # type: ignore[arg-type]
    assert done["annotations_created"] == TASKS * 3
    assert max(ls.most_at_once.values()) == 1 and ls.tasks_at_once > 1
