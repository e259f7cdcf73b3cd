"""A real pgBouncer on loopback for the tests, in front of the test PostgreSQL server.

Use it from a test module with::

    pytest_plugins = ["tests.pgbouncer_fixture"]

    def test_pools(pgbouncer):
        rows = asyncio.run(admin_query(pgbouncer.admin_url, "SHOW POOLS"))

The fixture ``pgbouncer`` (session scope) starts ``pgbouncer`` from a temporary ini:
listening only on 127.0.0.1 on a free port, no unix socket, ``pool_mode = transaction``,
``auth_type = trust`` (the user must still be listed in the auth file), ``admin_users =
postgres`` and ``* = host=<test server> port=<its port>`` so every database of the test
server is reachable through it. pgBouncer refuses to run as root, so as root it is
started with ``-u postgres`` (or the owner of the temp dir otherwise). When the binary is
absent (``apt-get install pgbouncer``) the tests that need it are skipped, saying so.
``stop()``/``start()`` simulate "pgBouncer is down" and bring it back on the same port.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests import pgserver


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _binary() -> str | None:
    return shutil.which("pgbouncer") or next(
        (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.path.exists(p)), None)


class PgBouncer:
    """One pgBouncer process; ``admin_url`` reaches its console, ``url_for(db)`` a pooled database."""

    def __init__(self, binary: str, server_url: str, *, auth_type: str = "trust",
                 users: dict[str, str] | None = None, user: str = "postgres") -> None:
        parts = urlsplit(server_url)
        self.binary = binary
        self.server_host = parts.hostname or "127.0.0.1"
        self.server_port = parts.port or 5432
        self.user = user
        self.users = users or {user: ""}
        self.password = self.users.get(user) or None
        self.auth_type = auth_type
        self.port = _free_port()
        self.dir = Path(tempfile.mkdtemp(prefix="migrabot-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None
        self._run_as = None if os.geteuid() != 0 else "postgres"
        self._write_config()

    @property
    def _credentials(self) -> str:
        return f"{self.user}:{self.password}" if self.password else self.user

    @property
    def admin_url(self) -> str:
        return f"postgresql://{self._credentials}@127.0.0.1:{self.port}/pgbouncer"

    def url_for(self, dbname: str) -> str:
        return f"postgresql://{self._credentials}@127.0.0.1:{self.port}/{dbname}"

    def _write_config(self) -> None:
        userlist = "".join(f'"{name}" "{password}"\n' for name, password in self.users.items())
        (self.dir / "userlist.txt").write_text(userlist)
        (self.dir / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={self.server_host} port={self.server_port}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {self.port}
unix_socket_dir =
auth_type = {self.auth_type}
auth_file = {self.dir / "userlist.txt"}
admin_users = {self.user}
stats_users = {self.user}
pool_mode = transaction
max_client_conn = 100
default_pool_size = 5
server_login_retry = 1
logfile = {self.dir / "pgbouncer.log"}
pidfile = {self.dir / "pgbouncer.pid"}
""")
        if self._run_as:
            info = pwd.getpwnam(self._run_as)
            for path in (self.dir, *self.dir.iterdir()):
                os.chown(path, info.pw_uid, info.pw_gid)

    def start(self, timeout: float = 10.0) -> None:
        if self.proc and self.proc.poll() is None:
            return
        cmd = [self.binary, *(["-u", self._run_as] if self._run_as else []), str(self.dir / "pgbouncer.ini")]
        # stderr goes to a file: a pipe nobody reads would fill up and block pgbouncer
        with open(self.dir / "stderr.log", "ab") as err:
            self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited at start: {self.log()}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                    return
            except OSError:
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"pgbouncer did not listen on 127.0.0.1:{self.port} within {timeout}s: {self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        self.proc = None

    def log(self) -> str:
        path = self.dir / "pgbouncer.log"
        text = "".join(p.read_text(errors="replace") for p in (path, self.dir / "stderr.log") if p.exists())
        return text[-2000:]

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def start_pgbouncer(server: pgserver.Server, **kwargs: object) -> PgBouncer:
    """A started pgBouncer in front of ``server``, or skip the test when the binary is absent."""
    binary = _binary()
    if binary is None:
        pytest.skip("pgbouncer is not installed (apt-get install -y pgbouncer); this test needs a real one")
    if server.kind == "embedded":
        # the embedded server listens on a private socket directory only, which the pgbouncer
        # user (postgres) cannot reach; these tests need the PostgreSQL server on 127.0.0.1:5432
        pytest.skip("the embedded PostgreSQL has no TCP port for pgBouncer to point at")
    bouncer = PgBouncer(binary, server.admin_url, **kwargs)  # type: ignore[arg-type]
    try:
        bouncer.start()
    except RuntimeError as exc:
        bouncer.cleanup()
        pytest.skip(f"pgbouncer could not start here: {exc}")
    return bouncer


@pytest.fixture(scope="session")
def pgbouncer(pg_server: pgserver.Server) -> Iterator[PgBouncer]:
    """A running pgBouncer (session-wide) in front of the test server; restarted if a test stopped it."""
    bouncer = start_pgbouncer(pg_server)
    yield bouncer
    bouncer.cleanup()


@pytest.fixture
def running_pgbouncer(pgbouncer: PgBouncer) -> PgBouncer:
    """The session pgBouncer, started again if an earlier test stopped it."""
    pgbouncer.start()
    return pgbouncer


@pytest.fixture
def pgbouncer_factory(pg_server: pgserver.Server) -> Iterator[Callable[..., PgBouncer]]:
    """Start extra pgBouncers (e.g. ``auth_type="scram-sha-256", users={"postgres": "pw"}``), stopped afterwards."""
    started: list[PgBouncer] = []

    def factory(**kwargs: object) -> PgBouncer:
        started.append(start_pgbouncer(pg_server, **kwargs))
        return started[-1]

    yield factory
    for bouncer in started:
        bouncer.cleanup()
