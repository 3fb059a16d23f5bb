"""Filling the endpoint store: N endpoints over M accounts, through ``EndpointStore`` itself.

No bulk path: every endpoint is one ``create_endpoint`` call (one transaction,
a version taken, the secret encrypted), as the API makes it.  On PostgreSQL a
few threads overlap the round trips; SQLite takes one writer at a time anyway.
``load_all`` (what a store-backed worker reads when it starts) is timed too.
"""

from __future__ import annotations

import base64
import math
import secrets
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from pydantic import SecretStr

from bench.control_plane.plan import Load, Plan, say
from control.store.endpoints import EndpointStore
from control.store.models import EndpointInput

BIG_ACCOUNT = "acct-big"


def new_secrets_key() -> str:
    """A fresh SECRETS_KEY (32 random bytes, base64) for the run's stores."""
    return base64.b64encode(secrets.token_bytes(32)).decode("ascii")


def account_of(index: int, plan: Plan) -> str:
    """The account of endpoint ``index``: the big one first, then round-robin over the rest."""
    if index < plan.big_account:
        return BIG_ACCOUNT
    others = max(1, plan.accounts - 1)
    return f"acct-{(index - plan.big_account) % others:05d}"


@dataclass
class LoadedStore:
    """A store holding the run's endpoints, and what filling it took."""

    backend: str  # "SQLite" or "PostgreSQL"
    url: str = field(repr=False)  # DATABASE_URL (may hold a password: never printed)
    endpoints: list[tuple[str, str]] = field(default_factory=list, repr=False)
    accounts: int = 0
    load_seconds: float = math.nan
    load_all_seconds: float = math.nan
    other_load_pct: float = math.nan
    note: str = ""

    @property
    def regular_accounts(self) -> list[str]:
        return sorted({account for account, _ in self.endpoints} - {BIG_ACCOUNT})

    @property
    def per_second(self) -> float:
        return len(self.endpoints) / self.load_seconds if self.load_seconds > 0 else math.nan


def fill_store(
    backend: str,
    database_url: str,
    secrets_key: str,
    plan: Plan,
    url_base: str,
    pids: list[int],
) -> LoadedStore:
    """Migrate the store at ``database_url`` and create every endpoint; time both steps.

    ``url_base`` is where the endpoints point (the run's receiver); ``pids`` are
    the database's processes, counted as ours in the "other load" figure.
    """
    store = EndpointStore.open(database_url, secrets_key=SecretStr(secrets_key), migrate=True)
    loaded = LoadedStore(backend, database_url)
    threads = plan.store_threads if backend == "PostgreSQL" else 1
    say(f"- {backend}: creating {plan.endpoints:,} endpoints ({threads} thread(s)) ...")

    def create(index: int) -> tuple[str, str]:
        account = account_of(index, plan)
        data = EndpointInput.parse(
            {
                "url": f"{url_base}/ep/{index}",
                "events": ["order.*"],
                "description": f"control-plane bench endpoint {index}",
            }
        )
        endpoint, _secret = store.create_endpoint(account, data)
        return account, endpoint.id

    try:
        before = Load.read(pids)
        started = time.monotonic()
        with ThreadPoolExecutor(threads) as pool:
            loaded.endpoints = list(pool.map(create, range(plan.endpoints)))
        loaded.load_seconds = time.monotonic() - started
        loaded.other_load_pct = before.others_pct(Load.read(pids))
        loaded.accounts = len({account for account, _ in loaded.endpoints})
        started = time.monotonic()
        snapshot = store.load_all()
        loaded.load_all_seconds = time.monotonic() - started
        if len(snapshot.endpoints) != plan.endpoints:
            loaded.note = f"load_all returned {len(snapshot.endpoints)} endpoints"
    finally:
        store.close()
    say(
        f"  {loaded.load_seconds:.1f} s ({loaded.per_second:.0f}/s), "
        f"load_all {loaded.load_all_seconds:.2f} s"
    )
    return loaded
