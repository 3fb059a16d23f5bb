"""How soon a change made through the API reaches a running worker (store-backed workers only).

Each change is made through ``webhook-api`` (which commits it and sends a
change notice on ``webhooks.control``); the clock starts when the API has
answered.  Then an ``order.created`` event of the endpoint's account is
published every 20 ms (``Publisher.publish(..., account=...)``; while no
queue is bound for the account the broker returns it as unroutable) until the
receiver sees a delivery at the endpoint's (new) URL: **first delivery**.
That is the worker noticing the change (notice, or periodic reconciliation),
binding or re-pointing the lane, plus one publish-to-delivery hop and up to
20 ms of polling.  **Applied** is when the worker's log says the pass that
took the change's version has finished (its ``reconciled`` line).

Changes are made one at a time: the next waits until the previous one is
applied, except in the row that measures exactly that ("right after a create").
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from bench.control_plane.api_load import ApiServer
from bench.control_plane.plan import BenchError, percentile, say
from bench.control_plane.receiver import Receiver
from broker.url import BrokerUrl
from config.errors import UnroutableError
from producer import Publisher
from wire.samples import sample_data

EVENT = "order.created"
PUBLISH_EVERY = 0.02


@dataclass
class ChangeRow:
    change: str
    short: str  # its name in the targets table
    made: int = 0
    seen: int = 0
    p50_ms: float = math.nan
    p99_ms: float = math.nan
    max_ms: float = math.nan
    applied_p50_ms: float = math.nan
    applied_p99_ms: float = math.nan
    note: str = ""
    delivered_s: list[float | None] = field(default_factory=list, repr=False)
    applied_s: list[float | None] = field(default_factory=list, repr=False)

    def finish(self, timeout: float) -> ChangeRow:
        seen = [s for s in self.delivered_s if s is not None]
        applied = [s for s in self.applied_s if s is not None]
        self.made, self.seen = len(self.delivered_s), len(seen)
        self.p50_ms, self.p99_ms, self.max_ms = (percentile(seen, q) * 1000 for q in (50, 99, 100))
        self.applied_p50_ms, self.applied_p99_ms = (percentile(applied, q) * 1000 for q in (50, 99))
        if self.seen < self.made:
            self.note = f"{self.made - self.seen} not delivered within {timeout:.0f} s"
        return self


class WorkerLog:
    """The store versions a worker reports applied (its JSON log's ``reconciled`` lines)."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._offset = 0
        self._applied: list[tuple[int, float]] = []  # (version, wall-clock time)

    def applied_at(self, version: int) -> float | None:
        """When a pass that reached ``version`` finished (``time.time()`` scale), if one did."""
        with self._path.open("rb") as log:
            log.seek(self._offset)
            data = log.read()
        complete = data.rfind(b"\n") + 1
        self._offset += complete
        for line in data[:complete].splitlines():
            if b'"reconciled"' not in line:
                continue
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if record.get("event") == "reconciled" and record.get("applied"):
                    at = datetime.fromisoformat(record["timestamp"].replace("Z", "+00:00"))
                    self._applied.append((int(record["version"]), at.timestamp()))
        return next((at for v, at in self._applied if v >= version), None)


class Changer:
    """Makes changes through the API and times them until delivered and applied."""

    def __init__(
        self,
        api: ApiServer,
        publisher: Publisher,
        receiver: Receiver,
        log: WorkerLog,
        timeout: float,
    ) -> None:
        self.api, self.publisher, self.receiver, self.log = api, publisher, receiver, log
        self.timeout = timeout

    def change(
        self, method: str, path: str, body: dict[str, object], expect: int
    ) -> dict[str, object]:
        status, answer = self.api.request(method, path, body)
        if status != expect:
            raise BenchError(f"{method} {path} answered {status}: {answer}")
        assert isinstance(answer, dict)
        return answer

    def delivered(self, account: str, url_path: str, since: float) -> float | None:
        """Seconds from ``since`` (monotonic) to the first delivery at ``url_path``."""
        data = sample_data(EVENT)
        while time.monotonic() < since + self.timeout:
            with contextlib.suppress(UnroutableError):  # no queue of the account bound yet
                self.publisher.publish(EVENT, data, account=account)
            look_until = time.monotonic() + PUBLISH_EVERY
            while True:
                hit = self.receiver.first_hit(url_path)
                if hit is not None:
                    return hit - since
                if time.monotonic() > look_until:
                    break
                time.sleep(0.002)
        return None

    def applied(self, version: int, since_wall: float) -> float | None:
        """Seconds from ``since_wall`` until the worker logs ``version`` applied."""
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            at = self.log.applied_at(version)
            if at is not None:
                return max(0.0, at - since_wall)
            time.sleep(0.05)
        return None

    def timed(
        self, row: ChangeRow, method: str, path: str, url_path: str, events: bool, wait: bool
    ) -> tuple[dict[str, object], float]:
        """Make one change (the endpoint's URL becomes ``url_path`` on the receiver; a POST
        also gives ``order.*``): record its first delivery and, with ``wait``, when it was
        applied. Returns the API's answer and when it came (wall clock)."""
        body: dict[str, object] = {"url": self.receiver.base_url + url_path}
        if events:
            body["events"] = ["order.*"]
        answer = self.change(method, path, body, 201 if method == "POST" else 200)
        since, since_wall = time.monotonic(), time.time()
        account = path.split("/")[3]  # /v1/accounts/<account>/endpoints...
        row.delivered_s.append(self.delivered(account, url_path, since))
        if wait:
            row.applied_s.append(self.applied(int(str(answer["version"])), since_wall))
        return answer, since_wall


def measure_changes(
    api: ApiServer,
    broker: BrokerUrl,
    receiver: Receiver,
    worker_log: Path,
    existing: list[tuple[str, str]],
    creates: int,
    timeout: float,
    tag: str,
) -> list[ChangeRow]:
    """URL changes of ``existing`` endpoints, then ``creates`` new endpoints (each followed
    at once by a URL change); every change timed until delivered and applied."""
    say(f"- {len(existing)} URL changes, {creates} creates (+ URL change) through the API ...")
    moved = ChangeRow("URL change of an existing endpoint", "URL change")
    created = ChangeRow("create (a new account's first endpoint)", "create")
    after = ChangeRow("URL change right after a create", "right after a create")
    publisher = Publisher(broker)
    try:
        publisher.connect()
        changer = Changer(api, publisher, receiver, WorkerLog(worker_log), timeout)
        for index, (account, endpoint_id) in enumerate(existing):
            path = f"/v1/accounts/{account}/endpoints/{endpoint_id}"
            changer.timed(moved, "PATCH", path, f"/moved/{tag}/{index}", False, True)
        for index in range(creates):
            path = f"/v1/accounts/chg-{tag}-{index}/endpoints"
            answer, at = changer.timed(
                created, "POST", path, f"/created/{tag}/{index}", True, False
            )
            again = f"/recreated/{tag}/{index}"
            changer.timed(after, "PATCH", f"{path}/{answer['id']}", again, False, True)
            # Applied by now (a later version is): when did the create's own pass end?
            created.applied_s.append(changer.applied(int(str(answer["version"])), at))
    finally:
        publisher.close()
    rows = [row.finish(timeout) for row in (moved, created, after)]
    for row in rows:
        say(f"  {row.change}: p50 {row.p50_ms:.0f} ms, p99 {row.p99_ms:.0f} ms")
    return rows
