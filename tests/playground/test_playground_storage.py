"""The playground's storage provisioners (API clients) against the sandbox, read back with the
real kubernetes client: vSphere CSI block, nfs-subdir-external-provisioner, PV binding."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import pytest
from kubernetes import client

from vsphere_kale.kube import Kube
from vsphere_kale.playground.seed import BLOCK_CLASS, NFS_CLASS, PROVISIONING_FAILED
from vsphere_kale.playground.storage import (
    NFS_SERVER,
    PODS,
    StorageProvisioners,
    provisioning_failed_message,
    start_provisioners,
)
from vsphere_kale.sandbox.testing import RunningSandbox

T = TypeVar("T")
Factory = Callable[..., RunningSandbox]


@pytest.fixture
def cluster(sandbox_factory: Factory) -> Iterator[tuple[RunningSandbox, StorageProvisioners]]:
    running = sandbox_factory(seed="kubeflow-demo", authorization=True)
    provisioners = start_provisioners(Kube(running.api_client()))
    yield running, provisioners
    provisioners.stop()


def _eventually(probe: Callable[[], T | None], *, timeout: float = 5.0) -> T:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.02)


def _claim(name: str, storage_class: str | None, modes: list[str]) -> dict[str, Any]:
    spec: dict[str, Any] = {"accessModes": modes, "resources": {"requests": {"storage": "2Gi"}}}
    if storage_class is not None:
        spec["storageClassName"] = storage_class
    return {"metadata": {"name": name, "namespace": "alice"}, "spec": spec}


def _events(running: RunningSandbox, name: str) -> list[Any]:
    core = client.CoreV1Api(running.api_client())
    items = core.list_namespaced_event("alice", field_selector=f"involvedObject.name={name}").items
    return list(items)


def _add_class(running: RunningSandbox, name: str, *, mode: str) -> None:
    client.StorageV1Api(running.api_client()).create_storage_class(
        {
            "metadata": {"name": name},
            "provisioner": "csi.vsphere.vmware.com",
            "reclaimPolicy": "Delete",
            "volumeBindingMode": mode,
        }
    )


def test_nfs_client_binds_a_read_write_many_claim(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, provisioners = cluster
    core = client.CoreV1Api(running.api_client())
    # When a ReadWriteMany claim is created on nfs-client
    core.create_namespaced_persistent_volume_claim(
        "alice", _claim("shared", NFS_CLASS, ["ReadWriteMany"])
    )
    assert provisioners.wait_idle(5)
    # Then it is Bound to a new NFS volume of its size and modes
    claim = core.read_namespaced_persistent_volume_claim("shared", "alice")
    assert claim.status.phase == "Bound"
    assert claim.status.capacity == {"storage": "2Gi"}
    volume = core.read_persistent_volume(claim.spec.volume_name)
    assert volume.metadata.name == f"pvc-{claim.metadata.uid}"
    assert volume.spec.nfs.server == NFS_SERVER
    assert volume.spec.nfs.path.endswith(f"/alice-shared-{volume.metadata.name}")
    assert volume.spec.access_modes == ["ReadWriteMany"]
    assert volume.spec.claim_ref.uid == claim.metadata.uid
    assert volume.status.phase == "Bound"
    # And the provisioner said so as nfs-subdir-external-provisioner does
    reasons = {e.reason: e for e in _eventually(lambda: _events(running, "shared"))}
    assert {"Provisioning", "ProvisioningSucceeded"} <= set(reasons)
    assert reasons["ProvisioningSucceeded"].message == (
        f"Successfully provisioned volume {volume.metadata.name}"
    )


def test_vsphere_csi_binds_a_read_write_once_claim(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, provisioners = cluster
    core = client.CoreV1Api(running.api_client())
    core.create_namespaced_persistent_volume_claim(
        "alice", _claim("data", BLOCK_CLASS, ["ReadWriteOnce"])
    )
    assert provisioners.wait_idle(5)
    claim = core.read_namespaced_persistent_volume_claim("data", "alice")
    assert claim.status.phase == "Bound"
    volume = core.read_persistent_volume(claim.spec.volume_name)
    assert volume.spec.csi.driver == "csi.vsphere.vmware.com"
    assert volume.spec.storage_class_name == BLOCK_CLASS


def test_vsphere_csi_refuses_read_write_many_in_its_own_words(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, provisioners = cluster
    core = client.CoreV1Api(running.api_client())
    core.create_namespaced_persistent_volume_claim(
        "alice", _claim("rwx-on-block", BLOCK_CLASS, ["ReadWriteMany"])
    )
    failed = _eventually(
        lambda: [e for e in _events(running, "rwx-on-block") if e.reason == "ProvisioningFailed"]
    )
    assert provisioners.wait_idle(5)
    assert failed[0].type == "Warning"
    assert failed[0].message == (
        f'failed to provision volume with StorageClass "{BLOCK_CLASS}": rpc error: '
        "code = InvalidArgument desc = File volume not supported."
    )
    assert failed[0].message == provisioning_failed_message(BLOCK_CLASS) == PROVISIONING_FAILED
    claim = core.read_namespaced_persistent_volume_claim("rwx-on-block", "alice")
    assert claim.status.phase == "Pending" and not claim.spec.volume_name
    assert not [
        v for v in core.list_persistent_volume().items if v.spec.claim_ref.name == "rwx-on-block"
    ]


def test_the_seeded_marshal_claim_stays_refused_and_its_event_counts_on(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, provisioners = cluster
    assert provisioners.wait_idle(5)
    # One Event, counted on (the seed's 12 earlier attempts, then ours), not a second one
    failed = _eventually(
        lambda: [
            e
            for e in _events(running, "wf-1-kale-marshal-pvc")
            if e.reason == "ProvisioningFailed" and (e.count or 0) > 12
        ]
    )
    assert len(failed) == 1


def test_wait_for_first_consumer_binds_once_a_pod_mounts_the_claim(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, provisioners = cluster
    _add_class(running, "vsan-wffc", mode="WaitForFirstConsumer")
    core = client.CoreV1Api(running.api_client())
    core.create_namespaced_persistent_volume_claim(
        "alice", _claim("later", "vsan-wffc", ["ReadWriteOnce"])
    )
    waiting = _eventually(
        lambda: [e for e in _events(running, "later") if e.reason == "WaitForFirstConsumer"]
    )
    assert waiting[0].message == "waiting for first consumer to be created before binding"
    assert provisioners.wait_idle(5)
    assert core.read_namespaced_persistent_volume_claim("later", "alice").status.phase == "Pending"
    # When a pod mounts it (the sandbox serves pods read-only: the pod is put in its store,
    # as a kubelet-less cluster would have it after the scheduler's pick)
    running.sandbox.store.create_object(
        PODS,
        "alice",
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": "notebook-0", "namespace": "alice"},
            "spec": {
                "containers": [{"name": "nb", "image": "jupyter"}],
                "volumes": [{"name": "data", "persistentVolumeClaim": {"claimName": "later"}}],
            },
        },
    )
    # Then the claim is bound
    _eventually(
        lambda: (
            core.read_namespaced_persistent_volume_claim("later", "alice").status.phase == "Bound"
        )
    )


def test_a_claim_on_a_missing_class_gets_the_pv_controllers_warning(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, _ = cluster
    core = client.CoreV1Api(running.api_client())
    core.create_namespaced_persistent_volume_claim(
        "alice", _claim("nowhere", "no-such-class", ["ReadWriteMany"])
    )
    failed = _eventually(
        lambda: [e for e in _events(running, "nowhere") if e.reason == "ProvisioningFailed"]
    )
    assert failed[0].message == 'storageclass.storage.k8s.io "no-such-class" not found'


def test_deleting_a_bound_claim_deletes_its_volume(
    cluster: tuple[RunningSandbox, StorageProvisioners],
) -> None:
    running, provisioners = cluster
    core = client.CoreV1Api(running.api_client())
    core.create_namespaced_persistent_volume_claim(
        "alice", _claim("scratch", NFS_CLASS, ["ReadWriteOnce"])
    )
    assert provisioners.wait_idle(5)
    volume = core.read_namespaced_persistent_volume_claim("scratch", "alice").spec.volume_name
    core.delete_namespaced_persistent_volume_claim("scratch", "alice")
    _eventually(
        lambda: volume not in {v.metadata.name for v in core.list_persistent_volume().items}
    )
