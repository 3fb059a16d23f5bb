"""The webhook worker: consumes per-subscriber queues, signs and delivers events."""
