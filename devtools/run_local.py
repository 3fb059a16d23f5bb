"""Run the whole system on one machine: broker, demo receiver, worker, sample events.

``python -m devtools.run_local`` (what ``scripts/run-local`` ends with):

1. uses ``$RABBITMQ_URL`` or starts a throwaway RabbitMQ node on loopback;
2. starts the demo receiver (it verifies every signature) and a worker process;
3. publishes the product page's three sample events and prints each delivery
   as the receiver verifies it (one first attempt fails on purpose, so a retry
   through the delay queue shows up too);
4. with ``--keep-running`` stays up (metrics on the printed port) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from broker.url import BrokerUrl
from config.logs import configure_logging
from devtools.rabbitmq_node import PROMETHEUS_PLUGIN, LocalRabbitMQ, free_ports
from producer import Publisher
from wire.samples import SAMPLE_EVENTS, sample_data

# The demo merchant; its endpoint only ever receives this account's events.
DEMO_ACCOUNT = "demo-merchant"

SUBSCRIBERS = """\
subscribers:
  - id: demo-shop
    account: {account}
    url: http://127.0.0.1:{port}/webhook
    secret: ${{DEMO_SHOP_SECRET}}
    events: ["order.*"]
retry:
  delays_seconds: [2, 5]
security:
  allow_private_networks: true   # the demo receiver is on loopback
"""


def _say(message: str) -> None:
    print(f"==> {message}", flush=True)


def _wait_ready(url: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit(f"run-local: {url} not ready after {timeout:.0f} s")


def _follow(process: subprocess.Popen[str], prefix: str, lines: list[str]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.append(line)
        print(f"[{prefix}] {line}", end="", flush=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run-local", description=__doc__.splitlines()[0])
    parser.add_argument("--keep-running", action="store_true", help="stay up until Ctrl-C")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for deliveries")
    args = parser.parse_args(argv)
    configure_logging("console", "warning", stream=sys.stderr)

    node: LocalRabbitMQ | None = None
    processes: list[subprocess.Popen[str]] = []
    try:
        url = os.environ.get("RABBITMQ_URL")
        if url:
            _say(f"using RabbitMQ at {BrokerUrl.parse(url).redacted}")
        else:
            _say("starting a throwaway RabbitMQ node on 127.0.0.1 ...")
            node = LocalRabbitMQ(plugins=[PROMETHEUS_PLUGIN]).start()
            url = node.url
            _say(f"RabbitMQ up at {url} (Prometheus metrics on :{node.prometheus_port})")

        receiver_port, metrics_port = free_ports(2)
        secret = secrets.token_urlsafe(24)
        workdir = Path(tempfile.mkdtemp(prefix="webhooks-local-"))
        config_file = workdir / "subscribers.yaml"
        config_file.write_text(
            SUBSCRIBERS.format(port=receiver_port, account=DEMO_ACCOUNT), encoding="utf-8"
        )
        env = {
            **os.environ,
            "RABBITMQ_URL": url,
            "WEBHOOK_CONFIG": str(config_file),
            "DEMO_SHOP_SECRET": secret,
            "WEBHOOK_SECRET": secret,
            "METRICS_PORT": str(metrics_port),
            "LOG_FORMAT": "console",
            "DEMO_FAIL_RATE": "0.34",
            "PYTHONUNBUFFERED": "1",
        }
        received: list[str] = []
        receiver = subprocess.Popen(
            [sys.executable, "-m", "devtools.demo_receiver", "--port", str(receiver_port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(receiver)
        threading.Thread(target=_follow, args=(receiver, "receiver", received), daemon=True).start()
        worker = subprocess.Popen(
            [sys.executable, "-m", "worker", "run"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        processes.append(worker)
        threading.Thread(target=_follow, args=(worker, "worker", []), daemon=True).start()
        _wait_ready(f"http://127.0.0.1:{metrics_port}/readyz", timeout=60)
        _say(f"worker ready; metrics at http://127.0.0.1:{metrics_port}/metrics")

        with Publisher(BrokerUrl.parse(url)) as publisher:
            ids = [
                publisher.publish(e, sample_data(e), account=DEMO_ACCOUNT) for e in SAMPLE_EVENTS
            ]
        _say(f"published {len(ids)} sample events: {', '.join(ids)}")

        deadline = time.monotonic() + args.timeout
        while time.monotonic() < deadline:
            verified = {i for i in ids if any("VERIFIED" in ln and i in ln for ln in received)}
            if len(verified) == len(ids):
                break
            time.sleep(0.2)
        missing = [i for i in ids if not any("VERIFIED" in ln and i in ln for ln in received)]
        if missing:
            _say(f"NOT delivered within {args.timeout:.0f} s: {', '.join(missing)}")
            return 1
        _say(f"all {len(ids)} events delivered and their signatures verified")
        if args.keep_running:
            _say(
                "running; try: webhook-publish --sample order.created (same RABBITMQ_URL). "
                "Ctrl-C stops everything."
            )
            signal.signal(signal.SIGTERM, signal.default_int_handler)
            try:
                while True:
                    time.sleep(3600)
            except KeyboardInterrupt:
                _say("stopping ...")
        return 0
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        if node is not None:
            node.close()


if __name__ == "__main__":
    raise SystemExit(main())
