"""The only module that builds Kubernetes API clients, and where client errors are translated.

Everything else receives an ``ApiClient`` (or the typed API objects built from it) as an
argument, so tests point the real client at the sandbox API server by kubeconfig.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

from kubernetes import client, config
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from vsphere_kale.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)

T = TypeVar("T")

IN_CLUSTER_TOKEN = "/var/run/secrets/kubernetes.io/serviceaccount/token"


def build_api_client(
    kubeconfig: str | None = None, *, context: str | None = None
) -> client.ApiClient:
    """An ApiClient from ``kubeconfig`` (or ``$KUBECONFIG``/``~/.kube/config``), or in-cluster.

    In-cluster config is tried first only when no kubeconfig is named and we run in a pod:
    that is how ``serve`` runs in a Deployment. The in-cluster loader re-reads the projected
    service-account token when it rotates.
    """
    configuration = client.Configuration()
    if (
        kubeconfig is None
        and os.path.exists(IN_CLUSTER_TOKEN)
        and os.environ.get("KUBERNETES_SERVICE_HOST")
    ):
        config.load_incluster_config(client_configuration=configuration)
    else:
        try:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=configuration
            )
        except (config.ConfigException, OSError) as exc:
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise KubeError(
                f"cannot load kubeconfig {where}: {exc}; pass --kubeconfig with a valid file"
            ) from exc
    return client.ApiClient(configuration)


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
    except (TypeError, ValueError):
        pass
    return str(exc.reason or "no message")


def translate(exc: ApiException, *, action: str) -> KubeError:
    """One ApiException -> our error tree, with ``action`` ("create rolebinding alice/x")."""
    status = int(exc.status or 0)
    message = f"{action}: {_status_message(exc)}"
    reason = str(exc.reason or "")
    if status == 404:
        return KubeNotFound(message, status=status, reason=reason)
    if status == 409:
        return KubeConflict(message, status=status, reason=reason)
    if status == 403:
        return KubeForbidden(message, status=status, reason=reason)
    if status in (0, 429) or status >= 500:
        return KubeUnavailable(message, status=status, reason=reason)
    return KubeError(message, status=status, reason=reason)


@contextmanager
def kube_errors(action: str) -> Iterator[None]:
    """Translate client errors raised inside the block, naming ``action`` in the message."""
    try:
        yield
    except ApiException as exc:
        raise translate(exc, action=action) from exc
    except (Urllib3HTTPError, OSError) as exc:
        raise KubeUnavailable(f"{action}: API server unreachable ({exc})") from exc


def call(action: str, fn: Callable[[], T]) -> T:
    """Run one client call, translating its errors (``call("get ns", lambda: v1.read...)``)."""
    with kube_errors(action):
        return fn()
