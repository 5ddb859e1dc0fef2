"""The pure half of the playground's provisioners: which claim each one binds, waits on or
refuses, and the volume it would create."""

from __future__ import annotations

from typing import Any

import pytest

from vsphere_kale.playground.storage import build_volume, decide_provisioning

BLOCK = {"provisioner": "csi.vsphere.vmware.com", "volumeBindingMode": "Immediate"}
WFFC = {"provisioner": "csi.vsphere.vmware.com", "volumeBindingMode": "WaitForFirstConsumer"}
NFS = {"provisioner": "k8s-sigs.io/nfs-subdir-external-provisioner", "reclaimPolicy": "Retain"}


def _claim(modes: list[str], cls: str = "c", **spec: Any) -> dict[str, Any]:
    return {
        "metadata": {"name": "x", "namespace": "alice", "uid": "u1"},
        "spec": {"accessModes": modes, "storageClassName": cls, **spec},
    }


@pytest.mark.parametrize(
    ("claim", "storage_class", "action"),
    [
        (_claim(["ReadWriteOnce"]), BLOCK, "bind"),
        (_claim(["ReadOnlyMany"]), BLOCK, "bind"),
        (_claim(["ReadWriteMany"]), BLOCK, "refuse"),
        (_claim(["ReadWriteOnce", "ReadWriteMany"]), BLOCK, "refuse"),
        (_claim(["ReadWriteOnce"]), WFFC, "wait"),
        (_claim(["ReadWriteMany"]), NFS, "bind"),
        (_claim(["ReadWriteOncePod"]), NFS, "bind"),
        (_claim(["ReadWriteMany"]), None, "no-class"),
        (_claim(["ReadWriteMany"], cls=""), NFS, "ignore"),
        (_claim(["ReadWriteMany"], volumeName="pv-1"), NFS, "ignore"),
        (_claim(["ReadWriteMany"]), {"provisioner": "ebs.csi.aws.com"}, "ignore"),
    ],
)
def test_decisions(claim: dict[str, Any], storage_class: Any, action: str) -> None:
    assert decide_provisioning(claim, storage_class).action == action


def test_a_pod_mounting_the_claim_is_its_first_consumer() -> None:
    pod = {
        "metadata": {"name": "nb-0", "namespace": "alice"},
        "spec": {"volumes": [{"name": "d", "persistentVolumeClaim": {"claimName": "x"}}]},
    }
    elsewhere = {**pod, "metadata": {"name": "nb-0", "namespace": "bob"}}
    assert decide_provisioning(_claim(["ReadWriteOnce"]), WFFC, pods=[elsewhere]).action == "wait"
    assert decide_provisioning(_claim(["ReadWriteOnce"]), WFFC, pods=[pod]).action == "bind"


def test_the_legacy_class_annotation_wins_as_in_kube_controller_manager() -> None:
    claim = _claim(["ReadWriteMany"], cls="nfs-client")
    claim["metadata"]["annotations"] = {"volume.beta.kubernetes.io/storage-class": "block"}
    volume = build_volume(claim, NFS, provisioner=NFS["provisioner"])
    assert volume["spec"]["storageClassName"] == "block"


def test_an_nfs_volume_is_pre_bound_and_named_as_the_provisioner_names_it() -> None:
    claim = _claim(["ReadWriteMany"], resources={"requests": {"storage": "3Gi"}})
    volume = build_volume(claim, NFS, provisioner=NFS["provisioner"])
    assert volume["metadata"]["name"] == "pvc-u1"
    assert volume["spec"]["nfs"]["path"] == "/srv/nfs/alice-x-pvc-u1"
    assert volume["spec"]["capacity"] == {"storage": "3Gi"}
    assert volume["spec"]["persistentVolumeReclaimPolicy"] == "Retain"
    assert volume["spec"]["claimRef"]["uid"] == "u1"
