# One image for every service: `docker compose` picks the entry point per service
# (python -m services.backfiller | services.producer | services.sink, python -m qryptify migrate).
#
# Build stage: the compiled core (native/, Rust + PyO3) as an abi3 wheel for CPython >= 3.11.
FROM rust:1-slim-bookworm AS native
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-venv \
 && rm -rf /var/lib/apt/lists/* \
 && python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install --no-cache-dir 'maturin>=1.7,<2'
WORKDIR /src
COPY native ./native
RUN /opt/maturin/bin/maturin build --release --manifest-path native/Cargo.toml \
    --interpreter python3 --out /wheels

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
COPY --from=native /wheels /wheels
RUN pip install . /wheels/*.whl && rm -rf build ./*.egg-info /wheels \
 && python -m qryptify.native

# The Avro schemas and SQL migrations are package data (qryptify/schemas, qryptify/sql).
COPY config.yaml ./config.yaml

USER qryptify

CMD ["python", "-m", "qryptify", "--help"]
