"""The namespace guard judged by kube-apiserver: what our service account may change on a
Namespace once the ValidatingAdmissionPolicy of install/namespace_guard.py is in place.

The account holds ``patch namespaces`` cluster-wide, as the installed ClusterRole grants it;
only the policy stands between it and every namespace's labels. Each case patches as that
account (a TokenRequest token) and asserts kube-apiserver's answer; an admin's writes are not
looked at. The end-to-end proof that the reconciler lives with the guard is
test_realcp_rbac.py, whose install includes it.
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client
from realcp_helpers import cli, wait_for, wait_namespace_gone
from reconcile_helpers import create_profile_namespace

from vsphere_kale.controlplane import RunningControlPlane
from vsphere_kale.install import namespace_guard
from vsphere_kale.kube import build_api_client
from vsphere_kale.sandbox.kubeconfig import write_kubeconfig
from vsphere_kale.settings import settings_from_mapping

ENFORCE = "pod-security.kubernetes.io/enforce"
PSA_PATCH = {
    "metadata": {
        "labels": {ENFORCE: "privileged"},
        "annotations": {"vsphere-kale.io/managed-labels": '{"x": "y"}'},
    }
}


@dataclass(frozen=True)
class Guarded:
    admin: client.CoreV1Api
    account: client.CoreV1Api
    """As ``system:serviceaccount:<service namespace>:vsphere-kale``."""
    kubeconfig: Path
    """The account's."""
    names: dict[str, str]
    """Role of a namespace in the cases -> its name."""


@pytest.fixture(scope="module")
def guarded(
    real_control_plane: RunningControlPlane,
    admin_api: client.ApiClient,
    profile_crd: str,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Guarded]:
    suffix = secrets.token_hex(3)
    names = {
        "service": f"guard-svc-{suffix}",
        "owned": f"guard-team-{suffix}",
        "plain": f"guard-plain-{suffix}",
        "listed": f"guard-listed-{suffix}",
        "excluded": f"guard-excluded-{suffix}",
        "probe": f"guard-probe-{suffix}",
    }
    settings = settings_from_mapping(
        {
            "namespace": names["service"],
            "podSecurity": {
                "extraNamespaces": [names["listed"]],
                "excludedNamespaces": [names["excluded"]],
            },
        }
    )
    core = client.CoreV1Api(admin_api)
    rbac = client.RbacAuthorizationV1Api(admin_api)
    policies = client.AdmissionregistrationV1Api(admin_api)
    role = f"guard-{suffix}"
    for key in ("service", "plain", "listed", "excluded", "probe"):
        core.create_namespace({"metadata": {"name": names[key]}})
    create_profile_namespace(admin_api, names["owned"], {"team": "a"})
    core.patch_namespace(names["owned"], {"metadata": {"annotations": {"note": "admin's"}}})
    core.create_namespaced_service_account(names["service"], {"metadata": {"name": "vsphere-kale"}})
    # What deploy/base grants on namespaces, nothing more.
    rbac.create_cluster_role(
        {
            "metadata": {"name": role},
            "rules": [
                {"apiGroups": [""], "resources": ["namespaces"], "verbs": ["get", "patch"]},
                {"apiGroups": ["kubeflow.org"], "resources": ["profiles"], "verbs": ["get"]},
            ],
        }
    )
    rbac.create_cluster_role_binding(
        {
            "metadata": {"name": role},
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io",
                "kind": "ClusterRole",
                "name": role,
            },
            "subjects": [
                {"kind": "ServiceAccount", "name": "vsphere-kale", "namespace": names["service"]}
            ],
        }
    )
    policy, binding = namespace_guard.build_guard_objects(settings)
    policies.create_validating_admission_policy(policy)
    policies.create_validating_admission_policy_binding(binding)
    token = core.create_namespaced_service_account_token(
        "vsphere-kale", names["service"], {"spec": {"expirationSeconds": 3600}}
    ).status.token
    kubeconfig = write_kubeconfig(
        tmp_path_factory.mktemp("guard") / "sa.kubeconfig",
        real_control_plane.url,
        {"vsphere-kale": token},
        ca_pem=real_control_plane.ca_pem,
    )
    account = client.CoreV1Api(build_api_client(str(kubeconfig)))
    guarded = Guarded(core, account, kubeconfig, names)
    # The policy is active once kube-apiserver's policy informer has it (not at create). The
    # probe changes a label of its own namespace to a new value each time (a write that
    # changed nothing would pass), until the guard refuses it.
    wait_for(
        "the namespace guard to be active",
        lambda: (
            _answer(guarded, "probe", {"metadata": {"labels": {"probe": secrets.token_hex(4)}}})[0]
            == 403
        ),
    )
    try:
        yield guarded
    finally:
        policies.delete_validating_admission_policy_binding(namespace_guard.NAME)
        policies.delete_validating_admission_policy(namespace_guard.NAME)
        rbac.delete_cluster_role_binding(role)
        rbac.delete_cluster_role(role)
        for name in names.values():
            core.delete_namespace(name)
        client.CustomObjectsApi(admin_api).delete_cluster_custom_object(
            "kubeflow.org", "v1", "profiles", names["owned"]
        )
        for name in names.values():
            wait_namespace_gone(admin_api, name)


def _answer(guarded: Guarded, role: str, patch: dict[str, Any]) -> tuple[int, str]:
    name = guarded.names.get(role, role)
    try:
        guarded.account.patch_namespace(name, patch)
    except client.ApiException as exc:
        return exc.status, str(exc.body)
    return 200, ""


ALLOWED = [
    ("owned", PSA_PATCH),
    ("owned", {"metadata": {"labels": {ENFORCE: None}}}),  # a label we stop managing
    ("listed", PSA_PATCH),
    ("plain", {"metadata": {"annotations": {"vsphere-kale.io/managed-labels": "{}"}}}),
    ("owned", {}),  # a write that changes nothing
]
REFUSED = [
    ("owned", {"metadata": {"labels": {"team": "b"}}}, "only pod-security.kubernetes.io/*"),
    ("owned", {"metadata": {"labels": {"new": "1"}}}, "only pod-security.kubernetes.io/*"),
    ("owned", {"metadata": {"labels": {"team": None}}}, "only pod-security.kubernetes.io/*"),
    ("owned", {"metadata": {"annotations": {"note": "x"}}}, "managed-labels annotation"),
    ("owned", {"metadata": {"ownerReferences": None}}, "ownerReferences or finalizers"),
    ("owned", {"metadata": {"finalizers": ["example.com/x"]}}, "ownerReferences or finalizers"),
    ("plain", PSA_PATCH, "is neither"),
    ("excluded", PSA_PATCH, "is neither"),
    ("service", PSA_PATCH, "is neither"),
    ("kube-system", PSA_PATCH, "is neither"),
    ("default", PSA_PATCH, "is neither"),
]


@pytest.mark.parametrize(("role", "patch"), ALLOWED)
def test_the_reconcilers_own_writes_pass(
    guarded: Guarded, role: str, patch: dict[str, Any]
) -> None:
    assert _answer(guarded, role, patch) == (200, "")


@pytest.mark.parametrize(("role", "patch", "why"), REFUSED)
def test_anything_else_the_account_tries_is_refused(
    guarded: Guarded, role: str, patch: dict[str, Any], why: str
) -> None:
    status, body = _answer(guarded, role, patch)
    assert status == 403, body
    assert f"ValidatingAdmissionPolicy '{namespace_guard.NAME}'" in body
    assert why in body


def test_a_profile_namespace_stays_as_its_profile_made_it(guarded: Guarded) -> None:
    """After every refused write: the owner reference, labels and annotations are intact."""
    ns = guarded.admin.read_namespace(guarded.names["owned"])
    assert ns.metadata.labels["team"] == "a"
    assert ns.metadata.annotations["note"] == "admin's"
    (ref,) = ns.metadata.owner_references
    assert (ref.kind, ref.controller) == ("Profile", True)


def test_an_admins_writes_are_not_judged(guarded: Guarded) -> None:
    guarded.admin.patch_namespace(guarded.names["plain"], {"metadata": {"labels": {"x": "1"}}})
    labels = guarded.admin.read_namespace(guarded.names["plain"]).metadata.labels
    assert labels["x"] == "1"


def test_a_reconciler_whose_settings_drifted_from_the_guard_says_who_refused(
    guarded: Guarded, tmp_path: Path
) -> None:
    """GitOps edited extraNamespaces in the ConfigMap but not the rendered policy: the
    reconciler (as the service account) would label a namespace the guard does not allow. The
    write is refused, nothing changes, and the message points at the policy, not at RBAC."""
    plain = guarded.names["plain"]
    config = tmp_path / "config.yaml"
    config.write_text(
        json.dumps(
            {
                "namespace": guarded.names["service"],
                "podSecurity": {"mode": "psa", "extraNamespaces": [plain]},
            }
        )
    )
    done = cli(
        "reconcile", "-n", plain, "--kubeconfig", str(guarded.kubeconfig), "--config", str(config)
    )
    assert done.returncode == 1, done.stdout + done.stderr
    out = done.stdout + done.stderr
    assert "failed" in out and f"ValidatingAdmissionPolicy '{namespace_guard.NAME}'" in out
    assert "an admission policy refused the write, not RBAC" in out
    assert "grant" not in out
    labels = guarded.admin.read_namespace(plain).metadata.labels or {}
    assert ENFORCE not in labels
