"""The playground tour's storage steps on the whole local system (sandbox + install + serve +
the playground's controllers): what a newcomer does after the panel flags the marshal claim."""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from vsphere_kale.kube import Kube
from vsphere_kale.playground.seed import MARSHAL_PVC, NFS_CLASS
from vsphere_kale.playground.system import LocalSystem
from vsphere_kale.reconcile.recreate import apply_recreate
from vsphere_kale.settings import settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def system(tmp_path: Path) -> Iterator[LocalSystem]:
    with LocalSystem(tmp_path / "system", flavor="psa") as running:
        yield running


def _kubectl(system: LocalSystem, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(system.kubeconfig_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _bound(api: client.CoreV1Api, name: str) -> Any:
    deadline = time.monotonic() + 10
    while True:
        claim = api.read_namespaced_persistent_volume_claim(name, "alice")
        if claim.status.phase == "Bound":
            return claim
        assert time.monotonic() < deadline, f"{name} never became Bound"
        time.sleep(0.05)


def test_delete_and_reapply_the_marshal_claim_ends_bound_on_nfs_client(
    system: LocalSystem,
) -> None:
    # Given the tour's stuck marshal claim; when the user follows the hint with kubectl
    deleted = _kubectl(system, "delete", "pvc", MARSHAL_PVC, "-n", "alice")
    assert deleted.returncode == 0, deleted.stderr
    applied = _kubectl(system, "apply", "-f", str(ROOT / "deploy/examples/kale-marshal-pvc.yaml"))
    assert applied.returncode == 0, applied.stderr
    # Then the webhook put it on nfs-client, and nfs-client's provisioner bound it
    assert system.running is not None
    core = client.CoreV1Api(system.running.api_client())
    claim = _bound(core, MARSHAL_PVC)
    assert claim.spec.storage_class_name == NFS_CLASS
    assert core.read_persistent_volume(claim.spec.volume_name).spec.nfs is not None


def test_recreate_on_the_running_system_ends_bound_on_nfs_client(system: LocalSystem) -> None:
    assert system.running is not None
    api = system.running.api_client()
    settings = settings_from_mapping({"storage": {"rwxStorageClass": NFS_CLASS}})
    result = apply_recreate(Kube(api), "alice", MARSHAL_PVC, settings=settings)
    claim = _bound(client.CoreV1Api(api), MARSHAL_PVC)
    assert claim.metadata.uid == result.uid
    assert claim.spec.storage_class_name == NFS_CLASS
