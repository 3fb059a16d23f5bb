"""The control plane: what operators use to inspect and act (dead letters), and the
endpoint store (accounts' webhook endpoints, in ``control.store``)."""
