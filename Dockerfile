# syntax=docker/dockerfile:1
#
# One image for every `segflow` subcommand: ingest, process, sink, topics, backfill, reverse-etl,
# console. The default target (runtime) is the production image: the dependencies of
# requirements/production.lock and the s3 extra, nothing else. The target `local` adds the local
# Snowflake emulator (python -m runtime.services.emulator_server) for docker-compose.
#
#   docker build -t segflow:dev .
#   docker build --target local -t segflow:local .
#   docker run --rm segflow:dev --help
#
# The container runs as uid/gid 10001 and works with a read-only root filesystem: the only
# writable paths are /tmp and /var/lib/segflow (Faust tables in processors/, emulator databases
# in warehouse/, both created here so that fresh named volumes take the user's ownership), which
# the Helm chart and docker-compose.yml mount as emptyDir / tmpfs / volumes.

# Debian 12: the apt pins below (tini) are bookworm versions.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# --- build: a virtualenv with the locked dependencies, then the project itself --------------
FROM ${PYTHON_IMAGE} AS build

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1

# a C compiler for the native extensions (schemas/_avro_native.c, processors/_prescreen.c,
# ingest/_jsonscan.c); only this stage has it
RUN apt-get update \
    && apt-get install --yes --no-install-recommends gcc=4:12.2.0-3 libc6-dev=2.36-9+deb12u14 \
    && rm -rf /var/lib/apt/lists/*

RUN python -m venv /opt/segflow
ENV PATH=/opt/segflow/bin:$PATH
WORKDIR /src

# Dependencies first, from the lock file alone (every package pinned and hash-checked: what
# production runs, no emulator, no dev or test tools), so that a code change reuses this layer.
COPY requirements/production.lock requirements/
RUN pip install --require-hashes --requirement requirements/production.lock

COPY pyproject.toml README.md* ./
COPY schemas/ schemas/
COPY runtime/ runtime/
COPY ingest/ ingest/
COPY processors/ processors/
COPY sinks/ sinks/
COPY reverse_etl/ reverse_etl/
COPY deletion/ deletion/
COPY observe/ observe/
COPY cli/ cli/
RUN pip install --no-deps . \
    && python -m compileall -q /opt/segflow/lib \
    && python -c "import schemas._avro_native, processors._prescreen, ingest._jsonscan" \
    && segflow --help > /dev/null

# --- build-local: the same plus the local extra (the Snowflake emulator), for docker-compose --
FROM build AS build-local
COPY requirements/local.lock requirements/
RUN pip install --require-hashes --requirement requirements/local.lock \
    && python -m compileall -q /opt/segflow/lib \
    && python -c "import fakesnow.server"

# --- runtime: the slim base, tini as PID 1, the virtualenv, a non-root user --------------------
FROM ${PYTHON_IMAGE} AS runtime-base

ARG SEGFLOW_UID=10001
RUN apt-get update \
    && apt-get install --yes --no-install-recommends tini=0.19.0-1+b3 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid "${SEGFLOW_UID}" segflow \
    && useradd --system --uid "${SEGFLOW_UID}" --gid segflow --no-create-home \
        --home-dir /var/lib/segflow --shell /usr/sbin/nologin segflow \
    && install --directory --owner segflow --group segflow --mode 0750 \
        /var/lib/segflow /var/lib/segflow/processors /var/lib/segflow/warehouse

# Nothing is written outside /tmp and /var/lib/segflow: no .pyc files (compiled at build time),
# caches of the Snowflake connector and of other libraries under /tmp.
ENV PATH=/opt/segflow/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    HOME=/var/lib/segflow \
    XDG_CACHE_HOME=/tmp/.cache \
    SF_OCSP_RESPONSE_CACHE_DIR=/tmp/.cache/snowflake

WORKDIR /var/lib/segflow
USER ${SEGFLOW_UID}:${SEGFLOW_UID}

# tini forwards SIGTERM to segflow, which drains (the sink flushes) before it exits.
ENTRYPOINT ["/usr/bin/tini", "--", "segflow"]
CMD ["--help"]

LABEL org.opencontainers.image.title="segflow" \
      org.opencontainers.image.description="Segment events into Snowflake through Kafka, exactly once" \
      org.opencontainers.image.licenses="Apache-2.0"

# --- local: the image docker-compose builds (target: local), with the emulator ---------------
FROM runtime-base AS local
COPY --from=build-local /opt/segflow /opt/segflow

# --- runtime (the default target): production, nothing but what production runs -------------
FROM runtime-base AS runtime
COPY --from=build /opt/segflow /opt/segflow
