# syntax=docker/dockerfile:1
#
# Tessera: one image for every service; the command chooses the service:
#
#   docker build -t tessera:dev .
#   docker run --rm tessera:dev gateway      # or store, query, render, codec; --help lists all
#
# Configured only by environment (TESSERA_*, OTEL_*): see docs/DEPLOY.md.
# Pinned: the base image by exact tag (add @sha256:… when you publish, see docs/DEPLOY.md),
# uv by version (the one ./run uses), every Python package by uv.lock (--frozen).

ARG PYTHON_IMAGE=python:3.11.14-slim-trixie

# --- build: resolve nothing, install exactly what uv.lock pins into /opt/tessera -------------
FROM ${PYTHON_IMAGE} AS build
ARG UV_VERSION=0.13.9
ENV UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    UV_PYTHON_DOWNLOADS=never \
    UV_PYTHON=/usr/local/bin/python3 \
    UV_PROJECT_ENVIRONMENT=/opt/tessera \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python -m pip install --no-cache-dir "uv==${UV_VERSION}"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/root/.cache/uv \
    uv sync --frozen --no-dev --no-editable

# --- runtime: the virtual environment and nothing else, as an unprivileged user -------------
FROM ${PYTHON_IMAGE} AS runtime
RUN groupadd --system --gid 10001 tessera \
    && useradd --system --no-log-init --uid 10001 --gid tessera \
        --home-dir /nonexistent --shell /usr/sbin/nologin tessera \
    && install -d -o tessera -g tessera -m 0750 /var/lib/tessera
COPY --from=build /opt/tessera /opt/tessera
ENV PATH=/opt/tessera/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    TESSERA_HOST=0.0.0.0 \
    TESSERA_DATA_DIR=/var/lib/tessera
WORKDIR /var/lib/tessera
USER 10001:10001
# 8080: the gateway's HTTP (and its /metrics); 9464: /metrics, /healthz, /readyz of the others.
EXPOSE 8080 9464
ENTRYPOINT ["tessera"]
CMD ["--help"]
