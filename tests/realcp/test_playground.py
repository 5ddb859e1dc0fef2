"""The playground's Kubeflow and storage emulation on the real kube-apiserver 1.36 (+ etcd,
kube-controller-manager): the same API-client code the embedded sandbox runs.

One control plane of its own for this module (the session one is shared, and the seed writes
cluster-wide objects: StorageClasses, ClusterRoles, the Profile CRD).
"""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from realcp_helpers import api_client_for, kubectl, wait_for

from vsphere_kale.controlplane import Binaries, RunningControlPlane, start_control_plane
from vsphere_kale.kube import Kube
from vsphere_kale.playground.controllers import PlaygroundControllers, start_controllers
from vsphere_kale.playground.kubeflow import PROFILE_NAMESPACE_LABELS
from vsphere_kale.playground.seed import (
    BLOCK_CLASS,
    MARSHAL_PVC,
    NFS_CLASS,
    PROVISIONING_FAILED,
    apply_seed_through_api,
)
from vsphere_kale.playground.seed_kale import RAW_DATA_PVC
from vsphere_kale.reconcile.recreate import apply_recreate
from vsphere_kale.settings import settings_from_mapping

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def demo(
    control_plane_binaries: Binaries,
) -> Iterator[tuple[RunningControlPlane, client.ApiClient, PlaygroundControllers]]:
    # Its own control plane (the seed installs the Profile CRD and cluster-wide objects);
    # control_plane_binaries skips, or fails with CI=true, exactly as for the shared one.
    cp = start_control_plane(binaries=control_plane_binaries)
    api = api_client_for(cp)
    controllers: PlaygroundControllers | None = None
    try:
        apply_seed_through_api(Kube(api), "kubeflow-demo", flavor="psa")
        controllers = start_controllers(Kube(api))
        yield cp, api, controllers
    finally:
        if controllers is not None:
            controllers.stop()
        api.close()
        cp.stop()


def _read_ns(core: client.CoreV1Api, name: str) -> Any:
    try:
        return core.read_namespace(name)
    except client.ApiException as exc:
        assert exc.status == 404
        return None


def test_the_seed_registers_kubeflows_profile_crd_and_the_demo(
    demo: tuple[RunningControlPlane, client.ApiClient, PlaygroundControllers],
) -> None:
    cp, api, _ = demo
    crd = client.ApiextensionsV1Api(api).read_custom_resource_definition("profiles.kubeflow.org")
    assert crd.spec.scope == "Cluster"
    assert [(v.name, v.served, v.storage) for v in crd.spec.versions] == [
        ("v1", True, True),
        ("v1beta1", True, False),
    ]
    # kube-apiserver publishes the schema: kubectl explain finds spec.owner's fields
    explained = kubectl(cp, "explain", "profiles.spec.owner")
    assert explained.returncode == 0, explained.stderr
    assert "kind" in explained.stdout and "name" in explained.stdout
    profiles = client.CustomObjectsApi(api).list_cluster_custom_object(
        "kubeflow.org", "v1beta1", "profiles"
    )["items"]
    assert {p["metadata"]["name"] for p in profiles} == {"alice", "bob"}
    core = client.CoreV1Api(api)
    alice = core.read_namespace("alice")
    assert alice.metadata.annotations["owner"] == "alice@example.com"
    claim = core.read_namespaced_persistent_volume_claim(MARSHAL_PVC, "alice")
    assert (claim.spec.storage_class_name, claim.status.phase) == (BLOCK_CLASS, "Pending")


def test_the_profile_controller_builds_a_profile_and_the_garbage_collector_removes_it(
    demo: tuple[RunningControlPlane, client.ApiClient, PlaygroundControllers],
) -> None:
    _, api, controllers = demo
    custom = client.CustomObjectsApi(api)
    core = client.CoreV1Api(api)
    profile = custom.create_cluster_custom_object(
        "kubeflow.org",
        "v1",
        "profiles",
        {
            "apiVersion": "kubeflow.org/v1",
            "kind": "Profile",
            "metadata": {"name": "carol"},
            "spec": {"owner": {"kind": "User", "name": "carol@example.com"}},
        },
    )
    assert controllers.wait_idle(30)
    namespace = core.read_namespace("carol")
    for key, value in PROFILE_NAMESPACE_LABELS.items():
        assert namespace.metadata.labels[key] == value
    (owner,) = namespace.metadata.owner_references
    assert (owner.kind, owner.uid, owner.controller) == (
        "Profile",
        profile["metadata"]["uid"],
        True,
    )
    sas = {sa.metadata.name for sa in core.list_namespaced_service_account("carol").items}
    assert {"default-editor", "default-viewer"} <= sas
    bindings = client.RbacAuthorizationV1Api(api).list_namespaced_role_binding("carol").items
    assert {b.metadata.name: b.role_ref.name for b in bindings} == {
        "namespaceAdmin": "kubeflow-admin",
        "default-editor": "kubeflow-edit",
        "default-viewer": "kubeflow-view",
    }
    # When the Profile is deleted, its namespace goes (ownerReference; GC or the controller)
    custom.delete_cluster_custom_object("kubeflow.org", "v1", "profiles", "carol")
    wait_for("carol's namespace to go", lambda: _read_ns(core, "carol") is None, timeout=90)


def test_vsphere_csi_refuses_rwx_and_nfs_client_binds_it(
    demo: tuple[RunningControlPlane, client.ApiClient, PlaygroundControllers],
) -> None:
    _, api, controllers = demo
    core = client.CoreV1Api(api)

    def events(name: str, reason: str) -> list[Any]:
        return list(
            core.list_namespaced_event(
                "alice", field_selector=f"involvedObject.name={name},reason={reason}"
            ).items
        )

    # The seeded marshal claim: refused in vSphere CSI's words, counted on one Event
    failed = wait_for(
        "the marshal claim's refusal to be counted",
        lambda: [e for e in events(MARSHAL_PVC, "ProvisioningFailed") if (e.count or 0) > 12],
    )
    assert failed[0].message == PROVISIONING_FAILED
    # A ReadWriteMany claim on nfs-client is bound (PV with an NFS source)
    core.create_namespaced_persistent_volume_claim(
        "alice",
        {
            "metadata": {"name": "shared"},
            "spec": {
                "storageClassName": NFS_CLASS,
                "accessModes": ["ReadWriteMany"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    claim = wait_for(
        "shared to be Bound",
        lambda: (
            (c := core.read_namespaced_persistent_volume_claim("shared", "alice")).status.phase
            == "Bound"
            and c
        ),
    )
    volume = core.read_persistent_volume(claim.spec.volume_name)
    assert volume.spec.nfs.path.endswith(f"alice-shared-{volume.metadata.name}")
    assert volume.status.phase == "Bound"
    assert events("shared", "ProvisioningSucceeded")
    assert controllers.wait_idle(30)


def test_recreate_moves_the_stuck_marshal_claim_to_nfs_client_where_it_binds(
    demo: tuple[RunningControlPlane, client.ApiClient, PlaygroundControllers],
) -> None:
    _, api, _ = demo
    settings = settings_from_mapping({"storage": {"rwxStorageClass": NFS_CLASS}})
    # The delete waits for kube-controller-manager's pvc-protection controller
    result = apply_recreate(Kube(api), "alice", MARSHAL_PVC, settings=settings, timeout=60)
    core = client.CoreV1Api(api)
    claim = wait_for(
        "the recreated claim to be Bound",
        lambda: (
            (c := core.read_namespaced_persistent_volume_claim(MARSHAL_PVC, "alice")).status.phase
            == "Bound"
            and c
        ),
    )
    assert claim.metadata.uid == result.uid
    assert claim.spec.storage_class_name == NFS_CLASS
    assert claim.metadata.annotations["vsphere-kale.io/original-storage-class"] == BLOCK_CLASS


# --- the whole tour: vsphere-kale sandbox --control-plane real --------------------------------


def test_the_local_system_runs_on_the_real_control_plane(tmp_path: Path) -> None:
    from vsphere_kale.playground.system import LocalSystem

    with LocalSystem(tmp_path / "system", flavor="psa", control_plane="real") as system:
        assert system.real is not None and system.running is None
        # kube-apiserver calls serve's webhook by URL: the tour's RWX claim lands on nfs-client
        applied = kubectl_file(system, ROOT / "deploy/examples/kale-rwm-volume.yaml")
        assert applied.returncode == 0, applied.stderr
        core = client.CoreV1Api(system.real.api_client())
        claims = wait_for(
            "the rwm claim to be Bound",
            lambda: [
                c
                for c in core.list_namespaced_persistent_volume_claim("alice").items
                if c.metadata.name not in (MARSHAL_PVC, RAW_DATA_PVC) and c.status.phase == "Bound"
            ],
        )
        assert claims[0].spec.storage_class_name == NFS_CLASS
        # And the notebook user's kubeconfig is alice's
        whoami = subprocess.run(
            ["kubectl", "--kubeconfig", str(system.user_kubeconfig), "auth", "whoami"],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert whoami.returncode == 0 and "alice@example.com" in whoami.stdout
        # doctor passes on it: the same install as on a cluster (the webhook called by URL)
        from click.testing import CliRunner

        from vsphere_kale.cli import main

        deadline = time.monotonic() + 60
        while True:
            done = CliRunner().invoke(
                main, ["doctor", "--kubeconfig", str(system.kubeconfig_path), "-o", "json"]
            )
            if done.exit_code == 0 or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        report = json.loads(done.stdout)
        assert done.exit_code == 0, report
        statuses = {c["check"]: c["status"] for c in report["checks"]}
        assert {name for name, status in statuses.items() if status != "ok"} <= {"rwx-claims"}


def kubectl_file(system: Any, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(system.kubeconfig_path), "apply", "-f", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_psp_on_the_real_control_plane_is_one_sentence() -> None:
    from click.testing import CliRunner

    from vsphere_kale.cli import main

    result = CliRunner().invoke(
        main, ["sandbox", "--control-plane", "real", "--flavor", "psp", "--no-lab"]
    )
    assert result.exit_code == 2
    assert result.output.strip() == (
        "error: configuration: --flavor: psp needs --control-plane embedded: "
        "PodSecurityPolicy was removed in Kubernetes 1.25, and the real control plane is 1.36"
    )
