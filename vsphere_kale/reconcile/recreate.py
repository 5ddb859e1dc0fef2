"""Recreate a stuck claim on the ReadWriteMany class: read, plan (pure), delete, wait, create.

The decision is :func:`vsphere_kale.policy.recreate.plan_recreate`; this module only does the
I/O, for the CLI (``vsphere-kale recreate-pvc``) and the admin API
(``POST /api/v1/namespaces/{ns}/persistentvolumeclaims/{name}/recreate``), which call
:func:`apply_recreate`.

The delete carries the claim's uid and resourceVersion as preconditions: if the claim
changed between our read and the delete (bound meanwhile, say), the API server answers 409
and nothing is deleted. Then we poll until the old claim is gone (the
``kubernetes.io/pvc-protection`` finalizer holds it while a pod still uses it) and create
the new one under the same name. The Event on the new claim tells its owner what happened.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from vsphere_kale.errors import KubeConflict, KubeError, KubeNotFound
from vsphere_kale.kube import Kube, path
from vsphere_kale.policy.recreate import RecreatePlan, RecreateRefusal, plan_recreate
from vsphere_kale.settings import Settings

log = logging.getLogger(__name__)

EVENT_REASON = "Recreated"
COMPONENT = "vsphere-kale"


class RecreateRefused(KubeConflict):
    """The claim may not be recreated (409); ``refusal.message`` says why."""

    def __init__(self, refusal: RecreateRefusal) -> None:
        self.refusal = refusal
        super().__init__(refusal.message, status=409, reason="Conflict")


@dataclass(frozen=True)
class RecreateResult:
    namespace: str
    name: str
    original_class: str
    target_class: str
    uid: str
    """The new claim's uid."""

    @property
    def message(self) -> str:
        was = self.original_class or "no class"
        return f"claim {self.namespace}/{self.name} recreated on {self.target_class} (was {was})"

    def to_json(self) -> dict[str, str]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "originalStorageClass": self.original_class,
            "storageClass": self.target_class,
            "uid": self.uid,
            "message": self.message,
        }


def _claim_path(namespace: str, name: str = "") -> str:
    segments = ["api", "v1", "namespaces", namespace, "persistentvolumeclaims"]
    return path(*segments, name) if name else path(*segments)


def fetch_claim(api: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    try:
        claim: dict[str, Any] = api.request(
            "GET",
            _claim_path(namespace, name),
            action=f"get persistentvolumeclaim {namespace}/{name}",
        )
    except KubeNotFound:
        return None
    return claim


def fetch_recreate_plan(
    api: Kube, namespace: str, name: str, *, settings: Settings
) -> tuple[dict[str, Any], RecreatePlan | RecreateRefusal]:
    """Read the claim, its namespace's pods and the StorageClasses; plan (no writes)."""
    claim = fetch_claim(api, namespace, name)
    if claim is None:
        raise KubeNotFound(
            f'persistentvolumeclaim "{name}" not found in namespace "{namespace}"',
            status=404,
            reason="NotFound",
        )
    pods = api.request(
        "GET",
        path("api", "v1", "namespaces", namespace, "pods"),
        action=f"list pods in {namespace}",
    )
    classes = api.request(
        "GET",
        path("apis", "storage.k8s.io", "v1", "storageclasses"),
        action="list storageclasses",
    )
    by_name = {str(c["metadata"]["name"]): c for c in classes.get("items") or []}
    plan = plan_recreate(
        claim, pods=pods.get("items") or [], storage_classes=by_name, settings=settings
    )
    return claim, plan


def _wait_gone(
    api: Kube,
    namespace: str,
    name: str,
    uid: str,
    *,
    timeout: float,
    poll: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> None:
    deadline = clock() + timeout
    while True:
        current = fetch_claim(api, namespace, name)
        if current is None or current["metadata"].get("uid") != uid:
            return
        if clock() >= deadline:
            finalizers = ", ".join(current["metadata"].get("finalizers") or []) or "none"
            raise KubeError(
                f"claim {namespace}/{name} was deleted but is still there after {timeout:g} s "
                f"(finalizers: {finalizers}; a pod may still use it); once it is gone, "
                "create it again on the ReadWriteMany class"
            )
        sleep(poll)


def _event(claim: dict[str, Any], plan: RecreatePlan) -> dict[str, Any]:
    meta = claim["metadata"]
    now = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    was = plan.original_class or "no class"
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{plan.name}.{secrets.token_hex(8)}", "namespace": plan.namespace},
        "involvedObject": {
            "apiVersion": "v1",
            "kind": "PersistentVolumeClaim",
            "namespace": plan.namespace,
            "name": plan.name,
            "uid": meta.get("uid", ""),
            "resourceVersion": meta.get("resourceVersion", ""),
        },
        "reason": EVENT_REASON,
        "message": (
            f"Recreated on storage class {plan.target_class} (was {was}), which serves "
            "ReadWriteMany; a claim's class cannot be changed in place"
        ),
        "type": "Normal",
        "source": {"component": COMPONENT},
        "reportingComponent": COMPONENT,
        "count": 1,
        "firstTimestamp": now,
        "lastTimestamp": now,
    }


def apply_recreate(
    kube: Kube,
    namespace: str,
    name: str,
    *,
    settings: Settings,
    timeout: float = 30.0,
    poll: float = 0.1,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> RecreateResult:
    """Recreate ``namespace/name`` on the RWX class, or raise.

    Raises :class:`RecreateRefused` (409, a sentence) when the plan refuses,
    ``KubeNotFound`` when there is no such claim, ``KubeConflict`` when the claim changed
    under us, other ``KubeError`` for API failures (403 names the missing permission).
    """
    claim, plan = fetch_recreate_plan(kube, namespace, name, settings=settings)
    if isinstance(plan, RecreateRefusal):
        raise RecreateRefused(plan)
    meta = claim["metadata"]
    uid = str(meta.get("uid", ""))
    kube.request(
        "DELETE",
        _claim_path(namespace, name),
        action=f"delete persistentvolumeclaim {namespace}/{name}",
        body={
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "preconditions": {"uid": uid, "resourceVersion": meta.get("resourceVersion")},
        },
    )
    log.info("recreate: deleted claim %s/%s (uid %s)", namespace, name, uid)
    _wait_gone(kube, namespace, name, uid, timeout=timeout, poll=poll, clock=clock, sleep=sleep)
    created = kube.request(
        "POST",
        _claim_path(namespace),
        action=f"create persistentvolumeclaim {namespace}/{name}",
        body=plan.claim,
    )
    try:
        kube.request(
            "POST",
            path("api", "v1", "namespaces", namespace, "events"),
            action=f"create event for persistentvolumeclaim {namespace}/{name}",
            body=_event(created, plan),
        )
    except KubeError as exc:
        # The claim is recreated; a missing Event must not turn that into a failure.
        log.warning("recreate: no event for %s/%s: %s", namespace, name, exc)
    result = RecreateResult(
        namespace=namespace,
        name=name,
        original_class=plan.original_class,
        target_class=str(created.get("spec", {}).get("storageClassName") or plan.target_class),
        uid=str(created["metadata"].get("uid", "")),
    )
    log.info("recreate: %s", result.message)
    return result
