"""The stack's PostgreSQL server (`labelflow up --db postgres`): where it lives, how it starts, its three databases."""

from __future__ import annotations

import glob
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
from pathlib import Path

from labelflow.infra.stack_config import LOOPBACK, StackConfig, StackError

DB_USER = "labelflow"
# One database per service, named as infra/compose/postgres-init.sql names them.
DATABASES = ("labelstudio", "prefect", "mlflow")
# PostgreSQL refuses to run as root: a root stack runs it as this system user (Debian's package creates it).
SYSTEM_USER = "postgres"
INSTALL_HINT = "PostgreSQL is not installed: run `make postgres` (Debian: apt-get install postgresql)"


def bin_dir() -> Path:
    """The directory of initdb, postgres and pg_isready: PATH first, then Debian's newest versioned directory."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    versions = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(Path(p).parts[-3]))
    if not versions:
        raise StackError(f"postgres: {INSTALL_HINT}")
    return Path(versions[-1]).parent


def run_as() -> str | None:
    """The user the server runs as: None (the caller) unless the caller is root."""
    return SYSTEM_USER if os.geteuid() == 0 else None


CLUSTER_ID_FILE = "postgres-cluster.id"


def cluster_id(config: StackConfig) -> str:
    """This home's cluster id, made on first use: a home deleted and made again at the same path gets a new one."""
    path = config.home / CLUSTER_ID_FILE
    if path.is_file():
        return path.read_text(encoding="utf-8").strip()
    if not config.home.is_dir():
        return ""  # no home, so no cluster yet (status of a stack never started)
    token = secrets.token_hex(8)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token)
    return token


def data_dir(config: StackConfig) -> Path:
    """The cluster directory: in the home, or, for root, outside it (the home is 0700 root; postgres can't enter).

    Outside the home it is named after the home's path and its cluster id: keyed on the path alone, a home made
    again at the same path (a fresh clone in the same folder) met the old home's cluster and its old password.
    """
    if run_as() is None:
        return config.data_dir / "postgres"
    identity = f"{config.home.resolve()}\0{cluster_id(config)}"
    digest = hashlib.sha256(identity.encode()).hexdigest()[:12]
    return Path("/var/tmp") / f"labelflow-postgres-{digest}"


def _as_user(user: str | None) -> dict[str, object]:
    """subprocess arguments that run a command as `user` (from a directory it can enter)."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "cwd": "/"}


def ensure_cluster(config: StackConfig, password: str) -> None:
    """initdb once (superuser `labelflow` with the stack's password, scram-sha-256 on every connection)."""
    bin_dir()  # not installed: say how to install it, before anything else
    directory = data_dir(config)
    if (directory / "PG_VERSION").is_file():
        return
    user = run_as()
    if user is not None:
        try:
            account = pwd.getpwnam(user)
        except KeyError:
            raise StackError(
                f"postgres: no `{user}` system user to run PostgreSQL as (root cannot); {INSTALL_HINT}"
            ) from None
        directory.mkdir(mode=0o700, exist_ok=True)
        os.chown(directory, account.pw_uid, account.pw_gid)
    else:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    # The password goes through an owner-only file that initdb's user can read (a root pipe on stdin is not).
    with tempfile.NamedTemporaryFile("w", prefix="labelflow-pw-", dir=directory.parent, encoding="utf-8") as pwfile:
        pwfile.write(password)
        pwfile.flush()
        if user is not None:
            os.fchown(pwfile.fileno(), account.pw_uid, account.pw_gid)
        result = _initdb(directory, Path(pwfile.name), user)
    if result.returncode != 0:
        raise StackError(f"postgres: initdb failed in {directory}: {(result.stderr or result.stdout).strip()[-800:]}")


def _initdb(directory: Path, pwfile: Path, user: str | None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            str(bin_dir() / "initdb"),
            "-D",
            str(directory),
            "-U",
            DB_USER,
            "-A",
            "scram-sha-256",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            f"--pwfile={pwfile}",  # never on a command line
        ],
        capture_output=True,
        text=True,
        check=False,
        **_as_user(user),  # type: ignore[arg-type]
    )


def server_command(config: StackConfig) -> list[str]:
    """The postmaster in the foreground on loopback TCP only (no Unix socket: its default directory is root's)."""
    return [
        str(bin_dir() / "postgres") if _installed() else "postgres",
        "-D",
        str(data_dir(config)),
        "-h",
        LOOPBACK,
        "-p",
        str(config.postgres_port),
        "-k",
        "",
        # Label Studio's workers, Prefect's pool and MLflow's pool together stay well under this.
        "-c",
        "max_connections=200",
    ]


def _installed() -> bool:
    try:
        bin_dir()
    except StackError:
        return False
    return True


def _client_env(password: str) -> dict[str, str]:
    return {**os.environ, "PGPASSWORD": password, "PGCONNECT_TIMEOUT": "5"}


def is_ready(config: StackConfig) -> tuple[bool, str]:
    """Whether the server accepts connections (pg_isready: no password needed)."""
    if not _installed():
        return False, INSTALL_HINT
    result = subprocess.run(
        [str(bin_dir() / "pg_isready"), "-h", LOOPBACK, "-p", str(config.postgres_port), "-U", DB_USER, "-t", "2"],
        capture_output=True,
        text=True,
        check=False,
    )
    return (True, "healthy") if result.returncode == 0 else (False, result.stdout.strip() or "not accepting")


def psql(config: StackConfig, password: str, sql: str, database: str = "postgres") -> str:
    """Run one SQL statement as the stack's database user; its rows, unaligned, one a line."""
    result = subprocess.run(
        [
            str(bin_dir() / "psql"),
            "-h",
            LOOPBACK,
            "-p",
            str(config.postgres_port),
            "-U",
            DB_USER,
            "-d",
            database,
            "-XAtq",
            "-v",
            "ON_ERROR_STOP=1",
            "-c",
            sql,
        ],
        capture_output=True,
        text=True,
        env=_client_env(password),
        check=False,
    )
    if result.returncode != 0:
        raise StackError(f"postgres: `{sql}` failed: {result.stderr.strip()}")
    return result.stdout


def ensure_databases(config: StackConfig, password: str) -> list[str]:
    """Create the databases of Label Studio, Prefect and MLflow that do not exist yet; the names created."""
    existing = set(psql(config, password, "SELECT datname FROM pg_database").split())
    created = []
    for name in DATABASES:
        if name not in existing:
            psql(config, password, f'CREATE DATABASE "{name}" OWNER {DB_USER}')
            created.append(name)
    return created


def database_url(config: StackConfig, password: str, database: str, driver: str = "postgresql") -> str:
    """A SQLAlchemy-style URL of one of the stack's databases."""
    return f"{driver}://{DB_USER}:{password}@{LOOPBACK}:{config.postgres_port}/{database}"


def label_studio_database_variables(config: StackConfig, password: str) -> dict[str, str]:
    """Label Studio's database variables, as infra/compose/docker-compose.yml sets them."""
    return {
        "DJANGO_DB": "default",
        "POSTGRE_NAME": "labelstudio",
        "POSTGRE_USER": DB_USER,
        "POSTGRE_PASSWORD": password,
        "POSTGRE_HOST": LOOPBACK,
        "POSTGRE_PORT": str(config.postgres_port),
    }


def remove_data_dir(config: StackConfig) -> None:
    """Delete the cluster directory (the server must be stopped); used by tests that made a throwaway stack."""
    shutil.rmtree(data_dir(config), ignore_errors=True)
