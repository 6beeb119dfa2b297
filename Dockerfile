# The jobkit image. Its command is `manager` (the HTTP API on :8080, the default)
# or `worker`, as the seed's image was; every other jobkit subcommand works too:
#   docker build -t jobkit .
#   docker run --rm jobkit --help
#   docker run --rm jobkit worker --help
# Needs BuildKit (Docker's default builder since 23.0) for `RUN --mount`.

ARG PYTHON_VERSION=3.12

# -- builder: the source tree becomes one wheel ------------------------------
FROM python:${PYTHON_VERSION}-slim AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore
WORKDIR /src
# Only what the wheel is built from: setup.cfg reads README.md (long_description).
COPY pyproject.toml setup.cfg README.md ./
COPY jobkit/ ./jobkit/
RUN pip wheel --no-deps --wheel-dir /wheels .

# -- runtime -----------------------------------------------------------------
FROM python:${PYTHON_VERSION}-slim

ARG VERSION=dev
LABEL org.opencontainers.image.title="jobkit" \
      org.opencontainers.image.description="Celery-style task queue on beanstalkd with MongoDB or SQLite results and a REST API; command: manager or worker" \
      org.opencontainers.image.licenses="MIT" \
      org.opencontainers.image.version="${VERSION}"

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore

# The wheel is bind-mounted from the builder, never copied: no layer keeps it,
# and --no-cache-dir leaves no pip cache. Dependencies are binary wheels from
# PyPI, so this stage needs no compiler.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-cache-dir /wheels/jobkit-*.whl

# A fixed, unprivileged uid/gid (numeric USER below, so runtimes can verify it).
RUN groupadd --system --gid 10001 jobkit \
 && useradd --system --uid 10001 --gid jobkit --no-create-home \
            --home-dir /nonexistent --shell /usr/sbin/nologin jobkit

COPY --chmod=0755 docker/healthcheck.py /usr/local/bin/jobkit-healthcheck

# JOBKIT_APP defaults to examples.hashing:app, imported from the current
# directory. /app and the code in it belong to root: the service cannot change
# the code it runs. Results go to MongoDB (the stack); for an SQLite file, mount
# a writable volume and point JOBKIT_BACKEND_URL at it.
WORKDIR /app
COPY examples/ ./examples/

USER 10001:10001
EXPOSE 8080

# For the default command (manager). A worker serves no HTTP: run it with
# --no-healthcheck, or `healthcheck: disable: true` as swarm/stack.yml does.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["jobkit-healthcheck"]

# Exec form: jobkit is the process Docker signals (PID 1 unless the runtime
# adds an init, as the stack's `init: true` does), so SIGTERM reaches the
# worker's graceful shutdown instead of a shell.
ENTRYPOINT ["jobkit"]
CMD ["manager"]
