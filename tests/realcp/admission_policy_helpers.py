"""Claims created through the product's adapter (:class:`vsphere_kale.kube.Kube`) on the real
kube-apiserver, keeping the ``Warning`` headers (what kubectl prints), for the admission-policy
tests and the admission-cost benchmark."""

from __future__ import annotations

import secrets
import time
from typing import Any

from vsphere_kale.install import admission_policy
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r

WARNING_PREFIX = (
    f"Validation failed for ValidatingAdmissionPolicy '{admission_policy.VALIDATING_POLICY}' "
    f"with binding '{admission_policy.VALIDATING_POLICY}': "
)
"""What kube-apiserver puts before a Warn validation's message (its fixed format)."""

BLOCK = "vsan-default-storage-policy"


def create_claim(
    kube: Kube, namespace: str, claim: dict[str, Any], *, dry_run: bool = True
) -> tuple[dict[str, Any], list[str]]:
    """The claim as stored (``dryRun=All``: admitted and validated in full, not written) and
    the warnings of the answer (UTF-8 as kube-apiserver wrote them: Kube decodes them)."""
    warnings: list[str] = []
    stored = kube.create(
        r.PERSISTENT_VOLUME_CLAIM, claim, namespace=namespace, dry_run=dry_run, warnings=warnings
    )
    return stored, warnings


def rwx_claim(storage_class: str | None = BLOCK, *, name: str | None = None) -> dict[str, Any]:
    spec: dict[str, Any] = {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}},
    }
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    metadata = {"name": name} if name else {"generateName": "claim-"}
    return {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": metadata, "spec": spec}


def is_rewritten(stored: dict[str, Any], warnings: list[str], target: str) -> bool:
    return stored["spec"].get("storageClassName") == target and any(
        w.startswith(WARNING_PREFIX) for w in warnings
    )


def wait_until_policy_active(
    kube: Kube, namespace: str, target: str, *, timeout: float = 60
) -> float:
    """Policies reach admission through the API server's informers: poll until a claim is
    rewritten AND warned about (both policies loaded). Returns the seconds it took."""
    started = time.monotonic()
    while True:
        stored, warnings = create_claim(kube, namespace, rwx_claim())
        if is_rewritten(stored, warnings, target):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise AssertionError(
                f"policies not active after {timeout} s: class "
                f"{stored['spec'].get('storageClassName')}, warnings {warnings}"
            )
        time.sleep(0.2)


def apply_objects(kube: Kube, objects: list[dict[str, Any]]) -> None:
    for obj in objects:
        kube.create(r.resource_for(obj["apiVersion"], obj["kind"]), obj)


def delete_objects(kube: Kube, objects: list[dict[str, Any]]) -> None:
    for obj in reversed(objects):
        md = obj["metadata"]
        resource = r.resource_for(obj["apiVersion"], obj["kind"])
        if kube.get_optional(resource, md["name"], namespace=md.get("namespace")) is not None:
            kube.delete(resource, md["name"], namespace=md.get("namespace"))


def unique(prefix: str) -> str:
    return f"{prefix}-{secrets.token_hex(3)}"
