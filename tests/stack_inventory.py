"""What a running stack holds that tests could leave behind: Label Studio projects and users, buckets, experiments."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import httpx

from labelflow.integrations.settings import STACK_FILE_NAME


@dataclass(frozen=True)
class StackInventory:
    """Names of what one stack holds, compared before and after a test session."""

    projects: frozenset[str]
    users: frozenset[str]
    buckets: frozenset[str]
    experiments: frozenset[str]

    def difference(self, later: StackInventory) -> dict[str, list[str]]:
        """What `later` holds that this inventory did not (by kind), and what it lost."""
        changes: dict[str, list[str]] = {}
        for kind in ("projects", "users", "buckets", "experiments"):
            before, after = getattr(self, kind), getattr(later, kind)
            added = sorted(after - before)
            removed = sorted(before - after)
            if added or removed:
                changes[kind] = [f"+{name}" for name in added] + [f"-{name}" for name in removed]
        return changes


def stack_env(home: Path) -> dict[str, str] | None:
    """The connection values a stack home published, or None when no stack was brought up there."""
    path = home / STACK_FILE_NAME
    if not path.is_file():
        return None
    env = json.loads(path.read_text(encoding="utf-8")).get("env", {})
    return {str(k): str(v) for k, v in env.items()}


def take_inventory(env: dict[str, str]) -> StackInventory | None:
    """List the stack's projects, users, buckets and experiments; None when any of its servers does not answer."""
    import boto3
    from botocore.config import Config

    try:
        with httpx.Client(timeout=30) as http:
            auth = {"Authorization": f"Token {env['LABEL_STUDIO_API_KEY']}"}
            base = env["LABEL_STUDIO_URL"].rstrip("/")
            projects = _paged_titles(http, f"{base}/api/projects", auth)
            users = http.get(f"{base}/api/users", headers=auth).raise_for_status().json()
            experiments = _experiment_names(http, env["MLFLOW_TRACKING_URI"].rstrip("/"))
        s3 = boto3.client(
            "s3",
            endpoint_url=env["LABELFLOW_S3_ENDPOINT_URL"],
            aws_access_key_id=env["LABELFLOW_S3_ACCESS_KEY"],
            aws_secret_access_key=env["LABELFLOW_S3_SECRET_KEY"],
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=5),
        )
        buckets = [b["Name"] for b in s3.list_buckets().get("Buckets", [])]
    except (httpx.HTTPError, OSError, KeyError, ValueError) as exc:
        print(f"stack inventory skipped: {exc}")
        return None
    except Exception as exc:  # botocore's errors have no common base with the ones above
        print(f"stack inventory skipped: {type(exc).__name__}: {exc}")
        return None
    return StackInventory(
        projects=frozenset(projects),
        users=frozenset(u["email"] for u in users),
        buckets=frozenset(buckets),
        experiments=frozenset(experiments),
    )


def _paged_titles(http: httpx.Client, url: str, auth: dict[str, str]) -> list[str]:
    """Every project as `id:title`, page by page."""
    titles: list[str] = []
    page = 1
    while True:
        # `include` keeps Label Studio from counting every project's tasks (seconds per page on a big stack).
        response = http.get(url, headers=auth, params={"page": page, "page_size": 100, "include": "id,title"})
        if response.status_code == 404:  # past the last page
            return titles
        body = response.raise_for_status().json()
        results = body.get("results", body) if isinstance(body, dict) else body
        titles += [f"{p['id']}:{p['title']}" for p in results]
        if not isinstance(body, dict) or not body.get("next"):
            return titles
        page += 1


def _experiment_names(http: httpx.Client, base: str) -> list[str]:
    """Every experiment name, active and deleted, page by page."""
    names: list[str] = []
    token = None
    while True:
        body = {"max_results": 1000, "view_type": "ALL", **({"page_token": token} if token else {})}
        data = http.post(f"{base}/api/2.0/mlflow/experiments/search", json=body).raise_for_status().json()
        names += [e["name"] for e in data.get("experiments", [])]
        token = data.get("next_page_token")
        if not token:
            return names
