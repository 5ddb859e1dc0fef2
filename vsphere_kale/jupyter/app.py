"""The Jupyter server extension app: configuration (traitlets) and wiring.

Every trait can be set in ``jupyter_server_config.py`` as ``c.VsphereKaleApp.<name>``, on the
command line as ``--VsphereKaleApp.<name>=...``, and most from an environment variable, so the
same extension runs in a Kubeflow notebook pod (all defaults) and locally against the sandbox
(``vsphere-kale sandbox`` sets them).
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from jupyter_server.extension.application import ExtensionApp
from traitlets import Float, TraitError, Unicode, default, validate

from vsphere_kale.jupyter.admin_client import SERVICE_ACCOUNT_DIR, AdminApiClient
from vsphere_kale.jupyter.handlers import SERVICE_KEY, setup_handlers
from vsphere_kale.jupyter.service import HealthService, LocalStatus
from vsphere_kale.settings import CONFIG_ENV, load_settings

DEFAULT_ADMIN_URL = "https://vsphere-kale.vsphere-kale.svc:8444"
"""The Service's ``admin`` port (deploy/base/service.yaml): the admin API's own container."""


def _env(name: str, fallback: str) -> str:
    return os.environ.get(name) or fallback


class VsphereKaleApp(ExtensionApp):
    """vsphere-kale health endpoints for the notebook's namespace."""

    name = "vsphere_kale"
    load_other_extensions = True

    admin_url = Unicode(
        config=True,
        help="""Base URL of the vsphere-kale admin API (vsphere-kale serve).
        Default: $VSPHERE_KALE_ADMIN_URL, else https://vsphere-kale.vsphere-kale.svc:8444
        (the in-cluster service). When it cannot be reached, status is computed locally
        and read-only.""",
    )

    namespace = Unicode(
        config=True,
        help="""Namespace whose health is shown. Default: $VSPHERE_KALE_NAMESPACE, else the
        pod's service-account namespace (namespace_file) read at each request.""",
    )

    namespace_file = Unicode(
        f"{SERVICE_ACCOUNT_DIR}/namespace",
        config=True,
        help="File holding the pod's namespace, used when namespace is empty.",
    )

    token_file = Unicode(
        config=True,
        help="""Service-account token sent to the admin API as a Bearer token; re-read on
        every call because projected tokens rotate. Default: $VSPHERE_KALE_TOKEN_FILE, else
        the pod's service-account token.""",
    )

    ca_file = Unicode(
        config=True,
        help="""CA bundle that verifies the admin API's serving certificate. Default:
        $VSPHERE_KALE_CA_FILE, else the pod's service-account ca.crt. A missing file means
        the system trust store.""",
    )

    timeout = Float(
        config=True,
        help="""Seconds to wait for the admin API (connect and whole request) before falling
        back to the local status. Default: $VSPHERE_KALE_TIMEOUT, else 10.""",
    )

    kubeconfig = Unicode(
        "",
        config=True,
        help="""Kubeconfig for the local read-only fallback. Empty: in-cluster config in a
        pod, else $KUBECONFIG or ~/.kube/config.""",
    )

    config_file = Unicode(
        config=True,
        help=f"""vsphere-kale settings YAML used by the local fallback (RWX class, pod-security
        mode). Default: ${CONFIG_ENV}; empty means built-in defaults.""",
    )

    @default("admin_url")
    def _default_admin_url(self) -> str:
        return _env("VSPHERE_KALE_ADMIN_URL", DEFAULT_ADMIN_URL)

    @default("namespace")
    def _default_namespace(self) -> str:
        return _env("VSPHERE_KALE_NAMESPACE", "")

    @default("token_file")
    def _default_token_file(self) -> str:
        return _env("VSPHERE_KALE_TOKEN_FILE", f"{SERVICE_ACCOUNT_DIR}/token")

    @default("ca_file")
    def _default_ca_file(self) -> str:
        return _env("VSPHERE_KALE_CA_FILE", f"{SERVICE_ACCOUNT_DIR}/ca.crt")

    @default("timeout")
    def _default_timeout(self) -> float:
        raw = _env("VSPHERE_KALE_TIMEOUT", "10")
        try:
            return float(raw)
        except ValueError as exc:
            raise TraitError(f"VSPHERE_KALE_TIMEOUT: {raw!r} is not a number of seconds") from exc

    @default("config_file")
    def _default_config_file(self) -> str:
        return _env(CONFIG_ENV, "")

    @validate("admin_url")
    def _check_admin_url(self, proposal: dict[str, Any]) -> str:
        value = str(proposal["value"])
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise TraitError(
                f"VsphereKaleApp.admin_url: {value!r} is not an http(s) URL "
                "(e.g. https://vsphere-kale.vsphere-kale.svc:8444)"
            )
        return value

    @validate("timeout")
    def _check_timeout(self, proposal: dict[str, Any]) -> float:
        value = float(proposal["value"])
        if value <= 0:
            raise TraitError(f"VsphereKaleApp.timeout: must be positive, got {value:g}")
        return value

    def build_service(self) -> HealthService:
        settings = load_settings(self.config_file or None, environ={})
        admin = AdminApiClient(
            url=self.admin_url,
            token_file=self.token_file,
            ca_file=self.ca_file or None,
            timeout=self.timeout,
        )
        local = LocalStatus(kubeconfig=self.kubeconfig or None, settings=settings)
        return HealthService(
            admin, local, namespace=self.namespace or None, namespace_file=self.namespace_file
        )

    def initialize_settings(self) -> None:
        self.settings[SERVICE_KEY] = self.build_service()
        self.log.info(
            "vsphere-kale: admin API %s, namespace %s",
            self.admin_url,
            self.namespace or f"from {self.namespace_file}",
        )

    def initialize_handlers(self) -> None:
        assert self.serverapp is not None, "loaded as a server extension, so serverapp is set"
        setup_handlers(self.serverapp.web_app)

    async def stop_extension(self) -> None:
        service = self.settings.get(SERVICE_KEY)
        if isinstance(service, HealthService):
            service.close()
