"""Carrying out an import plan against the endpoint store.

Each endpoint is one store transaction, in the plan's order: creations, then
changes, then deletions (new endpoints are in place before old ones go).  A
failure part-way leaves the rest undone; running the import again plans from
what was stored and finishes the job.  Nothing here prints or logs a secret.
"""

from __future__ import annotations

from config.errors import InvalidInputError
from control.file_import.plan import ImportPlan
from control.store.endpoints import EndpointStore
from control.store.models import MAX_OVERLAP_SECONDS


def apply_plan(store: EndpointStore, plan: ImportPlan, *, overlap_seconds: float = 0) -> int:
    """Write ``plan`` to ``store``; returns the store version of the last write (0: none).

    A secret changed in the file replaces the stored one; the old one stays
    valid for ``overlap_seconds`` (0: not at all, as a restart on a changed
    subscriber file always did).
    """
    if not 0 <= overlap_seconds <= MAX_OVERLAP_SECONDS:
        # Checked before the first write, not at the first changed secret.
        raise InvalidInputError(
            f"overlap: must be between 0 and {MAX_OVERLAP_SECONDS} seconds (7 days)",
            fields=["overlap_seconds"],
        )
    version = 0
    for creation in plan.creations:
        endpoint, _ = store.create_endpoint(
            creation.ref.account,
            creation.data,
            endpoint_id=creation.ref.endpoint_id,
            secret=creation.secret,
        )
        version = endpoint.version
    for change in plan.changes:
        account, endpoint_id = change.ref.account, change.ref.endpoint_id
        if change.patch.changes():
            version = store.update_endpoint(account, endpoint_id, change.patch).version
        if change.secret is not None:
            endpoint, _ = store.rotate_secret(
                account, endpoint_id, overlap_seconds, secret=change.secret
            )
            version = endpoint.version
    for ref in plan.deletions:
        version = store.delete_endpoint(ref.account, ref.endpoint_id)
    return version
