"""Run the whole system on one machine: broker, webhook-api, demo receiver, worker, events.

``python -m devtools.run_local`` (what ``scripts/run-local`` ends with):

1. uses ``$RABBITMQ_URL`` or starts a throwaway RabbitMQ node on loopback;
2. starts ``webhook-api`` (a SQLite store in the run's temporary directory, a
   generated token) and creates the demo account's endpoint through it;
3. starts the demo receiver (it verifies every signature) and a worker;
4. publishes the product page's three sample events and prints each delivery
   as the receiver verifies it (one first attempt fails on purpose, so a retry
   through the delay queue shows up too);
5. with ``--keep-running`` writes the environment a second shell needs (``env``
   in the run directory), prints the commands to try, and stays up until Ctrl-C.

Everything it started is stopped, and its directory removed, however it ends.
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import sys
import time
import urllib.request

from broker.url import BrokerUrl
from config.logs import configure_logging
from devtools.api_client import ApiClient, ApiError
from devtools.local_processes import free_ports
from devtools.process_group import ProcessGroup
from devtools.rabbitmq_node import PROMETHEUS_PLUGIN, LocalRabbitMQ
from devtools.run_directory import RunDirectory
from producer import Publisher
from wire.samples import SAMPLE_EVENTS, sample_data

# The demo merchant; its endpoint only ever receives this account's events.
DEMO_ACCOUNT = "demo-merchant"
RETRY_DELAYS = (2, 5)
# Settings that, inherited from the caller's shell, would point our processes (or a
# second shell's tools) at another store, key or token than this run's.
STORE_VARIABLES = (
    "DATABASE_URL",
    "SECRETS_KEY",
    "SECRETS_KEY_FILE",
    "WEBHOOK_DATA_DIR",
    "API_TOKENS",
    "API_TOKENS_FILE",
)
BROKER_CREDENTIALS = ("RABBITMQ_USERNAME", "RABBITMQ_PASSWORD")


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
    raise ApiError(f"{url} not ready after {timeout:.0f} s")


def base_environment(broker_url: str, *, own_broker: bool) -> dict[str, str]:
    """What every process of the run (and a second shell) starts from."""
    cleared = STORE_VARIABLES + (BROKER_CREDENTIALS if own_broker else ())
    env = {k: v for k, v in os.environ.items() if k not in cleared}
    return env | {"RABBITMQ_URL": broker_url, "LOG_FORMAT": "console", "PYTHONUNBUFFERED": "1"}


def store_variables(run: RunDirectory) -> dict[str, str]:
    """What the worker, webhook-api and the tools need to share the run's store."""
    return {
        "DATABASE_URL": run.database_url,  # its key file is created beside it
        "WEBHOOK_ALLOW_PRIVATE_NETWORKS": "true",  # the demo receiver is on loopback
        "WEBHOOK_RETRY_DELAYS": ",".join(f"{d:g}" for d in RETRY_DELAYS),
    }


def second_shell_variables(
    run: RunDirectory, *, broker_url: str, api: ApiClient, endpoint_id: str
) -> dict[str, str]:
    """The variables that make the printed commands work from another shell."""
    return {
        "RABBITMQ_URL": broker_url,
        **store_variables(run),  # webhook-worker test-endpoint, webhook-admin
        "WEBHOOK_API_URL": api.base_url,  # for curl
        "WEBHOOK_API_TOKEN": api.token,
        "DEMO_ACCOUNT": DEMO_ACCOUNT,
        "DEMO_ENDPOINT": endpoint_id,
    }


def try_these(run: RunDirectory, endpoint_id: str) -> list[str]:
    """The commands printed for a second shell (the README's quick start works too)."""
    return [
        f"source {run.env_file}",
        f"webhook-publish --sample order.created --account {DEMO_ACCOUNT}",
        f"webhook-worker test-endpoint {endpoint_id}",
        'curl -s -H "Authorization: Bearer $WEBHOOK_API_TOKEN" '
        f'"$WEBHOOK_API_URL/v1/accounts/{DEMO_ACCOUNT}/endpoints"',
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="run-local", description=__doc__.splitlines()[0])
    parser.add_argument("--keep-running", action="store_true", help="stay up until Ctrl-C")
    parser.add_argument("--timeout", type=float, default=60, help="seconds to wait for deliveries")
    args = parser.parse_args(argv)
    configure_logging("console", "warning", stream=sys.stderr)
    # SIGTERM cleans up like Ctrl-C does, at any point.
    previous_handler = signal.signal(signal.SIGTERM, signal.default_int_handler)

    node: LocalRabbitMQ | None = None
    processes = ProcessGroup()
    run = RunDirectory()
    try:
        url = os.environ.get("RABBITMQ_URL")
        if url:
            _say(f"using RabbitMQ at {BrokerUrl.parse(url).redacted}")
        else:
            _say("starting a throwaway RabbitMQ node on 127.0.0.1 ...")
            node = LocalRabbitMQ(plugins=[PROMETHEUS_PLUGIN]).start()
            url = node.url
            _say(f"RabbitMQ up at {url} (Prometheus metrics on :{node.prometheus_port})")
        return _demo(args, run, processes, base_environment(url, own_broker=node is not None))
    except ApiError as error:
        _say(f"failed: {error}")
        return 1
    except KeyboardInterrupt:
        _say("stopping ...")
        return 130 if not args.keep_running else 0
    finally:
        processes.stop()
        if node is not None:
            node.close()
        run.remove()
        _say(f"removed {run.path}")
        signal.signal(signal.SIGTERM, previous_handler)


def _demo(
    args: argparse.Namespace, run: RunDirectory, processes: ProcessGroup, env: dict[str, str]
) -> int:
    receiver_port, metrics_port, api_port = free_ports(3)
    api = ApiClient(f"http://127.0.0.1:{api_port}", secrets.token_urlsafe(32))
    api_process = processes.start(
        "api",
        [sys.executable, "-m", "cli.api"],
        env
        | {
            "API_HOST": "127.0.0.1",
            "API_PORT": str(api_port),
            "API_TOKENS": api.token,
            **store_variables(run),
        },
    )
    api.wait_healthy(60, still_starting=lambda: api_process.poll() is None)
    endpoint = api.create_endpoint(
        DEMO_ACCOUNT,
        {
            "url": f"http://127.0.0.1:{receiver_port}/webhook",
            "events": ["order.*"],
            "description": "run-local demo receiver",
        },
    )
    endpoint_id = str(endpoint["id"])
    _say(f"webhook-api at {api.base_url} created endpoint {endpoint_id} of {DEMO_ACCOUNT}")
    run.write_env_file(
        second_shell_variables(
            run, broker_url=env["RABBITMQ_URL"], api=api, endpoint_id=endpoint_id
        ),
        unset=STORE_VARIABLES + BROKER_CREDENTIALS,
    )

    received: list[str] = []
    processes.start(
        "receiver",
        [sys.executable, "-m", "devtools.demo_receiver", "--port", str(receiver_port)],
        env | {"WEBHOOK_SECRET": str(endpoint["secret"]), "DEMO_FAIL_RATE": "0.34"},
        lines=received,
    )
    processes.start(
        "worker",
        [sys.executable, "-m", "worker", "run"],
        # The worker reads the endpoint webhook-api just created from the same store.
        env | store_variables(run) | {"METRICS_PORT": str(metrics_port)},
    )
    _wait_ready(f"http://127.0.0.1:{metrics_port}/readyz", timeout=60)
    _say(f"worker ready; metrics at http://127.0.0.1:{metrics_port}/metrics")

    with Publisher(BrokerUrl.parse(env["RABBITMQ_URL"])) as publisher:
        ids = [publisher.publish(e, sample_data(e), account=DEMO_ACCOUNT) for e in SAMPLE_EVENTS]
    _say(f"published {len(ids)} sample events: {', '.join(ids)}")

    def verified(event_id: str) -> bool:
        return any("VERIFIED" in line and event_id in line for line in received)

    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline and not all(map(verified, ids)):
        time.sleep(0.2)
    missing = [i for i in ids if not verified(i)]
    if missing:
        _say(f"NOT delivered within {args.timeout:.0f} s: {', '.join(missing)}")
        return 1
    _say(f"all {len(ids)} events delivered and their signatures verified")
    if not args.keep_running:
        return 0
    _say("running. In a second shell:")
    for command in try_these(run, endpoint_id):
        print(f"      {command}", flush=True)
    _say(f"Ctrl-C stops everything and removes {run.path}")
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    raise SystemExit(main())
