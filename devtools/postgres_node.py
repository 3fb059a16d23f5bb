"""Throwaway PostgreSQL clusters for tests and local runs, without a system service or Docker.

``LocalPostgres`` runs Debian's ``postgresql`` 15 binaries (``/usr/lib/postgresql/15/bin``)
with every piece of state in one fresh temporary directory:

    <base>/data/        the cluster (initdb), owned by the user the server runs as
    <base>/server.log   the server's log (pg_ctl -l)
    <base>/.s.PGSQL.*   its Unix socket (-k <base>)

The server listens on 127.0.0.1 only, on a free port, with password (SCRAM)
authentication over TCP, so the URL tests get carries a real password.
PostgreSQL refuses to run as root: under root every command goes through
``runuser -u postgres --`` and the directory is handed to that user.
``close()`` (also run by ``__exit__`` and at interpreter exit) stops the server
and deletes the directory; no process is left behind.

Command line::

    python -m devtools.postgres_node

starts a cluster, prints its URL on the first line of stdout, and keeps it up
until SIGINT/SIGTERM.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from types import TracebackType

from devtools.local_processes import LOOPBACK, free_ports

POSTGRES_BIN_DIR = Path("/usr/lib/postgresql/15/bin")
POSTGRES = POSTGRES_BIN_DIR / "postgres"
INITDB = POSTGRES_BIN_DIR / "initdb"
PG_CTL = POSTGRES_BIN_DIR / "pg_ctl"
SERVICE_USER = "postgres"  # the Debian package's user, for running as root
SUPERUSER = "postgres"


class PostgresNodeError(RuntimeError):
    """The local cluster could not be created, started or stopped."""


def postgres_available() -> bool:
    """True when the postgresql 15 package's server binaries are installed."""
    return POSTGRES.exists() and INITDB.exists() and PG_CTL.exists()


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server of ``server_url``; return its URL."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return server_url.rsplit("/", 1)[0] + "/" + name


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name`` (closing its leftover connections)."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


def _server_pids(postmaster: int) -> list[int]:
    """The live (non-zombie) postmaster ``postmaster`` and its children, from /proc."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid ..."; comm may contain spaces and parentheses.
        state, ppid = stat[stat.rfind(")") + 2 :].split()[:2]
        pid = int(entry.name)
        if state != "Z" and postmaster in (pid, int(ppid)):
            pids.append(pid)
    return pids


class LocalPostgres:
    """A throwaway PostgreSQL 15 cluster on a loopback port.

    Usage::

        with LocalPostgres() as pg:
            engine = sqlalchemy.create_engine(pg.url.replace("postgresql", "postgresql+psycopg"))
    """

    def __init__(self, *, database: str = "webhooks", startup_timeout: float = 60.0) -> None:
        if not postgres_available():
            raise PostgresNodeError(
                f"{POSTGRES} not found: install the server (apt-get install -y postgresql; "
                "no cluster needs to run) or point POSTGRES_URL at one"
            )
        self.database = database
        self.startup_timeout = startup_timeout
        self.base_dir = Path(tempfile.mkdtemp(prefix="wh-postgres-"))
        self.data_dir = self.base_dir / "data"
        self.log_file = self.base_dir / "server.log"
        (self.port,) = free_ports(1)
        self.password = secrets.token_urlsafe(18)
        self._as_service_user: list[str] = []
        if os.geteuid() == 0:
            service = pwd.getpwnam(SERVICE_USER)
            os.chown(self.base_dir, service.pw_uid, service.pw_gid)
            self._as_service_user = ["runuser", "-u", SERVICE_USER, "--"]
        self._lock = threading.RLock()
        self._postmaster: int | None = None
        self._closed = False
        atexit.register(self.close)

    @property
    def url(self) -> str:
        """``postgresql://postgres:PASSWORD@127.0.0.1:PORT/<database>``."""
        return self.url_for(self.database)

    def url_for(self, database: str) -> str:
        return f"postgresql://{SUPERUSER}:{self.password}@{LOOPBACK}:{self.port}/{database}"

    @property
    def is_running(self) -> bool:
        return self._postmaster is not None and self._postmaster in _server_pids(self._postmaster)

    def start(self) -> LocalPostgres:
        """Create the cluster (first time), start it, and create the database."""
        with self._lock:
            if self._closed:
                raise PostgresNodeError("this LocalPostgres has been closed")
            if self.is_running:
                return self
            fresh = not self.data_dir.exists()
            if fresh:
                self._initdb()
            options = (
                f"-p {self.port} -k {self.base_dir} -c listen_addresses={LOOPBACK} "
                # Throwaway data: durability only costs test time.
                "-c fsync=off -c synchronous_commit=off -c full_page_writes=off"
            )
            try:
                self._run(
                    str(PG_CTL), "-D", str(self.data_dir), "-l", str(self.log_file),
                    "-o", options, "-w", "-t", str(int(self.startup_timeout)), "start",
                    timeout=self.startup_timeout + 15,
                )  # fmt: skip
                self._postmaster = self._read_postmaster_pid()
                if fresh:
                    create_database(self.url_for("postgres"), self.database)
            except BaseException:
                self._kill()
                raise
            return self

    def _initdb(self) -> None:
        password_file = self.base_dir / "password"
        fd = os.open(password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(self.password + "\n")
        if self._as_service_user:
            service = pwd.getpwnam(SERVICE_USER)
            os.chown(password_file, service.pw_uid, service.pw_gid)
        try:
            self._run(
                str(INITDB), "-D", str(self.data_dir), "-U", SUPERUSER,
                f"--pwfile={password_file}", "--auth-local=trust",
                "--auth-host=scram-sha-256", "-E", "UTF8", "--no-locale", "--no-sync",
                timeout=120,
            )  # fmt: skip
        finally:
            password_file.unlink(missing_ok=True)

    def _read_postmaster_pid(self) -> int:
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError) as exc:
            raise PostgresNodeError(f"no postmaster.pid after start: {exc}") from None

    def stop(self) -> None:
        """Stop the server (fast shutdown), killing whatever is left of it."""
        with self._lock:
            if self._postmaster is None:
                return
            with contextlib.suppress(PostgresNodeError, subprocess.TimeoutExpired):
                self._run(
                    str(PG_CTL), "-D", str(self.data_dir), "-m", "fast", "-w", "-t", "30", "stop",
                    timeout=45,
                )  # fmt: skip
            self._kill()

    def _kill(self) -> None:
        """Backstop: SIGKILL the postmaster and its children, and wait until they are gone.

        Every server process makes itself a session leader, so they share no process
        group to signal; they are found by parent pid instead.
        """
        postmaster, self._postmaster = self._postmaster, None
        if postmaster is None:
            with contextlib.suppress(PostgresNodeError):
                postmaster = self._read_postmaster_pid()
        if postmaster is None or not self._is_our_postmaster(postmaster):
            return  # gone (or a stale pid file naming some other process now)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            alive = _server_pids(postmaster)
            if not alive:
                return
            for pid in alive:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.1)

    def _is_our_postmaster(self, pid: int) -> bool:
        try:
            command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
        return str(self.data_dir).encode() in command

    def close(self) -> None:
        """Stop the server and delete its directory. Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                self.stop()
            finally:
                self._closed = True
                atexit.unregister(self.close)
                shutil.rmtree(self.base_dir, ignore_errors=True)

    def _run(self, *command: str, timeout: float) -> None:
        # PG* variables of the caller (PGDATA, PGPORT...) must not steer these tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        result = subprocess.run(
            [*self._as_service_user, *command],
            cwd=self.base_dir,  # the service user may not enter the caller's cwd
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            log = ""
            with contextlib.suppress(OSError):
                log = "\n".join(self.log_file.read_text().splitlines()[-20:])
            raise PostgresNodeError(
                f"{Path(command[0]).name} {command[-1]} exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}\n--- server.log ---\n{log}"
            )

    def __enter__(self) -> LocalPostgres:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        state = "running" if self.is_running else "stopped"
        return f"<LocalPostgres {state} port={self.port} dir={self.base_dir}>"


def main() -> int:
    stop = threading.Event()
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop.set())
    try:
        with LocalPostgres() as node:
            print(node.url, flush=True)
            print(f"data in {node.base_dir}; Ctrl-C to stop", file=sys.stderr, flush=True)
            while not stop.wait(1.0):
                if not node.is_running:
                    raise PostgresNodeError("the server exited unexpectedly")
    except PostgresNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
