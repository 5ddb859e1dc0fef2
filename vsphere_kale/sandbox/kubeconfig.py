"""Kubeconfig files and TLS material for a running sandbox API server.

The kubeconfig has one cluster ``sandbox``, one user per token (``admin`` first) and one
context ``<user>@sandbox`` per user; it works with ``kubectl --kubeconfig`` and
``kubernetes.config.load_kube_config``.
"""

from __future__ import annotations

import base64
import ipaddress
import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from vsphere_kale.install.certs import build_ca, build_serving_cert
from vsphere_kale.sandbox.types import JSONObject

CLUSTER = "sandbox"


def context_name(user: str) -> str:
    return f"{user}@{CLUSTER}"


def build_kubeconfig(
    server: str,
    tokens: Mapping[str, str],
    *,
    ca_pem: bytes | None = None,
    current_user: str | None = None,
) -> JSONObject:
    """A kubeconfig dict: ``tokens`` maps a user (and context) name to its bearer token."""
    if not tokens:
        raise ValueError("a kubeconfig needs at least one user token")
    cluster: JSONObject = {"server": server}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode("ascii")
    current = current_user or next(iter(tokens))
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [{"name": CLUSTER, "cluster": cluster}],
        "users": [{"name": user, "user": {"token": token}} for user, token in tokens.items()],
        "contexts": [
            {"name": context_name(user), "context": {"cluster": CLUSTER, "user": user}}
            for user in tokens
        ],
        "current-context": context_name(current),
    }


def write_kubeconfig(
    path: str | os.PathLike[str],
    server: str,
    tokens: Mapping[str, str],
    *,
    ca_pem: bytes | None = None,
    current_user: str | None = None,
) -> Path:
    """Write the kubeconfig readable by its owner only (it holds bearer tokens)."""
    target = Path(path)
    text = yaml.safe_dump(
        build_kubeconfig(server, tokens, ca_pem=ca_pem, current_user=current_user),
        sort_keys=False,
    )
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    return target


@dataclass(frozen=True)
class ServingTLS:
    """A fresh CA and a serving certificate for 127.0.0.1/localhost, on disk for ssl."""

    ca_pem: bytes
    cert_path: Path
    key_path: Path

    def ssl_context(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(str(self.cert_path), str(self.key_path))
        return ctx


def build_serving_tls(directory: str | os.PathLike[str], *, days: int = 30) -> ServingTLS:
    """Generate the sandbox's CA and server certificate into ``directory``."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    ca_cert, ca_key = build_ca("vsphere-kale sandbox CA", days=days)
    cert, key = build_serving_cert(
        ca_cert,
        ca_key,
        dns_names=["localhost"],
        ip_addresses=[ipaddress.ip_address("127.0.0.1")],
        days=days,
    )
    cert_path = out / "apiserver.crt"
    key_path = out / "apiserver.key"
    cert_path.write_bytes(cert)
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(key)
    (out / "ca.crt").write_bytes(ca_cert)
    return ServingTLS(ca_pem=ca_cert, cert_path=cert_path, key_path=key_path)
