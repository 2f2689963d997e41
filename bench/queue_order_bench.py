"""Uncertainty-first queue at scale on the running stack's Label Studio: what ordering, re-running and holding cost.

Creates a throw-away text project with --tasks tasks (imported --import-batch at a time), then times:
  - `order_queue` the first time (every task gets a prediction of the model version; predictions imported
    PREDICTION_BATCH at a time: Label Studio 1.23 recounts all of the project's tasks after each import request);
  - `order_queue` again with the same version (a listing of scored tasks, no import);
  - `order_queue` with a new model version (every task scored again);
  - the first `/next` of "Label All Tasks" afterwards (the Data Manager's next_task action);
  - `hold_tasks` and `release_tasks` on --hold tasks (one PATCH each).
The project is deleted at the end. Point it at a stack with the usual variables (`labelflow status --json` env).

    .venv/bin/python bench/queue_order_bench.py --tasks 20000
"""

from __future__ import annotations

import argparse
import time
import uuid

import numpy as np

from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.settings import LabelStudioSettings
from labelflow.tasks.queue_order import order_queue

LABEL_CONFIG = (
    '<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
    '<Choice value="pos"/><Choice value="neg"/></Choices></View>'
)


def timed(label: str, action: object) -> object:
    """Run a callable, print how long it took, return its result."""
    start = time.perf_counter()
    result = action()  # type: ignore[operator]
    print(f"{label:<48} {time.perf_counter() - start:8.2f} s")
    return result


def main() -> None:
    """Run the measurements and print them."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=20000)
    parser.add_argument("--import-batch", type=int, default=5000)
    parser.add_argument("--hold", type=int, default=200)
    args = parser.parse_args()

    ls = LabelStudioClient(LabelStudioSettings(), timeout=600)  # type: ignore[call-arg]
    project_id = ls.create_project(f"queue bench {uuid.uuid4().hex[:8]}", LABEL_CONFIG)
    try:
        task_ids: list[int] = []
        start = time.perf_counter()
        for first in range(0, args.tasks, args.import_batch):
            count = min(args.import_batch, args.tasks - first)
            task_ids += ls.import_tasks(project_id, [{"text": f"review {first + i}"} for i in range(count)])
        print(f"{'import ' + str(len(task_ids)) + ' tasks':<48} {time.perf_counter() - start:8.2f} s")
        rng = np.random.default_rng(0)
        first_model = rng.dirichlet([0.7, 0.7], size=len(task_ids))
        done = timed("order_queue, new version (all scored)", lambda: order_queue(
            ls, project_id, "margin", task_ids, first_model, "bench v1"))  # fmt: skip
        print(f"  scored {done.scored}")  # type: ignore[attr-defined]
        again = timed("order_queue, same version again", lambda: order_queue(
            ls, project_id, "margin", task_ids, first_model, "bench v1"))  # fmt: skip
        print(f"  scored {again.scored}, already {again.already_scored}")  # type: ignore[attr-defined]
        second_model = rng.dirichlet([0.7, 0.7], size=len(task_ids))
        timed("order_queue, next version (all scored again)", lambda: order_queue(
            ls, project_id, "margin", task_ids, second_model, "bench v2"))  # fmt: skip
        task = timed("first task of Label All Tasks", lambda: ls.next_task(project_id))
        expected = task_ids[int(np.argmax(np.abs(second_model[:, 0] - 0.5) * -1))]
        print(f"  served task {task['id']}, most uncertain {expected}")  # type: ignore[index]
        held = task_ids[: args.hold]
        timed(f"hold_tasks ({len(held)} tasks)", lambda: ls.hold_tasks(project_id, held))
        timed(f"release_tasks ({len(held)} tasks)", lambda: ls.release_tasks(project_id, held, 1))
    finally:
        ls.delete_project(project_id)
        ls.close()


if __name__ == "__main__":
    main()
