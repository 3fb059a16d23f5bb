"""The control plane: what operators use to inspect and act (dead letters)."""
