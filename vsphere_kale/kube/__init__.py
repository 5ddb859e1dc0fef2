"""The only package that imports ``kubernetes`` (and ``urllib3``): the :class:`Kube` client.

Everything else receives a :class:`Kube` (or, for the official ``leaderelection`` helpers, the
``ApiClient`` inside it) as an argument, so tests point the real client at the sandbox API
server by kubeconfig. Errors are translated here, once, into :mod:`vsphere_kale.errors`.
"""

from __future__ import annotations

from vsphere_kale.kube.api import (
    DEFAULT_TIMEOUT,
    Kube,
    ListFunction,
    PatchType,
    Timeout,
    kube_errors,
    parse_warnings,
    translate,
)
from vsphere_kale.kube.discovery import Discovery
from vsphere_kale.kube.kubeconfig import (
    ApiClient,
    KubeconfigSource,
    build_api_client,
    load_api_client,
)
from vsphere_kale.kube.resources import Resource, path

__all__ = [
    "DEFAULT_TIMEOUT",
    "ApiClient",
    "Discovery",
    "Kube",
    "KubeconfigSource",
    "ListFunction",
    "PatchType",
    "Resource",
    "Timeout",
    "build_api_client",
    "kube_errors",
    "load_api_client",
    "parse_warnings",
    "path",
    "translate",
]
