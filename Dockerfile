# Image for the rater: the faust worker (`rater worker`) and the load
# simulator (`rater simulate ...`). Build from the repository root:
#   docker build -t rater .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Install the package (with the RocksDB table store) before copying the rate
# tables, so that editing a table does not rebuild the dependency layer.
COPY pyproject.toml README.md ./
COPY rater ./rater
RUN pip install ".[rocksdb]"

# Default rate tables baked into the image; docker-compose.yml mounts the
# repository's ./rate_tables over this directory read-only.
COPY rate_tables ./rate_tables

RUN groupadd --system --gid 10001 rater \
    && useradd --system --uid 10001 --gid rater --home-dir /var/lib/rater \
       --no-create-home --shell /usr/sbin/nologin rater \
    && mkdir -p /var/lib/rater \
    && chown rater:rater /var/lib/rater

ENV RATER_RATES_DIR=/app/rate_tables \
    RATER_STATE_DIR=/var/lib/rater \
    RATER_WEB_HOST=0.0.0.0 \
    RATER_WEB_PORT=6066

USER rater

# /healthz and /metrics (Prometheus).
EXPOSE 6066

# slim has no curl: ask python's urllib. Any HTTP error, refused connection or
# timeout raises, so the exit status is non-zero.
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('RATER_WEB_PORT', '6066'), timeout=4)"]

ENTRYPOINT ["rater"]
CMD ["worker"]
