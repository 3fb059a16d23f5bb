"""AMQP message contract between producers, the worker and the operator tools.

A queued event is an AMQP message whose body is the exact webhook body
(``{"event", "data", "timestamp"}`` as UTF-8 JSON) and whose properties are:

* ``message_id``: the stable event id (sent as ``X-Webhook-Id`` on every attempt);
* ``type``: the event type; the routing key on ``webhooks.events`` is
  ``<account>.<event type>``;
* header ``x-webhook-account``: the account (merchant) the event belongs to;
* ``content_type``: ``application/json``; ``delivery_mode``: 2 (persistent);
* ``timestamp``: publish time, whole seconds (AMQP's own field).

Headers below are added by the worker when it moves a message on; a message
without them is at attempt 1.
"""

from __future__ import annotations

CONTENT_TYPE = "application/json"
PERSISTENT = 2

# Set by the producer: the merchant the event belongs to (also the first word of
# the routing key). The worker never delivers an event to another account's endpoint.
ACCOUNT = "x-webhook-account"

# Set by the worker on retry and dead-letter copies.
ATTEMPT = "x-webhook-attempt"  # the attempt the message is waiting for (1-based)
SUBSCRIBER = "x-webhook-subscriber"
FIRST_ATTEMPT_AT = "x-webhook-first-attempt-at"  # ISO-8601 UTC
LAST_ATTEMPT_AT = "x-webhook-last-attempt-at"
LAST_STATUS = "x-webhook-last-status"  # HTTP status, 0 when no response
LAST_ERROR = "x-webhook-last-error"  # short, never the payload or the secret
ATTEMPTS = "x-webhook-attempts"  # attempts made so far (DLQ copies)
DEAD_LETTER_REASON = "x-webhook-dead-letter-reason"  # "exhausted", "poison: ...", ...
DEAD_LETTERED_AT = "x-webhook-dead-lettered-at"
REPLAYED_AT = "x-webhook-replayed-at"  # set by the replay tool
RESENT_AT = "x-webhook-resent-at"  # set on a copy resent from the delivery log

# The dead-letter reason of a message whose properties could not be decoded is
# f"{UNDECODABLE_REASON} (<what could not be read>)".
UNDECODABLE_REASON = "poison: message properties cannot be decoded"
# On the dead-letter copy of a message whose properties could not be decoded: the
# property bytes as received, base64 (the first RAW_PROPERTIES_CAP bytes), and
# their full size, so an operator can see what the producer sent.
RAW_PROPERTIES = "x-webhook-raw-properties"
RAW_PROPERTIES_SIZE = "x-webhook-raw-properties-size"
RAW_PROPERTIES_CAP = 16 * 1024
# Set by the replay tool when it replays a letter without the headers it could not read.
REPLAY_NOTE = "x-webhook-replay-note"

# HTTP headers of a delivery (the product page's contract, plus the event id).
HTTP_SIGNATURE = "X-Webhook-Signature"
HTTP_EVENT = "X-Webhook-Event"
HTTP_ATTEMPT = "X-Webhook-Attempt"
HTTP_ID = "X-Webhook-Id"
HTTP_TEST = "X-Webhook-Test"
USER_AGENT = "Chatsvia-Webhooks/0.1 (+webhook-relay)"
