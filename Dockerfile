# Image for the rater: the faust worker (`rater worker`) and the load
# simulator (`rater simulate ...`). Build from the repository root:
#   docker build -t rater .
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The dependencies first, pinned by constraints.txt (the same versions as CI and
# `make venv`), from a stub package: a change to the code or the rate tables
# does not rebuild this layer.
COPY pyproject.toml README.md LICENSE constraints.txt ./
RUN mkdir rater && touch rater/__init__.py \
    && pip install -c constraints.txt . \
    && pip uninstall -y rater \
    && rm -rf rater build

# Then the package itself, its dependencies already installed.
COPY rater ./rater
RUN pip install --no-deps . && rm -rf build

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
