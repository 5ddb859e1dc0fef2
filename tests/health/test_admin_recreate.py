"""The admin API's one-click repair: ``POST .../persistentvolumeclaims/{name}/recreate``.

Against the sandbox (psp flavor, kubeflow-demo: alice's Kale marshal claim stuck on the vSphere
block class), with the admin API running as the installed ServiceAccount under deploy/base RBAC,
so the service's own rights are what the shipped manifest grants.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from kubernetes import client
from test_adminapi import SETTINGS, AdminServer, OneShotReconciler, service_client

from vsphere_kale.health.adminapi import build_admin_routes
from vsphere_kale.playground.seed import BLOCK_CLASS, MARSHAL_PVC
from vsphere_kale.policy.storage import ORIGINAL_CLASS_ANNOTATION
from vsphere_kale.sandbox.testing import RunningSandbox

PATH = f"/api/v1/namespaces/alice/persistentvolumeclaims/{MARSHAL_PVC}/recreate"


class Follower(OneShotReconciler):
    def is_leader(self) -> bool:
        return False

    def leader_identity(self) -> str:
        return "vsphere-kale-7d9f-abc12"


@pytest.fixture
def running(sandbox_factory: object) -> RunningSandbox:
    return sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)  # type: ignore[operator]


def serve(
    running: RunningSandbox, tmp_path: Path, reconciler_type: type = OneShotReconciler
) -> AdminServer:
    kube = service_client(running)
    routes = build_admin_routes(kube=kube, settings=SETTINGS, reconciler=reconciler_type(kube))
    return AdminServer(routes, tmp_path / "certs")


@pytest.fixture
def server(running: RunningSandbox, tmp_path: Path) -> Iterator[AdminServer]:
    admin = serve(running, tmp_path)
    yield admin
    admin.stop()


def claim(running: RunningSandbox, name: str = MARSHAL_PVC) -> client.V1PersistentVolumeClaim:
    return client.CoreV1Api(running.api_client()).read_namespaced_persistent_volume_claim(
        name, "alice"
    )


def test_the_stuck_claim_is_recreated_on_the_rwx_class(
    running: RunningSandbox, server: AdminServer
) -> None:
    before = claim(running)
    assert before.spec.storage_class_name == BLOCK_CLASS
    code, body, _ = server.call("POST", PATH, token=running.tokens["admin"])
    assert code == 200, body
    assert body["kind"] == "RecreateResult" and body["outcome"] == "recreated"
    after = claim(running)
    assert after.metadata.uid == body["uid"] != before.metadata.uid
    assert after.spec.storage_class_name == "nfs-client"
    assert after.metadata.annotations[ORIGINAL_CLASS_ANNOTATION] == BLOCK_CLASS


def test_the_profile_owner_may_recreate_her_own_stuck_claim(
    running: RunningSandbox, server: AdminServer
) -> None:
    # kubeflow-admin (bound to alice in her namespace) aggregates vsphere-kale-reconciler.
    code, body, _ = server.call("POST", PATH, token=running.tokens["alice"])
    assert code == 200, body
    assert claim(running).spec.storage_class_name == "nfs-client"


def test_a_user_without_the_permission_is_403_and_nothing_changes(
    running: RunningSandbox, server: AdminServer
) -> None:
    before = claim(running)
    code, body, _ = server.call("POST", PATH, token=running.tokens["viewer"])
    assert code == 403, body
    assert "pvcrecreations" in body["message"]
    assert claim(running).metadata.uid == before.metadata.uid


def test_a_claim_that_is_not_stuck_is_409_with_a_sentence(
    running: RunningSandbox, server: AdminServer
) -> None:
    core = client.CoreV1Api(running.api_client())
    core.create_namespaced_persistent_volume_claim(
        "alice",
        {
            "metadata": {"name": "fine"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "storageClassName": BLOCK_CLASS,
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    path = "/api/v1/namespaces/alice/persistentvolumeclaims/fine/recreate"
    code, body, _ = server.call("POST", path, token=running.tokens["admin"])
    assert code == 409, body
    assert body["reason"] == "Conflict" and body["message"]
    assert claim(running, "fine").spec.storage_class_name == BLOCK_CLASS


@pytest.mark.parametrize("name", ["Bad_Name", "a%0Ab", "-x"])
def test_a_bad_claim_name_is_400(running: RunningSandbox, server: AdminServer, name: str) -> None:
    path = f"/api/v1/namespaces/alice/persistentvolumeclaims/{name}/recreate"
    code, body, _ = server.call("POST", path, token=running.tokens["admin"])
    assert code == 400 and "not a valid claim name" in body["message"]


def test_a_follower_does_not_recreate(running: RunningSandbox, tmp_path: Path) -> None:
    follower = serve(running, tmp_path, Follower)
    try:
        before = claim(running)
        code, body, headers = follower.call("POST", PATH, token=running.tokens["admin"])
        assert code == 503 and "not the leader" in body["message"]
        assert headers["X-Vsphere-Kale-Leader"] == "vsphere-kale-7d9f-abc12"
        assert claim(running).metadata.uid == before.metadata.uid
    finally:
        follower.stop()
