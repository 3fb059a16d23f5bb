"""One subscriber timing out on every request must not slow the nine healthy ones down.

Measured, not assumed: the same ten subscribers, the same batch, first all healthy,
then with one of them hanging past its timeout; the healthy ones' delivery rate
must stay within 20% of the all-healthy rate. Rounds alternate (A, B, A, B) and
the medians are compared, so a slow moment of the machine hurts both sides.
"""

from __future__ import annotations

import asyncio
import statistics
import time

from aiohttp import web

from broker.declarer import declare_topology
from broker.url import BrokerUrl
from config.topology import work_queue
from producer import Publisher
from tests.support.amqp import channel
from tests.support.receiver import Received, Receiver
from tests.support.worker_harness import ACCOUNT, make_settings, running_worker, subscriber
from wire.samples import sample_data

EVENTS = 60  # per round; each goes to all ten subscribers
ROUNDS = 3
HEALTHY = 9
# Receivers answer in 50 ms and each subscriber has 2 in flight: ~40 deliveries/s
# each, far below what the machine can do, so the rate measures isolation (who
# waits on whom), not CPU, and a busy neighbour on the test machine barely moves it.
LATENCY_SECONDS = 0.05
IN_FLIGHT = 2


def _publish(url: str, count: int, round_no: int) -> None:
    base = sample_data("order.created")
    with Publisher(BrokerUrl.parse(url)) as publisher:
        for i in range(count):
            publisher.publish("order.created", {**base, "id": f"r{round_no}-{i}"}, account=ACCOUNT)


def _purge(url: str, queue: str) -> None:
    with channel(url) as ch:
        ch.queue_purge(queue)


async def test_a_timing_out_subscriber_leaves_the_healthy_rate_within_20_percent(
    vhost_url: str,
) -> None:
    release = asyncio.Event()
    hanging = False

    async def quick(_r: Received) -> web.Response:
        await asyncio.sleep(LATENCY_SECONDS)
        return web.json_response({})

    async def sometimes_hangs(_r: Received) -> web.Response:
        if hanging:
            # Far past the subscriber's timeout; released when the test ends.
            await asyncio.wait_for(release.wait(), timeout=60)
        return await quick(_r)

    victim = await Receiver(sometimes_hangs).start()
    healthy = [await Receiver(quick).start() for _ in range(HEALTHY)]
    subs = [subscriber("victim", victim.url, timeout_seconds=1, max_in_flight=IN_FLIGHT)]
    subs += [subscriber(f"ok-{i}", r.url, max_in_flight=IN_FLIGHT) for i, r in enumerate(healthy)]
    settings = make_settings(vhost_url, subs, delays=(120,), grace=0.5)
    await asyncio.to_thread(declare_topology, settings.broker, settings.subscribers, settings.retry)

    rates: dict[str, list[float]] = {"all_healthy": [], "one_timing_out": []}
    try:
        for round_no in range(ROUNDS * 2):
            hanging = round_no % 2 == 1
            for r in (victim, *healthy):
                r.requests.clear()
            # The batch is queued before the worker starts: only delivery is timed.
            await asyncio.to_thread(_publish, vhost_url, EVENTS, round_no)
            async with running_worker(settings):
                started = time.monotonic()
                for r in healthy:
                    await r.wait_for(lambda rs: len(rs) >= EVENTS, timeout=60)
                elapsed = time.monotonic() - started
            rate = HEALTHY * EVENTS / elapsed
            rates["one_timing_out" if hanging else "all_healthy"].append(rate)
            if hanging:
                # A hanging subscriber only ever received what it could hold in flight,
                # plus the circuit breaker's probes; the rest stayed in its queue.
                assert len(victim.requests) <= IN_FLIGHT * 2 + 2
                await asyncio.to_thread(_purge, vhost_url, work_queue("victim"))
            else:
                assert len(victim.requests) >= EVENTS
    finally:
        release.set()
        for r in (victim, *healthy):
            await r.stop()

    ratio = statistics.median(rates["one_timing_out"]) / statistics.median(rates["all_healthy"])
    print(
        f"\nisolation: healthy subscribers' rate, all ten healthy: "
        f"{', '.join(f'{r:.0f}' for r in rates['all_healthy'])} deliveries/s; "
        f"one timing out: {', '.join(f'{r:.0f}' for r in rates['one_timing_out'])} deliveries/s; "
        f"median vs median: {ratio:.0%}"
    )
    assert ratio >= 0.8, f"healthy rate fell to {ratio:.0%} of the all-healthy rate"
