"""Label Studio server behind one small client class (SDK 2.x plus the few raw endpoints it lacks)."""

from __future__ import annotations

import base64
from typing import Any

import httpx
from label_studio_sdk import LabelStudio

from integrations.settings import LabelStudioSettings, S3Settings


class LabelStudioError(RuntimeError):
    """A Label Studio call failed; the message carries the server's answer."""


class LabelStudioClient:
    """Projects, tasks and storage connections on one Label Studio server."""

    def __init__(self, settings: LabelStudioSettings, timeout: float = 60.0) -> None:
        self.settings = settings
        self.sdk = LabelStudio(base_url=settings.base_url, api_key=settings.api_key.get_secret_value(), timeout=timeout)
        self._http = httpx.Client(
            base_url=settings.base_url,
            headers={"Authorization": f"Token {settings.api_key.get_secret_value()}"},
            timeout=timeout,
        )

    def whoami(self) -> dict[str, Any]:
        """The user the token belongs to."""
        response = self._http.get("/api/current-user/whoami")
        if response.status_code != 200:
            raise LabelStudioError(f"whoami: HTTP {response.status_code}: {response.text[:300]}")
        return response.json()

    def create_project(self, title: str, label_config: str, **options: Any) -> int:
        """Create a project and return its id."""
        project = self.sdk.projects.create(title=title, label_config=label_config, **options)
        return int(project.id)

    def delete_project(self, project_id: int) -> None:
        """Delete a project and its tasks."""
        self.sdk.projects.delete(id=project_id)

    def add_s3_import_storage(
        self,
        project_id: int,
        bucket: str,
        prefix: str,
        s3: S3Settings,
        use_server_endpoint: bool = True,
        title: str = "labelflow source",
    ) -> int:
        """Connect a bucket so Label Studio resolves `s3://` URIs in tasks with presigned reads.

        With `use_server_endpoint`, no endpoint is sent: Label Studio uses its operator-set S3_ENDPOINT,
        which its SSRF protection trusts (the local stack sets it to the loopback object store).
        """
        options: dict[str, Any] = {}
        if not use_server_endpoint:
            options["s3endpoint"] = s3.endpoint
        storage = self.sdk.import_storage.s3.create(
            project=project_id,
            bucket=bucket,
            prefix=prefix,
            title=title,
            aws_access_key_id=s3.access_key,
            aws_secret_access_key=s3.secret_key.get_secret_value(),
            region_name=s3.region,
            presign=True,
            presign_ttl=60,
            use_blob_urls=False,
            **options,
        )
        return int(storage.id)

    def import_tasks(self, project_id: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Create tasks in one request and return their ids."""
        response = self._http.post(f"/api/projects/{project_id}/import", params={"return_task_ids": "true"}, json=tasks)
        if response.status_code not in (200, 201):
            raise LabelStudioError(
                f"import into project {project_id}: HTTP {response.status_code}: {response.text[:300]}"
            )
        return [int(task_id) for task_id in response.json().get("task_ids", [])]

    def resolve_uri(self, task_id: int, uri: str) -> httpx.Response:
        """Fetch what Label Studio serves for a storage URI inside a task (follows its presigned redirect)."""
        encoded = base64.urlsafe_b64encode(uri.encode()).decode()
        return self._http.get(f"/tasks/{task_id}/resolve/", params={"fileuri": encoded}, follow_redirects=True)

    def close(self) -> None:
        """Release the HTTP connection pool."""
        self._http.close()
