"""Code shared by the producer and the worker: settings, subscribers, topology and wire format."""
