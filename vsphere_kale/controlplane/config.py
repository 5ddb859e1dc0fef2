"""The real control plane's configuration: where the binaries are, the files and flags.

Pure builders (``build_*``) and one writer of the key material (:func:`write_material`);
the processes are started by :mod:`vsphere_kale.controlplane`.
"""

from __future__ import annotations

import ipaddress
import os
import random
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from vsphere_kale.errors import VsphereKaleError
from vsphere_kale.install.certs import build_ca, build_serving_cert

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
#: The two protection controllers release the ``kubernetes.io/pvc-protection`` and
#: ``kubernetes.io/pv-protection`` finalizers that kube-apiserver's StorageObjectInUseProtection
#: admission puts on every claim and volume: without them a deleted claim stays Terminating
#: forever (recreate-pvc would wait for nothing), as it never does on a cluster. The PV binder
#: stays off: the playground's provisioners bind, as the storage controllers of TKG do.
#: The StatefulSet controller creates a notebook's pod, so Pod Security's refusal of it becomes
#: the controller's own ``FailedCreate`` Event (what psaLevel auto and the status read).
CONTROLLERS = (
    "namespace-controller",
    "serviceaccount-controller",
    "serviceaccount-token-controller",
    "root-ca-certificate-publisher-controller",
    "garbage-collector-controller",
    "statefulset-controller",
    "persistentvolumeclaim-protection-controller",
    "persistentvolume-protection-controller",
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


_LOWEST_PICK = 10000
_handed_out: set[int] = set()


def ephemeral_port_range(path: Path = Path("/proc/sys/net/ipv4/ip_local_port_range")) -> range:
    """The ports the kernel gives outgoing connections (Linux's default when unreadable)."""
    try:
        low, high = (int(part) for part in path.read_text().split())
    except (OSError, ValueError):
        low, high = 32768, 60999
    return range(low, high + 1)


def free_port(
    host: str = "127.0.0.1", *, ephemeral: range | None = None, lowest: int = _LOWEST_PICK
) -> int:
    """A port nobody listens on now, chosen below the kernel's ephemeral range.

    A port the kernel picks for ``bind(0)`` comes from the ephemeral range, which is also where
    every outgoing connection's source port comes from: between picking it and the server binding
    it (for the playground that is minutes — control plane, install, leader election) a client
    connection can take it and the server fails with EADDRINUSE. Below that range only listeners
    compete, so a random pick that binds now is still free when used. One process never gets the
    same port twice.
    """
    ephemeral = ephemeral or ephemeral_port_range()
    candidates = range(lowest, max(lowest, ephemeral.start))
    for port in random.SystemRandom().sample(candidates, min(200, len(candidates))):
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
        _handed_out.add(port)
        return port
    # No room below the ephemeral range (an unusual ip_local_port_range): the kernel's pick.
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port = int(sock.getsockname()[1])
    _handed_out.add(port)
    return port


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
