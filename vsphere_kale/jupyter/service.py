"""What the Jupyter extension's handlers call: status and reconcile for the notebook's namespace.

Built once by the extension loader and stored in ``web_app.settings`` (jupyterlab-git style);
handlers stay thin. The admin API is the source of truth; when it cannot be reached the status
is computed locally, read-only, under the notebook's own credentials, so a user still sees why
a pipeline step is Pending even while ``serve`` is down or not installed yet.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from typing import Any

from vsphere_kale.errors import ConfigError, KubeError, KubeForbidden
from vsphere_kale.health.status import collect_status, resolve_mode
from vsphere_kale.jupyter.admin_client import AdminApiClient, AdminApiUnavailable
from vsphere_kale.kube import Kube
from vsphere_kale.settings import Settings

log = logging.getLogger(__name__)


class LocalStatus:
    """Read-only status computed with the ``kubernetes`` client under the notebook's identity.

    The client is built on first use, not at server start: a Jupyter server must start
    even where no kubeconfig exists (then only the admin API path works).
    """

    def __init__(self, *, kubeconfig: str | None, settings: Settings) -> None:
        self._kubeconfig = kubeconfig
        self._settings = settings
        self._lock = threading.Lock()
        self._kube: Kube | None = None
        self._mode: str | None = None

    @property
    def settings(self) -> Settings:
        return self._settings

    def kube(self) -> Kube:
        """The notebook identity's client, built on first use (the Kale section reads with it)."""
        with self._lock:
            if self._kube is None:
                self._kube = Kube.from_kubeconfig(self._kubeconfig)
            return self._kube

    def _resolved(self) -> tuple[Kube, str]:
        with self._lock:
            if self._kube is None:
                self._kube = Kube.from_kubeconfig(self._kubeconfig)
            if self._mode is None:
                try:
                    self._mode = resolve_mode(self._kube, settings=self._settings, mode=None)
                except KubeForbidden as exc:
                    # A notebook may not be allowed to read discovery for policy/v1beta1;
                    # PSA is the answer on anything current (Kubernetes >= 1.25).
                    log.info("cannot tell whether PSP is served (%s); assuming psa", exc)
                    self._mode = "psa"
            return self._kube, self._mode

    def collect(self, namespace: str) -> dict[str, Any]:
        """Blocking: run it in an executor."""
        kube, mode = self._resolved()
        return collect_status(
            kube,
            namespace,
            settings=self._settings,
            mode=mode,
            can_reconcile=False,
            source="local",
        )

    def close(self) -> None:
        with self._lock:
            if self._kube is not None:
                self._kube.close()
                self._kube = None


class HealthService:
    """Status and reconcile for one notebook namespace."""

    def __init__(
        self,
        admin: AdminApiClient,
        local: LocalStatus,
        *,
        namespace: str | None,
        namespace_file: str,
    ) -> None:
        self.admin = admin
        self.local = local
        self._namespace = namespace
        self._namespace_file = namespace_file

    def namespace(self) -> str:
        """The configured namespace, else the pod's service-account namespace file."""
        if self._namespace:
            return self._namespace
        try:
            with open(self._namespace_file, encoding="utf-8") as handle:
                found = handle.read().strip()
        except OSError:
            found = ""
        if not found:
            raise ConfigError(
                "c.VsphereKaleApp.namespace",
                f"not set and no service-account namespace in {self._namespace_file}; "
                "set it to the notebook's namespace",
            )
        return found

    async def status(self) -> dict[str, Any]:
        namespace = self.namespace()
        try:
            return await self.admin.fetch_status(namespace)
        except AdminApiUnavailable as exc:
            log.info(
                "admin API unavailable for namespace %s (%s); computing a local read-only status",
                namespace,
                exc,
            )
            reason = str(exc)
        loop = asyncio.get_running_loop()
        try:
            status = await loop.run_in_executor(None, self.local.collect, namespace)
        except KubeError as exc:
            # Both paths failed: say both, the first is usually the one to fix.
            raise type(exc)(
                f"{reason}; the local read-only status failed too: {exc}",
                status=exc.status,
                reason=exc.reason,
            ) from exc
        # The local view can never repair anything, whatever collect_status was told.
        status["source"] = "local"
        status["canReconcile"] = False
        status["fallbackReason"] = reason
        # Recreation goes through the service, so it refuses every claim for now; the local
        # rule's own answer would be judged with this notebook's settings, not the service's.
        for row in status.get("pvcs") or ():
            row["recreateRefusal"] = (
                f"the vsphere-kale service cannot be reached ({reason}): claims are "
                "recreated only through it"
            )
        return status

    async def reconcile(self) -> dict[str, Any]:
        namespace = self.namespace()
        try:
            return await self.admin.reconcile(namespace)
        except AdminApiUnavailable as exc:
            raise AdminApiUnavailable(
                f"cannot reconcile {namespace}: {exc}; repairs go through the admin API "
                "(vsphere-kale serve), the notebook has no rights to make them itself"
            ) from exc

    async def recreate_pvc(self, name: str) -> dict[str, Any]:
        """Recreate the notebook namespace's stuck claim ``name`` through the admin API."""
        namespace = self.namespace()
        try:
            return await self.admin.recreate_pvc(namespace, name)
        except AdminApiUnavailable as exc:
            raise AdminApiUnavailable(
                f"cannot recreate {namespace}/{name}: {exc}; fixes go through the "
                "vsphere-kale service, the notebook has no rights to make them itself"
            ) from exc

    def close(self) -> None:
        self.local.close()
