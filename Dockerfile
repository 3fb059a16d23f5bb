# syntax=docker/dockerfile:1
#
# One image for the worker (default), the producer, webhook-api and the tools:
#   docker build -t webhook-relay .
#   docker run --env-file ... -v ./subscribers.yaml:/etc/webhooks/subscribers.yaml:ro webhook-relay
#       -> webhook-worker run (JSON logs on stdout, /healthz /readyz /metrics on :9100)
#   docker run --entrypoint webhook-publish webhook-relay order.created --sample --account acme
#   docker run --entrypoint webhook-dlq webhook-relay list
#   docker run --entrypoint webhook-api --env-file ... -p 127.0.0.1:8080:8080 webhook-relay
#       (API_HOST=0.0.0.0, API_TOKENS, DATABASE_URL, SECRETS_KEY; its health check
#       is /healthz on API_PORT, see docker-compose.yml)
#   docker run --entrypoint webhook-admin --env-file ... webhook-relay apply -f FILE
# Configuration comes from the environment (RABBITMQ_URL, RABBITMQ_USERNAME,
# RABBITMQ_PASSWORD, WEBHOOK_CONFIG, METRICS_HOST, METRICS_PORT, LOG_FORMAT,
# LOG_LEVEL, SHUTDOWN_GRACE_SECONDS; the API's and the store's in README.md)
# and the mounted subscriber file.

ARG PYTHON_VERSION=3.11

# ---- build: wheels for the project and its dependencies ----------------------
FROM python:${PYTHON_VERSION}-slim AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY . .
RUN pip wheel --wheel-dir /wheels .

# ---- runtime -----------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim
ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels webhook-relay

# Unprivileged user; it owns its working directory and /app/dlq-backups only
# (webhook-dlq purge writes its backup file to the current directory), never the
# installed code. docker-compose.yml runs the worker in /app/dlq-backups with a
# named volume there; a new volume takes this directory's owner.
RUN groupadd --system --gid 10001 webhooks \
 && useradd --system --uid 10001 --gid webhooks --home-dir /app --no-create-home \
        --shell /usr/sbin/nologin webhooks \
 && mkdir -p /app /app/dlq-backups /etc/webhooks \
 && chown webhooks:webhooks /app /app/dlq-backups
WORKDIR /app
# Operator scripts (e.g. scripts/replay-dead-letters), for those who only have
# the container: `docker compose exec worker /app/scripts/replay-dead-letters ...`.
COPY scripts/ /app/scripts/

# JSON logs to stdout. METRICS_HOST=0.0.0.0 so Prometheus can scrape from
# another container; do not publish this port outside the private network.
ENV LOG_FORMAT=json \
    METRICS_HOST=0.0.0.0 \
    METRICS_PORT=9100 \
    WEBHOOK_CONFIG=/etc/webhooks/subscribers.yaml \
    DLQ_BACKUP_DIR=/app/dlq-backups

USER 10001:10001
EXPOSE 9100

# Liveness only (the process serves HTTP); readiness is /readyz and the
# webhook_worker_ready metric. No curl in slim images, hence Python.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('METRICS_PORT', '9100'), timeout=4)"]

ENTRYPOINT ["webhook-worker"]
CMD ["run"]
