"""No event is lost when the worker is stopped, killed, or the broker restarts.

Each test publishes a batch, disturbs the system while deliveries are in
flight, then reconciles every event id: delivered at least once or in a DLQ.
Duplicates are allowed (at-least-once) and reported.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from config.topology import dead_letter_queue
from devtools.rabbitmq_node import LocalRabbitMQ
from tests.support.amqp import depth, drain
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import publish_orders
from tests.support.worker_process import WorkerProcess, write_subscriber_file

SECRET = "no-loss-secret-0123456789"
EVENTS = 200


async def slow_ok(_request: Received) -> web.Response:
    # Slow enough that a disturbance always catches deliveries in flight.
    await asyncio.sleep(0.05)
    return web.json_response({"received": True})


async def _reconcile(
    url: str, sub_id: str, ids: list[str], receiver: Receiver, timeout: float
) -> tuple[int, int]:
    """Wait until every id is delivered or dead-lettered; returns (duplicates, dead)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    wanted = set(ids)
    while True:
        delivered = {r.event_id for r in receiver.requests}
        dead = await asyncio.to_thread(depth, url, dead_letter_queue(sub_id))
        if wanted <= delivered or len(wanted - delivered) <= dead or loop.time() > deadline:
            break
        await asyncio.sleep(0.2)
    letters = await asyncio.to_thread(drain, url, dead_letter_queue(sub_id))
    dead_ids = {letter.properties.message_id for letter in letters}
    missing = wanted - delivered - dead_ids
    assert not missing, f"{len(missing)} events lost, e.g. {sorted(missing)[:3]}"
    duplicates = len(receiver.requests) - len({r.event_id for r in receiver.requests})
    print(
        f"events={len(ids)} delivered={len(wanted & delivered)} duplicates={duplicates} "
        f"dead_lettered={len(dead_ids)} missing={len(missing)}"
    )
    return duplicates, len(dead_ids)


async def _run_disturbed(
    url: str,
    tmp_path: Path,
    unique_name: str,
    disturb: Callable[[WorkerProcess], object],
    *,
    restart_worker: bool,
) -> tuple[WorkerProcess, int]:
    receiver = await Receiver(slow_ok).start()
    sub_id = f"nl-{unique_name[-12:]}".strip("-")
    # Two in flight at 50 ms each: the batch takes ~5 s, so it spans the disturbance.
    config = write_subscriber_file(tmp_path / "subs.yaml", [(sub_id, receiver.url)], in_flight=2)
    first = WorkerProcess(url, config, SECRET, tmp_path / "worker1.log")
    second: WorkerProcess | None = None
    try:
        await first.start()
        ids = await asyncio.to_thread(publish_orders, url, EVENTS)
        await receiver.wait_for(lambda rs: len(rs) >= 20, timeout=30)
        result = disturb(first)
        if asyncio.iscoroutine(result):
            await result
        if restart_worker:
            second = await WorkerProcess(url, config, SECRET, tmp_path / "worker2.log").start()
        else:
            await first.wait_ready(timeout=60)  # it must heal on its own
        duplicates, _dead = await _reconcile(url, sub_id, ids, receiver, timeout=90)
        return first, duplicates
    finally:
        for worker in (first, second):
            if worker is not None:
                await worker.close()
        await receiver.stop()


async def test_sigterm_drains_in_flight_and_loses_nothing(
    vhost_url: str, tmp_path: Path, unique_name: str
) -> None:
    codes: list[int] = []

    async def terminate(worker: WorkerProcess) -> None:
        codes.append(await worker.terminate())

    first, _ = await _run_disturbed(
        vhost_url, tmp_path, unique_name, terminate, restart_worker=True
    )
    assert codes == [0]
    events = [
        json.loads(line) for line in first.log_path.read_text().splitlines() if line.startswith("{")
    ]
    names = [e["event"] for e in events]
    assert "worker_stopping" in names and "draining" in names and "worker_stopped" in names
    assert "drain_deadline_passed" not in names
    draining = next(e for e in events if e["event"] == "draining")
    assert draining["in_flight"] > 0  # the stop really caught deliveries mid-flight


async def test_sigkill_mid_load_loses_nothing(
    vhost_url: str, tmp_path: Path, unique_name: str
) -> None:
    await _run_disturbed(vhost_url, tmp_path, unique_name, lambda w: w.kill(), restart_worker=True)


async def test_broker_restart_mid_load_loses_nothing(
    rabbitmq_node: LocalRabbitMQ, tmp_path: Path, unique_name: str
) -> None:
    async def bounce(_worker: WorkerProcess) -> None:
        await asyncio.to_thread(rabbitmq_node.stop)
        await asyncio.sleep(1)
        await asyncio.to_thread(rabbitmq_node.start)

    first, _ = await _run_disturbed(
        rabbitmq_node.url, tmp_path, unique_name, bounce, restart_worker=False
    )
    names = [
        json.loads(line)["event"]
        for line in first.log_path.read_text().splitlines()
        if line.startswith("{")
    ]
    assert "broker_connection_lost" in names
    assert names.count("consuming") >= 2  # it came back by itself
