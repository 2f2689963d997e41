"""The suite runs on its own stack, and the inventory that guards the user's stack really sees what tests create."""

from __future__ import annotations

from labelflow.infra.ports import STACK_PORTS
from labelflow.infra.stack_config import StackConfig
from labelflow.integrations.label_studio import LabelStudioClient
from labelflow.integrations.object_store import ObjectStore
from tests.conftest import USER_HOME, RunningStack
from tests.stack_inventory import stack_env, take_inventory


def test_the_suite_stack_shares_no_home_and_no_port_with_the_users_stack(local_stack: RunningStack) -> None:
    config = local_stack.stack.config
    assert config.home != USER_HOME.resolve()
    defaults = {port for _, port in STACK_PORTS.values()}
    used = {getattr(config, name) for name in STACK_PORTS}
    assert not used & defaults, f"the suite's stack listens on a default port: {sorted(used & defaults)}"
    assert StackConfig().home == config.home  # every command the tests run (CLI, subprocesses) targets it too


def test_the_inventory_lists_what_a_test_creates_and_forgets_what_it_deletes(
    local_stack: RunningStack,
    label_studio: LabelStudioClient,
    object_store: ObjectStore,
    unique_name: str,
) -> None:
    env = stack_env(local_stack.stack.config.home)
    assert env is not None
    before = take_inventory(env)
    assert before is not None
    project_id = label_studio.create_project(unique_name, '<View><Text name="t" value="$text"/></View>')
    object_store.ensure_bucket(unique_name)
    during = take_inventory(env)
    label_studio.delete_project(project_id)
    object_store._client.delete_bucket(Bucket=unique_name)  # the pipeline itself never deletes a bucket
    after = take_inventory(env)
    assert during is not None and after is not None
    assert before.difference(during) == {"projects": [f"+{project_id}:{unique_name}"], "buckets": [f"+{unique_name}"]}
    assert before.difference(after) == {}
