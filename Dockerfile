# corral and its example apps in one image.
#
#   docker build -t corral .
#   docker run --rm -p 8000:8000 -p 9180:9180 corral                 # examples.hello:app
#   docker run --rm -p 8000:8000 -p 9180:9180 corral examples.chaos:app --workers 4
#
# The app listens on 8000 and the side port (/metrics, /healthz, /readyz,
# /workers, the status page) on 9180. Both bind 0.0.0.0 here through
# CORRAL_HOST and CORRAL_METRICS_HOST: corral binds 127.0.0.1 by default,
# which nothing outside the container could reach. Protect the side port
# before publishing it beyond a private network (CORRAL_METRICS_TOKEN, or
# --metrics-web-config for TLS and basic auth).
FROM python:3.12-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# Dependencies first, exactly as pinned in deploy/docker/requirements.txt
# (generated from pyproject.toml by scripts/lock_image.py, `make lock`; a test
# checks it still matches): corral[otlp]'s runtime dependencies, so the image
# exports spans as soon as OTEL_EXPORTER_OTLP_ENDPOINT is set. --no-deps
# everywhere means nothing unpinned gets in; pip check proves nothing is
# missing. Their own layer, so a source change does not reinstall them.
COPY deploy/docker/requirements.txt /tmp/requirements.txt
RUN pip install --no-deps -r /tmp/requirements.txt && rm /tmp/requirements.txt

# Then corral, from a throwaway copy of the source: only the installed package
# and the examples stay in the image.
COPY pyproject.toml README.md LICENSE /tmp/corral/
COPY src /tmp/corral/src
RUN pip install --no-deps /tmp/corral && pip check && rm -rf /tmp/corral

RUN useradd --system --uid 10001 --user-group --home-dir /app --no-create-home corral
WORKDIR /app
COPY --chown=root:root examples ./examples

ENV CORRAL_HOST=0.0.0.0 \
    CORRAL_PORT=8000 \
    CORRAL_METRICS_HOST=0.0.0.0 \
    CORRAL_METRICS_PORT=9180 \
    OTEL_SERVICE_NAME=corral

USER 10001:10001
EXPOSE 8000 9180

# `corral status` exits 0 only when /readyz says ready. It takes every
# side-port credential from the environment, so no flag here pins one:
# CORRAL_METRICS_TOKEN or CORRAL_STATUS_TOKEN_FILE (bearer), CORRAL_STATUS_USER
# with CORRAL_STATUS_PASSWORD_FILE (basic), CORRAL_STATUS_CERT/_KEY (mutual
# TLS), CORRAL_STATUS_CACERT, and CORRAL_STATUS_URL (https://... for a TLS
# side port; default http://127.0.0.1:9180).
HEALTHCHECK --interval=10s --timeout=5s --start-period=10s --retries=3 \
    CMD ["corral", "status"]

# corral is PID 1: it handles SIGTERM (graceful drain) itself. Give it at
# least --shutdown-timeout + --force-stop-grace (33 s by default) to stop,
# e.g. `docker stop -t 40`.
ENTRYPOINT ["corral", "run"]
CMD ["examples.hello:app", "--workers", "2"]
