"""The real control plane (etcd + kube-apiserver + kube-controller-manager) as the playground
uses it: the handful of :class:`~vsphere_kale.sandbox.testing.RunningSandbox` methods that
:class:`~vsphere_kale.playground.system.LocalSystem` needs, over
:mod:`vsphere_kale.controlplane`'s launcher.

The Kubeflow picture is not in here: the seed is written through the API and the profile
controller and provisioners are API clients, exactly as on the embedded sandbox.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path
from typing import Any

from vsphere_kale.errors import ConfigError
from vsphere_kale.kube import build_api_client
from vsphere_kale.sandbox.kubeconfig import write_kubeconfig

log = logging.getLogger(__name__)

PSP_ON_REAL = (
    "psp needs --control-plane embedded: PodSecurityPolicy was removed in Kubernetes 1.25, "
    "and the real control plane is 1.36"
)


class RealPlane:
    """Starts the real control plane; ``url``, ``tokens`` (admin first), ``kubeconfig_path``
    (one context per user, as the sandbox writes), ``api_client()``, ``write_kubeconfig()``,
    ``stop()``."""

    def __init__(self, *, flavor: str, kubeconfig_path: Path, port: int = 0) -> None:
        if flavor == "psp":
            raise ConfigError("--flavor", PSP_ON_REAL)
        # Imported here: the embedded playground must not depend on the launcher.
        from vsphere_kale.controlplane import ControlPlaneError, start_control_plane

        try:
            self._cp = start_control_plane(flavor=flavor, port=port or None)
        except ControlPlaneError as exc:
            raise ConfigError("--control-plane", str(exc)) from exc
        self.url: str = self._cp.url
        self.tokens: dict[str, str] = dict(self._cp.tokens)
        self.ca_pem: bytes = self._cp.ca_pem
        self.start_seconds: float = float(getattr(self._cp, "start_seconds", 0.0))
        self.workdir = Path(self._cp.workdir)
        self._tmp = Path(tempfile.mkdtemp(prefix="vsphere-kale-realplane-"))
        self.kubeconfig_path = write_kubeconfig(
            kubeconfig_path, self.url, self.tokens, ca_pem=self.ca_pem
        )
        self._clients: list[Any] = []
        self._stopped = False

    def write_kubeconfig(
        self, path: str | Path, *, token: str | None = None, user: str = "admin"
    ) -> Path:
        return write_kubeconfig(
            path, self.url, {user: token or self.tokens["admin"]}, ca_pem=self.ca_pem
        )

    def api_client(self, token: str | None = None) -> Any:
        """A real ApiClient (admin unless ``token``), closed by :meth:`stop`."""
        path = self.kubeconfig_path
        if token is not None:
            path = self.write_kubeconfig(
                self._tmp / f"kubeconfig-{len(self._clients)}", token=token
            )
        api = build_api_client(str(path))
        self._clients.append(api)
        return api

    def check(self) -> None:
        """Raise (a sentence naming the component) if etcd or an API server process died."""
        self._cp.check()

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for api in self._clients:
            try:
                api.close()
            except Exception:  # a client's pool teardown must not stop the shutdown
                log.debug("closing an ApiClient failed", exc_info=True)
        self._cp.stop()
        shutil.rmtree(self._tmp, ignore_errors=True)
