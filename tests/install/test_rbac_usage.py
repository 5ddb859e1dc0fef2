"""The service's RBAC is exactly what its code calls: recorded, not copied.

The whole local system (sandbox with RBAC on, deploy/base installed, ``vsphere-kale serve`` as
its ServiceAccount, the playground's controllers) runs the features a cluster sees: profile
namespaces reconciled in psp and in psa mode, a binding drifted twice (subjects, roleRef), the
admin API's status, reconcile and claim recreation as a profile owner, the leader's Lease.
Every authorization decision the sandbox makes for the ServiceAccount is recorded; then

* every call was allowed (the manifest is enough: a rule removed while the code needs it
  fails here with the 403 it causes), and
* every (verb, group, resource, name) the manifest grants was asked for by some call (each
  rule is needed: a rule or verb added without the code using it fails here), except the few
  granted for paths this run cannot reach, each listed below with the test that reaches it.

The rules are the ones ``vsphere-kale doctor`` derives from deploy/base
(:func:`vsphere_kale.install.doctor.build_required_access`): one source, the manifest.
"""

from __future__ import annotations

import json
import ssl
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from kubernetes import client
from reconcile_helpers import PSP_ROLE, wait_for

from vsphere_kale.install.doctor import Access, build_required_access, fetch_required_roles
from vsphere_kale.playground.seed import MARSHAL_PVC, USERS
from vsphere_kale.playground.system import LocalSystem
from vsphere_kale.sandbox import rbac
from vsphere_kale.sandbox.types import Attributes, Decision
from vsphere_kale.settings import settings_from_mapping

SA_USER = "system:serviceaccount:vsphere-kale:vsphere-kale"
BINDING = "vsphere-kale-psp"
ENFORCE = "pod-security.kubernetes.io/enforce"

Call = tuple[str, str, str, str, str]
"""(verb, group, resource, namespace, name) of one request, as RBAC saw it."""

NOT_REACHED: dict[tuple[str, str, str], str] = {
    # Certificate rotation renews only a certificate near its expiry; serve here has a fresh
    # one (its check, a get of both, is recorded). tests/install/test_rotation.py renews.
    ("update", "", "secrets"): "rotation renews a certificate only near expiry",
    ("patch", "admissionregistration.k8s.io", "mutatingwebhookconfigurations"): (
        "rotation writes the new CA into the webhook only when it renews"
    ),
    ("get", "admissionregistration.k8s.io", "mutatingadmissionpolicies"): (
        "the sandbox does not serve MutatingAdmissionPolicy; the status reads it only where "
        "discovery says it is served (tests/realcp/test_admission_policy_install.py)"
    ),
}
"""Granted, needed by the code, not reached by this run: (verb, group, resource) -> why."""


@pytest.fixture(scope="module")
def recorded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[tuple[Call, bool]]]:
    calls: list[tuple[Call, bool]] = []
    real_authorize = rbac.Authorizer.authorize

    def recording(self: rbac.Authorizer, attrs: Attributes) -> Decision:
        # Observe, never change: the sandbox's own RBAC decides.
        decision = real_authorize(self, attrs)
        if attrs.user.username == SA_USER and attrs.resource:
            resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
            call = (attrs.verb, attrs.api_group, resource, attrs.namespace, attrs.name)
            calls.append((call, decision.allowed))
        return decision

    patch = pytest.MonkeyPatch()
    patch.setattr(rbac.Authorizer, "authorize", recording)
    try:
        for flavor in ("psp", "psa"):
            with LocalSystem(tmp_path_factory.mktemp(flavor) / "system", flavor=flavor) as system:
                _drive(system)
        yield calls
    finally:
        patch.undo()


def _admin_api(system: LocalSystem, method: str, path: str) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(system.ca_file))
    request = urllib.request.Request(
        f"{system.admin_url}{path}",
        method=method,
        data=b"{}" if method == "POST" else None,
        headers={
            "Authorization": f"Bearer {USERS['alice'].token}",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(request, timeout=30, context=context) as answer:
        assert answer.status == 200, path
        body: dict[str, Any] = json.loads(answer.read())
        return body


def _drive(system: LocalSystem) -> None:
    assert system.running is not None
    api = system.running.api_client()
    core, rbac_api = client.CoreV1Api(api), client.RbacAuthorizationV1Api(api)
    if system.flavor == "psp":
        # The reconciler creates the binding in each profile namespace (RBAC's bind check).
        wait_for("binding", lambda: _binding(rbac_api), timeout=20)
        # Drift 1: subjects edited -> patched back.
        rbac_api.patch_namespaced_role_binding(
            BINDING, "alice", {"subjects": [{"kind": "Group", "name": "someone-else"}]}
        )
        wait_for("subjects restored", lambda: _subjects_are_ours(rbac_api), timeout=20)
        # Drift 2: roleRef changed (immutable, so delete + create; the reconciler may put
        # ours back in between, then we try again) -> deleted and created again by serve.
        wait_for("roleRef changed", lambda: _swap_role_ref(rbac_api), timeout=20)
        wait_for("roleRef restored", lambda: _role_ref(rbac_api) == PSP_ROLE, timeout=20)
    else:
        labels = lambda: core.read_namespace("alice").metadata.labels or {}  # noqa: E731
        wait_for("psa labels", lambda: labels().get(ENFORCE), timeout=20)
    # The admin API as the profile owner: status, reconcile, and recreating the stuck claim.
    status = _admin_api(system, "GET", "/api/v1/namespaces/alice/status")
    assert status["kind"] == "NamespaceStatus"
    assert _admin_api(system, "POST", "/api/v1/namespaces/alice/reconcile")["results"]
    if system.flavor == "psa":
        recreated = _admin_api(
            system,
            "POST",
            f"/api/v1/namespaces/alice/persistentvolumeclaims/{MARSHAL_PVC}/recreate",
        )
        assert recreated["outcome"] == "recreated"


def _swap_role_ref(api: client.RbacAuthorizationV1Api) -> bool:
    try:
        api.delete_namespaced_role_binding(BINDING, "alice")
    except client.ApiException as exc:
        if exc.status != 404:
            raise
    body = {
        "metadata": {"name": BINDING},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "view"},
        "subjects": [
            {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "Group",
                "name": "system:serviceaccounts:alice",
            }
        ],
    }
    try:
        api.create_namespaced_role_binding("alice", body)
    except client.ApiException as exc:
        if exc.status != 409:
            raise
        return False
    return True


def _binding(api: client.RbacAuthorizationV1Api) -> Any:
    try:
        return api.read_namespaced_role_binding(BINDING, "alice")
    except client.ApiException:
        return None


def _subjects_are_ours(api: client.RbacAuthorizationV1Api) -> bool:
    found = _binding(api)
    return found is not None and [s.name for s in found.subjects or []] == [
        "system:serviceaccounts:alice"
    ]


def _role_ref(api: client.RbacAuthorizationV1Api) -> str | None:
    found = _binding(api)
    return found.role_ref.name if found is not None else None


def granted() -> tuple[Access, ...]:
    settings = settings_from_mapping({"storage": {"rwxStorageClass": "nfs-client"}})
    return build_required_access(fetch_required_roles(settings, cert_manager=False))


def _uses(access: Access, call: Call) -> bool:
    verb, group, resource, namespace, name = call
    return (
        (access.verb, access.group, access.resource) == (verb, group, resource)
        and (access.namespace is None or access.namespace == namespace)
        and (access.name is None or access.name == name)
    )


def test_every_call_of_the_service_is_allowed(recorded: list[tuple[Call, bool]]) -> None:
    assert recorded, "the service made no calls"
    refused = sorted({call for call, allowed in recorded if not allowed})
    assert refused == []


def test_every_granted_permission_is_used_by_the_code(recorded: list[tuple[Call, bool]]) -> None:
    calls = {call for call, _ in recorded}
    unused = [
        access.describe()
        for access in granted()
        if not any(_uses(access, call) for call in calls)
        and (access.verb, access.group, access.resource) not in NOT_REACHED
    ]
    assert not unused, "granted in deploy/base/rbac.yaml but never asked for: " + "; ".join(unused)


def test_the_unreached_list_names_only_granted_permissions() -> None:
    # The exceptions above must not outlive the rules they excuse.
    atoms = {(a.verb, a.group, a.resource) for a in granted()}
    assert set(NOT_REACHED) <= atoms
