"""The delivery log's recorder: attempt records from RabbitMQ into the store, and retention.

``python -m control.delivery_log`` (or ``webhook-recorder``) runs it as a process.
"""
