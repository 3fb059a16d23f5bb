"""Throwaway RabbitMQ nodes for tests and local runs, without root services or Docker.

``LocalRabbitMQ`` runs the Debian/Ubuntu ``rabbitmq-server`` package's binaries
(``/usr/lib/rabbitmq/bin``) as the current user, with every piece of state in one
directory (a fresh temporary one by default):

    <base>/mnesia/          RABBITMQ_MNESIA_BASE (message store, quorum queue logs)
    <base>/log/             RABBITMQ_LOG_BASE (+ server.out: the server's stdout/stderr)
    <base>/home/            HOME for the server *and* for rabbitmqctl (.erlang.cookie)
    <base>/enabled_plugins  RABBITMQ_ENABLED_PLUGINS_FILE
    <base>/rabbitmq.conf    RABBITMQ_CONFIG_FILE (given without the .conf suffix)

Everything listens on 127.0.0.1 only, on ports picked at construction time: AMQP,
Erlang distribution, a private ``epmd`` (so the node neither needs nor disturbs a
system epmd on 4369) and, when those plugins are enabled, the management and
Prometheus HTTP listeners.  Ports and the data directory stay the same across
``restart()``, so durable state (quorum queues, persistent messages) survives it.

Do NOT use ``/usr/sbin/rabbitmqctl``: that wrapper switches to the ``rabbitmq``
user and reads *its* Erlang cookie.  ``LocalRabbitMQ.ctl()`` runs
``/usr/lib/rabbitmq/bin/rabbitmqctl -n NODE`` with the node's own environment.

Command line (used by the README's run-locally instructions)::

    python -m devtools.rabbitmq_node [--plugins rabbitmq_management rabbitmq_prometheus]

starts a node, prints its AMQP URL on the first line of stdout, and keeps it up
until SIGINT/SIGTERM, then stops it and removes its data directory.
"""

from __future__ import annotations

import argparse
import atexit
import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterable
from pathlib import Path
from types import TracebackType

from devtools.local_processes import (
    LOOPBACK,
    free_ports,
    group_alive,
    log_tail,
    port_open,
    stop_process,
)

RABBITMQ_BIN_DIR = Path("/usr/lib/rabbitmq/bin")
RABBITMQ_SERVER = RABBITMQ_BIN_DIR / "rabbitmq-server"
RABBITMQCTL = RABBITMQ_BIN_DIR / "rabbitmqctl"

MANAGEMENT_PLUGIN = "rabbitmq_management"
PROMETHEUS_PLUGIN = "rabbitmq_prometheus"

_LOOPBACK_ERL = "{127,0,0,1}"
_PLUGIN_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
_CTL_TIMEOUT = 60.0


class RabbitMQNodeError(RuntimeError):
    """The local node could not be started, stopped or controlled."""


def rabbitmq_available() -> bool:
    """True when the rabbitmq-server package's binaries are installed."""
    return RABBITMQ_SERVER.exists() and RABBITMQCTL.exists()


def _epmd_executable() -> str:
    return shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"


def start_epmd(port: int, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    """Run an epmd on 127.0.0.1:``port`` as our own child and wait until it listens."""
    epmd = subprocess.Popen(
        [_epmd_executable(), "-port", str(port), "-address", LOOPBACK],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 10
    while not port_open(port):
        if epmd.poll() is not None or time.monotonic() > deadline:
            stop_process(epmd)
            raise RabbitMQNodeError(
                f"epmd on 127.0.0.1:{port} did not start (exit code {epmd.returncode})"
            )
        time.sleep(0.02)
    return epmd


class LocalRabbitMQ:
    """A throwaway single RabbitMQ node on loopback ports.

    Usage::

        with LocalRabbitMQ() as node:
            conn = pika.BlockingConnection(pika.URLParameters(node.url))
            ...
            node.restart()  # same data dir and ports; quorum-queue messages survive

    ``stop()`` leaves the data directory for a later ``start()``; ``close()`` (also
    run by ``__exit__`` and at interpreter exit) stops the node and deletes the
    directory if this object created it.
    """

    def __init__(
        self,
        plugins: Iterable[str] = (),
        base_dir: str | os.PathLike[str] | None = None,
        *,
        nodename: str | None = None,
        startup_timeout: float = 90.0,
        stop_timeout: float = 30.0,
    ) -> None:
        self.plugins: tuple[str, ...] = tuple(dict.fromkeys(plugins))
        for plugin in self.plugins:
            if not _PLUGIN_NAME.match(plugin):
                raise ValueError(f"not a RabbitMQ plugin name: {plugin!r}")
        if not rabbitmq_available():
            raise RabbitMQNodeError(
                f"{RABBITMQ_SERVER} not found: install the broker "
                "(apt-get install -y rabbitmq-server) or point RABBITMQ_URL at one"
            )
        self._owns_dir = base_dir is None
        if base_dir is None:
            self.base_dir = Path(tempfile.mkdtemp(prefix="wh-rabbitmq-"))
        else:
            self.base_dir = Path(base_dir).resolve()
            self.base_dir.mkdir(parents=True, exist_ok=True)
        # A given base_dir keeps its node name (the data lives under mnesia/<nodename>),
        # so a later LocalRabbitMQ(base_dir=same) finds the same queues and messages.
        name_file = self.base_dir / "nodename"
        if nodename is None and name_file.is_file():
            nodename = name_file.read_text().strip() or None
        self.nodename = nodename or f"wh-{secrets.token_hex(4)}@localhost"
        name_file.write_text(self.nodename + "\n")
        self.startup_timeout = startup_timeout
        self.stop_timeout = stop_timeout

        ports = iter(free_ports(5))
        self.port: int = next(ports)
        self.dist_port: int = next(ports)
        self.epmd_port: int = next(ports)
        mgmt, prom = next(ports), next(ports)
        self.management_port: int | None = mgmt if MANAGEMENT_PLUGIN in self.plugins else None
        self.prometheus_port: int | None = prom if PROMETHEUS_PLUGIN in self.plugins else None

        self.mnesia_dir = self.base_dir / "mnesia"
        self.log_dir = self.base_dir / "log"
        self.home_dir = self.base_dir / "home"
        self._proc: subprocess.Popen[bytes] | None = None
        self._epmd: subprocess.Popen[bytes] | None = None
        self._lock = threading.RLock()
        self._closed = False
        self._write_files()
        atexit.register(self.close)

    # ------------------------------------------------------------------ config

    @property
    def url(self) -> str:
        """AMQP URL of the default vhost ``/``."""
        return self.url_for_vhost("/")

    def url_for_vhost(self, vhost: str) -> str:
        return f"amqp://guest:guest@{LOOPBACK}:{self.port}/{urllib.parse.quote(vhost, safe='')}"

    @property
    def management_url(self) -> str | None:
        """``http://127.0.0.1:<port>`` of the management HTTP API, when that plugin is on."""
        return None if self.management_port is None else f"http://{LOOPBACK}:{self.management_port}"

    @property
    def prometheus_url(self) -> str | None:
        """``http://127.0.0.1:<port>/metrics``, when rabbitmq_prometheus is enabled."""
        if self.prometheus_port is None:
            return None
        return f"http://{LOOPBACK}:{self.prometheus_port}/metrics"

    @property
    def log_file(self) -> Path:
        return self.log_dir / f"{self.nodename}.log"

    @property
    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def _write_files(self) -> None:
        for d in (self.mnesia_dir, self.log_dir, self.home_dir):
            d.mkdir(parents=True, exist_ok=True)
        plugins = ",".join(self.plugins)
        (self.base_dir / "enabled_plugins").write_text(f"[{plugins}].\n")
        conf = [
            "loopback_users = none",
            f"listeners.tcp.default = {LOOPBACK}:{self.port}",
        ]
        if self.management_port is not None:
            conf += [
                f"management.tcp.port = {self.management_port}",
                f"management.tcp.ip = {LOOPBACK}",
            ]
        if self.prometheus_port is not None:
            conf += [
                f"prometheus.tcp.port = {self.prometheus_port}",
                f"prometheus.tcp.ip = {LOOPBACK}",
                "prometheus.return_per_object_metrics = true",
            ]
        (self.base_dir / "rabbitmq.conf").write_text("\n".join(conf) + "\n")
        # An empty env file shadows /etc/rabbitmq/rabbitmq-env.conf.
        (self.base_dir / "rabbitmq-env.conf").write_text("")

    def _env(self) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("RABBITMQ_", "ERL_", "CONF_ENV_FILE"))
        }
        erl_args = f"-kernel inet_dist_use_interface {_LOOPBACK_ERL}"
        env.update(
            HOME=str(self.home_dir),
            LC_ALL=env.get("LC_ALL") or "C.UTF-8",
            RABBITMQ_NODENAME=self.nodename,
            RABBITMQ_MNESIA_BASE=str(self.mnesia_dir),
            RABBITMQ_LOG_BASE=str(self.log_dir),
            RABBITMQ_NODE_IP_ADDRESS=LOOPBACK,
            RABBITMQ_NODE_PORT=str(self.port),
            RABBITMQ_DIST_PORT=str(self.dist_port),
            RABBITMQ_ENABLED_PLUGINS_FILE=str(self.base_dir / "enabled_plugins"),
            RABBITMQ_CONFIG_FILE=str(self.base_dir / "rabbitmq"),
            RABBITMQ_ADVANCED_CONFIG_FILE=str(self.base_dir / "advanced.config"),
            RABBITMQ_CONF_ENV_FILE=str(self.base_dir / "rabbitmq-env.conf"),
            RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=erl_args,
            RABBITMQ_CTL_ERL_ARGS=erl_args,
            # Private epmd on loopback: no clash with a system node, nothing on 0.0.0.0:4369.
            ERL_EPMD_PORT=str(self.epmd_port),
            ERL_EPMD_ADDRESS=LOOPBACK,
        )
        return env

    # --------------------------------------------------------------- lifecycle

    def start(self) -> LocalRabbitMQ:
        """Start the node (no-op if running) and wait until it has fully booted."""
        with self._lock:
            if self._closed:
                raise RabbitMQNodeError("this LocalRabbitMQ has been closed")
            if self.is_running:
                return self
            self._write_files()
            self._start_epmd()
            out = (self.log_dir / "server.out").open("ab")
            try:
                self._proc = subprocess.Popen(
                    [str(RABBITMQ_SERVER)],
                    env=self._env(),
                    cwd=self.base_dir,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            finally:
                out.close()
            try:
                self._wait_for_startup()
            except BaseException:
                self._kill_group(graceful=False)
                self._kill_epmd()
                raise
            return self

    def _wait_for_startup(self) -> None:
        assert self._proc is not None
        deadline = time.monotonic() + self.startup_timeout
        # Cheap poll first: the AMQP listener opens late in the boot sequence; a
        # rabbitmqctl call costs ~0.7 s of Erlang VM start-up each time.
        while not port_open(self.port):
            if self._proc.poll() is not None:
                raise self._failure(f"rabbitmq-server exited with code {self._proc.returncode}")
            if time.monotonic() > deadline:
                raise self._failure(f"port {self.port} not open after {self.startup_timeout:.0f}s")
            time.sleep(0.1)
        remaining = max(5, int(deadline - time.monotonic()))
        try:
            self.ctl("await_startup", "--timeout", str(remaining), timeout=remaining + 15)
        except (RabbitMQNodeError, subprocess.TimeoutExpired) as exc:
            raise self._failure(f"await_startup failed: {exc}") from exc
        if self._proc.poll() is not None:
            raise self._failure(f"rabbitmq-server exited with code {self._proc.returncode}")

    def _failure(self, what: str) -> RabbitMQNodeError:
        return RabbitMQNodeError(
            f"RabbitMQ node {self.nodename} in {self.base_dir} failed to start: {what}\n"
            f"--- tail of {self.log_file} ---\n{log_tail(self.log_file, 40)}\n"
            f"--- tail of server.out ---\n{log_tail(self.log_dir / 'server.out', 20)}"
        )

    def stop(self, *, graceful: bool = True) -> None:
        """Stop the node; leaves the data directory, so ``start()`` brings it back.

        Graceful: ``rabbitmqctl stop``, then SIGTERM/SIGKILL to the process group if
        the node is still around.  ``graceful=False`` SIGKILLs at once (a crash).
        Either way no beam.smp of this node and no private epmd survive the call.
        Note: with any HTTP plugin (management/prometheus) a graceful stop takes
        ~5 s longer (RabbitMQ 3.10's management agent waits on shutdown).
        """
        with self._lock:
            proc = self._proc
            if graceful and proc is not None and proc.poll() is None:
                with contextlib.suppress(RabbitMQNodeError, subprocess.TimeoutExpired, OSError):
                    self.ctl("stop", timeout=self.stop_timeout)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    proc.wait(timeout=self.stop_timeout)
            self._kill_group(graceful=graceful)
            self._kill_epmd()
            self._proc = None

    def restart(self) -> None:
        """Stop and start again with the same data directory and ports."""
        with self._lock:
            self.stop()
            self.start()

    def close(self) -> None:
        """Stop the node and delete its directory (if created by us). Idempotent."""
        with self._lock:
            if self._closed:
                return
            try:
                # Nothing to preserve when the directory is about to be deleted.
                self.stop(graceful=not self._owns_dir)
            finally:
                self._closed = True
                atexit.unregister(self.close)
                if self._owns_dir:
                    shutil.rmtree(self.base_dir, ignore_errors=True)

    def _kill_group(self, *, graceful: bool = True) -> None:
        """Make sure nothing of the server's process group (sh, beam.smp) survives."""
        proc = self._proc
        if proc is None:
            return
        pgid = proc.pid  # start_new_session=True: the group id is the leader's pid
        # rabbitmq-server traps TERM and shuts the VM down cleanly; KILL is the backstop.
        steps = [(signal.SIGKILL, 5.0)]
        if graceful:
            steps.insert(0, (signal.SIGTERM, 15.0))
        for sig, grace in steps:
            proc.poll()  # reap the leader so an empty group really is empty
            if not group_alive(pgid):
                break
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pgid, sig)
            deadline = time.monotonic() + grace
            while time.monotonic() < deadline:
                proc.poll()
                if not group_alive(pgid):
                    break
                time.sleep(0.1)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=5)

    def _start_epmd(self) -> None:
        """Run this node's private epmd as our own child (not ``-daemon``).

        If the VM spawned it, it would be a detached daemon that ``epmd -kill``
        refuses to stop while the killed node is still registered: one leaked
        epmd per node.  Owning the process lets stop() terminate and reap it.
        """
        if self._epmd is not None and self._epmd.poll() is None:
            return
        self._epmd = start_epmd(self.epmd_port, env=self._env())

    def _kill_epmd(self) -> None:
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            stop_process(epmd)
        # Backstop for a daemon epmd that a CLI tool may have spawned on our port.
        if port_open(self.epmd_port):
            with contextlib.suppress(OSError, subprocess.TimeoutExpired):
                subprocess.run(
                    [_epmd_executable(), "-port", str(self.epmd_port), "-kill"],
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                    timeout=10,
                    check=False,
                )

    # ----------------------------------------------------------------- control

    def ctl(self, *args: str, timeout: float = _CTL_TIMEOUT) -> str:
        """Run ``rabbitmqctl -n NODE *args`` against this node; return its stdout.

        Raises RabbitMQNodeError on a non-zero exit.  Pass ``"-q"`` first to drop
        the informational header lines from listing commands.
        """
        result = subprocess.run(
            [str(RABBITMQCTL), "-n", self.nodename, *args],
            env=self._env(),
            cwd=self.base_dir,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if result.returncode != 0:
            raise RabbitMQNodeError(
                f"rabbitmqctl {' '.join(args)} exited {result.returncode}: "
                f"{(result.stderr or result.stdout).strip()}"
            )
        return result.stdout

    def add_vhost(self, vhost: str, user: str = "guest") -> str:
        """Create ``vhost`` with full permissions for ``user``; return its AMQP URL."""
        self.ctl("add_vhost", vhost)
        self.ctl("set_permissions", "-p", vhost, user, ".*", ".*", ".*")
        return self.url_for_vhost(vhost)

    def delete_vhost(self, vhost: str) -> None:
        self.ctl("delete_vhost", vhost)

    # ------------------------------------------------------- context manager

    def __enter__(self) -> LocalRabbitMQ:
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
        return f"<LocalRabbitMQ {self.nodename} {state} amqp={self.port} dir={self.base_dir}>"


# -------------------------------------------------------------------------- CLI


def _serve(node: LocalRabbitMQ) -> None:
    """Block until SIGINT/SIGTERM, or raise if the node dies on its own."""
    stop = threading.Event()

    def handler(signum: int, frame: object) -> None:
        stop.set()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        while not stop.wait(1.0):
            if not node.is_running:
                raise RabbitMQNodeError(f"node {node.nodename} exited unexpectedly")
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.rabbitmq_node",
        description="Run a throwaway RabbitMQ node on 127.0.0.1 until SIGINT/SIGTERM. "
        "Prints the AMQP URL on the first line of stdout.",
    )
    parser.add_argument(
        "--plugins",
        nargs="*",
        default=[],
        metavar="PLUGIN",
        help=f"plugins to enable, e.g. {MANAGEMENT_PLUGIN} {PROMETHEUS_PLUGIN}",
    )
    parser.add_argument(
        "--base-dir",
        help="keep the node's state in this directory (kept afterwards, reused by the "
        "next run) instead of a fresh temp dir",
    )
    args = parser.parse_args(argv)

    node = LocalRabbitMQ(plugins=args.plugins, base_dir=args.base_dir)
    try:
        node.start()
        print(node.url, flush=True)
        info = [f"node {node.nodename}, data in {node.base_dir}"]
        if node.management_url:
            info.append(f"management UI: {node.management_url}/ (guest/guest)")
        if node.prometheus_url:
            info.append(f"prometheus metrics: {node.prometheus_url}")
        info.append("Ctrl-C to stop")
        print("\n".join(info), file=sys.stderr, flush=True)
        _serve(node)
    except RabbitMQNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        node.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
