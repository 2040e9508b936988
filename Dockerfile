# syntax=docker/dockerfile:1
# loginvault: one image for every command of `loginvault` (bootstrap, run, transform, recover,
# dlq, seed, summary, keys, audit). dbt_project/ is inside, so `transform build` runs dbt from the same image.
#
#   docker build -t loginvault .
#   docker run --rm -e PG_DSN=… -e SQS_QUEUE_URL=… loginvault run --follow
FROM python:3.11-slim

LABEL org.opencontainers.image.title="loginvault" \
      org.opencontainers.image.description="SQS login events into PostgreSQL with PII masked: dlt ingest, dbt transform." \
      org.opencontainers.image.licenses="Apache-2.0"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    RUNTIME__DLTHUB_TELEMETRY=false \
    DBT_SEND_ANONYMOUS_USAGE_STATS=false

WORKDIR /app

# Dependency layer: only pyproject.toml's runtime dependencies, from their lock (`make lock`:
# every package pinned, hashes checked). It is rebuilt when the lock changes, not on every change
# of the code below.
COPY requirements/runtime.lock requirements/
RUN pip install --require-hashes -r requirements/runtime.lock

RUN groupadd --system --gid 10001 loginvault \
    && useradd --system --uid 10001 --gid loginvault --home-dir /home/loginvault --create-home \
        --shell /usr/sbin/nologin loginvault

# The code stays in /app, where ingest/config.py finds dbt_project/ beside it, owned by root so that
# the process cannot change its own code. An editable install (no dependencies: they are above)
# puts the `loginvault` command on PATH and the package's metadata (its version) in place.
COPY ingest/ ingest/
COPY dbt_project/ dbt_project/
COPY pyproject.toml README.md ./
RUN pip install --no-deps --editable .
# dbt writes target/ and logs/ inside its project: the only writable paths under /app (on
# Kubernetes, with a read-only root filesystem, emptyDir volumes are mounted there and on /tmp).
RUN mkdir -p dbt_project/target dbt_project/logs \
    && chown loginvault:loginvault dbt_project/target dbt_project/logs

# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 10001:10001

ENTRYPOINT ["loginvault"]
CMD ["--help"]
