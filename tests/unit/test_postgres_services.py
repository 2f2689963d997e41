"""`up --db postgres` wiring that needs no server: the services' database settings, and the recorded choice."""

from __future__ import annotations

from pathlib import Path

import psutil
import pytest
import yaml

from labelflow.infra.credentials import Credentials, write_private_json
from labelflow.infra.local_stack import LocalStack
from labelflow.infra.services import build_services
from labelflow.infra.stack_config import StackConfig, StackError

COMPOSE = Path(__file__).resolve().parents[2] / "infra" / "compose" / "docker-compose.yml"


@pytest.fixture
def creds(tmp_path: Path) -> Credentials:
    return Credentials.load_or_create(tmp_path / "stack")


def compose_to_local(value: str, password: str, port: int) -> str:
    """A compose file value with its password variable and the `postgres` host as the local stack has them."""
    return value.replace("${POSTGRES_PASSWORD}", password).replace("postgres:5432", f"127.0.0.1:{port}")


def test_each_service_is_wired_to_its_database_as_the_compose_file_wires_it(tmp_path: Path, creds: Credentials) -> None:
    config = StackConfig(home=tmp_path / "stack", db="postgres", postgres_port=6543)
    services = {s.name: s for s in build_services(config, creds)}
    assert next(iter(services)) == "postgres"  # started first, stopped last
    compose = yaml.safe_load(COMPOSE.read_text(encoding="utf-8"))["services"]
    password = creds.postgres_password
    assert password and len(password) >= 32

    ls_compose = compose["label-studio"]["environment"]
    for name in ("DJANGO_DB", "POSTGRE_NAME", "POSTGRE_USER", "POSTGRE_PASSWORD"):
        assert services["label-studio"].env[name] == compose_to_local(str(ls_compose[name]), password, 6543)
    assert services["label-studio"].env["POSTGRE_HOST"] == "127.0.0.1"
    assert services["label-studio"].env["POSTGRE_PORT"] == "6543"

    prefect_url = compose["prefect-server"]["environment"]["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert services["prefect"].env["PREFECT_API_DATABASE_CONNECTION_URL"] == compose_to_local(
        prefect_url, password, 6543
    )

    mlflow_command = compose["mlflow"]["command"].split()
    store = mlflow_command[mlflow_command.index("--backend-store-uri") + 1]
    assert services["mlflow"].env["MLFLOW_BACKEND_STORE_URI"] == compose_to_local(store, password, 6543)
    # Passwords stay out of command lines, which every local user can read.
    for service in services.values():
        assert not any(password in part for part in service.command), service.name


def test_sqlite_is_the_default_and_has_no_postgres_service(tmp_path: Path, creds: Credentials) -> None:
    services = {s.name: s for s in build_services(StackConfig(home=tmp_path / "stack"), creds)}
    assert "postgres" not in services
    assert services["label-studio"].env["DJANGO_DB"] == "sqlite"
    assert "sqlite+aiosqlite" in services["prefect"].env["PREFECT_API_DATABASE_CONNECTION_URL"]
    assert any(part.startswith("sqlite:///") for part in services["mlflow"].command)


def test_the_database_choice_is_kept_for_later_commands(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    home.mkdir()
    write_private_json(home / "database.json", {"db": "postgres"})
    assert StackConfig(home=home).database == "postgres"
    assert StackConfig(home=home, db="sqlite").database == "sqlite"
    assert StackConfig(home=tmp_path / "new").database == "sqlite"
    names = [s.name for s in LocalStack(StackConfig(home=home))._services(Credentials.placeholder())]
    assert names[0] == "postgres"


def test_up_refuses_to_switch_the_database_under_running_services(tmp_path: Path) -> None:
    home = tmp_path / "stack"
    (home / "run").mkdir(parents=True)
    write_private_json(home / "database.json", {"db": "sqlite"})
    me = psutil.Process()
    write_private_json(home / "run" / "prefect.json", {"pid": me.pid, "create_time": me.create_time()})
    with pytest.raises(StackError, match="runs on sqlite: stop it with `labelflow down`"):
        LocalStack(StackConfig(home=home, db="postgres"))._record_database()
    assert StackConfig(home=home).database == "sqlite"


def test_a_home_made_again_at_the_same_path_gets_a_new_cluster_directory(tmp_path, monkeypatch) -> None:
    from labelflow.infra import postgres
    from labelflow.infra.stack_config import StackConfig

    monkeypatch.setattr(postgres, "run_as", lambda: "postgres")  # as root: the cluster lives outside the home
    home = tmp_path / "home"
    home.mkdir()
    config = StackConfig(home=home, db="postgres")
    first = postgres.data_dir(config)
    assert postgres.data_dir(config) == first and first.parent.as_posix() == "/var/tmp"
    assert (home / postgres.CLUSTER_ID_FILE).stat().st_mode & 0o777 == 0o600
    (home / postgres.CLUSTER_ID_FILE).unlink()  # the home deleted and made again (a fresh clone, same folder)
    assert postgres.data_dir(config) != first
    assert postgres.data_dir(StackConfig(home=tmp_path / "never-made", db="postgres")).parent.as_posix() == "/var/tmp"
