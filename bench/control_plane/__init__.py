"""``python -m bench.control_plane``: the control plane at 10,000 endpoints (docs/scaling.md).

One job per module: ``plan`` (sizes and shared helpers), ``store_load`` (filling
the endpoint store), ``api_load`` (``webhook-api`` under concurrent clients),
``broker_cost`` (declaring the topology on throwaway nodes), ``worker_start``
(a worker with every endpoint), ``changes`` (how soon workers see an API
change), ``receiver`` (where those deliveries land), ``report`` (the tables)
and ``main`` (the run).  Figures are printed, never asserted.
"""
