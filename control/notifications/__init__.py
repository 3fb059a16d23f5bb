"""Operational notifications: the notifier turns the workers' facts into signed notices.

``webhook-notifier`` (cli.notifier) consumes the operational-facts queue
(config.topology), gathers facts per endpoint (aggregator), and POSTs one
signed notice per endpoint per window (notice, sender) to the operator's URL
and to the endpoint's account's own URL (destinations).
"""
