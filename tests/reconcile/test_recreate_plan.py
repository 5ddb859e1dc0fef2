"""The pure decision behind ``recreate-pvc`` and the admin API's recreate endpoint."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from vsphere_kale.policy.recreate import RecreatePlan, RecreateRefusal, plan_recreate
from vsphere_kale.settings import settings_from_mapping

SETTINGS = settings_from_mapping({"storage": {"rwxStorageClass": "nfs-client"}})
CLASSES: dict[str, dict[str, Any]] = {
    "vsan-default-storage-policy": {"provisioner": "csi.vsphere.vmware.com"},
    "nfs-client": {"provisioner": "cluster.local/nfs-subdir-external-provisioner"},
    "vsan-file": {"provisioner": "csi.vsphere.vmware.com"},
}

STUCK: dict[str, Any] = {
    "apiVersion": "v1",
    "kind": "PersistentVolumeClaim",
    "metadata": {
        "name": "wf-1-kale-marshal-pvc",
        "namespace": "alice",
        "uid": "old-uid",
        "resourceVersion": "42",
        "labels": {"workflows.argoproj.io/workflow": "wf-1"},
        "annotations": {
            "note": "kept",
            "volume.kubernetes.io/storage-provisioner": "csi.vsphere.vmware.com",
            "volume.beta.kubernetes.io/storage-provisioner": "csi.vsphere.vmware.com",
        },
        "ownerReferences": [
            {"apiVersion": "argoproj.io/v1alpha1", "kind": "Workflow", "name": "wf-1", "uid": "w"}
        ],
        "finalizers": ["kubernetes.io/pvc-protection"],
        "creationTimestamp": "2026-12-01T00:00:00Z",
    },
    "spec": {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}},
        "storageClassName": "vsan-default-storage-policy",
        "volumeMode": "Filesystem",
    },
    "status": {"phase": "Pending"},
}


def _claim(**changes: Any) -> dict[str, Any]:
    claim = copy.deepcopy(STUCK)
    for dotted, value in changes.items():
        *parents, leaf = dotted.split("__")
        target = claim
        for key in parents:
            target = target.setdefault(key, {})
        target[leaf] = value
    return claim


def _pod(name: str, claim: str, phase: str = "Running") -> dict[str, Any]:
    return {
        "metadata": {"name": name, "namespace": "alice"},
        "spec": {"volumes": [{"name": "v", "persistentVolumeClaim": {"claimName": claim}}]},
        "status": {"phase": phase},
    }


def _plan(claim: dict[str, Any], pods: list[dict[str, Any]] | None = None) -> Any:
    return plan_recreate(claim, pods=pods or [], storage_classes=CLASSES, settings=SETTINGS)


def test_a_stuck_claim_is_recreated_with_its_identity_on_the_rwx_class() -> None:
    plan = _plan(_claim())
    assert isinstance(plan, RecreatePlan)
    assert (plan.namespace, plan.name) == ("alice", "wf-1-kale-marshal-pvc")
    assert (plan.original_class, plan.target_class) == ("vsan-default-storage-policy", "nfs-client")
    meta, spec = plan.claim["metadata"], plan.claim["spec"]
    assert meta["name"] == "wf-1-kale-marshal-pvc" and meta["namespace"] == "alice"
    assert meta["labels"] == STUCK["metadata"]["labels"]
    assert meta["ownerReferences"] == STUCK["metadata"]["ownerReferences"]
    # Our annotation records where it came from; the old provisioner's annotations go.
    assert meta["annotations"] == {
        "note": "kept",
        "vsphere-kale.io/original-storage-class": "vsan-default-storage-policy",
    }
    assert "uid" not in meta and "resourceVersion" not in meta and "finalizers" not in meta
    assert spec == {
        "accessModes": ["ReadWriteMany"],
        "resources": {"requests": {"storage": "1Gi"}},
        "storageClassName": "nfs-client",
        "volumeMode": "Filesystem",
    }
    assert "status" not in plan.claim


def test_a_claim_on_a_class_that_does_not_exist_is_recreated() -> None:
    plan = _plan(_claim(spec__storageClassName="standard"))  # KFP's hard-coded default
    assert isinstance(plan, RecreatePlan)
    assert plan.original_class == "standard"


def test_finished_pods_do_not_hold_the_claim() -> None:
    done = _pod("step-1", "wf-1-kale-marshal-pvc", phase="Succeeded")
    assert isinstance(_plan(_claim(), [done]), RecreatePlan)


@pytest.mark.parametrize(
    ("claim", "pods", "reason", "words"),
    [
        (
            _claim(status__phase="Bound", spec__volumeName="pvc-1"),
            [],
            "bound",
            "is Bound to pvc-1",
        ),
        (
            _claim(spec__dataSource={"kind": "VolumeSnapshot", "name": "snap-1"}),
            [],
            "data-source",
            "from VolumeSnapshot snap-1",
        ),
        (
            _claim(spec__dataSourceRef={"kind": "PersistentVolumeClaim", "name": "src"}),
            [],
            "data-source",
            "from PersistentVolumeClaim src",
        ),
        (
            _claim(),
            [_pod("notebook-0", "wf-1-kale-marshal-pvc")],
            "in-use",
            "mounted by pod notebook-0",
        ),
        (
            _claim(spec__storageClassName="nfs-client"),
            [],
            "not-stuck",
            "a class that serves ReadWriteMany",
        ),
        (
            _claim(spec__accessModes=["ReadWriteOnce"]),
            [],
            "not-stuck",
            "does not ask for ReadWriteMany",
        ),
        (
            _claim(metadata__annotations={"vsphere-kale.io/rewrite-storage-class": "false"}),
            [],
            "opted-out",
            "opts out",
        ),
    ],
    ids=["bound", "data-source", "data-source-ref", "in-use", "on-rwx", "rwo", "opted-out"],
)
def test_refusals_say_why(claim: Any, pods: Any, reason: str, words: str) -> None:
    refusal = _plan(claim, pods)
    assert isinstance(refusal, RecreateRefusal)
    assert refusal.reason == reason
    assert words in refusal.message
    assert "alice/wf-1-kale-marshal-pvc" in refusal.message


def test_an_rwx_capable_class_is_not_stuck() -> None:
    settings = settings_from_mapping(
        {"storage": {"rwxStorageClass": "nfs-client", "rwxCapableClasses": ["vsan-file"]}}
    )
    refusal = plan_recreate(
        _claim(spec__storageClassName="vsan-file"),
        pods=[],
        storage_classes=CLASSES,
        settings=settings,
    )
    assert isinstance(refusal, RecreateRefusal) and refusal.reason == "not-stuck"


def test_without_an_rwx_class_configured_nothing_is_recreated() -> None:
    refusal = plan_recreate(
        _claim(), pods=[], storage_classes=CLASSES, settings=settings_from_mapping({})
    )
    assert isinstance(refusal, RecreateRefusal) and refusal.reason == "not-configured"
    assert "storage.rwxStorageClass" in refusal.message
