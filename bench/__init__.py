"""End-to-end benchmark of webhook-relay: ``python -m bench`` (see docs/performance.md)."""
