"""The command-line tools: webhook-publish, webhook-worker, webhook-dlq."""
