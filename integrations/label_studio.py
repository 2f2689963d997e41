"""Label Studio server behind one small client class (SDK 2.x plus the few raw endpoints it lacks)."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Iterator
from typing import Any

import httpx

from labelflow.integrations.errors import AdapterError
from labelflow.integrations.settings import LabelStudioSettings, S3Settings

# Reads (GET) that fail with a transport error or a 5xx are repeated after these pauses (seconds): a few seconds
# of backoff ride out a restart without hiding an outage. Writes are not repeated here (see `import_tasks`).
READ_RETRY_DELAYS = (0.5, 1.0, 2.0)
# A server that does not accept the connection within this is reported as unreachable (reads keep `timeout`).
CONNECT_TIMEOUT_SECONDS = 5.0
# Task ids per Data Manager selection: a longer request line is refused (Label Studio's server allows 4 KiB).
TASK_SELECTION_CHUNK = 200


class LabelStudioError(AdapterError):
    """A Label Studio call failed; the message carries the server's answer and whether a retry can help."""

    def __init__(self, message: str, transient: bool = False, status: int | None = None) -> None:
        super().__init__(message)
        self.transient = transient
        self.status = status


def _check(response: httpx.Response, action: str) -> httpx.Response:
    """Raise a LabelStudioError that says what failed; 5xx and 429 are transient, other 4xx are not."""
    if response.status_code < 400:
        return response
    hint = ""
    if response.status_code == 401:
        hint = " (the API token is wrong or legacy tokens are disabled: check LABEL_STUDIO_API_KEY)"
    elif response.status_code == 403:
        hint = " (the token's user may not do this)"
    transient = response.status_code >= 500 or response.status_code == 429
    answer = " ".join(response.text[:300].split())  # an HTML error page stays one line
    raise LabelStudioError(
        f"Label Studio {action}: HTTP {response.status_code}{hint}: {answer}",
        transient=transient,
        status=response.status_code,
    )


class LabelStudioClient:
    """Projects, tasks and storage connections on one Label Studio server."""

    def __init__(self, settings: LabelStudioSettings, timeout: float = 60.0) -> None:
        self.settings = settings
        self._timeout = timeout
        self._http = httpx.Client(
            base_url=settings.base_url,
            headers={"Authorization": f"Token {settings.api_key.get_secret_value()}"},
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT_SECONDS)),
        )

    def _request(self, method: str, path: str, action: str, **kwargs: Any) -> httpx.Response:
        """One raw API call; transport errors and 5xx become transient LabelStudioErrors, after backoff for reads."""
        pauses = READ_RETRY_DELAYS if method == "GET" else ()
        retries = 0
        while True:
            try:
                return _check(self._http.request(method, path, **kwargs), action)
            except LabelStudioError as exc:
                if not exc.transient:
                    raise
                error: Exception = exc
            except httpx.TransportError as exc:
                error = exc
            if retries == len(pauses):
                break
            time.sleep(pauses[retries])
            retries += 1
        retried = f" (retried {retries} times)" if retries else ""
        if isinstance(error, LabelStudioError):
            raise LabelStudioError(f"{error}{retried}", transient=True, status=error.status) from error
        raise LabelStudioError(
            f"Label Studio {action}: cannot reach {self.settings.base_url}: {type(error).__name__}: {error}{retried}",
            transient=True,
        ) from error

    def whoami(self) -> dict[str, Any]:
        """The user the token belongs to."""
        return self._request("GET", "/api/current-user/whoami", "whoami").json()

    def find_project(self, title: str) -> int | None:
        """Id of the project with exactly this title, or None."""
        response = self._request("GET", "/api/projects", "list projects", params={"title": title, "page_size": 100})
        payload = response.json()
        projects = payload.get("results", payload) if isinstance(payload, dict) else payload
        matches = sorted(int(p["id"]) for p in projects if p.get("title") == title)
        return matches[0] if matches else None

    def get_project(self, project_id: int) -> dict[str, Any] | None:
        """A project's settings, or None if it does not exist."""
        try:
            return self._request("GET", f"/api/projects/{project_id}", "get project").json()
        except LabelStudioError as exc:
            if exc.status == 404:
                return None
            raise

    def update_project(self, project_id: int, **fields: Any) -> None:
        """Change project settings (label config, overlap, instructions ...)."""
        self._request("PATCH", f"/api/projects/{project_id}", "update project", json=fields)

    def s3_import_storages(self, project_id: int) -> list[dict[str, Any]]:
        """The project's S3 import storage connections."""
        return self._request("GET", "/api/storages/s3", "list storages", params={"project": project_id}).json()

    def count_tasks(self, project_id: int) -> int:
        """Number of tasks in a project."""
        response = self._request(
            "GET", "/api/tasks", "count tasks", params={"project": project_id, "page_size": 1, "fields": "task_only"}
        )
        return int(response.json().get("total", 0))

    def tasks_where(self, project_id: int, field: str, value: str, page_size: int = 1000) -> list[dict[str, Any]]:
        """All tasks whose data field equals a value (Data Manager filter), following pagination."""
        query = {
            "filters": {
                "conjunction": "and",
                "items": [
                    {"filter": f"filter:tasks:data.{field}", "operator": "equal", "type": "String", "value": value}
                ],
            }
        }
        params = {"project": project_id, "query": json.dumps(query), "fields": "all"}
        return list(self._task_pages(params, "list tasks", page_size))

    def tasks_updated_after(self, project_id: int, since: str, limit: int) -> list[dict[str, Any]]:
        """At most `limit` tasks (id, updated_at) updated after `since` (Label Studio's timestamp format)."""
        query = {
            "filters": {
                "conjunction": "and",
                "items": [
                    {"filter": "filter:tasks:updated_at", "operator": "greater", "type": "Datetime", "value": since}
                ],
            }
        }
        params = {"project": project_id, "query": json.dumps(query), "fields": "task_only", "page": 1}
        payload = self._request("GET", "/api/tasks", "list updated tasks", params={**params, "page_size": limit}).json()
        return [{"id": task["id"], "updated_at": task.get("updated_at")} for task in payload.get("tasks", [])]

    def _task_pages(self, params: dict[str, Any], action: str, page_size: int) -> Iterator[dict[str, Any]]:
        """Every task `/api/tasks` lists for these parameters, page after page."""
        seen = 0
        page = 1
        while True:
            payload = self._request(
                "GET", "/api/tasks", action, params={**params, "page": page, "page_size": page_size}
            ).json()
            batch = payload.get("tasks", [])
            yield from batch
            seen += len(batch)
            # Past the last page Label Studio answers 404 "Invalid page": stop on the reported total.
            if len(batch) < page_size or seen >= int(payload.get("total", 0)):
                return
            page += 1

    def create_project(self, title: str, label_config: str, **options: Any) -> int:
        """Create a project and return its id."""
        body = {"title": title, "label_config": label_config, **options}
        return int(self._request("POST", "/api/projects", f"create project {title!r}", json=body).json()["id"])

    def delete_project(self, project_id: int) -> None:
        """Delete a project and its tasks."""
        self._request("DELETE", f"/api/projects/{project_id}", f"delete project {project_id}")

    def add_s3_import_storage(
        self,
        project_id: int,
        bucket: str,
        prefix: str,
        s3: S3Settings,
        use_server_endpoint: bool = True,
        presign: bool = True,
        presign_ttl_minutes: int = 60,
        title: str = "labelflow source",
    ) -> int:
        """Connect a bucket so Label Studio resolves `s3://` URIs in tasks (presigned reads, or proxied).

        With `use_server_endpoint`, no endpoint is sent: Label Studio uses its operator-set S3_ENDPOINT,
        which its SSRF protection trusts (the local stack sets it to the loopback object store).
        """
        body: dict[str, Any] = {
            "project": project_id,
            "bucket": bucket,
            "prefix": prefix,
            "title": title,
            "aws_access_key_id": s3.access_key,
            "aws_secret_access_key": s3.secret_key.get_secret_value(),
            "region_name": s3.region,
            "presign": presign,
            "presign_ttl": presign_ttl_minutes,
            "use_blob_urls": False,
        }
        if not use_server_endpoint:
            body["s3_endpoint"] = s3.endpoint
        response = self._request("POST", "/api/storages/s3", f"connect s3://{bucket}/{prefix}", json=body)
        return int(response.json()["id"])

    def update_s3_import_storage_keys(self, storage_id: int, s3: S3Settings) -> None:
        """Replace the S3 keys a storage connection reads with (e.g. an admin key by a read-only one)."""
        body = {"aws_access_key_id": s3.access_key, "aws_secret_access_key": s3.secret_key.get_secret_value()}
        self._request("PATCH", f"/api/storages/s3/{storage_id}", f"update keys of storage {storage_id}", json=body)

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Create tasks in one request and return their ids; transport errors and 5xx are transient errors.

        Sent once: after a lost answer the tasks may exist, so only a caller that can look the batch up may retry
        (`tasks.ingest.import_batch_idempotently`).
        """
        action = f"import into project {project_id}"
        response = self._request(
            "POST", f"/api/projects/{project_id}/import", action, params={"return_task_ids": "true"}, json=tasks
        )
        if response.status_code not in (200, 201):
            raise LabelStudioError(f"Label Studio {action}: unexpected HTTP {response.status_code}")
        return [int(task_id) for task_id in response.json().get("task_ids", [])]

    # --- users -----------------------------------------------------------------------------------------------
    def users(self) -> dict[int, str]:
        """Every user of the organisation: id -> email."""
        payload = self._request("GET", "/api/users", "list users").json()
        users = payload.get("results", payload) if isinstance(payload, dict) else payload
        return {int(user["id"]): user.get("email") or "" for user in users}

    def create_user(self, email: str, first_name: str = "", last_name: str = "") -> int:
        """Add a user to the organisation (they can log in once given a password in the UI) and return the id."""
        username = email.split("@", 1)[0][:150]
        body = {"email": email, "username": username, "first_name": first_name, "last_name": last_name}
        return int(self._request("POST", "/api/users/", f"create user {email}", json=body).json()["id"])

    # --- annotations -----------------------------------------------------------------------------------------
    def create_annotation(
        self,
        task_id: int,
        result: list[dict[str, Any]],
        completed_by: int | None = None,
        lead_time: float | None = None,
    ) -> int:
        """Create an annotation on a task (on behalf of another user when `completed_by` is given)."""
        body: dict[str, Any] = {"result": result}
        if completed_by is not None:
            body["completed_by"] = completed_by
        if lead_time is not None:
            body["lead_time"] = lead_time
        response = self._request("POST", f"/api/tasks/{task_id}/annotations/", f"annotate task {task_id}", json=body)
        return int(response.json()["id"])

    def update_annotation(self, annotation_id: int, result: list[dict[str, Any]]) -> None:
        """Replace an annotation's result."""
        self._request(
            "PATCH", f"/api/annotations/{annotation_id}/", f"update annotation {annotation_id}", json={"result": result}
        )

    def delete_annotation(self, annotation_id: int) -> None:
        """Delete an annotation."""
        self._request("DELETE", f"/api/annotations/{annotation_id}/", f"delete annotation {annotation_id}")

    def get_task(self, task_id: int) -> dict[str, Any]:
        """One task with its annotations."""
        return self._request("GET", f"/api/tasks/{task_id}", f"get task {task_id}").json()

    def tasks_as_stored(self, project_id: int, task_ids: list[int], chunk: int = 200) -> list[dict[str, Any]]:
        """These tasks of a project with their annotations, data as stored (storage URIs left unresolved)."""
        found: list[dict[str, Any]] = []
        for start in range(0, len(task_ids), chunk):
            # The Data Manager's selection: only the listed tasks, a page per chunk (small enough for the request
            # line: Label Studio's server refuses one over 4 KiB).
            selected = {"selectedItems": {"all": False, "included": task_ids[start : start + chunk]}}
            params = {"project": project_id, "fields": "all", "resolve_uri": "false", "query": json.dumps(selected)}
            found.extend(self._task_pages(params, "list tasks", chunk))
        return found

    def set_task_overlap(self, task_id: int, overlap: int) -> None:
        """Ask for `overlap` annotations on one task; it goes back into the labeling queue if it has fewer."""
        self._request(
            "PATCH",
            f"/api/tasks/{task_id}",
            f"set overlap of task {task_id}",
            json={"overlap": overlap, "is_labeled": False},
        )

    # --- the labeling queue --------------------------------------------------------------------------------------
    def hold_tasks(self, project_id: int, task_ids: list[int]) -> int:
        """Take tasks out of the labeling queue (machine-labeled); returns how many were held (gone ones are skipped).

        Overlap 0 makes Label Studio count the task as finished and keep it so: it recomputes `is_labeled` as
        "distinct annotators >= overlap" whenever an annotation changes (tasks/mixins.py), always true at 0, and
        `/next` serves only tasks with `is_labeled` false. No bulk endpoint sets task fields: one PATCH per task.
        """
        held = 0
        for task_id in task_ids:
            try:
                self._request(
                    "PATCH",
                    f"/api/tasks/{task_id}",
                    f"hold task {task_id} of project {project_id}",
                    json={"overlap": 0, "is_labeled": True},
                )
            except LabelStudioError as exc:
                if exc.status != 404:
                    raise
                continue
            held += 1
        return held

    def release_tasks(self, project_id: int, task_ids: list[int], overlap: int) -> int:
        """Put held tasks back in the labeling queue asking for `overlap` annotations; returns how many were released.

        A task that already has `overlap` annotations stays finished. One PATCH per task (no bulk endpoint).
        """
        released = 0
        for start in range(0, len(task_ids), TASK_SELECTION_CHUNK):
            chunk = task_ids[start : start + TASK_SELECTION_CHUNK]
            selected = {"selectedItems": {"all": False, "included": chunk}}
            params = {
                "project": project_id,
                "fields": "task_only",
                "resolve_uri": "false",
                "query": json.dumps(selected),
            }
            annotated = {
                int(task["id"]): int(task.get("total_annotations") or 0)
                for task in self._task_pages(params, "list tasks to release", TASK_SELECTION_CHUNK)
            }
            for task_id in chunk:
                if task_id not in annotated:
                    continue  # deleted since it was held
                body = {"overlap": overlap, "is_labeled": annotated[task_id] >= overlap}
                self._request("PATCH", f"/api/tasks/{task_id}", f"release task {task_id}", json=body)
                released += 1
        return released

    def model_versions(self, project_id: int) -> dict[str, int]:
        """The model versions of a project's predictions, with how many predictions each has."""
        return self._request("GET", f"/api/projects/{project_id}/model-versions", "list model versions").json()

    def import_predictions(self, project_id: int, predictions: list[dict[str, Any]]) -> int:
        """Add predictions ({task, model_version, score, result}) to existing tasks in one request; returns how many.

        Sent once (a lost answer may have created them): callers find what exists (`prediction_scores`) and go on.
        """
        action = f"import {len(predictions)} predictions into project {project_id}"
        created = int(
            self._request("POST", f"/api/projects/{project_id}/import/predictions", action, json=predictions)
            .json()
            .get("created", 0)
        )
        if created != len(predictions):
            # Label Studio 1.23 logs and drops the predictions it finds invalid (a result the label config does not
            # allow, a score outside [0, 1]) instead of answering 400.
            raise LabelStudioError(f"Label Studio {action}: it created {created}, refusing the others (see its log)")
        return created

    def prediction_scores(self, project_id: int, model_version: str) -> dict[int, list[tuple[int, float | None]]]:
        """Task id -> [(prediction id, score)] of the project's predictions of exactly `model_version`.

        One request for every prediction of the project (the predictions API lists them unpaginated, 10k in about a
        second): the Data Manager's task listing filtered on the version is ten times slower, and matches substrings.
        """
        answer = self._request("GET", "/api/predictions/", "list predictions", params={"project": project_id}).json()
        found: dict[int, list[tuple[int, float | None]]] = {}
        for prediction in answer.get("results", answer) if isinstance(answer, dict) else answer:
            if prediction.get("model_version") == model_version and prediction.get("task") is not None:
                score = prediction.get("score")
                found.setdefault(int(prediction["task"]), []).append(
                    (int(prediction["id"]), None if score is None else float(score))
                )
        return found

    def set_prediction_score(self, prediction_id: int, score: float) -> None:
        """Change one prediction's score (Label Studio has no bulk update of predictions)."""
        self._request(
            "PATCH", f"/api/predictions/{prediction_id}/", f"score prediction {prediction_id}", json={"score": score}
        )

    def next_task(self, project_id: int) -> dict[str, Any] | None:
        """The task Label Studio serves the token's user next in "Label All Tasks" (locks it), or None when none."""
        try:
            # The Data Manager's own call for "Label All Tasks": no filters, ordering or selection in the body.
            return self._request(
                "POST",
                "/api/dm/actions",
                f"next task of project {project_id}",
                params={"id": "next_task", "project": project_id},
                json={},
            ).json()
        except LabelStudioError as exc:
            if exc.status == 404:
                return None
            raise

    def task_ids(self, project_id: int, page_size: int = 5000) -> list[int]:
        """Every task id of a project, in id order."""
        params = {"project": project_id, "fields": "task_only", "resolve_uri": "false"}
        return [int(task["id"]) for task in self._task_pages(params, "list task ids", page_size)]

    # --- exports -----------------------------------------------------------------------------------------------
    def export_tasks(
        self, project_id: int, updated_after: str | None = None, timeout: float = 1800.0
    ) -> list[dict[str, Any]]:
        """Tasks with all their annotations (see `export_snapshot`)."""
        return self.export_snapshot(project_id, updated_after, timeout)[0]

    def export_snapshot(
        self, project_id: int, updated_after: str | None = None, timeout: float = 1800.0
    ) -> tuple[list[dict[str, Any]], str]:
        """(Tasks with all their annotations, cancelled ones included; server time of the export), via a snapshot.

        With `updated_after` (Label Studio's `%Y-%m-%dT%H:%M:%S.%fZ`), only tasks updated after it: creating,
        editing or deleting an annotation updates its task. The export and its filter view are deleted after.
        """
        import time

        view_id = None
        # Predictions in full, not as ids: the quality report compares annotators with the judge that pre-labeled.
        body: dict[str, Any] = {
            "title": "labelflow collect",
            "serialization_options": {"predictions": {"only_id": False}},
        }
        try:
            if updated_after is not None:
                filters = {
                    "conjunction": "and",
                    "items": [
                        {
                            "filter": "filter:tasks:updated_at",
                            "operator": "greater",
                            "type": "Datetime",
                            "value": updated_after,
                        }
                    ],
                }
                view = self._request(
                    "POST",
                    "/api/dm/views",
                    "create export filter view",
                    json={
                        "project": project_id,
                        "data": {"title": "labelflow collect (temporary)", "filters": filters},
                    },
                ).json()
                view_id = int(view["id"])
                body["task_filter_options"] = {"view": view_id}
            export = self._request(
                "POST", f"/api/projects/{project_id}/exports", "create snapshot export", json=body
            ).json()
            export_id = int(export["id"])
            try:
                deadline = time.monotonic() + timeout
                while export.get("status") not in ("completed", "failed"):
                    if time.monotonic() > deadline:
                        raise LabelStudioError(
                            f"snapshot export {export_id} did not finish within {timeout:.0f} s", transient=True
                        )
                    time.sleep(0.25)
                    export = self._request(
                        "GET", f"/api/projects/{project_id}/exports/{export_id}", "poll export"
                    ).json()
                if export["status"] == "failed":
                    raise LabelStudioError(f"snapshot export {export_id} of project {project_id} failed on the server")
                response = self._request(
                    "GET",
                    f"/api/projects/{project_id}/exports/{export_id}/download",
                    "download export",
                    params={"exportType": "JSON"},
                )
                # The server's clock at the start of the export: what was committed before it is in the export.
                return json.loads(response.content), str(export["created_at"])
            finally:
                self._request("DELETE", f"/api/projects/{project_id}/exports/{export_id}", "delete export")
        finally:
            if view_id is not None:
                self._request("DELETE", f"/api/dm/views/{view_id}", "delete export filter view")

    def quick_export(self, project_id: int) -> list[dict[str, Any]]:
        """Label Studio's own one-shot JSON export of every annotated task (used as a benchmark baseline)."""
        return json.loads(
            self._request(
                "GET", f"/api/projects/{project_id}/export", "quick export", params={"exportType": "JSON"}
            ).content
        )

    def webhooks(self, project_id: int) -> list[dict[str, Any]]:
        """The project's webhooks."""
        return self._request("GET", "/api/webhooks/", "list webhooks", params={"project": project_id}).json()

    def ensure_webhook(self, project_id: int, url: str, actions: list[str], headers: dict[str, str]) -> int:
        """Create (or repair) the project's webhook to `url` for `actions`; returns its id."""
        body = {
            "project": project_id,
            "url": url,
            "send_payload": True,
            "send_for_all_actions": False,
            "headers": headers,
            "is_active": True,
            "actions": actions,
        }
        for hook in self.webhooks(project_id):
            if hook.get("url") == url and hook.get("project") == project_id:
                if sorted(hook.get("actions") or []) != sorted(actions) or hook.get("headers") != headers:
                    self._request("PATCH", f"/api/webhooks/{hook['id']}/", "update webhook", json=body)
                return int(hook["id"])
        return int(self._request("POST", "/api/webhooks/", "create webhook", json=body).json()["id"])

    def resolve_uri(self, task_id: int, uri: str) -> httpx.Response:
        """Fetch what Label Studio serves for a storage URI inside a task (follows its presigned redirect)."""
        encoded = base64.urlsafe_b64encode(uri.encode()).decode()
        return self._http.get(f"/tasks/{task_id}/resolve/", params={"fileuri": encoded}, follow_redirects=True)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()
