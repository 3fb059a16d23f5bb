"""``webhook-api``: the HTTP API (FastAPI, JSON) over the endpoint store.

``app.create_app`` builds the application from ``services.ApiServices``;
``cli/api.py`` serves it with uvicorn.  One module per job: ``auth`` (bearer
tokens), ``schemas`` (bodies), ``endpoints`` and ``endpoint_actions`` (routes),
``event_types``, ``errors`` (the one error shape), ``audit`` (the audit line
and change notice after each change), ``notices`` (publishing them in the
background), ``url_rules``, ``pagination``.
"""
