"""``vsphere-kale install --wait``: until the Deployment is available and the webhook Service
has a ready endpoint (what ``kubectl rollout status`` asks, then the Service)."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

from vsphere_kale.errors import VsphereKaleError
from vsphere_kale.install import render
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r


def decide_rollout(deployment: Mapping[str, Any] | None) -> str | None:
    """Why the Deployment is not rolled out and available yet (None when it is).

    The same test as ``kubectl rollout status``: the controller saw the latest spec, every
    replica runs it, and all of them are available (readiness ``/readyz`` passed).
    """
    if deployment is None:
        return "the Deployment does not exist"
    md = deployment.get("metadata") or {}
    spec = deployment.get("spec") or {}
    status = deployment.get("status") or {}
    want = int(spec.get("replicas", 1))
    if int(status.get("observedGeneration", 0)) < int(md.get("generation", 1)):
        return "waiting for the deployment controller to observe the new spec"
    updated = int(status.get("updatedReplicas", 0))
    if updated < want:
        return f"{updated} of {want} replicas run the new spec"
    if int(status.get("replicas", 0)) > updated:
        return "old replicas are still terminating"
    available = int(status.get("availableReplicas", 0))
    if available < updated:
        return f"{available} of {updated} updated replicas are available"
    return None


def decide_service_ready(endpoints: Mapping[str, Any] | None) -> str | None:
    """Why the webhook Service has no ready endpoint (None when it has one)."""
    for subset in (endpoints or {}).get("subsets") or []:
        if subset.get("addresses"):
            return None
    return "the webhook Service has no ready endpoints yet"


def wait_ready(
    kube: Kube,
    namespace: str,
    *,
    timeout: float,
    poll: float = 1.0,
    echo: Callable[[str], None] | None = None,
) -> None:
    """Until the Deployment is available and the Service has ready endpoints, or raise."""
    deadline = time.monotonic() + timeout
    last = ""
    while True:
        why = decide_rollout(kube.get_optional(r.DEPLOYMENT, render.NAME, namespace=namespace))
        if why is None:
            endpoints = kube.get_optional(r.ENDPOINTS, render.NAME, namespace=namespace)
            why = decide_service_ready(endpoints)
        if why is None:
            return
        if why != last and echo is not None:
            echo(f"waiting: {why}")
        last = why
        if time.monotonic() >= deadline:
            raise VsphereKaleError(
                f"not ready after {timeout:.0f} s: {why}; check "
                f"`kubectl -n {namespace} describe deployment {render.NAME}` and its pods' events"
            )
        time.sleep(poll)
