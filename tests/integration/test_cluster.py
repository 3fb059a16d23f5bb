"""A three-node RabbitMQ cluster: replicated quorum queues, failover, nothing lost.

Three throwaway local nodes joined into one cluster; the worker and the producer
get all three addresses (``RABBITMQ_URL=url1,url2,url3``) and connect to the
first. Under load, that node is stopped: the quorum queues elect new leaders on
the other two, the worker reconnects to the next address, and delivery resumes
within seconds. Every event id is reconciled at the end. Slow (about a minute,
most of it starting three nodes): runs with ``--long``.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from aiohttp import web

from broker.url import BrokerUrl
from config.errors import BrokerUnavailableError
from config.topology import dead_letter_queue, work_queue
from devtools.rabbitmq_cluster import LocalRabbitMQCluster
from devtools.rabbitmq_node import rabbitmq_available
from producer import Publisher
from tests.support.amqp import depth, drain
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import ACCOUNT
from tests.support.worker_process import WorkerProcess, write_subscriber_file

SECRET = "cluster-secret-0123456789"
EVENTS = 1500

pytestmark = [pytest.mark.slow, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def cluster() -> Iterator[LocalRabbitMQCluster]:
    if not rabbitmq_available():
        pytest.skip("needs the rabbitmq-server package's binaries")
    with LocalRabbitMQCluster(3) as running:
        yield running


def _publish(url: str, count: int, published: list[str]) -> None:
    with Publisher(BrokerUrl.parse(url), max_retry_seconds=60) as publisher:
        for i in range(count):
            event_id = f"evt_cluster_{i}"
            while True:
                try:
                    publisher.publish("order.note", {"n": i}, event_id=event_id, account=ACCOUNT)
                    break
                except BrokerUnavailableError:
                    time.sleep(0.5)
            published.append(event_id)
            time.sleep(0.004)


async def test_stopping_the_workers_node_loses_nothing_and_delivery_resumes(
    cluster: LocalRabbitMQCluster, tmp_path: Path
) -> None:
    async def ok(_r: Received) -> web.Response:
        await asyncio.sleep(0.01)
        return web.json_response({})

    receiver = await Receiver(ok).start()
    config = write_subscriber_file(
        tmp_path / "subs.yaml", [("clustered", receiver.url)], in_flight=8
    )
    seed, *others = cluster.nodes
    worker = WorkerProcess(cluster.url, config, SECRET, tmp_path / "worker.log")
    published: list[str] = []
    try:
        await worker.start(ready_timeout=60)
        connections = await asyncio.to_thread(
            seed.ctl, "-q", "list_connections", "client_properties"
        )
        assert "webhook-worker" in connections  # the first address is the one in use
        members = await asyncio.to_thread(
            others[0].ctl, "-q", "list_queues", "name", "type", "members"
        )
        [line] = [row for row in members.splitlines() if row.startswith(work_queue("clustered"))]
        assert "quorum" in line and all(node.nodename in line for node in cluster.nodes)

        # The producer lists the surviving nodes first, so it is not the one failing over here.
        producer_url = ",".join([*(n.url for n in others), seed.url])
        producer = threading.Thread(target=_publish, args=(producer_url, EVENTS, published))
        producer.start()
        await receiver.wait_for(lambda rs: len(rs) >= EVENTS // 4, timeout=60)

        stopping = time.monotonic()
        await asyncio.to_thread(seed.stop)
        stopped = time.monotonic()
        before = len(receiver.requests)
        await receiver.wait_for(lambda rs: len(rs) >= before + 20, timeout=60)
        resumed = time.monotonic()
        await asyncio.to_thread(producer.join, 120)
        assert not producer.is_alive()
        running = await asyncio.to_thread(cluster.running_nodes, others[0])
        assert seed.nodename not in running and len(running) == 2

        deadline = time.monotonic() + 90
        wanted = set(published)
        dead: set[str] = set()
        while True:
            delivered = {r.event_id for r in receiver.requests}
            letters = await asyncio.to_thread(drain, others[0].url, dead_letter_queue("clustered"))
            dead |= {str(g.properties.message_id) for g in letters}
            missing = wanted - delivered - dead
            if not missing or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.5)
        backlog = await asyncio.to_thread(depth, others[0].url, work_queue("clustered"))
    finally:
        await worker.close()
        await receiver.stop()
        if not seed.is_running:
            await asyncio.to_thread(seed.start)

    duplicates = len(receiver.requests) - len({r.event_id for r in receiver.requests})
    print(
        f"\ncluster: events={len(wanted)} delivered={len(wanted & delivered)} "
        f"duplicates={duplicates} dead_lettered={len(dead)} missing={len(missing)} "
        f"node_stop_seconds={stopped - stopping:.1f} "
        f"delivery_resumed_after={resumed - stopped:.1f}s (from the node's stop)"
    )
    assert len(wanted) == EVENTS
    assert not missing, f"{len(missing)} lost, e.g. {sorted(missing)[:3]}; backlog {backlog}"
    assert resumed - stopped < 15, f"delivery resumed only after {resumed - stopped:.1f} s"
    log = (tmp_path / "worker.log").read_text()
    assert "broker_connection_lost" in log
