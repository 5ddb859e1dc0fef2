"""The whole system on a local API server: what ``vsphere-kale sandbox`` runs.

:class:`LocalSystem` starts

1. the API server -- the embedded sandbox or the real control plane -- with the
   ``kubeflow-demo`` seed (Profiles alice and bob, alice's Pending Kale marshal volume; RBAC
   on) and, as API clients, the Kubeflow profile controller and the vSphere CSI / nfs-client
   provisioners (:mod:`vsphere_kale.playground.controllers`);
2. the install, through the code of ``vsphere-kale install`` itself
   (:func:`vsphere_kale.install.installer.install`): the rendered ``deploy/base`` (plus the
   ``psp`` component in the psp flavor) with the ConfigMap of the effective settings, RBAC, the
   Deployment, the TLS Secret and the webhook configuration with its caBundle. The serving
   certificate also names ``127.0.0.1`` (install's ``extra_sans``), because the local clients
   and, on the real control plane, the API server (``clientConfig.url``: kube-apiserver cannot
   reach a Service's ClusterIP here) call serve at that address;
3. one replica of the installed Deployment as local processes, one per container
   (:class:`~vsphere_kale.playground.localpod.LocalPod`): the Deployment's own args, the
   ConfigMap and Secret as files, a TokenRequest token of the ServiceAccount; the logs go to
   ``<workdir>/serve.log`` (reconciler and admin API) and ``<workdir>/webhook.log``;
4. the files a notebook needs to act as alice: a token file, a kubeconfig, the CA.

The embedded API server runs in this process (on a thread); tests use :class:`LocalSystem`
directly, :mod:`vsphere_kale.playground.runmode` adds JupyterLab on top.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from vsphere_kale.controlplane.config import free_port
from vsphere_kale.errors import ConfigError
from vsphere_kale.install import installer, render
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.playground.controllers import PlaygroundControllers, start_controllers
from vsphere_kale.playground.localpod import LocalPod
from vsphere_kale.playground.realplane import PSP_ON_REAL, RealPlane
from vsphere_kale.playground.seed import apply_seed_through_api
from vsphere_kale.sandbox.server import build_sandbox
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.settings import Settings, with_overrides

log = logging.getLogger(__name__)

SERVICE_NAMESPACE = render.BASE_NAMESPACE
SERVICE_NAME = render.NAME
WEBHOOK_PATH = "/mutate/persistentvolumeclaims"
WEBHOOK_SERVICE_PORT = 443
WEBHOOK_CONTAINER_PORT = 8443
ADMIN_CONTAINER_PORT = 8444
"""The ports of deploy/base's Service and containers (tests/playground checks they match)."""
LOCAL_ADDRESS = "127.0.0.1"
_START_TIMEOUT = 20.0


class _Plane(Protocol):
    """What LocalSystem needs of an API server (RunningSandbox and RealPlane have it)."""

    url: str
    tokens: dict[str, str]

    def api_client(self, token: str | None = None) -> Any: ...

    def write_kubeconfig(
        self, path: str | Path, *, token: str | None = None, user: str = "admin"
    ) -> Path: ...

    def stop(self) -> None: ...


def build_components(flavor: str) -> tuple[str, ...]:
    """The overlays a cluster of this flavor is installed with (psp: PodSecurityPolicy)."""
    return ("psp",) if flavor == "psp" else ()


class LocalSystem:
    """API server + install + serve, started by :meth:`start` (or ``with``), in ``workdir``.

    After start: ``running`` or ``real`` (the API server), ``kubeconfig_path`` (admin context
    current, one context per seeded user), ``admin_url`` and ``ca_file`` (the admin API), and
    for the notebook user: ``user_token_file``, ``user_kubeconfig``, ``namespace``.
    ``settings`` (default: ``deploy/base/config.yaml`` with ``rwx_storage_class``) is what
    install writes into the ConfigMap, and so what serve runs with.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        flavor: str = "psp",
        user: str = "alice",
        rwx_storage_class: str = "nfs-client",
        control_plane: str = "embedded",
        settings: Settings | None = None,
        api_port: int = 0,
        rotation_interval: float | None = None,
        secret_sync_seconds: float = 2.0,
    ) -> None:
        if control_plane == "real" and flavor == "psp":
            raise ConfigError("--flavor", PSP_ON_REAL)
        self.workdir = workdir
        self.flavor = flavor
        self.control_plane = control_plane
        self.user = user
        self.namespace = user
        self.rwx_storage_class = rwx_storage_class
        self.settings = settings
        self.api_port = api_port
        self.rotation_interval = rotation_interval
        self.secret_sync_seconds = secret_sync_seconds
        self.webhook_port = 0
        """Local port standing for the webhook container's 8443 (Service port 443)."""
        self.admin_port = 0
        """Local port standing for the serve container's 8444 (Service port 8444)."""
        self.running: RunningSandbox | None = None
        self.real: RealPlane | None = None
        self._pod: LocalPod | None = None
        self._controllers: PlaygroundControllers | None = None
        self.serve_log = workdir / "serve.log"
        self.webhook_log = workdir / "webhook.log"
        self.install_log = workdir / "install.log"
        self.kubeconfig_path = workdir / "kubeconfig"
        self.ca_file = workdir / "certs" / "ca.crt"
        self.user_token_file = workdir / f"{user}.token"
        self.user_kubeconfig = workdir / f"{user}.kubeconfig"

    @property
    def plane(self) -> _Plane:
        """The API server in use: the embedded sandbox or the real control plane."""
        plane: _Plane | None = self.running if self.real is None else self.real
        assert plane is not None, "the system is not started"
        return plane

    @property
    def pod(self) -> LocalPod:
        assert self._pod is not None, "the system is not started"
        return self._pod

    @property
    def admin_url(self) -> str:
        return f"https://{LOCAL_ADDRESS}:{self.admin_port}"

    @property
    def webhook_url(self) -> str:
        return f"https://{LOCAL_ADDRESS}:{self.webhook_port}{WEBHOOK_PATH}"

    @property
    def api_url(self) -> str:
        return self.plane.url

    @property
    def users(self) -> list[str]:
        return list(self.plane.tokens)

    @property
    def real_control_plane(self) -> bool:
        return self.real is not None

    def jupyter_traits(self) -> dict[str, Any]:
        """``VsphereKaleApp`` configuration for a Jupyter server acting as the notebook user."""
        return {
            "admin_url": self.admin_url,
            "namespace": self.namespace,
            "token_file": str(self.user_token_file),
            "ca_file": str(self.ca_file),
            "kubeconfig": str(self.user_kubeconfig),
            # Generous: a laptop or CI machine busy with other work must not turn the first
            # call (TokenReview + SubjectAccessReviews + lists) into a local fallback.
            "timeout": 20.0,
        }

    def build_settings(self) -> Settings:
        if self.settings is not None:
            return self.settings
        base = render.base_settings()
        # The playground's Kubeflow injects Istio without the CNI plugin, as most TKG installs
        # do, so notebook pods get istio-init and need privileged: with the default baseline
        # they would be refused (the seed's kale-nb shows exactly that). The playground runs
        # as we advise an admin to: psaLevel auto, which reads that evidence and decides.
        base = replace(base, pod_security=replace(base.pod_security, psa_level="auto"))
        return with_overrides(base, rwx_storage_class=self.rwx_storage_class)

    def start(self) -> LocalSystem:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start_plane(self) -> Kube:
        if self.control_plane == "real":
            self.real = RealPlane(
                flavor=self.flavor, kubeconfig_path=self.kubeconfig_path, port=self.api_port
            )
            if self.user not in self.real.tokens:
                raise ConfigError("--user", f"{self.user!r} is not a seeded user")
            admin = Kube(self.real.api_client())
            apply_seed_through_api(admin, "kubeflow-demo", flavor=self.flavor)
            return admin
        # The sandbox reaches the webhook's Service port as kube-proxy would.
        service_key = f"{SERVICE_NAMESPACE}/{SERVICE_NAME}:{WEBHOOK_SERVICE_PORT}"
        setup = build_sandbox(
            flavor=self.flavor,
            seed="kubeflow-demo",
            authorization=True,
            service_map={service_key: f"{LOCAL_ADDRESS}:{self.webhook_port}"},
        )
        if self.user not in setup.tokens:
            raise ConfigError("--user", f"{self.user!r} is not a seeded user")
        # TLS: kubectl sends bearer tokens only over HTTPS (over plain HTTP it would be
        # anonymous); the generated CA goes into the kubeconfig.
        try:
            self.running = RunningSandbox(
                setup.sandbox,
                setup.tokens,
                tls=True,
                port=self.api_port,
                kubeconfig_path=self.kubeconfig_path,
            )
        except OSError as exc:
            raise ConfigError(
                "--api-port",
                f"cannot listen on {LOCAL_ADDRESS}:{self.api_port} ({exc.strerror}): pick "
                "another with --api-port PORT",
            ) from exc
        return Kube(self.running.api_client())

    def install(self, admin: Kube) -> installer.InstallResult:
        """``vsphere-kale install`` (the same function), its lines in ``install_log``."""
        components = build_components(self.flavor)
        options = installer.InstallOptions(
            self.build_settings(),
            components,
            # The real API server calls serve by URL; the sandbox reaches the Service.
            webhook_url=self.webhook_url if self.real is not None else None,
            extra_sans=(LOCAL_ADDRESS,),
        )
        lines: list[str] = []
        result = installer.install(
            admin, options, rendered=render.fetch_rendered(components), echo=lines.append
        )
        if result.cert_plan is not None:
            lines.append(f"# certificates: {result.cert_plan.reason}")
        self.install_log.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return result

    def _start(self) -> None:
        self.webhook_port, self.admin_port = free_port(), free_port()
        admin = self._start_plane()
        plane = self.plane
        # Kubeflow's profile controller and the two storage provisioners: API clients, the
        # same code on either control plane.
        self._controllers = start_controllers(admin)
        settings = self.build_settings()
        self.install(admin)

        # The pod's ServiceAccount token (what its projected volume holds): only the shipped
        # RBAC applies to serve.
        token = admin.create(
            r.TOKEN_REQUEST,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 86400},
            },
            namespace=settings.namespace,
            name=SERVICE_NAME,
        )["status"]["token"]
        serve_kubeconfig = plane.write_kubeconfig(
            self.workdir / "serve.kubeconfig", token=token, user="vsphere-kale"
        )
        extra = []
        if self.rotation_interval is not None:
            extra = ["--cert-rotation-interval", f"{self.rotation_interval:g}"]
        self._pod = LocalPod(
            admin,
            namespace=settings.namespace,
            root=self.workdir / "pod",
            ports={
                WEBHOOK_CONTAINER_PORT: self.webhook_port,
                ADMIN_CONTAINER_PORT: self.admin_port,
            },
            kubeconfig=serve_kubeconfig,
            log_dir=self.workdir,
            ca_file=self.ca_file,
            extra_args=extra,
            secret_period=self.secret_sync_seconds,
        ).start(timeout=_START_TIMEOUT)

        # The notebook user's identity, as a Kubeflow pod would have it (token + kubeconfig).
        user_token = plane.tokens[self.user]
        self.user_token_file.write_text(user_token + "\n", encoding="utf-8")
        self.user_token_file.chmod(0o600)
        plane.write_kubeconfig(self.user_kubeconfig, token=user_token, user=self.user)

    def stop(self) -> None:
        """Stop serve, the emulated controllers, then the API server; every step bounded."""
        if self._pod is not None:
            self._pod.stop()
            self._pod = None
        if self._controllers is not None:
            self._controllers.stop()
            self._controllers = None
        if self.running is not None:
            self.running.stop()
            self.running = None
        if self.real is not None:
            self.real.stop()
            self.real = None

    def __enter__(self) -> LocalSystem:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
