"""What the endpoint store needs so that it matches a subscriber file.

A subscriber's ``id`` is its endpoint's id and its ``account`` the endpoint's
account; an ``all_accounts: true`` subscriber (an internal sink) is kept under
the internal account (``internal`` unless told otherwise).  Fields the file does
not know (description, enabled, paused) are left as the store has them, so a
pause made through the API survives an import.

The plan is complete before anything is written: a file that breaks the API's
URL rules, or an id the store holds under another account, stops the import
with nothing changed.
"""

from __future__ import annotations

import hmac
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import SecretStr

from config.errors import ConfigError, ConflictError, InvalidInputError
from config.subscribers import CircuitBreakerOverride, Subscriber, SubscriberFile
from control.api.url_rules import check_endpoint_url
from control.store.models import OPTION_FIELDS, EndpointInput, EndpointPatch, EndpointWithSecrets
from wire.envelope import ACCOUNT_ID

# none: keep what the file does not list; accounts: delete it within the file's
# accounts; all: delete it whatever its account.
PruneScope = Literal["none", "accounts", "all"]
DEFAULT_INTERNAL_ACCOUNT = "internal"

# What an unset option means (the store keeps None for "the default").
_OPTION_DEFAULTS = {name: Subscriber.model_fields[name].default for name in OPTION_FIELDS}


@dataclass(frozen=True, order=True)
class EndpointRef:
    """One endpoint, named by its account and id."""

    account: str
    endpoint_id: str

    def __str__(self) -> str:
        return f"{self.account}/{self.endpoint_id}"


@dataclass(frozen=True)
class Creation:
    """An endpoint the file lists and the store lacks."""

    ref: EndpointRef
    data: EndpointInput
    secret: SecretStr = field(repr=False)

    @property
    def host(self) -> str:
        """The URL's host (never its path or query, which may hold a token)."""
        return urlsplit(self.data.url).hostname or ""


@dataclass(frozen=True)
class Change:
    """An endpoint both hold, with fields that differ; ``secret`` is the file's when
    it differs from the stored one."""

    ref: EndpointRef
    patch: EndpointPatch
    secret: SecretStr | None = field(default=None, repr=False)

    @property
    def fields(self) -> tuple[str, ...]:
        """The names of the fields that change (``secret`` among them, never its value)."""
        names = list(self.patch.changes())
        if self.secret is not None:
            names.append("secret")
        return tuple(sorted(names))


@dataclass(frozen=True)
class ImportPlan:
    """Everything an import does, and what it leaves alone."""

    creations: tuple[Creation, ...]
    changes: tuple[Change, ...]
    deletions: tuple[EndpointRef, ...]
    unchanged: tuple[EndpointRef, ...]
    # In the file's accounts, not in the file, and kept because pruning was not asked for.
    unlisted: tuple[EndpointRef, ...]

    @property
    def empty(self) -> bool:
        """Whether the store already matches the file."""
        return not (self.creations or self.changes or self.deletions)


def plan_import(
    file: SubscriberFile,
    stored: Iterable[EndpointWithSecrets],
    *,
    source: str,
    prune: PruneScope = "none",
    internal_account: str = DEFAULT_INTERNAL_ACCOUNT,
    allow_private_networks: bool = False,
) -> ImportPlan:
    """The plan that makes ``stored`` match ``file`` (``source`` names it in errors).

    Raises ConfigError when a URL breaks the API's rules and ConflictError when
    the store holds a file's id under another account.
    """
    if not ACCOUNT_ID.match(internal_account):
        raise InvalidInputError(
            "internal account: must be 1-64 letters, digits, '_' or '-'",
            fields=["internal_account"],
        )
    by_id = {item.endpoint.id: item for item in stored}
    wanted: dict[str, tuple[EndpointRef, Subscriber]] = {}
    for index, subscriber in enumerate(file.subscribers):
        _check_url(file, index, source, allow_private_networks)
        account = internal_account if subscriber.all_accounts else subscriber.account
        assert account is not None  # the file's model requires one or all_accounts
        wanted[subscriber.id] = (EndpointRef(account, subscriber.id), subscriber)
    _refuse_moves(wanted, by_id)

    creations, changes, unchanged = [], [], []
    for ref, subscriber in wanted.values():
        current = by_id.get(ref.endpoint_id)
        if current is None:
            creations.append(Creation(ref, _new_endpoint(subscriber), subscriber.secret))
            continue
        patch, secret_differs = _differences(current, subscriber)
        if patch or secret_differs:
            secret = subscriber.secret if secret_differs else None
            changes.append(Change(ref, EndpointPatch.parse(patch), secret))
        else:
            unchanged.append(ref)

    accounts = {ref.account for ref, _ in wanted.values()}
    deletions, unlisted = [], []
    for endpoint_id, item in by_id.items():
        if endpoint_id in wanted:
            continue
        ref = EndpointRef(item.endpoint.account_id, endpoint_id)
        in_scope = ref.account in accounts
        if prune == "all" or (prune == "accounts" and in_scope):
            deletions.append(ref)
        elif in_scope:
            unlisted.append(ref)
    return ImportPlan(
        creations=tuple(creations),
        changes=tuple(changes),
        deletions=tuple(sorted(deletions)),
        unchanged=tuple(unchanged),
        unlisted=tuple(sorted(unlisted)),
    )


def _check_url(file: SubscriberFile, index: int, source: str, allow_private: bool) -> None:
    """The API's URL rules, reported like any other mistake in the file."""
    subscriber = file.subscribers[index]
    try:
        check_endpoint_url(subscriber.url, allow_private_networks=allow_private)
    except InvalidInputError as error:
        hint = ""
        if file.security.allow_private_networks and not allow_private:
            # The file's own switch does not carry over: the store has one policy.
            hint = (
                " (the file's security.allow_private_networks does not apply to the store: "
                "set WEBHOOK_ALLOW_PRIVATE_NETWORKS=true)"
            )
        message = str(error).removeprefix("url: ")
        raise ConfigError(
            f"{source}: subscribers[{index}] (id {subscriber.id!r}).url: {message}{hint}"
        ) from None


def _refuse_moves(
    wanted: dict[str, tuple[EndpointRef, Subscriber]], by_id: dict[str, EndpointWithSecrets]
) -> None:
    # Moving an endpoint to another merchant would send that merchant's events to
    # the old merchant's URL: never as a side effect of an edit, only by a delete.
    moves = [
        f"{item.endpoint.account_id}/{endpoint_id} (the file says account {ref.account!r})"
        for endpoint_id, (ref, _) in wanted.items()
        if (item := by_id.get(endpoint_id)) is not None and item.endpoint.account_id != ref.account
    ]
    if moves:
        raise ConflictError(
            "the store holds these ids under another account: "
            + ", ".join(moves)
            + "; delete them first (DELETE /v1/accounts/{account}/endpoints/{id}) or give "
            "the subscribers new ids"
        )


def _new_endpoint(subscriber: Subscriber) -> EndpointInput:
    options = {k: v for k, v in _stored_options(subscriber).items() if v is not None}
    return EndpointInput.parse(
        {
            "url": subscriber.url,
            "events": list(subscriber.events),
            "all_accounts": subscriber.all_accounts,
            **options,
        }
    )


def _differences(
    current: EndpointWithSecrets, subscriber: Subscriber
) -> tuple[dict[str, Any], bool]:
    """The patch (field: new value) and whether the secret differs."""
    endpoint = current.endpoint
    patch: dict[str, Any] = {}
    if endpoint.url != subscriber.url:
        patch["url"] = subscriber.url
    # Patterns are bindings: their order means nothing.
    if set(endpoint.events) != set(subscriber.events):
        patch["events"] = list(subscriber.events)
    if endpoint.all_accounts != subscriber.all_accounts:
        patch["all_accounts"] = subscriber.all_accounts
    options = _stored_options(subscriber)
    for name in OPTION_FIELDS:
        # Compared by what a worker would use, so "10 given" equals "unset, default 10".
        if _effective(name, getattr(endpoint, name)) != _effective(name, getattr(subscriber, name)):
            patch[name] = options[name]
    stored_secret = current.secret.get_secret_value().encode()
    file_secret = subscriber.secret.get_secret_value().encode()
    return patch, not hmac.compare_digest(stored_secret, file_secret)


def _stored_options(subscriber: Subscriber) -> dict[str, Any]:
    """The options as the store keeps them: what the file gave, None for the defaults."""
    given = subscriber.model_fields_set
    options: dict[str, Any] = {}
    for name in OPTION_FIELDS:
        value = getattr(subscriber, name) if name in given else None
        if isinstance(value, CircuitBreakerOverride):
            value = value.model_dump(exclude_none=True) or None
        options[name] = value
    return options


def _effective(name: str, value: Any) -> Any:
    if name == "circuit_breaker":
        return {} if value is None else value.model_dump(exclude_none=True)
    return _OPTION_DEFAULTS[name] if value is None else value
