"""Bad input, thrown on purpose at the worker and the CLIs.

Every case lands where an operator sees it (the subscriber's DLQ with a reason,
a log event, ``/status``, or a non-zero exit naming the problem), and the worker
keeps delivering to a healthy bystander throughout.
"""

from __future__ import annotations

import asyncio
import json
import random
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pika
import pika.exceptions
import pytest
import structlog

from broker.declarer import declare_topology
from broker.url import BrokerUrl
from cli.worker import main as worker_cli
from config.topology import EVENTS_EXCHANGE, dead_letter_queue, work_queue
from producer import Publisher
from tests.support.amqp import channel, depth, drain, publish_raw
from tests.support.receiver import Receiver
from tests.support.worker_harness import (
    ACCOUNT,
    make_settings,
    publish_orders,
    running_worker,
    subscriber,
    wait_until,
    worker_status,
)
from wire import contract
from worker.service import Worker

GOOD = {
    "event": "order.created",
    "data": {"id": "x"},
    "timestamp": "2026-01-31T10:30:01.234Z",
}


_DROP = object()


def _json(**changes: Any) -> bytes:
    body = {**GOOD, **changes}
    return json.dumps({k: v for k, v in body.items() if v is not _DROP}).encode()


GOOD_BYTES = _json()
NO_BREAKER = {"enabled": False}


def _props(message_id: str, **headers: Any) -> pika.BasicProperties:
    # Every message carries its account, as a producer's would: the poison reasons
    # tested here are about the body and the other headers.
    headers = {contract.ACCOUNT: ACCOUNT, **headers}
    return pika.BasicProperties(delivery_mode=2, message_id=message_id, headers=headers)


# (name, body, headers, expected reason fragment); the name is the message id.
POISON: list[tuple[str, bytes, dict[str, Any], str]] = [
    ("not-json", b"this is not json", {}, "not valid JSON"),
    ("bad-utf8", b'{"event":"order.created","data":{},"timestamp":"\xff\xfe"}', {}, "UTF-8"),
    ("empty-body", b"", {}, "not valid JSON"),
    ("json-array", b"[1, 2, 3]", {}, "not a JSON object"),
    ("no-event", _json(event=_DROP), {}, "no 'event' string"),
    ("event-number", _json(event=42), {}, "no 'event' string"),
    ("event-empty", _json(event=""), {}, "no 'event' string"),
    ("event-crlf", _json(event="order.created\r\nX-Evil: 1"), {}, "control characters"),
    ("event-surrogate", b'{"event":"\\ud800","data":{},"timestamp":"t"}', {}, "lone surrogate"),
    ("event-long", _json(event="a" * 300), {}, "longer than 255 bytes"),
    ("no-data", _json(data=_DROP), {}, "no 'data' object"),
    ("data-list", _json(data=[1]), {}, "no 'data' object"),
    ("no-timestamp", _json(timestamp=_DROP), {}, "no 'timestamp' string"),
    ("over-cap", _json(data={"blob": "x" * (2 * 1024 * 1024)}), {}, "over the 1048576 cap"),
    (
        "too-deep",
        b'{"event":"e","data":{"a":' + b"[" * 900 + b"]" * 900 + b'},"timestamp":"t"}',
        {},
        "cannot be re-encoded",
    ),
    ("attempt-string", GOOD_BYTES, {contract.ATTEMPT: "2"}, "is not an integer"),
    ("attempt-decimal", GOOD_BYTES, {contract.ATTEMPT: Decimal("2.5")}, "is not an integer"),
    ("attempt-bytes", GOOD_BYTES, {contract.ATTEMPT: b"2"}, "is not an integer"),
    ("attempt-bool", GOOD_BYTES, {contract.ATTEMPT: True}, "is not an integer"),
    ("attempt-table", GOOD_BYTES, {contract.ATTEMPT: {"n": 1}}, "is not an integer"),
    ("attempt-list", GOOD_BYTES, {contract.ATTEMPT: [1]}, "is not an integer"),
    ("attempt-zero", GOOD_BYTES, {contract.ATTEMPT: 0}, "outside 1-3"),
    ("attempt-negative", GOOD_BYTES, {contract.ATTEMPT: -1}, "outside 1-3"),
    ("attempt-four", GOOD_BYTES, {contract.ATTEMPT: 4}, "outside 1-3"),
    ("attempt-huge", GOOD_BYTES, {contract.ATTEMPT: 2**40}, "outside 1-3"),
]

# Odd but deliverable: the worker is a courier, not a schema gate.
TOLERATED: list[tuple[str, bytes, dict[str, Any]]] = [
    ("unknown-type", _json(event="no.such.thing"), {}),
    ("first-attempt-int", GOOD_BYTES, {contract.FIRST_ATTEMPT_AT: 12345}),
    ("unknown-header", GOOD_BYTES, {"x-something": {"nested": [1, "two", None]}}),
    ("bad-timestamp", _json(timestamp="yesterday"), {}),
    ("attempt-two", GOOD_BYTES, {contract.ATTEMPT: 2}),
]


@asynccontextmanager
async def _target_and_bystander(
    vhost_url: str, target_url: str | None = None, **target: Any
) -> AsyncIterator[tuple[Receiver, Receiver, Worker]]:
    """A worker serving ``target`` (a recording receiver unless ``target_url``) and a bystander."""
    receiver = await Receiver().start()
    bystander = await Receiver().start()
    subs = [
        subscriber("target", target_url or receiver.url, **target),
        subscriber("bystander", bystander.url),
    ]
    settings = make_settings(vhost_url, subs, delays=(0.2, 0.2), grace=1)
    try:
        async with running_worker(settings, requeue_delay_seconds=0.2) as worker:
            yield receiver, bystander, worker
    finally:
        await receiver.stop()
        await bystander.stop()


async def test_unreadable_messages_are_dead_lettered_with_reasons_and_others_flow(
    vhost_url: str,
) -> None:
    async with _target_and_bystander(vhost_url) as (receiver, bystander, worker):
        with structlog.testing.capture_logs() as logs:
            for name, body, headers, _ in POISON:
                await asyncio.to_thread(
                    publish_raw, vhost_url, "", work_queue("target"), body, _props(name, **headers)
                )
                # Interleaved good traffic for the bystander keeps flowing.
                await asyncio.to_thread(publish_orders, vhost_url, 1, name)
            for name, body, headers in TOLERATED:
                await asyncio.to_thread(
                    publish_raw, vhost_url, "", work_queue("target"), body, _props(name, **headers)
                )
            # A message id that cannot be an HTTP header value: identified by its body.
            await asyncio.to_thread(
                publish_raw,
                vhost_url,
                "",
                work_queue("target"),
                _json(data={"id": "crlf-id"}),
                _props("evt\r\nX-Evil: 1"),
            )
            await bystander.wait_for(lambda rs: len(rs) == len(POISON), timeout=30)
            await wait_until(
                lambda: depth(vhost_url, dead_letter_queue("target")) == len(POISON) + 1,
                30,
                "every poison message dead-lettered",
            )
            await receiver.wait_for(lambda rs: len(rs) >= len(TOLERATED) + len(POISON), 30)
            assert worker.is_ready()
            assert (await asyncio.to_thread(worker_status, worker))["ready"] is True

    letters = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("target"))
    reasons = {g.properties.message_id: g.headers[contract.DEAD_LETTER_REASON] for g in letters}
    for name, body, _, fragment in POISON:
        assert reasons[name].startswith("poison: "), name
        assert fragment in reasons[name], (name, reasons[name])
        [letter] = [g for g in letters if g.properties.message_id == name]
        assert letter.body == body  # kept byte for byte for the operator
        assert letter.headers[contract.SUBSCRIBER] == "target"
    assert "message_id contains control characters" in reasons["evt\r\nX-Evil: 1"]
    # Good events published to the exchange reached the target too.
    delivered = {r.event_id for r in receiver.requests}
    assert {name for name, _, _ in TOLERATED} <= delivered
    events = [e for e in logs if e["event"] == "poison_message_dead_lettered"]
    assert len(events) == len(POISON) + 1
    assert all(e["subscriber"] == "target" and e["reason"] for e in events)
    assert not [e for e in logs if e["event"] == "message_processing_crashed"]


def _random_bodies(seed: int, count: int) -> list[bytes]:
    """Deterministic junk: random bytes, truncated/mutated JSON, random JSON values."""
    rng = random.Random(seed)
    good = json.dumps(GOOD).encode()
    bodies: list[bytes] = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            bodies.append(rng.randbytes(rng.randint(0, 300)))
        elif kind == 1:
            cut = rng.randint(0, len(good))
            bodies.append(good[:cut])
        elif kind == 2:
            mutated = bytearray(good)
            for _ in range(rng.randint(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            bodies.append(bytes(mutated))
        else:
            value: Any = rng.choice(
                [
                    {"event": rng.choice(["order.created", "x", "", None, 7]), "data": {}},
                    {
                        "event": "order.created",
                        "data": {"n": rng.random() * 1e308},
                        "timestamp": "2026-01-01T00:00:00.000Z",
                    },
                    {"event": "\u2028\u0000", "data": {}, "timestamp": "t"},
                    [None, True, {"a": "b"}],
                    "just a string",
                ]
            )
            bodies.append(json.dumps(value).encode())
    return bodies


async def test_arbitrary_bytes_are_delivered_or_dead_lettered_never_lost(
    vhost_url: str,
) -> None:
    bodies = _random_bodies(seed=20260131, count=120)

    def publish_all() -> None:
        with channel(vhost_url) as ch:
            ch.confirm_delivery()
            for i, body in enumerate(bodies):
                ch.basic_publish(
                    "", work_queue("target"), body, _props(f"junk-{i}"), mandatory=True
                )

    async with _target_and_bystander(vhost_url, max_in_flight=32) as (receiver, bystander, _w):
        with structlog.testing.capture_logs() as logs:
            await asyncio.to_thread(publish_all)
            await asyncio.to_thread(publish_orders, vhost_url, 5, "during-junk")
            await bystander.wait_for(lambda rs: len(rs) == 5, timeout=20)

            def settled() -> bool:
                delivered = {r.event_id for r in receiver.requests}
                return (
                    len(delivered) + depth(vhost_url, dead_letter_queue("target"))
                    >= len(bodies) + 5
                    and depth(vhost_url, work_queue("target")) == 0
                )

            await wait_until(settled, 30, "every junk message delivered or dead-lettered")
    letters = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("target"))
    dead = {g.properties.message_id for g in letters}
    delivered = {r.event_id for r in receiver.requests}
    junk = {f"junk-{i}" for i in range(len(bodies))}
    assert junk <= dead | delivered
    assert not dead & delivered
    assert not [e for e in logs if e["event"] == "message_processing_crashed"]
    print(f"\njunk: {len(bodies)} bodies, {len(junk & delivered)} delivered, {len(dead)} dead")


async def test_a_removed_subscriber_keeps_its_queue_and_is_reported(vhost_url: str) -> None:
    receiver = await Receiver().start()
    both = make_settings(
        vhost_url,
        [subscriber("leaving", receiver.url), subscriber("staying", receiver.url)],
    )
    await asyncio.to_thread(declare_topology, both.broker, both.subscribers, both.retry)
    try:
        async with running_worker(both):
            pass  # the registry now knows both
        await asyncio.to_thread(publish_orders, vhost_url, 4, "while-down")
        only = make_settings(vhost_url, [subscriber("staying", receiver.url)])
        with structlog.testing.capture_logs() as logs:
            async with running_worker(only) as worker:
                await receiver.wait_for(lambda rs: len(rs) == 4, timeout=10)
                status = await asyncio.to_thread(worker_status, worker)
                # Its bindings remain: new events keep piling up where nobody consumes.
                await asyncio.to_thread(publish_orders, vhost_url, 1, "after-removal")
                await receiver.wait_for(lambda rs: len(rs) == 5, timeout=10)
        assert await asyncio.to_thread(depth, vhost_url, work_queue("leaving")) == 5
        [warning] = [e for e in logs if e["event"] == "removed_subscriber_has_queue"]
        assert warning["subscriber"] == "leaving" and warning["messages"] == 4
        assert warning["queue"] == "webhooks.leaving.work"
        assert status["removed_subscribers_with_queues"] == [
            {"id": "leaving", "queue": "webhooks.leaving.work", "messages": 4}
        ]
        assert [s["id"] for s in status["subscribers"]] == ["staying"]

        # The operator deleted the queue: the next start forgets the subscriber.
        def delete() -> None:
            with channel(vhost_url) as ch:
                ch.queue_delete(work_queue("leaving"))

        await asyncio.to_thread(delete)
        with structlog.testing.capture_logs() as logs:
            async with running_worker(only) as worker:
                status = await asyncio.to_thread(worker_status, worker)
            async with running_worker(only):
                pass
        assert not [e for e in logs if e["event"] == "removed_subscriber_has_queue"]
        assert status["removed_subscribers_with_queues"] == []
    finally:
        await receiver.stop()


async def test_unreachable_urls_dead_letter_and_do_not_block_others(vhost_url: str) -> None:
    bystander = await Receiver().start()
    subs = [
        # The breaker would pause them half-way; here every attempt is the point.
        subscriber("refused", "http://127.0.0.1:1/hook", circuit_breaker=NO_BREAKER),
        subscriber("port-zero", "http://127.0.0.1:0/hook", circuit_breaker=NO_BREAKER),
        subscriber("ipv6-refused", "http://[::1]:1/hook", circuit_breaker=NO_BREAKER),
        subscriber("bystander", bystander.url),
    ]
    settings = make_settings(vhost_url, subs, delays=(0.2,))
    try:
        async with running_worker(settings):
            with structlog.testing.capture_logs() as logs:
                await asyncio.to_thread(publish_orders, vhost_url, 3, "u")
                await bystander.wait_for(lambda rs: len(rs) == 3, timeout=10)
                await wait_until(
                    lambda: all(
                        depth(vhost_url, dead_letter_queue(s)) == 3
                        for s in ("refused", "port-zero", "ipv6-refused")
                    ),
                    20,
                    "unreachable ones dead-lettered",
                )
    finally:
        await bystander.stop()
    failed = {e["subscriber"]: e for e in logs if e["event"] == "delivery_failed"}
    assert {failed[s]["outcome"] for s in ("refused", "port-zero", "ipv6-refused")} == {
        "connection_error"
    }
    for sub in ("refused", "port-zero", "ipv6-refused"):
        letters = await asyncio.to_thread(drain, vhost_url, dead_letter_queue(sub))
        assert {g.headers[contract.DEAD_LETTER_REASON] for g in letters} == {"exhausted"}
        assert all(g.headers[contract.LAST_STATUS] == 0 for g in letters)


async def test_urls_the_old_client_could_not_write_are_delivered_or_fail_never_crash(
    vhost_url: str,
) -> None:
    """Fault 2: these crashed every attempt outside its error handling (a delivery-limit loop)."""
    receiver = await Receiver().start()
    base = f"http://127.0.0.1:{receiver.port}"
    unencodable = "https://" + "\u00fc" * 64 + ".example/hook"  # a file older than the check
    subs = [
        subscriber("accented", f"{base}/hooks/caf\u00e9"),
        subscriber("spaced", f"{base}/hooks/a b"),
        subscriber("bad-host", "https://shop.example/hook").model_copy(update={"url": unencodable}),
    ]
    settings = make_settings(vhost_url, subs, delays=())
    try:
        async with running_worker(settings):
            with structlog.testing.capture_logs() as logs:
                await asyncio.to_thread(publish_orders, vhost_url, 1, "url")
                await receiver.wait_for(lambda rs: len(rs) == 2, timeout=10)
                await wait_until(
                    lambda: depth(vhost_url, dead_letter_queue("bad-host")) == 1,
                    10,
                    "the bad host's one attempt dead-lettered",
                )
    finally:
        await receiver.stop()
    assert sorted(r.path for r in receiver.requests) == ["/hooks/a b", "/hooks/caf\u00e9"]
    assert not [e for e in logs if e["event"] == "message_processing_crashed"]
    failed = [e for e in logs if e["event"] == "delivery_failed"]
    assert [(e["subscriber"], e["outcome"]) for e in failed] == [("bad-host", "connection_error")]
    [letter] = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("bad-host"))
    assert letter.headers[contract.DEAD_LETTER_REASON] == "exhausted"
    assert letter.headers[contract.ATTEMPTS] == 1


@asynccontextmanager
async def _raw_server(handler: Any) -> AsyncIterator[str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}/hook"
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.timeout(90)
async def test_huge_bodies_and_connections_that_never_close(vhost_url: str) -> None:
    sent: dict[str, int] = {"huge": 0}
    hold = asyncio.Event()

    async def huge(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """200 with a 64 MiB body, or a 500 with one: the worker reads 512 bytes of it."""
        await reader.readuntil(b"\r\n\r\n")
        status = b"500 Internal Server Error" if sent["huge"] % 2 else b"200 OK"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: 67108864\r\n\r\n")
        chunk = b"x" * 65536
        sent["huge"] += 1
        try:
            for _ in range(1024):
                writer.write(chunk)
                await writer.drain()
        except (ConnectionError, OSError):
            pass  # the worker hung up after its excerpt, as it should
        finally:
            writer.close()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Accepts, reads the request, never answers, never closes."""
        await reader.readuntil(b"\r\n\r\n")
        await hold.wait()
        writer.close()

    async def trickle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """200 and a chunked body that never ends."""
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
        try:
            while not hold.is_set():
                writer.write(b"400\r\n" + b"y" * 1024 + b"\r\n")
                await writer.drain()
                await asyncio.sleep(0.05)
        except (ConnectionError, OSError):
            pass
        finally:
            writer.close()

    bystander = await Receiver().start()
    try:
        async with (
            _raw_server(huge) as huge_url,
            _raw_server(silent) as silent_url,
            _raw_server(trickle) as trickle_url,
        ):
            subs = [
                subscriber("huge", huge_url, max_in_flight=1),
                subscriber("silent", silent_url, timeout_seconds=1),
                subscriber("trickle", trickle_url, timeout_seconds=2),
                subscriber("bystander", bystander.url),
            ]
            settings = make_settings(vhost_url, subs, delays=(), grace=1)
            async with running_worker(settings):
                with structlog.testing.capture_logs() as logs:
                    started = time.monotonic()
                    await asyncio.to_thread(publish_orders, vhost_url, 2, "h")
                    await bystander.wait_for(lambda rs: len(rs) == 2, timeout=10)
                    bystander_seconds = time.monotonic() - started
                    await wait_until(
                        lambda: (
                            depth(vhost_url, dead_letter_queue("silent")) == 2
                            and depth(vhost_url, work_queue("huge")) == 0
                            and depth(vhost_url, work_queue("trickle")) == 0
                        ),
                        30,
                        "all settled",
                    )
            hold.set()
    finally:
        hold.set()
        await bystander.stop()
    assert bystander_seconds < 3
    outcomes: dict[str, list[str]] = {}
    for e in logs:
        if e["event"] in ("delivery_succeeded", "delivery_failed"):
            outcomes.setdefault(e["subscriber"], []).append(e["outcome"])
    assert sorted(outcomes["huge"]) == ["http_error", "success"]
    assert outcomes["silent"] == ["timeout", "timeout"]
    # A 2xx status line is the answer; the endless body is not waited for.
    assert outcomes["trickle"] == ["success", "success"]
    letters = await asyncio.to_thread(drain, vhost_url, dead_letter_queue("huge"))
    assert [g.headers[contract.LAST_ERROR] for g in letters] == ["HTTP 500"]


# --- the subscriber file, through the CLI -----------------------------------------

_SUB = """\
subscribers:
  - id: shop
    url: https://shop.example/hook
    secret: s3cret
    account: acme
    events: ["order.*"]
"""

FILE_MISTAKES: list[tuple[str, str]] = [
    ("subscribers: [\n  - id: shop\n", "not valid YAML"),
    ("- just\n- a list\n", "the top level must be a mapping"),
    ("subscribers:\n  - id: shop\n    id: again\n", "duplicate key 'id'"),
    (
        _SUB + "  - id: shop\n    url: https://b.example/\n    secret: s\n"
        "    account: acme\n    events: [a]\n",
        "subscribers[1] (id 'shop').id: duplicate id 'shop'",
    ),
    (_SUB + "    colour: blue\n", "subscribers[0] (id 'shop').colour: unknown key"),
    (
        _SUB.replace("https://shop.example/hook", "shop.example/hook"),
        ".url: must start with http:// or https://",
    ),
    (
        _SUB.replace("https://shop.example/hook", "ftp://shop.example/hook"),
        ".url: must start with http:// or https://",
    ),
    (_SUB.replace("https://shop.example/hook", "https:///hook"), ".url: has no host"),
    (
        _SUB.replace("https://shop.example/hook", "https://u:p@shop.example/"),
        ".url: must not carry credentials",
    ),
    (
        _SUB.replace("https://shop.example/hook", "https://shop.example:99999/"),
        ".url: not a valid URL",
    ),
    (_SUB.replace("https://shop.example/hook", "https://[::1/"), ".url: not a valid URL"),
    (
        _SUB.replace("https://shop.example/hook", "https://shop.example/#x"),
        ".url: must not have a #fragment",
    ),
    (_SUB.replace("s3cret", '"  "'), ".secret: must not be empty"),
    (
        _SUB.replace("s3cret", "${NOT_SET_ANYWHERE_42}"),
        "environment variable NOT_SET_ANYWHERE_42 is not set",
    ),
    (_SUB.replace('["order.*"]', '["order.**"]'), "is not a topic pattern"),
    (_SUB.replace('["order.*"]', "[]"), ".events: must not be empty"),
    (_SUB.replace("id: shop", "id: Shop_1"), ".id: must be 1-64 characters"),
    (_SUB + "    timeout_seconds: -1\n", ".timeout_seconds: must be more than 0"),
    (_SUB + "    max_in_flight: lots\n", ".max_in_flight: must be a whole number"),
    (_SUB + "retry:\n  delays_seconds: [1, 2, 3]\n", "at most 2 delays"),
    (_SUB + "retry:\n  delays_seconds: [0]\n", "is out of range"),
    (_SUB + "security:\n  allow_private_networks: maybe\n", "must be true or false"),
    (
        _SUB + "circuit_breaker:\n  failure_threshold: 0\n",
        "circuit_breaker.failure_threshold: must be at least 1",
    ),
    (
        _SUB + "    circuit_breaker: {cooldown_seconds: 900}\n",
        "max_cooldown_seconds (300) must be at least cooldown_seconds (900)",
    ),
]


@pytest.mark.parametrize(("text", "expected"), FILE_MISTAKES)
def test_check_config_names_every_kind_of_mistake_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any, text: str, expected: str
) -> None:
    path = tmp_path / "subs.yaml"
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("WEBHOOK_CONFIG", str(path))
    assert worker_cli(["check-config"]) == 3
    out, err = capsys.readouterr()
    assert out == ""
    [line] = err.splitlines()
    assert line.startswith(f"webhook-worker: error: {path}: ")
    assert expected in line
    assert "s3cret" not in err


def test_check_config_on_files_that_cannot_be_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    cases = {
        tmp_path / "missing.yaml": "subscriber file not found",
        tmp_path: "cannot read subscriber file",  # a directory
    }
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(_SUB.replace("s3cret", "caf\xe9").encode("latin-1"))
    cases[latin1] = "cannot read subscriber file"
    for path, expected in cases.items():
        monkeypatch.setenv("WEBHOOK_CONFIG", str(path))
        assert worker_cli(["check-config"]) == 3
        [line] = capsys.readouterr().err.splitlines()
        assert expected in line, line


def test_check_config_exit_code_from_a_real_process(tmp_path: Path) -> None:
    path = tmp_path / "subs.yaml"
    path.write_text(_SUB + "    colour: blue\n", encoding="utf-8")
    env = {"WEBHOOK_CONFIG": str(path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [sys.executable, "-m", "worker", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 3
    assert done.stdout == ""
    assert done.stderr.strip() == (
        f"webhook-worker: error: {path}: subscribers[0] (id 'shop').colour: unknown key"
    )
    path.write_text(_SUB, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "worker", "check-config"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "1 subscriber(s) OK" in done.stdout
    assert "5 fails, 5-300s" in done.stdout  # the circuit breaker in force


def test_producer_refuses_bad_event_types_and_unroutable_ones(vhost_url: str) -> None:
    from config.errors import PayloadError, UnroutableError

    settings = make_settings(vhost_url, [subscriber("shop", "http://127.0.0.1:9/")])
    declare_topology(settings.broker, settings.subscribers, settings.retry)
    with Publisher(BrokerUrl.parse(vhost_url)) as publisher:
        for bad in ("", "Order.Created", "order.*", "a" * 300, "order created"):
            with pytest.raises(PayloadError):
                publisher.publish(bad, {"id": "1"}, account=ACCOUNT)
        unroutable = r"no endpoint of account 'acme' receives 'invoice\.paid'"
        with pytest.raises(UnroutableError, match=unroutable):
            publisher.publish("invoice.paid", {"id": "1"}, account=ACCOUNT)
    # Nothing half-published: the subscriber's queue is empty.
    assert depth(vhost_url, work_queue("shop")) == 0
    with pytest.raises(pika.exceptions.UnroutableError):
        publish_raw(vhost_url, EVENTS_EXCHANGE, "invoice.paid", b"{}")
