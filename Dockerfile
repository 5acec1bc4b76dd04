# One image for every service: `docker compose` picks the entry point per service
# (python -m services.backfiller | services.producer | services.sink, python -m qryptify migrate).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    QRYPTIFY_CONFIG=/app/config.yaml

RUN groupadd --system qryptify \
 && useradd --system --gid qryptify --home-dir /app --shell /usr/sbin/nologin qryptify \
 && mkdir -p /var/cache/qryptify \
 && chown qryptify:qryptify /var/cache/qryptify

WORKDIR /app

COPY pyproject.toml README.md ./
COPY qryptify ./qryptify
COPY services ./services
COPY sim ./sim
RUN pip install . && rm -rf build ./*.egg-info

# The Avro schemas and SQL migrations are package data (qryptify/schemas, qryptify/sql).
COPY config.yaml ./config.yaml

USER qryptify

CMD ["python", "-m", "qryptify", "--help"]
