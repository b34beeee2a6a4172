# syntax=docker/dockerfile:1
# Both stages use the same base so the virtualenv's interpreter path holds in the final image.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

# Build: a virtualenv with exactly what uv.lock pins for serving (all wheels: no compiler).
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_PYTHON_DOWNLOADS=never \
    UV_COMPILE_BYTECODE=0 \
    UV_NO_CACHE=1
WORKDIR /src
COPY requirements/uv.txt ./requirements/
RUN python -m pip install --no-cache-dir --require-hashes --no-deps -r requirements/uv.txt
COPY pyproject.toml uv.lock README.md ./
COPY gateway ./gateway
COPY clients ./clients
# --no-editable: the package itself is copied into the virtualenv, so /src can be left behind.
RUN uv sync --locked --no-default-groups --no-editable \
 && find /opt/venv -name __pycache__ -prune -exec rm -rf {} +

# Run: the virtualenv only; no pip, no sources, no build tools, an unprivileged user.
FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="notify-gateway" \
      org.opencontainers.image.description="Redis pub/sub fanned out to WebSocket clients" \
      org.opencontainers.image.licenses="MIT"
RUN groupadd --system --gid 10001 gateway \
 && useradd --system --uid 10001 --gid gateway --no-create-home --no-log-init \
      --shell /usr/sbin/nologin gateway
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8765
# Numeric, so orchestrators can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8765
# serve drains connections on SIGTERM (close 1001) within GATEWAY_SHUTDOWN_TIMEOUT.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('GATEWAY_PORT', '8765'); sys.exit(urllib.request.urlopen(f'http://127.0.0.1:{port}/healthz', timeout=2).status != 200)"]
ENTRYPOINT ["notify-gateway"]
CMD ["serve"]
