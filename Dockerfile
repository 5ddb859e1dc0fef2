# syntax=docker/dockerfile:1
# vsphere-kale: the in-cluster service (`vsphere-kale serve`).
#
#   docker build -t REGISTRY/vsphere-kale:TAG .
#   docker push REGISTRY/vsphere-kale:TAG
#   vsphere-kale install --image REGISTRY/vsphere-kale:TAG --rwx-storage-class nfs-client
#
# Two stages: the first builds the wheel and installs it with its runtime dependencies into a
# virtualenv; the second copies only that virtualenv onto a clean slim image, so no compiler,
# build backend, pip cache or source tree ships. No test extras and no JupyterLab.

ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
# Air-gapped builds: --build-arg PIP_INDEX_URL=https://mirror.example/simple (pip reads it).
ARG PIP_INDEX_URL=https://pypi.org/simple
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# Only what the wheel is built from (pyproject's readme and shared-data included), so a change
# to tests or docs does not invalidate this layer. .dockerignore keeps the rest out.
COPY pyproject.toml README.md ./
COPY jupyter-config/ jupyter-config/
COPY vsphere_kale/ vsphere_kale/
RUN python -m venv /opt/vsphere-kale \
    && pip wheel --no-deps --wheel-dir /tmp/wheels . \
    && /opt/vsphere-kale/bin/pip install /tmp/wheels/vsphere_kale-*.whl \
    && /opt/vsphere-kale/bin/vsphere-kale --version

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="vsphere-kale" \
      org.opencontainers.image.description="Kubeflow and Kale on VMware vSphere with Tanzu: RWX storage-class webhook, pod-security reconciler, health API" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.source="https://github.com/vsphere-kale/vsphere-kale" \
      org.opencontainers.image.vendor="vsphere-kale"
# Unbuffered logs reach `kubectl logs` at once; no .pyc writes on the read-only root filesystem.
ENV PATH=/opt/vsphere-kale/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
COPY --from=build /opt/vsphere-kale /opt/vsphere-kale
# The same numeric uid/gid the Deployment's securityContext sets (runAsNonRoot needs a number
# to verify). The files stay root-owned: the service only reads them.
USER 10001:10001
# 8443: the webhook (the Deployment's `webhook` container); 8444: the admin API (its `serve
# --no-webhook` container). The CMD below serves both routes in one process on 8443, for a
# plain `docker run`; the Deployment sets its own args.
EXPOSE 8443 8444
ENTRYPOINT ["vsphere-kale"]
CMD ["serve", "--config", "/etc/vsphere-kale/config.yaml", "--cert-file", "/etc/vsphere-kale/tls/tls.crt", "--key-file", "/etc/vsphere-kale/tls/tls.key", "--port", "8443", "--log-format", "json"]
