"""A throwaway PostgreSQL server for the review-store tests.

Import the fixtures into a test module (``from tests.conftest_pg import postgres_server,
postgres_url``). ``postgres_server`` starts one server per test session: ``initdb`` and
``pg_ctl start`` (as the ``postgres`` user when the tests run as root) in a temporary folder,
on a free port, listening on 127.0.0.1 only, trust authentication, and creates a database.
``postgres_url`` gives each test a fresh schema in it. Without the server binaries (and when ``apt-get install
postgresql`` cannot provide them) the tests that need it are skipped, saying why.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path

import pytest

PG_BIN_GLOB = "/usr/lib/postgresql/*/bin"
_apt_tried = False


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    database: str = "review_tests"
    _names = count(1)

    def url(self, database: str | None = None, schema: str | None = None) -> str:
        url = f"postgresql+psycopg://{self.user}@{self.host}:{self.port}/{database or self.database}"
        # libpq's options set the search_path, so everything the store creates lands in the schema.
        return url + (f"?options=-csearch_path%3D{schema}" if schema else "")

    def _execute(self, statement: str, database: str) -> None:
        import psycopg

        with psycopg.connect(host=self.host, port=self.port, user=self.user, dbname=database,
                             autocommit=True) as conn:
            conn.execute(statement)

    def create_database(self) -> None:
        self._execute(f'CREATE DATABASE "{self.database}" TEMPLATE template0', "postgres")

    def new_schema_url(self) -> str:
        """Create an empty schema and return a URL whose connections work in it (a fresh
        schema per test is much cheaper than a fresh database)."""
        schema = f"test_{next(self._names)}"
        self._execute(f'CREATE SCHEMA "{schema}"', self.database)
        return self.url(schema=schema)


def _find_bin_dir() -> Path | None:
    """The newest PostgreSQL server bin folder (15 preferred when several are installed)."""
    found = sorted(Path(p) for p in glob.glob(PG_BIN_GLOB) if (Path(p) / "initdb").exists())
    preferred = [p for p in found if p.parent.name == "15"]
    return (preferred or found[-1:] or [None])[0]


def _install_postgres() -> str | None:
    """Try ``apt-get install postgresql`` once; return why it failed, or None."""
    global _apt_tried
    if _apt_tried:
        return "an earlier attempt to install it failed"
    _apt_tried = True
    if os.geteuid() != 0:
        return "not running as root, so apt-get cannot install it"
    if not shutil.which("apt-get"):
        return "apt-get is not available"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    try:
        subprocess.run(["apt-get", "install", "-y", "-qq", "postgresql"], env=env, check=True,
                       capture_output=True, timeout=300)
    except (subprocess.SubprocessError, OSError) as exc:
        return f"apt-get install -y postgresql failed ({exc})"
    return None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (the message says why)."""


@contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """Start a throwaway PostgreSQL server (trust authentication, 127.0.0.1 only, a free port,
    fsync off) with one database, and stop and delete it on exit. Used by the tests and by
    ``bench/review_load.py``.

    Raises
    ------
    PostgresUnavailable
        The server binaries or the psycopg package are missing, or the server did not start.
    """
    try:
        import psycopg  # noqa: F401
    except ImportError:
        raise PostgresUnavailable("PostgreSQL needs the psycopg package (pip install 'psycopg[binary]').") from None
    bin_dir = _find_bin_dir()
    if bin_dir is None:
        why = _install_postgres()
        bin_dir = _find_bin_dir()
        if bin_dir is None:
            raise PostgresUnavailable(f"PostgreSQL server binaries not found under {PG_BIN_GLOB} and "
                                      f"{why or 'installing them did not provide them'}.")

    as_root = os.geteuid() == 0
    if as_root:
        try:
            import pwd

            pg_user = pwd.getpwnam("postgres")
        except KeyError:
            raise PostgresUnavailable("Running as root, but there is no 'postgres' user to run the server "
                                      "as (initdb refuses root).") from None
    prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
    user = "postgres" if as_root else os.environ.get("USER") or "postgres"

    folder = Path(tempfile.mkdtemp(prefix="cartographer-pg-"))
    if as_root:
        os.chown(folder, pg_user.pw_uid, pg_user.pw_gid)
    data, log = folder / "data", folder / "server.log"
    port = _free_port()

    def run(*args: str, timeout: float = 120) -> None:
        result = subprocess.run([*prefix, *args], capture_output=True, text=True, timeout=timeout, cwd=folder)
        if result.returncode != 0:
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({result.returncode}):\n"
                               f"{result.stdout}\n{result.stderr}\n{tail}")

    started = False
    try:
        try:
            run(str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", user, "-E", "UTF8",
                "--locale=C", "--no-sync")
            # fsync off: a test server need not survive a power cut, and the machine is shared.
            options = (f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={folder} "
                       "-c fsync=off -c full_page_writes=off -c max_connections=100")
            run(str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-o", options, "-w", "-t", "60", "start")
            started = True
            server = PostgresServer(host="127.0.0.1", port=port, user=user)
            server.create_database()
        except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
            if started:
                raise
            raise PostgresUnavailable(f"Could not start a PostgreSQL server: {exc}") from None
        yield server
    finally:
        if started:
            # Immediate: no shutdown checkpoint, the data folder is deleted next anyway.
            subprocess.run([*prefix, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"],
                           capture_output=True, timeout=60, cwd=folder)
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server():
    """A running PostgreSQL server for this test session (skips when none can be started)."""
    try:
        with running_postgres() as server:
            yield server
    except PostgresUnavailable as exc:
        pytest.skip(str(exc))


@pytest.fixture
def postgres_url(postgres_server) -> str:
    """A SQLAlchemy URL to a fresh, empty schema on the session's server."""
    return postgres_server.new_schema_url()
