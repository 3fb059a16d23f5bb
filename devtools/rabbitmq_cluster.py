"""A throwaway RabbitMQ cluster of local nodes, for failover tests and experiments.

Each member is a :class:`~devtools.rabbitmq_node.LocalRabbitMQ` with its own
data directory and AMQP port. What clustering needs on top:

* one Erlang cookie shared by every node (and by rabbitmqctl);
* one epmd for all of them: Erlang nodes find each other through epmd, so
  the private epmd each standalone node gets would keep them apart;
* ``join_cluster``: ``stop_app``, ``reset``, ``join_cluster <first node>``,
  ``start_app`` on every node but the first.

Command line::

    python -m devtools.rabbitmq_cluster [--size 3]

prints the comma-separated AMQP URLs (the form ``RABBITMQ_URL`` takes) on the
first line and keeps the cluster up until SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import contextlib
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from devtools.local_processes import free_ports, stop_process
from devtools.rabbitmq_node import LocalRabbitMQ, RabbitMQNodeError, start_epmd


class _Member(LocalRabbitMQ):
    """A node that uses the cluster's epmd and cookie instead of its own."""

    def __init__(self, cluster: LocalRabbitMQCluster, base_dir: Path) -> None:
        super().__init__(base_dir=base_dir)
        self._cluster = cluster
        self.epmd_port = cluster.epmd_port
        cookie = self.home_dir / ".erlang.cookie"
        cookie.write_text(cluster.cookie)
        cookie.chmod(0o400)

    def _start_epmd(self) -> None:
        self._cluster.start_epmd()

    def _kill_epmd(self) -> None:
        """The shared epmd outlives any one member."""


class LocalRabbitMQCluster:
    """``size`` local nodes joined into one cluster; ``nodes[0]`` is the seed."""

    def __init__(self, size: int = 3) -> None:
        if size < 1:
            raise ValueError("a cluster needs at least one node")
        self.base_dir = Path(tempfile.mkdtemp(prefix="wh-cluster-"))
        self.epmd_port = free_ports(1)[0]
        self.cookie = secrets.token_hex(20).upper()
        self._epmd: subprocess.Popen[bytes] | None = None
        self._lock = threading.Lock()
        self.nodes = [_Member(self, self.base_dir / f"node{i}") for i in range(size)]

    @property
    def urls(self) -> list[str]:
        return [node.url for node in self.nodes]

    @property
    def url(self) -> str:
        """All members' URLs, comma separated (``RABBITMQ_URL`` form)."""
        return ",".join(self.urls)

    def start_epmd(self) -> None:
        with self._lock:
            if self._epmd is not None and self._epmd.poll() is None:
                return
            self._epmd = start_epmd(self.epmd_port)

    def start(self) -> LocalRabbitMQCluster:
        """Start every node (in parallel), then join them all to ``nodes[0]``."""
        errors: list[BaseException] = []

        def boot(node: LocalRabbitMQ) -> None:
            try:
                node.start()
            except BaseException as exc:
                errors.append(exc)

        threads = [threading.Thread(target=boot, args=(node,)) for node in self.nodes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if errors:
            raise errors[0]
        seed = self.nodes[0].nodename
        for node in self.nodes[1:]:
            node.ctl("stop_app")
            node.ctl("reset")
            node.ctl("join_cluster", seed)
            node.ctl("start_app")
        self.nodes[0].ctl("await_online_nodes", str(len(self.nodes)), "--timeout", "60")
        return self

    def running_nodes(self, via: LocalRabbitMQ | None = None) -> list[str]:
        """Names of the members a running node sees as up."""
        node = via or next(n for n in self.nodes if n.is_running)
        out = node.ctl("-q", "eval", "rabbit_nodes:all_running().")
        return sorted(name.strip(" []'\n") for name in out.split(",") if name.strip(" []\n"))

    def close(self) -> None:
        """Kill every node and the shared epmd; delete all data. Idempotent."""
        for node in self.nodes:
            with contextlib.suppress(Exception):
                node.stop(graceful=False)
            with contextlib.suppress(Exception):
                node.close()
        epmd, self._epmd = self._epmd, None
        if epmd is not None:
            stop_process(epmd)
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> LocalRabbitMQCluster:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m devtools.rabbitmq_cluster",
        description="Run a throwaway RabbitMQ cluster on 127.0.0.1 until SIGINT/SIGTERM.",
    )
    parser.add_argument("--size", type=int, default=3)
    args = parser.parse_args(argv)
    cluster = LocalRabbitMQCluster(args.size)
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        cluster.start()
        print(cluster.url, flush=True)
        print(f"nodes: {', '.join(n.nodename for n in cluster.nodes)}", file=sys.stderr)
        stop.wait()
    except RabbitMQNodeError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    finally:
        cluster.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
