"""The official client's ``ApiClient`` from a kubeconfig, or in-cluster."""

from __future__ import annotations

import os

from kubernetes import client, config

from vsphere_kale.errors import KubeError

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
