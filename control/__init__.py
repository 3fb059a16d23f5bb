"""The control plane: what operators use to inspect and act (dead letters), the
endpoint store (accounts' webhook endpoints, in ``control.store``) and the HTTP API
over it (``control.api``, served by ``webhook-api``)."""
