"""A throwaway PostgreSQL cluster for the tests: ``initdb`` + ``pg_ctl`` on a loopback port.

Debian's ``postgresql`` package (``scripts/ensure-postgres.sh``) provides the binaries; the
cluster lives in a temporary directory owned by the ``postgres`` user (``initdb`` refuses to run
as root), listens on 127.0.0.1 at a free port with password (SCRAM) logins, and is stopped and
removed when the test session ends. Each test gets its own database, cloned from a migrated
template so it costs a ``CREATE DATABASE``, not a schema build.

Usage outside pytest (the two-daemon test, the benchmark)::

    with PgCluster.start() as cluster:
        url = cluster.create_database()
"""

from __future__ import annotations

import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

USER = "schedctl"
PASSWORD = "schedctl-test-password"
TEMPLATE = "schedctl_template"
_counter = itertools.count(1)


class PgUnavailable(RuntimeError):
    """No PostgreSQL binaries, or the cluster did not start (the message says which)."""


def pg_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/N/bin`` with ``initdb`` and ``pg_ctl``."""
    root = Path("/usr/lib/postgresql")
    found = sorted(
        (p for p in root.glob("*/bin") if (p / "initdb").exists() and (p / "pg_ctl").exists()),
        key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
    )
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class PgCluster:
    bindir: Path
    root: Path
    port: int
    host: str = "127.0.0.1"
    user: str = USER
    password: str = PASSWORD
    _as_postgres: list[str] = field(default_factory=list)

    @property
    def socket_dir(self) -> Path:
        return self.root

    @classmethod
    @contextmanager
    def start(cls) -> Iterator[PgCluster]:
        cluster = cls.launch()
        try:
            yield cluster
        finally:
            cluster.stop()

    @classmethod
    def launch(cls) -> PgCluster:
        bindir = pg_bindir()
        if bindir is None:
            raise PgUnavailable("PostgreSQL is not installed (run scripts/ensure-postgres.sh)")
        root = Path(tempfile.mkdtemp(prefix="schedctl-pg-"))
        as_postgres: list[str] = []
        if os.geteuid() == 0:
            try:
                owner = pwd.getpwnam("postgres")
            except KeyError:
                raise PgUnavailable("running as root and there is no postgres user") from None
            os.chown(root, owner.pw_uid, owner.pw_gid)
            as_postgres = ["runuser", "-u", "postgres", "--"]
        cluster = cls(bindir, root, _free_port(), _as_postgres=as_postgres)
        try:
            cluster._init_and_start()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    def _run(self, *argv: str) -> None:
        done = subprocess.run(
            [*self._as_postgres, *argv], capture_output=True, text=True, timeout=120, check=False
        )
        if done.returncode != 0:
            raise PgUnavailable(
                f"{Path(argv[0]).name} failed ({done.returncode}): "
                f"{(done.stderr or done.stdout).strip()[-2000:]}"
            )

    def _init_and_start(self) -> None:
        data = self.root / "data"
        self._run(
            str(self.bindir / "initdb"), "-D", str(data), "-U", "postgres", "-E", "UTF8",
            "--auth-local=trust", "--auth-host=scram-sha-256", "--no-sync",
        )  # fmt: skip
        options = (
            f"-p {self.port} -k {self.root} -c listen_addresses={self.host} -c fsync=off "
            "-c synchronous_commit=off -c full_page_writes=off -c max_connections=400 "
            "-c shared_buffers=128MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"), "-D", str(data), "-o", options,
            "-l", str(self.root / "server.log"), "-w", "-t", "60", "start",
        )  # fmt: skip
        self.admin(f"CREATE ROLE {self.user} LOGIN CREATEDB PASSWORD '{self.password}'")
        self.admin(f"CREATE DATABASE {TEMPLATE} OWNER {self.user}")
        from scheduler.store.engine import Store

        Store(self.url(TEMPLATE), password=self.password, migrate=True).close()

    def admin(self, sql: str, dbname: str = "postgres") -> None:
        """Run ``sql`` as the superuser over the cluster's Unix socket."""
        import psycopg

        with psycopg.connect(
            host=str(self.socket_dir), port=self.port, user="postgres", dbname=dbname,
            autocommit=True,
        ) as conn:  # fmt: skip
            conn.execute(sql.encode())

    def url(self, dbname: str, user: str | None = None) -> str:
        """The store URL of ``dbname`` (no password in it: pass ``password``)."""
        return f"postgresql://{user or self.user}@{self.host}:{self.port}/{dbname}"

    def create_database(self, *, empty: bool = False) -> str:
        """A new database (migrated, unless ``empty``); its store URL."""
        name = f"t{os.getpid()}_{next(_counter)}"
        template = "template0" if empty else TEMPLATE
        self.admin(f"CREATE DATABASE {name} OWNER {self.user} TEMPLATE {template}")
        return self.url(name)

    def drop_database(self, url: str) -> None:
        name = url.rsplit("/", 1)[-1]
        self.admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    def stop(self) -> None:
        data = self.root / "data"
        if (data / "postmaster.pid").exists():
            subprocess.run(
                [*self._as_postgres, str(self.bindir / "pg_ctl"), "-D", str(data), "-m",
                 "immediate", "-w", "stop"],
                capture_output=True, timeout=60, check=False,
            )  # fmt: skip
        shutil.rmtree(self.root, ignore_errors=True)
