"""What follows every committed change: one audit line, then one change notice.

The audit line (structlog event ``api_audit``) says who (the token's
fingerprint), what, on which account and endpoint, and the store version the
change took.  It never carries a secret or a URL's path or query (either may
hold a credential): at most the URL's host.
"""

from __future__ import annotations

from typing import Literal

import structlog

from broker.change_notices import ChangeKind, ChangeNotice
from control.api.notices import ChangeNotices

log = structlog.get_logger(__name__)

Action = Literal["create", "update", "delete", "rotate", "pause", "resume"]

CHANGE_OF: dict[Action, ChangeKind] = {
    "create": "created",
    "update": "updated",
    "delete": "deleted",
    "rotate": "rotated",
    "pause": "paused",
    "resume": "resumed",
}


def record_change(
    notices: ChangeNotices,
    *,
    actor: str,
    action: Action,
    account: str,
    endpoint_id: str,
    version: int,
    **details: object,
) -> None:
    """Write the audit line of a committed change and queue its change notice."""
    log.info(
        "api_audit",
        actor=actor,
        action=action,
        account=account,
        endpoint_id=endpoint_id,
        version=version,
        **details,
    )
    notices.publish(ChangeNotice(version, account, endpoint_id, CHANGE_OF[action]))
