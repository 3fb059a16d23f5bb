"""The per-subscriber dead-letter queues, for operators: read, replay and purge them.

* :mod:`~control.dead_letters.model`: a dead letter and what its headers say;
* :mod:`~control.dead_letters.filters`: which letters an operation applies to;
* :mod:`~control.dead_letters.reader`: the order-preserving, non-destructive scan;
* :mod:`~control.dead_letters.replay` and :mod:`~control.dead_letters.purge`: the two
  operations that remove letters from a queue.
"""
