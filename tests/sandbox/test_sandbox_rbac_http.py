"""Authentication and RBAC of the sandbox API server, through the real kubernetes client and
kubectl.

The sandbox runs with ``authorization=True`` and the ``kubeflow-demo`` seed: alice owns
profile ``alice`` (ClusterRole kubeflow-admin there), bob owns ``bob``, viewer may read
``alice``.
"""

from __future__ import annotations

import json
import subprocess
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.playground.seed import USERS
from vsphere_kale.sandbox.testing import RunningSandbox

RBAC = "rbac.authorization.k8s.io"
ALICE = USERS["alice"].token
BOB = USERS["bob"].token
VIEWER = USERS["viewer"].token

Factory = Callable[..., RunningSandbox]


@pytest.fixture
def demo(sandbox_factory: Factory) -> RunningSandbox:
    return sandbox_factory(seed="kubeflow-demo", authorization=True)


@pytest.fixture
def psp_demo(sandbox_factory: Factory) -> RunningSandbox:
    return sandbox_factory(flavor="psp", seed="kubeflow-demo", authorization=True)


def _core(running: RunningSandbox, token: str | None = None) -> client.CoreV1Api:
    return client.CoreV1Api(running.api_client(token))


def _rbac(running: RunningSandbox, token: str | None = None) -> client.RbacAuthorizationV1Api:
    return client.RbacAuthorizationV1Api(running.api_client(token))


def _status(exc: ApiException) -> dict[str, Any]:
    body = json.loads(exc.body)
    assert body["kind"] == "Status"
    return dict(body)


def _pvc(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "spec": {"accessModes": ["ReadWriteOnce"], "resources": {"requests": {"storage": "1Gi"}}},
    }


def _kubectl(running: RunningSandbox, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(running.kubeconfig_path), *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


# --- authentication -----------------------------------------------------------------------


def test_unknown_token_is_401(demo: RunningSandbox) -> None:
    with pytest.raises(ApiException) as caught:
        _core(demo, "not-a-token").list_namespaced_persistent_volume_claim("alice")
    assert caught.value.status == 401
    assert _status(caught.value)["reason"] == "Unauthorized"


def test_anonymous_may_read_version_but_not_discovery(demo: RunningSandbox) -> None:
    with urllib.request.urlopen(f"{demo.url}/version", timeout=10) as response:
        assert json.load(response)["gitVersion"]
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(f"{demo.url}/api", timeout=10)
    assert caught.value.code == 403
    body = json.load(caught.value)
    assert body["message"] == 'forbidden: User "system:anonymous" cannot get path "/api"'


# --- authorization ------------------------------------------------------------------------


def test_owner_works_in_own_profile_only(demo: RunningSandbox) -> None:
    alice = _core(demo, ALICE)
    names = [p.metadata.name for p in alice.list_namespaced_persistent_volume_claim("alice").items]
    assert names == ["raw-data", "wf-1-kale-marshal-pvc"]
    alice.create_namespaced_persistent_volume_claim("alice", _pvc("scratch"))
    with pytest.raises(ApiException) as caught:
        alice.list_namespaced_persistent_volume_claim("bob")
    assert caught.value.status == 403
    status = _status(caught.value)
    assert status["reason"] == "Forbidden"
    assert status["message"] == (
        'persistentvolumeclaims is forbidden: User "alice@example.com" cannot list resource '
        '"persistentvolumeclaims" in API group "" in the namespace "bob"'
    )
    with pytest.raises(ApiException) as caught:
        alice.create_namespaced_persistent_volume_claim("bob", _pvc("intruder"))
    assert caught.value.status == 403


def test_viewer_reads_but_cannot_write(demo: RunningSandbox) -> None:
    viewer = _core(demo, VIEWER)
    assert viewer.read_namespaced_persistent_volume_claim("wf-1-kale-marshal-pvc", "alice")
    with pytest.raises(ApiException) as caught:
        viewer.delete_namespaced_persistent_volume_claim("wf-1-kale-marshal-pvc", "alice")
    assert caught.value.status == 403
    assert 'cannot delete resource "persistentvolumeclaims"' in _status(caught.value)["message"]


def test_cluster_scoped_list_needs_a_cluster_binding(demo: RunningSandbox) -> None:
    with pytest.raises(ApiException) as caught:
        _core(demo, ALICE).list_namespace()
    assert "at the cluster scope" in _status(caught.value)["message"]
    assert _core(demo).list_namespace().items  # the admin is in system:masters


def test_service_account_token_gets_its_bindings(demo: RunningSandbox) -> None:
    # Given a token requested for alice's default-editor (kubeflow-edit in alice)
    request = client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[]))
    answer = _core(demo).create_namespaced_service_account_token("default-editor", "alice", request)
    token = answer.status.token
    assert answer.status.expiration_timestamp is not None
    editor = _core(demo, token)
    # Then it may write PVCs in alice, but not RBAC (edit is not admin), nor read bob
    editor.create_namespaced_persistent_volume_claim("alice", _pvc("from-a-notebook"))
    with pytest.raises(ApiException) as caught:
        _rbac(demo, token).list_namespaced_role_binding("alice")
    assert (
        'User "system:serviceaccount:alice:default-editor" cannot list'
        in _status(caught.value)["message"]
    )
    with pytest.raises(ApiException):
        editor.list_namespaced_persistent_volume_claim("bob")
    # When the service account is deleted, its tokens stop working
    _core(demo).delete_namespaced_service_account("default-editor", "alice")
    with pytest.raises(ApiException) as caught:
        editor.list_namespaced_persistent_volume_claim("alice")
    assert caught.value.status == 401


# --- reviews ------------------------------------------------------------------------------


def _self_review(running: RunningSandbox, token: str, verb: str, namespace: str) -> bool:
    review = client.V1SelfSubjectAccessReview(
        spec=client.V1SelfSubjectAccessReviewSpec(
            resource_attributes=client.V1ResourceAttributes(
                namespace=namespace, verb=verb, resource="persistentvolumeclaims"
            )
        )
    )
    api = client.AuthorizationV1Api(running.api_client(token))
    return bool(api.create_self_subject_access_review(review).status.allowed)


def test_self_subject_access_review(demo: RunningSandbox) -> None:
    assert _self_review(demo, ALICE, "create", "alice") is True
    assert _self_review(demo, ALICE, "create", "bob") is False
    assert _self_review(demo, VIEWER, "list", "alice") is True
    assert _self_review(demo, VIEWER, "create", "alice") is False


def test_kubectl_auth_can_i(sandbox_factory: Factory) -> None:
    # kubectl (client-go) sends bearer tokens only over TLS: without it every request would
    # be anonymous.
    demo = sandbox_factory(seed="kubeflow-demo", authorization=True, tls=True)
    yes = _kubectl(
        demo, "--context", "alice@sandbox", "auth", "can-i", "create", "pvc", "-n", "alice"
    )
    assert (yes.returncode, yes.stdout.strip()) == (0, "yes"), yes.stderr
    no = _kubectl(demo, "--context", "alice@sandbox", "auth", "can-i", "create", "pvc", "-n", "bob")
    assert (no.returncode, no.stdout.strip()) == (1, "no"), no.stderr
    admin = _kubectl(demo, "auth", "can-i", "delete", "namespaces")
    assert admin.stdout.strip() == "yes", admin.stderr


def test_subject_access_review_for_another_user(demo: RunningSandbox) -> None:
    api = client.AuthorizationV1Api(demo.api_client())

    def allowed(user: str, namespace: str) -> client.V1SubjectAccessReviewStatus:
        review = client.V1SubjectAccessReview(
            spec=client.V1SubjectAccessReviewSpec(
                user=user,
                groups=["system:authenticated"],
                resource_attributes=client.V1ResourceAttributes(
                    namespace=namespace, verb="list", resource="persistentvolumeclaims"
                ),
            )
        )
        return api.create_subject_access_review(review).status

    granted = allowed("bob@example.com", "bob")
    assert granted.allowed is True
    assert 'RoleBinding "namespaceAdmin/bob" of ClusterRole "kubeflow-admin"' in granted.reason
    assert allowed("bob@example.com", "alice").allowed is False


def test_subject_access_review_needs_permission(demo: RunningSandbox) -> None:
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="bob@example.com",
            resource_attributes=client.V1ResourceAttributes(verb="get", resource="secrets"),
        )
    )
    with pytest.raises(ApiException) as caught:
        client.AuthorizationV1Api(demo.api_client(ALICE)).create_subject_access_review(review)
    assert caught.value.status == 403


def test_token_review(demo: RunningSandbox) -> None:
    sa_token = (
        _core(demo)
        .create_namespaced_service_account_token(
            "default-viewer",
            "alice",
            client.AuthenticationV1TokenRequest(spec=client.V1TokenRequestSpec(audiences=[])),
        )
        .status.token
    )
    api = client.AuthenticationV1Api(demo.api_client())
    review = api.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=sa_token))
    )
    assert review.status.authenticated is True
    assert review.status.user.username == "system:serviceaccount:alice:default-viewer"
    assert "system:serviceaccounts:alice" in review.status.user.groups
    assert review.status.user.uid
    static = api.create_token_review(
        client.V1TokenReview(spec=client.V1TokenReviewSpec(token=ALICE))
    )
    assert static.status.user.username == "alice@example.com"
    bad = api.create_token_review(client.V1TokenReview(spec=client.V1TokenReviewSpec(token="nope")))
    assert bad.status.authenticated is False
    assert bad.status.error


# --- escalation ---------------------------------------------------------------------------


def _psp_binding(name: str) -> dict[str, Any]:
    return {
        "metadata": {"name": name},
        "roleRef": {
            "apiGroup": RBAC,
            "kind": "ClusterRole",
            "name": "psp:vmware-system-privileged",
        },
        "subjects": [{"apiGroup": RBAC, "kind": "Group", "name": "system:serviceaccounts:alice"}],
    }


def test_owner_may_share_what_she_holds(demo: RunningSandbox) -> None:
    binding = {
        "metadata": {"name": "share-edit"},
        "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "kubeflow-edit"},
        "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "bob@example.com"}],
    }
    _rbac(demo, ALICE).create_namespaced_role_binding("alice", binding)
    assert _self_review(demo, BOB, "create", "alice") is True


def test_escalation_refused_without_bind_and_allowed_with_it(psp_demo: RunningSandbox) -> None:
    # Given alice, admin of her profile, who does not hold `use` on the privileged PSP
    alice = _rbac(psp_demo, ALICE)
    # When she binds the PSP role for her namespace's service accounts, RBAC refuses
    with pytest.raises(ApiException) as caught:
        alice.create_namespaced_role_binding("alice", _psp_binding("psp-for-my-notebooks"))
    assert caught.value.status == 403
    message = _status(caught.value)["message"]
    assert message.startswith(
        'rolebindings.rbac.authorization.k8s.io "psp-for-my-notebooks" is forbidden: '
        'user "alice@example.com"'
    )
    assert "attempting to grant RBAC permissions not currently held" in message
    assert '{APIGroups:["policy"], Resources:["podsecuritypolicies"], ' in message
    assert 'ResourceNames:["vmware-system-privileged"], Verbs:["use"]}' in message
    # When the admin grants her `bind` on exactly that ClusterRole
    admin = _rbac(psp_demo)
    admin.create_cluster_role(
        {
            "metadata": {"name": "bind-psp-privileged"},
            "rules": [
                {
                    "apiGroups": [RBAC],
                    "resources": ["clusterroles"],
                    "resourceNames": ["psp:vmware-system-privileged"],
                    "verbs": ["bind"],
                }
            ],
        }
    )
    admin.create_cluster_role_binding(
        {
            "metadata": {"name": "alice-binds-psp"},
            "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "bind-psp-privileged"},
            "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "alice@example.com"}],
        }
    )
    # Then the same binding is allowed, and does what it says
    alice.create_namespaced_role_binding("alice", _psp_binding("psp-for-my-notebooks"))
    review = client.V1SubjectAccessReview(
        spec=client.V1SubjectAccessReviewSpec(
            user="system:serviceaccount:alice:default-editor",
            groups=["system:serviceaccounts", "system:serviceaccounts:alice"],
            resource_attributes=client.V1ResourceAttributes(
                namespace="alice",
                verb="use",
                group="policy",
                resource="podsecuritypolicies",
                name="vmware-system-privileged",
            ),
        )
    )
    status = client.AuthorizationV1Api(psp_demo.api_client()).create_subject_access_review(review)
    assert status.status.allowed is True
    # But bind does not extend to other roles
    with pytest.raises(ApiException):
        alice.create_namespaced_role_binding(
            "alice",
            {
                "metadata": {"name": "admin-for-all"},
                "roleRef": {"apiGroup": RBAC, "kind": "ClusterRole", "name": "cluster-admin"},
                "subjects": [{"apiGroup": RBAC, "kind": "User", "name": "bob@example.com"}],
            },
        )


def test_role_with_permissions_not_held_is_refused(demo: RunningSandbox) -> None:
    role = {
        "metadata": {"name": "node-reader"},
        "rules": [{"apiGroups": [""], "resources": ["nodes"], "verbs": ["get"]}],
    }
    with pytest.raises(ApiException) as caught:
        _rbac(demo, ALICE).create_namespaced_role("alice", role)
    assert caught.value.status == 403
    assert 'Resources:["nodes"]' in _status(caught.value)["message"]
    modest = {
        "metadata": {"name": "pvc-reader"},
        "rules": [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["get"]}],
    }
    _rbac(demo, ALICE).create_namespaced_role("alice", modest)


def test_authorization_off_allows_everything(sandbox: RunningSandbox) -> None:
    # The default fixture: authenticated users may do anything, unknown tokens still fail.
    token = sandbox.tokens["admin"]
    assert _core(sandbox, token).list_namespace() is not None
    with pytest.raises(ApiException) as caught:
        _core(sandbox, "not-a-token").list_namespace()
    assert caught.value.status == 401


def test_invalid_token_request_is_422_invalid_not_a_500(demo: RunningSandbox) -> None:
    # kube-apiserver refuses TokenRequests shorter than 10 minutes as Invalid.
    with pytest.raises(ApiException) as caught:
        _core(demo).create_namespaced_service_account_token(
            "default-editor", "alice", {"spec": {"expirationSeconds": 60}}
        )
    assert caught.value.status == 422
    status = _status(caught.value)
    assert status["reason"] == "Invalid"
    assert "may not specify a duration less than 10 minutes" in status["message"]
