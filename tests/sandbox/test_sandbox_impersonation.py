"""Impersonation in the sandbox API server, through kubectl ``--as`` and the real client.

The sandbox runs with RBAC and the ``kubeflow-demo`` seed: alice owns profile ``alice``, bob
owns ``bob``; the admin is in ``system:masters`` (may impersonate anyone), alice may
impersonate no one unless a test grants it.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.playground.seed import USERS
from vsphere_kale.sandbox.testing import RunningSandbox

Factory = Callable[..., RunningSandbox]
ALICE = USERS["alice"].token


@pytest.fixture
def demo(sandbox_factory: Factory) -> RunningSandbox:
    # TLS: kubectl sends a bearer token only over HTTPS.
    return sandbox_factory(seed="kubeflow-demo", authorization=True, tls=True)


def _kubectl(running: RunningSandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(running.kubeconfig_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def _as(running: RunningSandbox, token: str | None = None, **headers: str) -> client.CoreV1Api:
    api = running.api_client(token)
    for name, value in headers.items():
        api.set_default_header(name.replace("_", "-"), value)
    return client.CoreV1Api(api)


def _status(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    return dict(body)


def test_kubectl_can_i_as_a_service_account_gives_its_real_answer(demo: RunningSandbox) -> None:
    as_sa = "--as=system:serviceaccount:alice:default-editor"
    crb = _kubectl(demo, "auth", "can-i", "create", "clusterrolebindings", as_sa)
    assert crb.stdout.strip() == "no", crb.stdout + crb.stderr
    admin = _kubectl(demo, "auth", "can-i", "create", "clusterrolebindings")
    assert admin.stdout.strip() == "yes"


def test_kubectl_get_as_alice_cannot_list_bobs_claims(demo: RunningSandbox) -> None:
    # Given: a claim in bob's namespace
    _as(demo).create_namespaced_persistent_volume_claim(
        "bob",
        {
            "metadata": {"name": "data"},
            "spec": {
                "accessModes": ["ReadWriteOnce"],
                "resources": {"requests": {"storage": "1Gi"}},
            },
        },
    )
    # When: the admin lists bob's claims as alice
    as_alice = _kubectl(demo, "get", "pvc", "-n", "bob", "--as=alice@example.com")
    # Then: alice's own answer, 403
    assert as_alice.returncode != 0
    assert (
        'persistentvolumeclaims is forbidden: User "alice@example.com" cannot list resource '
        '"persistentvolumeclaims" in API group "" in the namespace "bob"'
    ) in as_alice.stderr
    own = _kubectl(demo, "get", "pvc", "-n", "alice", "--as=alice@example.com")
    assert own.returncode == 0, own.stderr


def test_impersonating_without_permission_is_403_with_kubes_message(demo: RunningSandbox) -> None:
    # kube-apiserver 1.36 (constrained impersonation) refuses on the request itself.
    with pytest.raises(ApiException) as caught:
        _as(demo, ALICE, Impersonate_User="bob@example.com").list_namespaced_config_map("bob")
    assert caught.value.status == 403
    status = _status(caught.value)
    assert status["reason"] == "Forbidden"
    assert status["message"] == (
        'configmaps is forbidden: User "alice@example.com" cannot '
        'impersonate-on:user-info:list resource "configmaps" in API group "" in the namespace "bob"'
    )
    assert status["details"] == {"kind": "configmaps"}
    with pytest.raises(ApiException) as named:
        _as(demo, ALICE, Impersonate_User="bob@example.com").read_namespace("bob")
    assert _status(named.value)["message"] == (
        'namespaces "bob" is forbidden: User "alice@example.com" cannot '
        'impersonate-on:user-info:get resource "namespaces" in API group "" in the namespace "bob"'
    )


def test_service_account_impersonation_is_checked_in_its_namespace(demo: RunningSandbox) -> None:
    with pytest.raises(ApiException) as caught:
        _as(
            demo, ALICE, Impersonate_User="system:serviceaccount:bob:default-editor"
        ).list_namespaced_config_map("bob")
    assert caught.value.status == 403
    assert _status(caught.value)["message"] == (
        'configmaps is forbidden: User "alice@example.com" cannot '
        'impersonate-on:serviceaccount:list resource "configmaps" in API group "" '
        'in the namespace "bob"'
    )


def test_each_group_and_the_uid_need_their_own_grant(demo: RunningSandbox) -> None:
    # Given: alice may impersonate user bob, but no groups or uids
    rbac = client.RbacAuthorizationV1Api(demo.api_client())
    rbac.create_cluster_role(
        {
            "metadata": {"name": "impersonate-bob"},
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["users"],
                    "verbs": ["impersonate"],
                    "resourceNames": ["bob@example.com"],
                }
            ],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": "alice-impersonates-bob"},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": "impersonate-bob",
            },
            "subjects": [
                {
                    "apiGroup": "rbac.authorization.k8s.io",
                    "kind": "User",
                    "name": "alice@example.com",
                }
            ],
        }
    )
    # Then: as bob she sees what bob sees (bob's namespace), not more
    as_bob = _as(demo, ALICE, Impersonate_User="bob@example.com")
    as_bob.list_namespaced_config_map("bob")
    with pytest.raises(ApiException) as not_alice:
        as_bob.list_namespaced_config_map("alice")
    assert 'User "bob@example.com" cannot list' in _status(not_alice.value)["message"]
    # And: adding a group (or a uid) without a grant for it is refused
    with pytest.raises(ApiException) as group:
        _as(
            demo, ALICE, Impersonate_User="bob@example.com", Impersonate_Group="system:masters"
        ).list_namespaced_config_map("bob")
    assert _status(group.value)["message"] == (
        'groups "system:masters" is forbidden: User "alice@example.com" cannot impersonate '
        'resource "groups" in API group "" at the cluster scope'
    )
    with pytest.raises(ApiException) as uid:
        _as(
            demo, ALICE, Impersonate_User="bob@example.com", Impersonate_Uid="1234"
        ).list_namespaced_config_map("bob")
    assert _status(uid.value)["message"] == (
        'uids.authentication.k8s.io "1234" is forbidden: User "alice@example.com" cannot '
        'impersonate resource "uids" in API group "authentication.k8s.io" at the cluster scope'
    )


def test_whoami_reports_the_impersonated_user_with_groups_and_extra(demo: RunningSandbox) -> None:
    api = demo.api_client()
    for name, value in {
        "Impersonate-User": "carol",
        "Impersonate-Group": "team-a",
        "Impersonate-Extra-Scopes": "view",
        "Impersonate-Uid": "u-1",
    }.items():
        api.set_default_header(name, value)
    review = client.AuthenticationV1Api(api).create_self_subject_review({})
    info = review.status.user_info
    assert info.username == "carol"
    assert info.uid == "u-1"
    assert info.groups == ["team-a", "system:authenticated"]
    assert info.extra == {"scopes": ["view"]}


def test_group_without_user_is_refused(demo: RunningSandbox) -> None:
    with pytest.raises(ApiException) as caught:
        _as(demo, Impersonate_Group="team-a").list_namespace()
    assert caught.value.status == 400
    assert _status(caught.value)["message"] == (
        'requested &user.DefaultInfo{Name:"", UID:"", Groups:[]string{"team-a"}, '
        "Extra:map[string][]string(nil)} without impersonating a user name"
    )
