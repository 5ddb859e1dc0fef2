"""Launcher for a real Kubernetes control plane: etcd + kube-apiserver (+ kube-controller-manager).

    with start_control_plane() as cp:
        subprocess.run(["kubectl", "--kubeconfig", str(cp.kubeconfig_path), "get", "ns"])

The binaries are upstream's, built by ``tools/control-plane/build`` into
``${XDG_CACHE_HOME:-~/.cache}/vsphere-kale/control-plane/<version>/``; as with
controller-runtime's envtest, ``KUBEBUILDER_ASSETS`` (e.g. from ``setup-envtest use 1.36``)
wins when set. Everything listens on free ports of 127.0.0.1 and lives in one temporary
directory, so several control planes run side by side.

What is configured, and why (docs/control-plane.md has the whole table):

- RBAC authorization only (no Node authorizer: no kubelets run), static bearer tokens for the
  same users and kubeconfig contexts as the sandbox's ``kubeflow-demo`` seed, so a kubeconfig
  context means the same person on both control planes;
- service-account signing keys from ``cryptography`` (TokenRequest and TokenReview work, with
  the audience ``vsphere-kale`` the admin API asks for);
- Pod Security admission with the cluster defaults of a TKR >= 1.26 (``restricted`` enforced,
  audited and warned; ``kube-system`` exempt) in the ``psa`` flavor;
- the default admission plugins (DefaultStorageClass, MutatingAdmissionWebhook,
  MutatingAdmissionPolicy...);
- kube-controller-manager with just the controllers our code depends on: namespace deletion,
  default ServiceAccounts, the ``kube-root-ca.crt`` ConfigMap and garbage collection.

This module imports no ``kubernetes``: processes, files and one HTTP client from the stdlib.
"""

from __future__ import annotations

import atexit
import contextlib
import ipaddress
import json
import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

import yaml
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vsphere_kale.errors import VsphereKaleError
from vsphere_kale.install.certs import build_ca, build_serving_cert
from vsphere_kale.sandbox.kubeconfig import context_name, write_kubeconfig
from vsphere_kale.sandbox.seed import USERS

KUBE_VERSION = "1.36.3"
ETCD_VERSION = "3.6.16"
FLAVORS = ("psa",)
"""PodSecurityPolicy was removed in Kubernetes 1.25: the psp flavor is the sandbox's only."""
SERVICE_ACCOUNT_ISSUER = "https://kubernetes.default.svc.cluster.local"
API_AUDIENCES = (SERVICE_ACCOUNT_ISSUER, "vsphere-kale")
SERVICE_CLUSTER_IP_RANGE = "10.96.0.0/12"
ADMIN_USER = "kubernetes-admin"
"""Who ``admin`` is (same name and group as the sandbox's admin)."""
CONTROLLER_MANAGER_USER = "system:kube-controller-manager"
#: The controllers our code and tests rely on; nothing that needs nodes or pods to run.
CONTROLLERS = (
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "garbage-collector-controller",
)
START_TIMEOUT = 90.0
STOP_TIMEOUT = 10.0


class ControlPlaneError(VsphereKaleError):
    """The real control plane is missing or did not start; the message says what to do."""


@dataclass(frozen=True)
class Binaries:
    etcd: Path
    kube_apiserver: Path
    kube_controller_manager: Path | None


def default_cache_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Where ``tools/control-plane/build`` puts the binaries (keep the two in step)."""
    env = os.environ if environ is None else environ
    base = Path(env.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "vsphere-kale" / "control-plane" / f"{KUBE_VERSION}-etcd{ETCD_VERSION}"


def find_binaries(environ: Mapping[str, str] | None = None) -> Binaries:
    """``KUBEBUILDER_ASSETS`` if set (envtest's convention), else the build script's cache.

    setup-envtest ships no kube-controller-manager; it is then taken from the cache if built.
    """
    env = os.environ if environ is None else environ
    cache = default_cache_dir(env)
    assets = env.get("KUBEBUILDER_ASSETS")
    where = Path(assets) if assets else cache
    hint = (
        "run tools/control-plane/build (needs Go >= 1.26) and set KUBEBUILDER_ASSETS to the "
        "directory it prints last"
        if assets
        else "run tools/control-plane/build (needs Go >= 1.26), or set KUBEBUILDER_ASSETS to a "
        "directory holding etcd and kube-apiserver"
    )
    found: dict[str, Path | None] = {}
    for name in ("etcd", "kube-apiserver", "kube-controller-manager"):
        candidates = [where / name] + ([cache / name] if name == "kube-controller-manager" else [])
        found[name] = next((p for p in candidates if os.access(p, os.X_OK)), None)
    for name in ("etcd", "kube-apiserver"):
        if found[name] is None:
            source = f"KUBEBUILDER_ASSETS={assets}" if assets else str(where)
            raise ControlPlaneError(f"no executable {name} in {source}: {hint}")
    etcd, apiserver = found["etcd"], found["kube-apiserver"]
    assert etcd is not None and apiserver is not None
    return Binaries(etcd, apiserver, found["kube-controller-manager"])


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on right now (the kernel's pick; the usual small race)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


# --- files (pure builders, then one writer) ----------------------------------------------------


def build_token_file(tokens: Mapping[str, tuple[str, Sequence[str]]]) -> str:
    """kube-apiserver's static token CSV: ``token,user,uid,"group1,group2"``."""
    lines = []
    for token, (user, groups) in tokens.items():
        if any(c in token + user for c in ',"\n'):
            raise ValueError(f"token or user name for {user!r} cannot go into a CSV line")
        lines.append(f'{token},{user},{user},"{",".join(groups)}"')
    return "\n".join(lines) + "\n"


def build_admission_config(flavor: str) -> dict[str, Any]:
    """PodSecurity defaults as a TKR >= 1.26 ships them: restricted, kube-system exempt."""
    if flavor not in FLAVORS:
        raise ControlPlaneError(
            f"flavor {flavor!r} is not available on the real control plane (one of: "
            f"{', '.join(FLAVORS)}); PodSecurityPolicy was removed in Kubernetes 1.25, so "
            "the psp flavor runs on the embedded sandbox only"
        )
    defaults = {}
    for mode in ("enforce", "audit", "warn"):
        defaults[mode] = "restricted"
        defaults[f"{mode}-version"] = "latest"
    return {
        "apiVersion": "apiserver.config.k8s.io/v1",
        "kind": "AdmissionConfiguration",
        "plugins": [
            {
                "name": "PodSecurity",
                "configuration": {
                    "apiVersion": "pod-security.admission.config.k8s.io/v1",
                    "kind": "PodSecurityConfiguration",
                    "defaults": defaults,
                    "exemptions": {
                        "usernames": [],
                        "runtimeClasses": [],
                        "namespaces": ["kube-system"],
                    },
                },
            }
        ],
    }


AUDIT_POLICY: dict[str, Any] = {
    "apiVersion": "audit.k8s.io/v1",
    "kind": "Policy",
    "omitStages": ["RequestReceived"],
    "rules": [{"level": "Metadata"}],
}
"""Who asked for what, and the answer's code: the real authorizer's verdicts, for tests that
prove our RBAC sufficient (no 403 in a whole scenario). Metadata only: no bodies, no tokens."""


def build_apiserver_args(
    *, workdir: Path, etcd_url: str, port: int, admission_config: Path
) -> list[str]:
    return [
        f"--etcd-servers={etcd_url}",
        "--bind-address=127.0.0.1",
        "--advertise-address=127.0.0.1",
        f"--secure-port={port}",
        # The `kubernetes` Service's endpoints would be 127.0.0.1, which Endpoints validation
        # rejects (loopback); nothing in-cluster dials it here.
        "--endpoint-reconciler-type=none",
        f"--tls-cert-file={workdir / 'apiserver.crt'}",
        f"--tls-private-key-file={workdir / 'apiserver.key'}",
        # Also publishes the extension-apiserver-authentication ConfigMap that the controller
        # manager's own secure port reads (else it logs an error a second).
        f"--client-ca-file={workdir / 'ca.crt'}",
        "--authorization-mode=RBAC",
        f"--token-auth-file={workdir / 'tokens.csv'}",
        f"--service-account-key-file={workdir / 'sa.pub'}",
        f"--service-account-signing-key-file={workdir / 'sa.key'}",
        f"--service-account-issuer={SERVICE_ACCOUNT_ISSUER}",
        f"--api-audiences={','.join(API_AUDIENCES)}",
        f"--service-cluster-ip-range={SERVICE_CLUSTER_IP_RANGE}",
        f"--admission-control-config-file={admission_config}",
        # Defaults stay on (this flag adds to them); named so the reader sees what we rely on.
        "--enable-admission-plugins=NamespaceLifecycle,ServiceAccount,PodSecurity,"
        "DefaultStorageClass,MutatingAdmissionPolicy,MutatingAdmissionWebhook,"
        "ValidatingAdmissionPolicy,ValidatingAdmissionWebhook",
        # MutatingAdmissionPolicy: v1 is GA and on in 1.36; v1beta1 too, for clients of 1.34/35.
        "--runtime-config=admissionregistration.k8s.io/v1beta1=true",
        # TKG clusters allow privileged containers (Pod Security decides); so do we.
        "--allow-privileged=true",
        "--profiling=false",
        f"--audit-policy-file={workdir / 'audit-policy.yaml'}",
        f"--audit-log-path={workdir / 'audit.log'}",
        "--audit-log-mode=blocking",
    ]


def build_etcd_args(*, data_dir: Path, client_port: int, peer_port: int) -> list[str]:
    client, peer = f"http://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
    return [
        "--name=default",
        f"--data-dir={data_dir}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        # A throwaway test store: an fsync per write only costs time here.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def build_controller_manager_args(*, workdir: Path, kubeconfig: Path, port: int) -> list[str]:
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        "--bind-address=127.0.0.1",
        f"--secure-port={port}",
        f"--cert-dir={workdir / 'kcm-certs'}",
        f"--controllers={','.join(CONTROLLERS)}",
        # One identity for every controller: its kubeconfig user is in system:masters, so no
        # per-controller ServiceAccount tokens (and their RBAC bootstrap) are needed.
        "--use-service-account-credentials=false",
        f"--service-account-private-key-file={workdir / 'sa.key'}",
        f"--root-ca-file={workdir / 'ca.crt'}",
        "--leader-elect=false",
    ]


def _write_private(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)


def write_material(workdir: Path, tokens: Mapping[str, tuple[str, Sequence[str]]]) -> bytes:
    """CA + serving cert, SA signing key pair, token file. Returns the CA PEM."""
    ca_cert, ca_key = build_ca("vsphere-kale control plane CA", days=30)
    cert, key = build_serving_cert(
        ca_cert,
        ca_key,
        dns_names=["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"],
        ip_addresses=[ipaddress.ip_address("127.0.0.1")],
        days=30,
    )
    (workdir / "ca.crt").write_bytes(ca_cert)
    (workdir / "apiserver.crt").write_bytes(cert)
    _write_private(workdir / "apiserver.key", key)
    sa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    _write_private(
        workdir / "sa.key",
        sa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    (workdir / "sa.pub").write_bytes(
        sa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    _write_private(workdir / "tokens.csv", build_token_file(tokens).encode())
    return ca_cert


# --- processes ---------------------------------------------------------------------------------

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def last_log_line(path: Path, *, limit: int = 400) -> str:
    """The last non-empty line of a component's log, control characters removed."""
    try:
        with path.open("rb") as fh:
            fh.seek(0, os.SEEK_END)
            fh.seek(max(0, fh.tell() - 16384))
            lines = fh.read().decode("utf-8", "replace").splitlines()
    except OSError:
        return "(no log)"
    for line in reversed(lines):
        if line.strip():
            return _CONTROL.sub("", line.strip())[:limit]
    return "(empty log)"


class _Component:
    """One child process with its log file."""

    def __init__(self, name: str, argv: list[str], log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self._log: IO[bytes] = log_path.open("wb")
        # A session of its own: Ctrl-C in a terminal reaches us, and we stop the children in
        # order (controller manager, API server, etcd) instead of all at once.
        self.process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.process.pid

    def died(self) -> str | None:
        """None while running; else a sentence with the exit code and the last log line."""
        code = self.process.poll()
        if code is None:
            return None
        return (
            f"{self.name} exited with code {code}; its last log line: "
            f"{last_log_line(self.log_path)} (full log: {self.log_path})"
        )

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout)
        self._log.close()


class RunningControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) on 127.0.0.1 until :meth:`stop`.

    ``url``, ``ca_path``, ``kubeconfig_path`` (admin context current; one context
    ``<user>@sandbox`` per user, as the sandbox writes), ``tokens`` (user -> token),
    ``token_for(user)``, ``pids``, ``workdir`` (logs: ``etcd.log``, ``kube-apiserver.log``,
    ``kube-controller-manager.log``).
    """

    def __init__(
        self,
        *,
        flavor: str = "psa",
        workdir: str | os.PathLike[str] | None = None,
        controller_manager: bool = True,
        binaries: Binaries | None = None,
        start_timeout: float = START_TIMEOUT,
    ) -> None:
        admission = build_admission_config(flavor)
        bins = binaries or find_binaries()
        if controller_manager and bins.kube_controller_manager is None:
            raise ControlPlaneError(
                f"no executable kube-controller-manager next to {bins.kube_apiserver} or in "
                f"{default_cache_dir()}: run tools/control-plane/build"
            )
        self.flavor = flavor
        self._own_workdir = workdir is None
        self.workdir = Path(workdir or tempfile.mkdtemp(prefix="vsphere-kale-cp-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self._components: list[_Component] = []
        self._stopped = False
        self.tokens: dict[str, str] = {"admin": "admin-" + os.urandom(24).hex()}
        identities: dict[str, tuple[str, Sequence[str]]] = {
            self.tokens["admin"]: (ADMIN_USER, ["system:masters"])
        }
        for user, seeded in USERS.items():
            self.tokens[user] = seeded.token
            identities[seeded.token] = (seeded.username, list(seeded.groups))
        kcm_token = "kcm-" + os.urandom(24).hex()
        identities[kcm_token] = (CONTROLLER_MANAGER_USER, ["system:masters"])
        atexit.register(self.stop)
        try:
            self._start(bins, admission, identities, kcm_token, controller_manager, start_timeout)
        except BaseException:
            self.stop()
            raise

    def _start(
        self,
        bins: Binaries,
        admission: dict[str, Any],
        identities: Mapping[str, tuple[str, Sequence[str]]],
        kcm_token: str,
        controller_manager: bool,
        timeout: float,
    ) -> None:
        started = time.monotonic()
        self.ca_pem = write_material(self.workdir, identities)
        self.ca_path = self.workdir / "ca.crt"
        admission_path = self.workdir / "admission.yaml"
        admission_path.write_text(yaml.safe_dump(admission, sort_keys=False), encoding="utf-8")
        (self.workdir / "audit-policy.yaml").write_text(
            yaml.safe_dump(AUDIT_POLICY, sort_keys=False), encoding="utf-8"
        )
        self.audit_log_path = self.workdir / "audit.log"
        client_port, peer_port = free_port(), free_port()
        self.etcd_url = f"http://127.0.0.1:{client_port}"
        etcd = self._spawn(
            "etcd",
            [
                str(bins.etcd),
                *build_etcd_args(
                    data_dir=self.workdir / "etcd", client_port=client_port, peer_port=peer_port
                ),
            ],
        )
        self._wait(etcd, f"{self.etcd_url}/health", deadline=started + timeout, tls=False)
        self.port = free_port()
        self.url = f"https://127.0.0.1:{self.port}"
        apiserver = self._spawn(
            "kube-apiserver",
            [
                str(bins.kube_apiserver),
                *build_apiserver_args(
                    workdir=self.workdir,
                    etcd_url=self.etcd_url,
                    port=self.port,
                    admission_config=admission_path,
                ),
            ],
        )
        self._wait(apiserver, f"{self.url}/readyz", deadline=started + timeout, dependency=etcd)
        self.kubeconfig_path = write_kubeconfig(
            self.workdir / "kubeconfig", self.url, self.tokens, ca_pem=self.ca_pem
        )
        if controller_manager:
            assert bins.kube_controller_manager is not None
            kcm_kubeconfig = write_kubeconfig(
                self.workdir / "kcm.kubeconfig",
                self.url,
                {"kube-controller-manager": kcm_token},
                ca_pem=self.ca_pem,
            )
            kcm_port = free_port()
            kcm = self._spawn(
                "kube-controller-manager",
                [
                    str(bins.kube_controller_manager),
                    *build_controller_manager_args(
                        workdir=self.workdir, kubeconfig=kcm_kubeconfig, port=kcm_port
                    ),
                ],
            )
            self._wait(
                kcm,
                f"https://127.0.0.1:{kcm_port}/healthz",
                deadline=started + timeout,
                dependency=apiserver,
                verify=False,  # its serving certificate is self-signed at start, trusted by none
            )
        self.start_seconds = time.monotonic() - started

    def _spawn(self, name: str, argv: list[str]) -> _Component:
        component = _Component(name, argv, self.workdir / f"{name}.log")
        self._components.append(component)
        return component

    def _wait(
        self,
        component: _Component,
        url: str,
        *,
        deadline: float,
        tls: bool = True,
        verify: bool = True,
        dependency: _Component | None = None,
    ) -> None:
        """Poll ``url`` until 200; fail with the component's (or its dependency's) last line."""
        context = None
        if tls:
            context = ssl.create_default_context(cafile=str(self.workdir / "ca.crt"))
            if not verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
        last = "no answer yet"
        delay = 0.05
        while True:
            for part in (dependency, component):
                why = part.died() if part is not None else None
                if why:
                    raise ControlPlaneError(why)
            try:
                with urllib.request.urlopen(url, timeout=2, context=context) as response:
                    if response.status == 200:
                        return
            except urllib.error.HTTPError as exc:
                last = f"HTTP {exc.code}"
            except (urllib.error.URLError, OSError) as exc:
                last = str(getattr(exc, "reason", exc))
            if time.monotonic() > deadline:
                raise ControlPlaneError(
                    f"{component.name} was not ready at {url} in time ({last}); its last log "
                    f"line: {last_log_line(component.log_path)} (full log: {component.log_path})"
                )
            time.sleep(delay)
            delay = min(delay * 2, 0.5)

    # -- what callers use --

    @property
    def pids(self) -> dict[str, int]:
        return {c.name: c.pid for c in self._components}

    def token_for(self, user: str) -> str:
        try:
            return self.tokens[user]
        except KeyError:
            raise ControlPlaneError(
                f"no user {user!r} on this control plane (users: {', '.join(self.tokens)})"
            ) from None

    def context_for(self, user: str) -> str:
        self.token_for(user)
        return context_name(user)

    def kubectl_args(self, user: str = "admin") -> list[str]:
        """``--kubeconfig ... --context ...`` for running kubectl as ``user``."""
        return ["--kubeconfig", str(self.kubeconfig_path), "--context", self.context_for(user)]

    def request_json(self, method: str, path: str, *, user: str = "admin", body: Any = None) -> Any:
        """One JSON request with ``user``'s token (stdlib only; for probes and scripts)."""
        data = None if body is None else json.dumps(body).encode()
        req = urllib.request.Request(
            self.url + path,
            method=method,
            data=data,
            headers={
                "Authorization": f"Bearer {self.token_for(user)}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
        )
        context = ssl.create_default_context(cafile=str(self.ca_path))
        with urllib.request.urlopen(req, timeout=30, context=context) as response:
            return json.loads(response.read() or b"null")

    def audit_events(self, *, username: str | None = None) -> list[dict[str, Any]]:
        """The API server's audit events so far (ResponseComplete etc.), optionally one user's."""
        events = []
        with contextlib.suppress(FileNotFoundError):
            for line in self.audit_log_path.read_text(encoding="utf-8").splitlines():
                try:
                    event = json.loads(line)
                except ValueError:
                    continue  # a line the server is still writing
                if username is None or (event.get("user") or {}).get("username") == username:
                    events.append(event)
        return events

    def stop(self) -> None:
        """SIGTERM each component (newest first), SIGKILL after a bound; remove the workdir."""
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        for component in reversed(self._components):
            with contextlib.suppress(OSError):
                component.stop()
        if self._own_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> RunningControlPlane:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_control_plane(
    *,
    flavor: str = "psa",
    workdir: str | os.PathLike[str] | None = None,
    controller_manager: bool = True,
    binaries: Binaries | None = None,
    start_timeout: float = START_TIMEOUT,
) -> RunningControlPlane:
    """Start etcd, kube-apiserver and (by default) kube-controller-manager; wait until ready.

    Raises :class:`ControlPlaneError` with a sentence saying what to do when the binaries are
    missing or a component dies (with its last log line).
    """
    return RunningControlPlane(
        flavor=flavor,
        workdir=workdir,
        controller_manager=controller_manager,
        binaries=binaries,
        start_timeout=start_timeout,
    )
