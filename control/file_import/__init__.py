"""Loading a subscriber file into the endpoint store, declaratively (``webhook-admin apply``).

* :mod:`~control.file_import.plan`: what the store needs so that it matches the
  file (endpoints to create, change and, when pruning, delete), worked out
  before anything is written;
* :mod:`~control.file_import.applier`: carrying a plan out against the store.
"""
