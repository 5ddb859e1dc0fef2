"""RBAC evaluation, access reviews and the escalation check of the sandbox API server.

The objects live in the sandbox's real in-memory store (no HTTP): the authorizer reads
Roles and bindings from it exactly as the running server does.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from vsphere_kale.errors import KubeError
from vsphere_kale.sandbox.rbac import (
    CLUSTER_ROLE_BINDINGS,
    CLUSTER_ROLES,
    ROLE_BINDINGS,
    ROLES,
    AllowAllAuthorizer,
    Authorizer,
    Rule,
    forbidden_message,
    label_selector_matches,
)
from vsphere_kale.sandbox.resources import Registry
from vsphere_kale.sandbox.store import Store
from vsphere_kale.sandbox.types import Attributes, Decision, ResourceRef, UserInfo

NAMESPACES = ResourceRef("", "namespaces")

ALICE = UserInfo("alice@example.com", groups=("system:authenticated",))
BOB = UserInfo("bob@example.com", groups=("team-b", "system:authenticated"))
ADMIN = UserInfo("root", groups=("system:masters", "system:authenticated"))
ANON = UserInfo("system:anonymous", groups=("system:unauthenticated",))
EDITOR_SA = UserInfo(
    "system:serviceaccount:alice:default-editor",
    groups=("system:serviceaccounts", "system:serviceaccounts:alice", "system:authenticated"),
)


def _role(name: str, rules: list[dict[str, Any]], *, namespace: str = "") -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {"metadata": meta, "rules": rules}


def _binding(
    name: str, role_kind: str, role: str, subjects: list[dict[str, Any]], *, namespace: str = ""
) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace:
        meta["namespace"] = namespace
    return {
        "metadata": meta,
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": role_kind, "name": role},
        "subjects": subjects,
    }


def _user(name: str) -> dict[str, str]:
    return {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": name}


@pytest.fixture
def store() -> Iterator[Store]:
    store = Store(Registry("psa"))
    for ns in ("alice", "bob"):
        store.create_object(NAMESPACES, None, {"metadata": {"name": ns}})
    yield store
    store.close()


@pytest.fixture
def authz(store: Store) -> Authorizer:
    return Authorizer(store)


def _can(authz: Authorizer, user: UserInfo, verb: str, resource: str, **kw: Any) -> bool:
    return authz.authorize(Attributes(user=user, verb=verb, resource=resource, **kw)).allowed


# --- plain rules ----------------------------------------------------------------------------


def test_role_binding_grants_only_its_verbs_in_its_namespace(
    store: Store, authz: Authorizer
) -> None:
    store.create_object(
        ROLES,
        "alice",
        _role(
            "pvc-reader",
            [
                {
                    "apiGroups": [""],
                    "resources": ["persistentvolumeclaims"],
                    "verbs": ["get", "list"],
                }
            ],
            namespace="alice",
        ),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding("r", "Role", "pvc-reader", [_user(ALICE.username)], namespace="alice"),
    )
    assert _can(authz, ALICE, "list", "persistentvolumeclaims", namespace="alice")
    assert _can(authz, ALICE, "get", "persistentvolumeclaims", namespace="alice", name="x")
    assert not _can(authz, ALICE, "create", "persistentvolumeclaims", namespace="alice")
    assert not _can(authz, ALICE, "list", "persistentvolumeclaims", namespace="bob")
    # A RoleBinding never reaches cluster scope (list across all namespaces).
    assert not _can(authz, ALICE, "list", "persistentvolumeclaims")
    assert not _can(authz, ALICE, "list", "secrets", namespace="alice")
    assert not _can(authz, BOB, "list", "persistentvolumeclaims", namespace="alice")


def test_api_group_must_match(store: Store, authz: Authorizer) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role(
            "apps-reader", [{"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["get"]}]
        ),
    )
    store.create_object(
        CLUSTER_ROLE_BINDINGS,
        None,
        _binding("b", "ClusterRole", "apps-reader", [_user(ALICE.username)]),
    )
    assert _can(authz, ALICE, "get", "deployments", api_group="apps", namespace="bob")
    assert not _can(authz, ALICE, "get", "deployments", api_group="extensions", namespace="bob")


@pytest.mark.parametrize(
    ("rule_resources", "resource", "subresource", "allowed"),
    [
        (["pods"], "pods", "", True),
        (["pods"], "pods", "log", False),  # the parent does not cover its subresources
        (["pods/log"], "pods", "log", True),
        (["pods/log"], "pods", "", False),
        (["*/scale"], "deployments", "scale", True),
        (["*/scale"], "deployments", "status", False),
        (["*"], "pods", "log", True),  # "*" in RBAC covers subresources too
        (["serviceaccounts/token"], "serviceaccounts", "token", True),
    ],
)
def test_subresources(
    store: Store,
    authz: Authorizer,
    rule_resources: list[str],
    resource: str,
    subresource: str,
    allowed: bool,
) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role("r", [{"apiGroups": ["*"], "resources": rule_resources, "verbs": ["get"]}]),
    )
    store.create_object(
        CLUSTER_ROLE_BINDINGS, None, _binding("b", "ClusterRole", "r", [_user(ALICE.username)])
    )
    attrs = Attributes(ALICE, "get", resource=resource, subresource=subresource, namespace="alice")
    assert authz.authorize(attrs).allowed is allowed


def test_resource_names_restrict_to_named_objects(store: Store, authz: Authorizer) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role(
            "psp:vmware-system-privileged",
            [
                {
                    "apiGroups": ["policy"],
                    "resources": ["podsecuritypolicies"],
                    "resourceNames": ["vmware-system-privileged"],
                    "verbs": ["use"],
                }
            ],
        ),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding(
            "psp",
            "ClusterRole",
            "psp:vmware-system-privileged",
            [
                {
                    "kind": "Group",
                    "apiGroup": "rbac.authorization.k8s.io",
                    "name": "system:serviceaccounts:alice",
                }
            ],
            namespace="alice",
        ),
    )
    use = {"api_group": "policy", "namespace": "alice"}
    assert _can(
        authz, EDITOR_SA, "use", "podsecuritypolicies", name="vmware-system-privileged", **use
    )
    assert not _can(authz, EDITOR_SA, "use", "podsecuritypolicies", name="other", **use)
    # A rule with resourceNames never allows a request without a name (list, create).
    assert not _can(authz, EDITOR_SA, "use", "podsecuritypolicies", **use)


def test_wildcard_rules_and_verbs(store: Store, authz: Authorizer) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role("all", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
    )
    store.create_object(
        CLUSTER_ROLE_BINDINGS, None, _binding("b", "ClusterRole", "all", [_user(BOB.username)])
    )
    assert _can(authz, BOB, "deletecollection", "widgets", api_group="example.com")
    assert _can(authz, BOB, "escalate", "clusterroles", api_group="rbac.authorization.k8s.io")
    # Resource rules never grant non-resource URLs.
    assert not authz.authorize(Attributes(BOB, "get", path="/metrics")).allowed


def test_superuser_group_allows_everything(authz: Authorizer) -> None:
    assert _can(authz, ADMIN, "delete", "namespaces", name="kube-system")
    assert authz.authorize(Attributes(ADMIN, "get", path="/metrics")).allowed


# --- subjects ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("subject", "allowed"),
    [
        ({"kind": "ServiceAccount", "name": "default-editor", "namespace": "alice"}, True),
        # A ServiceAccount subject without namespace means the RoleBinding's namespace.
        ({"kind": "ServiceAccount", "name": "default-editor"}, True),
        ({"kind": "ServiceAccount", "name": "default-editor", "namespace": "bob"}, False),
        ({"kind": "ServiceAccount", "name": "default-viewer", "namespace": "alice"}, False),
        (
            {
                "kind": "Group",
                "apiGroup": "rbac.authorization.k8s.io",
                "name": "system:serviceaccounts:alice",
            },
            True,
        ),
        (
            {
                "kind": "Group",
                "apiGroup": "rbac.authorization.k8s.io",
                "name": "system:serviceaccounts",
            },
            True,
        ),
        (
            {
                "kind": "Group",
                "apiGroup": "rbac.authorization.k8s.io",
                "name": "system:serviceaccounts:bob",
            },
            False,
        ),
        # The User kind compares the whole username, so a service account is not "default-editor".
        (
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "default-editor"},
            False,
        ),
        (
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": EDITOR_SA.username},
            True,
        ),
    ],
)
def test_subject_kinds(
    store: Store, authz: Authorizer, subject: dict[str, str], allowed: bool
) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role(
            "pvc",
            [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create"]}],
        ),
    )
    store.create_object(
        ROLE_BINDINGS, "alice", _binding("b", "ClusterRole", "pvc", [subject], namespace="alice")
    )
    assert _can(authz, EDITOR_SA, "create", "persistentvolumeclaims", namespace="alice") is allowed


def test_binding_to_missing_role_denies_with_a_reason(store: Store, authz: Authorizer) -> None:
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding("b", "Role", "nope", [_user(ALICE.username)], namespace="alice"),
    )
    decision = authz.authorize(Attributes(ALICE, "get", resource="pods", namespace="alice"))
    assert not decision.allowed
    assert 'roles.rbac.authorization.k8s.io "nope" not found' in decision.reason


# --- aggregation ------------------------------------------------------------------------------


def _kubeflow_roles(store: Store) -> None:
    """Kubeflow's aggregated roles (manifests/common/kubeflow-roles), trimmed."""

    def aggregated(name: str, label: str | None, selects: str) -> dict[str, Any]:
        labels = {f"rbac.authorization.kubeflow.org/aggregate-to-{label}": "true"} if label else {}
        return {
            "metadata": {"name": name, "labels": labels},
            "aggregationRule": {
                "clusterRoleSelectors": [
                    {
                        "matchLabels": {
                            f"rbac.authorization.kubeflow.org/aggregate-to-{selects}": "true"
                        }
                    }
                ]
            },
            "rules": [],
        }

    # kubeflow-admin selects its own label: aggregation must not loop.
    store.create_object(
        CLUSTER_ROLES, None, aggregated("kubeflow-admin", "kubeflow-admin", "kubeflow-admin")
    )
    store.create_object(
        CLUSTER_ROLES, None, aggregated("kubeflow-edit", "kubeflow-admin", "kubeflow-edit")
    )
    store.create_object(
        CLUSTER_ROLES, None, aggregated("kubeflow-view", "kubeflow-edit", "kubeflow-view")
    )
    store.create_object(
        CLUSTER_ROLES,
        None,
        {
            "metadata": {
                "name": "pvc-view",
                "labels": {"rbac.authorization.kubeflow.org/aggregate-to-kubeflow-view": "true"},
            },
            "rules": [
                {
                    "apiGroups": [""],
                    "resources": ["persistentvolumeclaims"],
                    "verbs": ["get", "list"],
                }
            ],
        },
    )
    store.create_object(
        CLUSTER_ROLES,
        None,
        {
            "metadata": {
                "name": "pvc-edit",
                "labels": {"rbac.authorization.kubeflow.org/aggregate-to-kubeflow-edit": "true"},
            },
            "rules": [
                {"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["create"]}
            ],
        },
    )


def test_aggregation_is_transitive(store: Store, authz: Authorizer) -> None:
    _kubeflow_roles(store)
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding(
            "namespaceAdmin",
            "ClusterRole",
            "kubeflow-admin",
            [_user(ALICE.username)],
            namespace="alice",
        ),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding(
            "viewer", "ClusterRole", "kubeflow-view", [_user(BOB.username)], namespace="alice"
        ),
    )
    # admin <- edit <- view: alice holds the view rule through two aggregation hops.
    assert _can(authz, ALICE, "list", "persistentvolumeclaims", namespace="alice")
    assert _can(authz, ALICE, "create", "persistentvolumeclaims", namespace="alice")
    assert not _can(authz, ALICE, "create", "persistentvolumeclaims", namespace="bob")
    assert _can(authz, BOB, "list", "persistentvolumeclaims", namespace="alice")
    assert not _can(authz, BOB, "create", "persistentvolumeclaims", namespace="alice")
    rules = authz.cluster_role_rules("kubeflow-edit")
    assert {verb for rule in rules for verb in rule.verbs} == {"get", "list", "create"}


def test_aggregation_follows_label_changes(store: Store, authz: Authorizer) -> None:
    # Given kubeflow-view bound to bob, when a new role with the aggregation label appears,
    # then bob gets its rules without any rebinding (evaluation-time aggregation).
    _kubeflow_roles(store)
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding(
            "viewer", "ClusterRole", "kubeflow-view", [_user(BOB.username)], namespace="alice"
        ),
    )
    assert not _can(authz, BOB, "list", "notebooks", api_group="kubeflow.org", namespace="alice")
    store.create_object(
        CLUSTER_ROLES,
        None,
        {
            "metadata": {
                "name": "notebooks-view",
                "labels": {"rbac.authorization.kubeflow.org/aggregate-to-kubeflow-view": "true"},
            },
            "rules": [
                {"apiGroups": ["kubeflow.org"], "resources": ["notebooks"], "verbs": ["list"]}
            ],
        },
    )
    assert _can(authz, BOB, "list", "notebooks", api_group="kubeflow.org", namespace="alice")


@pytest.mark.parametrize(
    ("selector", "labels", "matches"),
    [
        ({}, {"a": "1"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "1", "b": "2"}, True),
        ({"matchLabels": {"a": "1"}}, {"a": "2"}, False),
        (
            {"matchExpressions": [{"key": "a", "operator": "In", "values": ["1", "2"]}]},
            {"a": "2"},
            True,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "In", "values": ["1"]}]}, {}, False),
        ({"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]}, {}, True),
        (
            {"matchExpressions": [{"key": "a", "operator": "NotIn", "values": ["1"]}]},
            {"a": "1"},
            False,
        ),
        ({"matchExpressions": [{"key": "a", "operator": "Exists"}]}, {"a": ""}, True),
        ({"matchExpressions": [{"key": "a", "operator": "DoesNotExist"}]}, {"a": ""}, False),
    ],
)
def test_label_selector(selector: dict[str, Any], labels: dict[str, str], matches: bool) -> None:
    assert label_selector_matches(selector, labels) is matches


def test_label_selector_rejects_unknown_operator() -> None:
    with pytest.raises(ValueError, match="Gt"):
        label_selector_matches({"matchExpressions": [{"key": "a", "operator": "Gt"}]}, {})


# --- bootstrap policy and non-resource URLs ---------------------------------------------------


@pytest.mark.parametrize(
    ("user", "path", "allowed"),
    [
        (ALICE, "/api", True),
        (ALICE, "/apis/rbac.authorization.k8s.io/v1", True),
        (ALICE, "/openapi/v3/api/v1", True),
        (ALICE, "/version", True),
        (ALICE, "/metrics", False),
        (ANON, "/version", True),
        (ANON, "/healthz", True),
        (ANON, "/api", False),  # discovery needs authentication since Kubernetes 1.14
    ],
)
def test_builtin_non_resource_access(
    authz: Authorizer, user: UserInfo, path: str, allowed: bool
) -> None:
    assert authz.authorize(Attributes(user, "get", path=path)).allowed is allowed


def test_non_resource_url_prefix_rule_only_through_cluster_bindings(
    store: Store, authz: Authorizer
) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role("logs", [{"nonResourceURLs": ["/logs/*", "/metrics"], "verbs": ["get"]}]),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding("b", "ClusterRole", "logs", [_user(ALICE.username)], namespace="alice"),
    )
    assert not authz.authorize(Attributes(ALICE, "get", path="/metrics")).allowed
    store.create_object(
        CLUSTER_ROLE_BINDINGS, None, _binding("b", "ClusterRole", "logs", [_user(ALICE.username)])
    )
    assert authz.authorize(Attributes(ALICE, "get", path="/metrics")).allowed
    assert authz.authorize(Attributes(ALICE, "get", path="/logs/kube-apiserver.log")).allowed
    assert not authz.authorize(Attributes(ALICE, "post", path="/logs/x")).allowed
    assert not authz.authorize(Attributes(ALICE, "get", path="/metricsz")).allowed


def test_authenticated_users_may_review_themselves(authz: Authorizer) -> None:
    sar = Attributes(
        ALICE, "create", api_group="authorization.k8s.io", resource="selfsubjectaccessreviews"
    )
    assert authz.authorize(sar).allowed
    anonymous = Attributes(
        ANON, "create", api_group="authorization.k8s.io", resource="selfsubjectaccessreviews"
    )
    assert not authz.authorize(anonymous).allowed
    other = Attributes(
        ALICE, "create", api_group="authorization.k8s.io", resource="subjectaccessreviews"
    )
    assert not authz.authorize(other).allowed


def test_allowed_reason_names_the_binding(store: Store, authz: Authorizer) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role("r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["get"]}]),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding(
            "rb",
            "ClusterRole",
            "r",
            [{"kind": "ServiceAccount", "name": "default-editor"}],
            namespace="alice",
        ),
    )
    decision = authz.authorize(Attributes(EDITOR_SA, "get", resource="pods", namespace="alice"))
    assert decision.reason == (
        'RBAC: allowed by RoleBinding "rb/alice" of ClusterRole "r" '
        'to ServiceAccount "default-editor/alice"'
    )


def test_forbidden_message_is_kubes() -> None:
    attrs = Attributes(ALICE, "list", resource="persistentvolumeclaims", namespace="bob")
    assert forbidden_message(attrs, authz_decision_denied()) == (
        'persistentvolumeclaims is forbidden: User "alice@example.com" cannot list resource '
        '"persistentvolumeclaims" in API group "" in the namespace "bob"'
    )
    named = Attributes(
        ALICE, "get", api_group="rbac.authorization.k8s.io", resource="clusterroles", name="x"
    )
    assert forbidden_message(named, authz_decision_denied()).startswith(
        'clusterroles.rbac.authorization.k8s.io "x" is forbidden: '
        'User "alice@example.com" cannot get resource "clusterroles" '
        'in API group "rbac.authorization.k8s.io" at the cluster scope'
    )
    path = Attributes(ANON, "get", path="/api")
    assert (
        forbidden_message(path, authz_decision_denied())
        == 'forbidden: User "system:anonymous" cannot get path "/api"'
    )


def authz_decision_denied() -> Decision:
    return Decision(False, "")


# --- access reviews ---------------------------------------------------------------------------


def test_subject_access_review(store: Store, authz: Authorizer) -> None:
    _kubeflow_roles(store)
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding(
            "namespaceAdmin",
            "ClusterRole",
            "kubeflow-admin",
            [_user(ALICE.username)],
            namespace="alice",
        ),
    )
    body = {
        "apiVersion": "authorization.k8s.io/v1",
        "kind": "SubjectAccessReview",
        "spec": {
            "user": ALICE.username,
            "groups": ["system:authenticated"],
            "resourceAttributes": {
                "namespace": "alice",
                "verb": "list",
                "resource": "persistentvolumeclaims",
            },
        },
    }
    answer = authz.review_access(body, ADMIN)
    assert answer["status"]["allowed"] is True
    assert "kubeflow-admin" in answer["status"]["reason"]
    assert answer["spec"] == body["spec"]
    body["spec"]["resourceAttributes"]["namespace"] = "bob"
    denied = authz.review_access(body, ADMIN)["status"]
    assert denied["allowed"] is False
    assert "denied" not in denied  # RBAC has no opinion; it never denies explicitly


def test_self_subject_access_review_uses_the_requester(store: Store, authz: Authorizer) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role("r", [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}]),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding("rb", "ClusterRole", "r", [_user(ALICE.username)], namespace="alice"),
    )
    body = {
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"namespace": "alice", "verb": "list", "resource": "pods"}},
    }
    assert authz.review_access(body, ALICE)["status"]["allowed"] is True
    assert authz.review_access(body, BOB)["status"]["allowed"] is False
    non_resource = {
        "kind": "SelfSubjectAccessReview",
        "spec": {"nonResourceAttributes": {"path": "/api", "verb": "get"}},
    }
    assert authz.review_access(non_resource, BOB)["status"]["allowed"] is True


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ({"user": "x"}, "exactly one of nonResourceAttributes or resourceAttributes"),
        (
            {
                "user": "x",
                "resourceAttributes": {"verb": "get"},
                "nonResourceAttributes": {"path": "/"},
            },
            "exactly one of",
        ),
        (
            {"resourceAttributes": {"verb": "get", "resource": "pods"}},
            "at least one of user or group",
        ),
    ],
)
def test_malformed_subject_access_review_is_invalid(
    authz: Authorizer, spec: dict[str, Any], message: str
) -> None:
    with pytest.raises(KubeError, match=message) as caught:
        authz.review_access({"kind": "SubjectAccessReview", "spec": spec}, ADMIN)
    assert caught.value.status == 422


def test_allow_all_authorizer() -> None:
    authz = AllowAllAuthorizer()
    rules = authz.review_rules({"spec": {"namespace": "x"}}, ANON)["status"]["resourceRules"]
    assert rules == [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}]
    assert authz.authorize(Attributes(ANON, "delete", resource="namespaces")).allowed
    assert authz.check_escalation(ANON, ROLE_BINDINGS, {}) is None
    body = {
        "kind": "SelfSubjectAccessReview",
        "spec": {"resourceAttributes": {"verb": "get", "resource": "pods"}},
    }
    assert authz.review_access(body, ANON)["status"]["allowed"] is True


# --- escalation -------------------------------------------------------------------------------


def _alice_admin_of_alice(store: Store) -> None:
    _kubeflow_roles(store)
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding(
            "namespaceAdmin",
            "ClusterRole",
            "kubeflow-admin",
            [_user(ALICE.username)],
            namespace="alice",
        ),
    )
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role(
            "secret-admin",
            [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get", "list", "delete"]}],
        ),
    )


def test_binding_a_role_you_hold_is_allowed(store: Store, authz: Authorizer) -> None:
    _alice_admin_of_alice(store)
    binding = _binding(
        "share", "ClusterRole", "kubeflow-edit", [_user(BOB.username)], namespace="alice"
    )
    assert authz.check_escalation(ALICE, ROLE_BINDINGS, binding) is None


def test_binding_a_role_you_do_not_hold_is_refused(store: Store, authz: Authorizer) -> None:
    _alice_admin_of_alice(store)
    binding = _binding(
        "steal", "ClusterRole", "secret-admin", [_user(BOB.username)], namespace="alice"
    )
    message = authz.check_escalation(ALICE, ROLE_BINDINGS, binding)
    assert message is not None
    assert message.startswith(
        'rolebindings.rbac.authorization.k8s.io "steal" is forbidden: user "alice@example.com"'
    )
    assert "attempting to grant RBAC permissions not currently held" in message
    assert '{APIGroups:[""], Resources:["secrets"], Verbs:["get" "list" "delete"]}' in message
    # Holding kubeflow-edit in alice does not help in bob.
    elsewhere = _binding(
        "share", "ClusterRole", "kubeflow-edit", [_user(BOB.username)], namespace="bob"
    )
    assert authz.check_escalation(ALICE, ROLE_BINDINGS, elsewhere) is not None


def test_bind_verb_allows_binding_without_holding(store: Store, authz: Authorizer) -> None:
    _alice_admin_of_alice(store)
    store.create_object(
        ROLES,
        "alice",
        _role(
            "binder",
            [
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["clusterroles"],
                    "resourceNames": ["secret-admin"],
                    "verbs": ["bind"],
                }
            ],
            namespace="alice",
        ),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding("binder", "Role", "binder", [_user(ALICE.username)], namespace="alice"),
    )
    binding = _binding(
        "ok", "ClusterRole", "secret-admin", [_user(BOB.username)], namespace="alice"
    )
    assert authz.check_escalation(ALICE, ROLE_BINDINGS, binding) is None
    # bind is per role name and per namespace.
    other = _binding("no", "ClusterRole", "kubeflow-admin", [_user(BOB.username)], namespace="bob")
    assert authz.check_escalation(ALICE, ROLE_BINDINGS, other) is not None
    cluster = _binding("no", "ClusterRole", "secret-admin", [_user(BOB.username)])
    assert authz.check_escalation(ALICE, CLUSTER_ROLE_BINDINGS, cluster) is not None


def test_cluster_role_binding_needs_cluster_wide_permissions(
    store: Store, authz: Authorizer
) -> None:
    _alice_admin_of_alice(store)
    binding = _binding("cluster-view", "ClusterRole", "kubeflow-view", [_user(BOB.username)])
    # alice holds kubeflow-view's rules in alice only, not cluster-wide.
    assert authz.check_escalation(ALICE, CLUSTER_ROLE_BINDINGS, binding) is not None
    assert authz.check_escalation(ADMIN, CLUSTER_ROLE_BINDINGS, binding) is None


def test_binding_a_missing_role_is_refused_without_bind(store: Store, authz: Authorizer) -> None:
    binding = _binding("x", "Role", "ghost", [_user(BOB.username)], namespace="alice")
    message = authz.check_escalation(ALICE, ROLE_BINDINGS, binding)
    assert message is not None and "ghost" in message


def test_role_with_more_than_you_hold_needs_escalate(store: Store, authz: Authorizer) -> None:
    _alice_admin_of_alice(store)
    modest = _role(
        "pvc",
        [{"apiGroups": [""], "resources": ["persistentvolumeclaims"], "verbs": ["list"]}],
        namespace="alice",
    )
    greedy = _role(
        "secrets",
        [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"]}],
        namespace="alice",
    )
    assert authz.check_escalation(ALICE, ROLES, modest) is None
    message = authz.check_escalation(ALICE, ROLES, greedy)
    assert message is not None and '"secrets"' in message
    store.create_object(
        ROLES,
        "alice",
        _role(
            "escalator",
            [
                {
                    "apiGroups": ["rbac.authorization.k8s.io"],
                    "resources": ["roles"],
                    "verbs": ["escalate"],
                }
            ],
            namespace="alice",
        ),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding("esc", "Role", "escalator", [_user(ALICE.username)], namespace="alice"),
    )
    assert authz.check_escalation(ALICE, ROLES, greedy) is None


def test_aggregation_rule_needs_full_authority(store: Store, authz: Authorizer) -> None:
    # Given bob may do a lot, but not everything (and not escalate)
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role(
            "big", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["get", "list", "create"]}]
        ),
    )
    store.create_object(
        CLUSTER_ROLE_BINDINGS, None, _binding("b", "ClusterRole", "big", [_user(BOB.username)])
    )
    role = {
        "metadata": {"name": "agg"},
        "aggregationRule": {"clusterRoleSelectors": [{"matchLabels": {"x": "y"}}]},
    }
    # Then an aggregated role (which could gather anything) is refused
    message = authz.check_escalation(BOB, CLUSTER_ROLES, role)
    assert message is not None and "aggregationRule" in message
    # And allowed for a superuser, or with "*" (which includes escalate)
    assert authz.check_escalation(ADMIN, CLUSTER_ROLES, role) is None
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role("all", [{"apiGroups": ["*"], "resources": ["*"], "verbs": ["*"]}]),
    )
    store.create_object(
        CLUSTER_ROLE_BINDINGS, None, _binding("a", "ClusterRole", "all", [_user(BOB.username)])
    )
    assert authz.check_escalation(BOB, CLUSTER_ROLES, role) is None


def test_subresource_and_resource_name_coverage(store: Store, authz: Authorizer) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role(
            "owner",
            [
                {"apiGroups": ["apps"], "resources": ["*/scale"], "verbs": ["update"]},
                {
                    "apiGroups": [""],
                    "resources": ["configmaps"],
                    "resourceNames": ["a", "b"],
                    "verbs": ["get"],
                },
            ],
        ),
    )
    store.create_object(
        CLUSTER_ROLE_BINDINGS, None, _binding("b", "ClusterRole", "owner", [_user(ALICE.username)])
    )

    def grants(rule: dict[str, Any]) -> bool:
        return authz.check_escalation(ALICE, CLUSTER_ROLES, _role("r", [rule])) is None

    assert grants({"apiGroups": ["apps"], "resources": ["deployments/scale"], "verbs": ["update"]})
    assert not grants({"apiGroups": ["apps"], "resources": ["deployments"], "verbs": ["update"]})
    assert grants(
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["a"], "verbs": ["get"]}
    )
    assert not grants(
        {"apiGroups": [""], "resources": ["configmaps"], "resourceNames": ["c"], "verbs": ["get"]}
    )
    # Names restrict the owner: holding get on a and b does not cover get on every configmap.
    assert not grants({"apiGroups": [""], "resources": ["configmaps"], "verbs": ["get"]})


def test_rule_round_trip() -> None:
    raw = {"apiGroups": [""], "resources": ["pods"], "resourceNames": ["p"], "verbs": ["get"]}
    assert Rule.from_json(raw).to_json() == {**raw}
    urls = {"nonResourceURLs": ["/x"], "verbs": ["get"]}
    assert Rule.from_json(urls).to_json() == urls


def test_role_binding_may_grant_its_own_namespace_object(store: Store, authz: Authorizer) -> None:
    store.create_object(
        CLUSTER_ROLES,
        None,
        _role("ns-reader", [{"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get"]}]),
    )
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding("r", "ClusterRole", "ns-reader", [_user(ALICE.username)], namespace="alice"),
    )
    assert _can(authz, ALICE, "get", "namespaces", name="alice")
    assert not _can(authz, ALICE, "get", "namespaces", name="bob")
    assert not _can(authz, ALICE, "list", "namespaces")


def test_self_subject_rules_review_lists_what_the_user_holds(
    store: Store, authz: Authorizer
) -> None:
    _kubeflow_roles(store)
    store.create_object(
        ROLE_BINDINGS,
        "alice",
        _binding(
            "viewer", "ClusterRole", "kubeflow-view", [_user(BOB.username)], namespace="alice"
        ),
    )
    body = {"kind": "SelfSubjectRulesReview", "spec": {"namespace": "alice"}}
    status = authz.review_rules(body, BOB)["status"]
    assert {
        "verbs": ["get", "list"],
        "apiGroups": [""],
        "resources": ["persistentvolumeclaims"],
    } in (status["resourceRules"])
    assert {
        "verbs": ["get"],
        "nonResourceURLs": ["/healthz", "/livez", "/readyz", "/version", "/version/"],
    } in (status["nonResourceRules"])
    assert status["incomplete"] is False
    in_bob = authz.review_rules({"spec": {"namespace": "bob"}}, BOB)["status"]["resourceRules"]
    assert all("persistentvolumeclaims" not in r["resources"] for r in in_bob)
    admin = authz.review_rules(body, ADMIN)["status"]
    assert {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]} in admin["resourceRules"]
