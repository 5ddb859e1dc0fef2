"""The whole system on the sandbox: what ``vsphere-kale sandbox`` runs.

:class:`LocalSystem` starts

1. the sandbox API server (``kubeflow-demo`` seed: Profiles alice and bob, alice's Pending Kale
   marshal volume; RBAC on) and, as API clients, the Kubeflow profile controller and the
   vSphere CSI / nfs-client provisioners (:mod:`vsphere_kale.playground.kubeflow`,
   :mod:`vsphere_kale.playground.storage`);
2. the install, as ``vsphere-kale install`` would make it: namespace, ServiceAccount, Service
   and RBAC from ``deploy/base``, a CA and serving certificate from
   :mod:`vsphere_kale.install.certs`,
   and the MutatingWebhookConfiguration with that CA as ``caBundle`` (the sandbox reaches the
   Service ``vsphere-kale/vsphere-kale:443`` through its service map, on 127.0.0.1);
3. ``vsphere-kale serve`` in a child process, as the ``vsphere-kale`` ServiceAccount (a
   TokenRequest token in its kubeconfig): the HTTPS webhook with the admin API mounted and the
   leader-elected reconciler; its log goes to ``<workdir>/serve.log``;
4. the files a notebook needs to act as alice: a token file, a kubeconfig, the CA.

The sandbox API server runs in this process (on a thread); tests use :class:`LocalSystem`
directly, the CLI adds JupyterLab on top.
"""

from __future__ import annotations

import base64
import importlib.util
import logging
import os
import secrets
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any, Protocol, TypeVar

import click

from vsphere_kale.errors import ConfigError, KubeConflict, VsphereKaleError
from vsphere_kale.install.certs import build_cert_bundle, write_cert_files
from vsphere_kale.install.render import read_documents
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.playground.controllers import PlaygroundControllers, start_controllers
from vsphere_kale.playground.realplane import PSP_ON_REAL, RealPlane
from vsphere_kale.playground.seed import apply_seed_through_api
from vsphere_kale.playground.seed_kale import write_kale2_notebook
from vsphere_kale.sandbox.kubeconfig import context_name
from vsphere_kale.sandbox.server import build_sandbox
from vsphere_kale.sandbox.testing import RunningSandbox

log = logging.getLogger(__name__)

SERVICE_NAMESPACE = "vsphere-kale"
SERVICE_NAME = "vsphere-kale"
DEPLOY_BASE = Path(__file__).resolve().parents[2] / "deploy" / "base"
# The files of deploy/base that make sense without a Deployment (no pods run in the sandbox).
INSTALL_FILES = (
    "namespace.yaml",
    "serviceaccount.yaml",
    "service.yaml",
    "rbac.yaml",
    "reconciler-clusterrole.yaml",
)
WEBHOOK_FILE = "mutatingwebhookconfiguration.yaml"
_START_TIMEOUT = 20.0
_STOP_TIMEOUT = 10.0


class _Plane(Protocol):
    """What LocalSystem needs of an API server (RunningSandbox and RealPlane have it)."""

    url: str
    tokens: dict[str, str]

    def api_client(self, token: str | None = None) -> Any: ...

    def write_kubeconfig(
        self, path: str | Path, *, token: str | None = None, user: str = "admin"
    ) -> Path: ...

    def stop(self) -> None: ...


def free_port(address: str = "127.0.0.1") -> int:
    """A port free right now; the webhook Service must be mapped before serve listens."""
    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def apply_documents(kube: Kube, documents: list[dict[str, Any]]) -> None:
    """Create each document; one that exists already (409) is left as it is."""
    for doc in documents:
        kind = doc["kind"]
        name = doc["metadata"]["name"]
        try:
            resource = r.resource_for(doc.get("apiVersion", ""), kind)
        except KeyError:
            raise ConfigError(
                "deploy/base", f"the sandbox cannot create a {kind} ({name})"
            ) from None
        try:
            kube.create(resource, doc)
        except KubeConflict:
            log.debug("%s %s exists already", kind, name)


class _ServeProcess:
    """``vsphere-kale serve`` in a child process, its output in a log file."""

    def __init__(
        self, command: list[str], *, log_file: Path, ready_url: str, ca_file: Path
    ) -> None:
        self.log_file = log_file
        self._ready_url = ready_url
        self._ca_file = ca_file
        with log_file.open("wb") as out:
            self.process = subprocess.Popen(
                command, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )

    def wait_ready(self, timeout: float) -> None:
        """Until ``/readyz`` answers 200 (certificate loaded, informers synced), bounded."""
        context = ssl.create_default_context(cafile=str(self._ca_file))
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise VsphereKaleError(
                    f"serve exited with code {self.process.returncode}:\n{self.log_tail()}"
                )
            try:
                with urllib.request.urlopen(self._ready_url, timeout=2, context=context):
                    return
            except (urllib.error.URLError, OSError):
                time.sleep(0.2)
        raise VsphereKaleError(f"serve was not ready within {timeout:g} s:\n{self.log_tail()}")

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no log)"
        return "\n".join(text.splitlines()[-lines:])

    def stop(self) -> None:
        """SIGTERM: serve drains, stops the reconciler and releases its Lease; bounded."""
        if self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(_STOP_TIMEOUT + 5)
        except subprocess.TimeoutExpired:
            log.warning("serve did not stop within %ss; killing it", _STOP_TIMEOUT + 5)
            self.process.kill()
            self.process.wait(_STOP_TIMEOUT)


class LocalSystem:
    """Sandbox + install + serve, started by :meth:`start` (or ``with``), in ``workdir``.

    After start: ``running`` (the sandbox), ``kubeconfig_path`` (admin context current, one
    context per seeded user), ``admin_url`` and ``ca_file`` (the admin API), and for the
    notebook user: ``user_token_file``, ``user_kubeconfig``, ``namespace``.
    """

    def __init__(
        self,
        workdir: Path,
        *,
        flavor: str = "psp",
        user: str = "alice",
        rwx_storage_class: str = "nfs-client",
        control_plane: str = "embedded",
    ) -> None:
        if control_plane == "real" and flavor == "psp":
            raise ConfigError("--flavor", PSP_ON_REAL)
        self.workdir = workdir
        self.flavor = flavor
        self.control_plane = control_plane
        self.user = user
        self.namespace = user
        self.rwx_storage_class = rwx_storage_class
        self.serve_port = 0
        self.running: RunningSandbox | None = None
        self.real: RealPlane | None = None
        self._serve: _ServeProcess | None = None
        self._controllers: PlaygroundControllers | None = None
        self.serve_log = workdir / "serve.log"
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
    def admin_url(self) -> str:
        return f"https://127.0.0.1:{self.serve_port}"

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

    def start(self) -> LocalSystem:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._start()
        except BaseException:
            self.stop()
            raise
        return self

    def _start(self) -> None:
        self.serve_port = free_port()
        if self.control_plane == "real":
            # kube-apiserver cannot reach a Service here: the webhook names serve's URL.
            self.real = RealPlane(flavor=self.flavor, kubeconfig_path=self.kubeconfig_path)
            if self.user not in self.real.tokens:
                raise ConfigError("--user", f"{self.user!r} is not a seeded user")
            admin_client = self.real.api_client()
            apply_seed_through_api(Kube(admin_client), "kubeflow-demo", flavor=self.flavor)
        else:
            service_key = f"{SERVICE_NAMESPACE}/{SERVICE_NAME}:443"
            setup = build_sandbox(
                flavor=self.flavor,
                seed="kubeflow-demo",
                authorization=True,
                service_map={service_key: f"127.0.0.1:{self.serve_port}"},
            )
            if self.user not in setup.tokens:
                raise ConfigError("--user", f"{self.user!r} is not a seeded user")
            # TLS: kubectl sends bearer tokens only over HTTPS (over plain HTTP it would be
            # anonymous); the generated CA goes into the kubeconfig.
            self.running = RunningSandbox(
                setup.sandbox, setup.tokens, tls=True, kubeconfig_path=self.kubeconfig_path
            )
            admin_client = self.running.api_client()
        plane = self.plane
        # Kubeflow's profile controller and the two storage provisioners: API clients, the
        # same code on either control plane.
        self._controllers = start_controllers(Kube(admin_client))
        admin = Kube(admin_client)

        # The install: objects of deploy/base, then the CA and the webhook that trusts it.
        for name in INSTALL_FILES:
            apply_documents(admin, read_documents(DEPLOY_BASE / name))
        bundle = build_cert_bundle(SERVICE_NAME, SERVICE_NAMESPACE, extra_sans=["127.0.0.1"])
        write_cert_files(self.workdir / "certs", bundle, force=True)
        (webhook,) = read_documents(DEPLOY_BASE / WEBHOOK_FILE)
        for hook in webhook["webhooks"]:
            hook["clientConfig"]["caBundle"] = base64.b64encode(bundle.ca_cert).decode()
            if self.real is not None:
                path = hook["clientConfig"].pop("service")["path"]
                hook["clientConfig"]["url"] = f"{self.admin_url}{path}"
        apply_documents(admin, [webhook])

        # serve runs as its ServiceAccount, so the shipped RBAC is what it gets.
        token = admin.create(
            r.TOKEN_REQUEST,
            {
                "apiVersion": "authentication.k8s.io/v1",
                "kind": "TokenRequest",
                "spec": {"expirationSeconds": 86400},
            },
            namespace=SERVICE_NAMESPACE,
            name=SERVICE_NAME,
        )["status"]["token"]
        serve_kubeconfig = plane.write_kubeconfig(
            self.workdir / "serve.kubeconfig", token=token, user="vsphere-kale"
        )
        certs = self.workdir / "certs"
        self._serve = _ServeProcess(
            [
                sys.executable,
                "-m",
                "vsphere_kale.cli",
                "serve",
                "--kubeconfig",
                str(serve_kubeconfig),
                "--cert-file",
                str(certs / "tls.crt"),
                "--key-file",
                str(certs / "tls.key"),
                "--address",
                "127.0.0.1",
                "--port",
                str(self.serve_port),
                "--rwx-storage-class",
                self.rwx_storage_class,
                "--identity",
                "vsphere-kale-sandbox",
            ],
            log_file=self.serve_log,
            ready_url=f"{self.admin_url}/readyz",
            ca_file=self.ca_file,
        )
        self._serve.wait_ready(_START_TIMEOUT)

        # The notebook user's identity, as a Kubeflow pod would have it (token + kubeconfig).
        user_token = plane.tokens[self.user]
        self.user_token_file.write_text(user_token + "\n", encoding="utf-8")
        self.user_token_file.chmod(0o600)
        plane.write_kubeconfig(self.user_kubeconfig, token=user_token, user=self.user)

    def stop(self) -> None:
        """Stop serve, the emulated controllers, then the sandbox; every step bounded."""
        if self._serve is not None:
            self._serve.stop()
            self._serve = None
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


# --- the `vsphere-kale sandbox` run mode ------------------------------------------------------

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "cluster-health.ipynb"
_LAB_STOP_TIMEOUT = 15.0


def lab_command(
    system: LocalSystem, *, root_dir: Path, port: int, token: str, open_browser: bool
) -> list[str]:
    """The ``jupyter lab`` command line: the extension pointed at the local admin API."""
    traits = [f"--VsphereKaleApp.{name}={value}" for name, value in system.jupyter_traits().items()]
    return [
        sys.executable,
        "-m",
        "jupyterlab",
        "--ServerApp.ip=127.0.0.1",
        f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.root_dir={root_dir}",
        f"--ServerApp.open_browser={open_browser}",
        f"--LabApp.default_url=/lab/tree/{NOTEBOOK.name}",
        # Containers and CI run as root; the server listens on 127.0.0.1 with a token only.
        f"--ServerApp.allow_root={os.geteuid() == 0}",
        *traits,
    ]


def _wait_for_lab(process: subprocess.Popen[bytes], url: str, *, timeout: float) -> None:
    """Until the extension answers through JupyterLab (bounded), or the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise VsphereKaleError(
                f"JupyterLab exited with code {process.returncode} before it served; "
                "see its log above (is the port free?)"
            )
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except urllib.error.HTTPError:
            return  # it answers; the status itself may be an error the panel will show
        except OSError:
            time.sleep(0.2)
    raise VsphereKaleError(f"JupyterLab did not answer on {url} within {timeout:g} s")


def _stop_lab(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    # SIGTERM: jupyter_server shuts its kernels down and exits; SIGINT would ask "y/n?".
    process.terminate()
    try:
        process.wait(_LAB_STOP_TIMEOUT)
    except subprocess.TimeoutExpired:
        log.warning("JupyterLab did not stop within %ss; killing it", _LAB_STOP_TIMEOUT)
        process.kill()
        process.wait(_STOP_TIMEOUT)


def next_steps(system: LocalSystem, *, lab_url: str | None) -> str:
    """What to try, for the banner (kubectl commands against the sandbox)."""
    plane = system.plane
    kubeconfig = system.kubeconfig_path
    contexts = ", ".join(context_name(user) for user in plane.tokens)
    lines = [
        f"vsphere-kale sandbox is running ({system.flavor} flavor, seed kubeflow-demo)",
        f"  API server  {plane.url}"
        + ("  (real kube-apiserver)" if system.real is not None else ""),
        f"  kubeconfig  {kubeconfig}  (contexts: {contexts})",
        f"  serve       {system.admin_url}  (webhook + admin API; CA {system.ca_file})",
        f"              log: {system.serve_log}",
    ]
    if lab_url:
        lines.append(f"  JupyterLab  {lab_url}")
        lines.append(
            f"              (the notebook acts as {system.user} in namespace {system.namespace})"
        )
    else:
        lines += [
            "  JupyterLab  not started (--no-lab); to use the panel from your own server:",
            "    jupyter lab "
            + " ".join(
                f"--VsphereKaleApp.{name}={value}"
                for name, value in system.jupyter_traits().items()
            ),
        ]
    k = f"kubectl --kubeconfig {kubeconfig}"
    lines += [
        "",
        "Try next:",
        f"  {k} get pvc -n alice      # the stuck Kale marshal volume, on a block class",
        f"  {k} apply -f deploy/examples/kale-rwm-volume.yaml   # a Kale rwm volume (RWX)",
        f"  {k} get pvc -n alice -o custom-columns=NAME:.metadata.name,"
        "CLASS:.spec.storageClassName      # the webhook put it on nfs-client",
        f"  {k} apply -f - <<'YAML'   # a new Profile: the reconciler grants its pods the PSP",
        "apiVersion: kubeflow.org/v1",
        "kind: Profile",
        "metadata: {name: carol}",
        "spec: {owner: {kind: User, name: carol@example.com}}",
        "YAML",
        f"  {k} get rolebinding -n carol",
        f"  {k} delete pvc wf-1-kale-marshal-pvc -n alice   # follow the panel's hint...",
        f"  {k} apply -f deploy/examples/kale-marshal-pvc.yaml   # ...recreated on nfs-client",
        f"  {k} get pvc -n alice      # ...and Bound by the nfs-client provisioner",
        f"  (or in one step: vsphere-kale recreate-pvc wf-1-kale-marshal-pvc -n alice "
        f"--kubeconfig {kubeconfig} --rwx-storage-class nfs-client)",
        "  Refresh / Reconcile in the notebook panel to see and repair alice's namespace.",
        "",
        "Press Ctrl-C to stop everything.",
    ]
    return "\n".join(lines)


def run_sandbox(
    *,
    flavor: str,
    workdir: Path,
    lab: bool,
    lab_port: int,
    open_browser: bool,
    control_plane: str = "embedded",
    lab_timeout: float = 120.0,
    echo: Callable[[str], None] = click.echo,
) -> None:
    """Start everything, print what to try, wait for Ctrl-C (or SIGTERM), stop everything."""
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    process: subprocess.Popen[bytes] | None = None
    system = LocalSystem(workdir, flavor=flavor, control_plane=control_plane)
    try:
        server = "etcd, kube-apiserver" if control_plane == "real" else "the sandbox API server"
        echo(f"starting {server}, the install and serve in {workdir} ...")
        system.start()
        lab_url = None
        if lab:
            if importlib.util.find_spec("jupyterlab") is None:
                raise VsphereKaleError(
                    "JupyterLab is not installed: pip install 'vsphere-kale[lab]', "
                    "or run with --no-lab"
                )
            notebooks = workdir / "notebooks"
            notebooks.mkdir(exist_ok=True)
            target = notebooks / NOTEBOOK.name
            if not target.exists():  # keep the user's edits across runs
                shutil.copyfile(NOTEBOOK, target)
            write_kale2_notebook(notebooks)  # the seed's Kale 2 notebook (raw-data is RWO)
            token = secrets.token_hex(16)
            command = lab_command(
                system, root_dir=notebooks, port=lab_port, token=token, open_browser=open_browser
            )
            # Own session: a terminal's Ctrl-C reaches only us, and we stop JupyterLab
            # with SIGTERM (its SIGINT handler would stop to ask a y/n question).
            process = subprocess.Popen(command, start_new_session=True)
            base = f"http://127.0.0.1:{lab_port}/"
            _wait_for_lab(
                process, f"{base}vsphere-kale/api/status?token={token}", timeout=lab_timeout
            )
            lab_url = f"{base}lab/tree/{NOTEBOOK.name}?token={token}"
        echo(next_steps(system, lab_url=lab_url))
        while not stop.wait(0.5):
            if process is not None and process.poll() is not None:
                echo(f"JupyterLab exited (code {process.returncode}); stopping")
                break
    finally:
        if process is not None:
            _stop_lab(process)
        system.stop()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    echo("sandbox stopped")


F = TypeVar("F", bound=Callable[..., Any])


def run_options(command: F) -> F:
    """The run mode's options, for the ``sandbox`` group (``vsphere-kale sandbox [OPTIONS]``)."""
    for option in reversed(
        [
            click.option(
                "--flavor",
                type=click.Choice(["psp", "psa"]),
                default="psp",
                show_default=True,
                help="psp: TKG up to 1.24 (PodSecurityPolicy); psa: Kubernetes >= 1.25.",
            ),
            click.option(
                "--workdir",
                type=click.Path(file_okay=False, path_type=Path),
                default=Path(".vsphere-kale-sandbox"),
                show_default=True,
                help="Where the kubeconfig, certificates, tokens and the notebook copy go.",
            ),
            click.option("--no-lab", is_flag=True, help="Headless: do not start JupyterLab."),
            click.option(
                "--lab-port",
                type=click.IntRange(1, 65535),
                default=8888,
                show_default=True,
                help="JupyterLab's port on 127.0.0.1.",
            ),
            click.option(
                "--no-browser", is_flag=True, help="Do not open a browser on the notebook."
            ),
            click.option(
                "--control-plane",
                type=click.Choice(["embedded", "real"]),
                default="embedded",
                show_default=True,
                help="embedded: the in-memory sandbox (no Go needed); real: kube-apiserver + "
                "etcd 1.36 built by tools/control-plane/build (psa flavor only).",
            ),
        ]
    ):
        command = option(command)
    return command


def run_from_options(
    *,
    flavor: str,
    workdir: Path,
    no_lab: bool,
    lab_port: int,
    no_browser: bool,
    control_plane: str = "embedded",
) -> None:
    if control_plane == "real" and flavor == "psp":
        raise ConfigError("--flavor", PSP_ON_REAL)
    run_sandbox(
        control_plane=control_plane,
        flavor=flavor,
        workdir=workdir.resolve(),
        lab=not no_lab,
        lab_port=lab_port,
        open_browser=not no_browser,
    )
