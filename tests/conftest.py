"""Shared fixtures: the real local stack, started once per test session with the same machinery as `labelflow up`."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from labelflow.infra.local_stack import LocalStack
from labelflow.infra.ports import STACK_PORTS
from labelflow.infra.stack_config import StackConfig
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.mlflow_tracking import MLflowTracking
from labelflow.integrations.object_store import ObjectStore
from labelflow.integrations.settings import (
    LabelStudioSettings,
    MLflowSettings,
    PrefectSettings,
    S3Settings,
    connection_variables,
    read_stack_connection,
)
from tests.openai_server import FakeOpenAIServer
from tests.stack_inventory import StackInventory, stack_env, take_inventory

REPO = Path(__file__).resolve().parent.parent
# The suite's own stack: its own home and ports, so it never writes to the user's stack and can run while that one is
# busy. LABELFLOW_TEST_HOME / LABELFLOW_TEST_PORT_OFFSET move it (two checkouts testing at once need different ones).
TEST_HOME = Path(os.environ.get("LABELFLOW_TEST_HOME") or REPO / ".labelflow-test").resolve()
TEST_PORT_OFFSET = int(os.environ.get("LABELFLOW_TEST_PORT_OFFSET") or 100)
USER_HOME = REPO / ".labelflow"
user_stack_before: StackInventory | None = None


@dataclass(frozen=True)
class RunningStack:
    """Handles on the running local stack for tests."""

    stack: LocalStack
    s3: S3Settings
    label_studio: LabelStudioSettings
    mlflow: MLflowSettings
    prefect: PrefectSettings


def pytest_configure(config: pytest.Config) -> None:
    """Point everything (fixtures, the CLI, subprocesses) at the suite's own stack."""
    os.environ["LABELFLOW_HOME"] = str(TEST_HOME)
    for name, (_, port) in STACK_PORTS.items():
        os.environ[f"LABELFLOW_STACK_{name.upper()}"] = str(port + TEST_PORT_OFFSET)
    # Label Studio's virtualenv (a few minutes to build) is the user's, shared read-only.
    os.environ["LABELFLOW_STACK_LABEL_STUDIO_VENV_DIR"] = str(USER_HOME / "venvs" / "label-studio")


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """Fail the session if the user's stack holds anything more or less than before the tests."""
    env = stack_env(USER_HOME)
    after = take_inventory(env) if user_stack_before and env else None
    if user_stack_before is None or after is None:
        return
    changes = user_stack_before.difference(after)
    if changes:
        print(f"\nthe tests changed the user's stack at {USER_HOME}: {changes}")
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
    else:
        print(f"\nthe user's stack at {USER_HOME} holds exactly what it held before the tests")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration need the stack; tests under tests/security are the hostile cases."""
    for item in items:
        path = str(item.fspath)
        if "tests/integration" in path:
            item.add_marker(pytest.mark.integration)
        if "tests/security" in path:
            item.add_marker(pytest.mark.security)


@pytest.fixture(scope="session")
def local_stack() -> Iterator[RunningStack]:
    """Bring the stack up (reusing one already running); stop at the end only what this session started."""
    for name in connection_variables(
        required_only=False
    ):  # the tests target the local stack, never a configured remote
        os.environ.pop(name, None)
    os.environ.setdefault("DO_NOT_TRACK", "true")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    global user_stack_before
    env = stack_env(USER_HOME)
    if env and USER_HOME.resolve() != TEST_HOME:
        user_stack_before = take_inventory(env)  # what the user's stack holds, checked again at the session's end
    # LABELFLOW_TEST_DB=postgres: the suite's stack runs its services on PostgreSQL (`make test-postgres`)
    stack = LocalStack(StackConfig(db=os.environ.get("LABELFLOW_TEST_DB") or None))
    already_running = all(s.running for s in stack.status())
    try:
        reports = stack.up(echo=print)
    except BaseException:
        if not already_running:
            stack.down()  # a start that failed half way leaves nothing running (e.g. PostgreSQL alone)
        raise
    env = read_stack_connection()
    running = RunningStack(
        stack=stack,
        s3=S3Settings(
            endpoint_url=env["LABELFLOW_S3_ENDPOINT_URL"],
            access_key=env["LABELFLOW_S3_ACCESS_KEY"],
            secret_key=env["LABELFLOW_S3_SECRET_KEY"],
        ),
        label_studio=LabelStudioSettings(url=env["LABEL_STUDIO_URL"], api_key=env["LABEL_STUDIO_API_KEY"]),
        mlflow=MLflowSettings(tracking_uri=env["MLFLOW_TRACKING_URI"]),
        prefect=PrefectSettings(api_url=env["PREFECT_API_URL"]),
    )
    print("local stack:", {r.name: r.action for r in reports})
    yield running
    if not already_running and os.environ.get("LABELFLOW_KEEP_STACK") != "1":
        stack.down()
        if stack.config.database == "postgres":
            from labelflow.infra.postgres import remove_data_dir

            # As root the cluster lives outside the test home (/var/tmp): leave no cluster behind.
            remove_data_dir(stack.config)


@pytest.fixture
def unique_name() -> str:
    """A name no other test uses (buckets, projects, experiments)."""
    return f"t-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def object_store(local_stack: RunningStack) -> ObjectStore:
    return ObjectStore(local_stack.s3)


@pytest.fixture
def label_studio(local_stack: RunningStack) -> Iterator[LabelStudioClient]:
    client = LabelStudioClient(local_stack.label_studio)
    yield client
    client.close()


@pytest.fixture
def mlflow_tracking(local_stack: RunningStack) -> MLflowTracking:
    return MLflowTracking(local_stack.mlflow)


@pytest.fixture
def prefect_api(local_stack: RunningStack) -> Iterator[str]:
    """Point Prefect at the stack's server for the duration of a test."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: local_stack.prefect.url}):
        yield local_stack.prefect.url


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A deterministic OpenAI-compatible chat-completions server on 127.0.0.1 (tests/openai_server.py)."""
    with FakeOpenAIServer() as server:
        yield server
