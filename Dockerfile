# syntax=docker/dockerfile:1
# cdcstream container image: the wheel (`python -m build`, as README "Install" builds it) installed into the
# virtualenv /opt/cdcstream/venv (the systemd unit's path) in a full Python image, copied into a slim runtime
# image of the same Python (same path and minor version, so compiled wheels match), run as a non-root user.
#
#   docker build -t cdcstream:0.1.0 .
#   docker run --init -v ./cdcstream.toml:/etc/cdcstream/cdcstream.toml:ro \
#       -v cdcstream-state:/var/lib/cdcstream -e AWS_REGION=eu-west-1 -p 9187:9187 cdcstream:0.1.0
#
# Configuration: the TOML file at /etc/cdcstream/cdcstream.toml (mount it; [http] listen must be
# "0.0.0.0:9187" for probes from outside the container and [checkpoint] state_dir "/var/lib/cdcstream").
# Any key can be overridden by environment: CDCSTREAM_<SECTION>__<KEY>, e.g. CDCSTREAM_SOURCE__HOST.
# Secrets by file or environment, never baked in: password_file = "/run/secrets/source_password" (Docker/
# Kubernetes secret), or CDCSTREAM_SOURCE_PASSWORD; Kinesis credentials from the AWS chain (AWS_* variables,
# IRSA / EKS Pod Identity, instance role).
#
# Control endpoint: POST /reload (cdcstream reload) needs the control token. Unless the config names one
# ([http] control_token_file, e.g. a mounted secret, or CDCSTREAM_HTTP__CONTROL_TOKEN) the daemon generates it
# in the state volume (/var/lib/cdcstream/control-token, 0600), where
# `docker exec <container> cdcstream reload --config /etc/cdcstream/cdcstream.toml --table s.t` finds it.
#
# Signals: cdcstream handles SIGTERM itself (drain, checkpoint, exit 0), so it works as PID 1; `--init`
# (or Kubernetes) still reaps zombies. It exits within drain_timeout (30 s) + 10 s: `docker stop -t 60`.
#
# Checked with hadolint (tests/deploy/test_container.py); no image is built in CI (no container engine).

ARG PYTHON_VERSION=3.11

FROM python:${PYTHON_VERSION}-slim-bookworm AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# A C compiler for the compiled extensions (the fused row paths src/cdcstream/sources/{postgres,mysql}/_fused.c, the
# mapper's src/cdcstream/mapping/_splice.c, the sink's src/cdcstream/sinks/_putrecords.c and the mapping workers'
# src/cdcstream/workers/_frames.c), in this stage only.
RUN apt-get update \
    && apt-get install -y --no-install-recommends build-essential=12.9 \
    && rm -rf /var/lib/apt/lists/*
# The wheel, built as README "Install" builds it, and installed with its dependencies into the virtualenv. The
# extension is optional for pip (a machine without a compiler gets the pure path), not for the image: the
# import fails the build if it was not compiled.
COPY pyproject.toml setup.py README.md LICENSE ./
COPY src ./src
RUN python -m pip install "build==1.*" \
    && python -m build --wheel --outdir /dist . \
    && python -m venv /opt/cdcstream/venv \
    && /opt/cdcstream/venv/bin/pip install /dist/cdcstream-*.whl \
    && /opt/cdcstream/venv/bin/python -c "import cdcstream.sources.postgres._fused, cdcstream.sources.mysql._fused, cdcstream.sinks._putrecords, cdcstream.mapping._splice, cdcstream.workers._frames" \
    && /opt/cdcstream/venv/bin/python -m compileall -q /opt/cdcstream/venv/lib

FROM python:${PYTHON_VERSION}-slim-bookworm AS runtime
LABEL org.opencontainers.image.title="cdcstream" \
      org.opencontainers.image.description="Change data capture from PostgreSQL to Amazon Kinesis in AWS DMS format" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed numeric uid/gid, so Kubernetes runAsNonRoot can verify it and volume ownership is predictable.
RUN groupadd --system --gid 10001 cdcstream \
    && useradd --system --uid 10001 --gid cdcstream --home-dir /var/lib/cdcstream --no-create-home \
       --shell /usr/sbin/nologin cdcstream \
    && install -d -o cdcstream -g cdcstream -m 0700 /var/lib/cdcstream \
    && install -d -m 0755 /etc/cdcstream
# Only the virtualenv crosses over (with the compiled extension): no compiler, pip cache or source tree in the
# final image.
COPY --from=build /opt/cdcstream/venv /opt/cdcstream/venv
ENV PATH=/opt/cdcstream/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
WORKDIR /var/lib/cdcstream
VOLUME ["/var/lib/cdcstream"]
EXPOSE 9187
STOPSIGNAL SIGTERM
# Plain Docker/Compose only (Kubernetes ignores HEALTHCHECK and uses the probes in deploy/kubernetes/).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["cdcstream", "healthcheck", "--url", "http://127.0.0.1:9187/healthz"]
ENTRYPOINT ["cdcstream"]
CMD ["run", "--config", "/etc/cdcstream/cdcstream.toml"]
