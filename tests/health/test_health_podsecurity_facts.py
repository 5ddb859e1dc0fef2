"""status.build_pod_security_facts: read results (or their absence) -> what health judges."""

from __future__ import annotations

from typing import Any

import pytest

from vsphere_kale.health.status import build_pod_security_facts
from vsphere_kale.policy.health import Unreadable
from vsphere_kale.settings import PodSecuritySettings, Settings

SETTINGS = Settings()
PROFILE: dict[str, Any] = {"metadata": {"name": "alice", "uid": "p-uid"}}
OWNER = {
    "apiVersion": "kubeflow.org/v1",
    "kind": "Profile",
    "name": "alice",
    "uid": "p-uid",
    "controller": True,
}
PROFILE_NS = {
    "metadata": {
        "name": "alice",
        "labels": {"app.kubernetes.io/part-of": "kubeflow-profile"},
        "ownerReferences": [OWNER],
    }
}
OWNED_NS: dict[str, Any] = {"metadata": {"name": "alice", "ownerReferences": [OWNER]}}
PLAIN_NS: dict[str, Any] = {"metadata": {"name": "alice"}}
BINDING = {
    "metadata": {
        "name": "vsphere-kale-psp",
        "labels": {"app.kubernetes.io/managed-by": "vsphere-kale"},
    },
    "roleRef": {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "psp:vmware-system-privileged",
    },
    "subjects": [
        {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": "system:serviceaccounts:alice",
        }
    ],
}
NO = Unreadable("no permission.")


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        pytest.param(
            {"mode": "psp", "ns_obj": OWNED_NS, "profile": PROFILE, "bindings": []},
            ("create", True, None),
            id="profile-without-binding",
        ),
        pytest.param(
            {"mode": "psp", "ns_obj": PLAIN_NS, "profile": PROFILE, "bindings": []},
            ("skipped", False, None),
            id="profile-that-does-not-own-the-namespace",
        ),
        pytest.param(
            {"mode": "psp", "ns_obj": OWNED_NS, "profile": PROFILE, "bindings": [BINDING]},
            ("ok", True, None),
            id="profile-with-binding",
        ),
        pytest.param(
            {"mode": "psp", "ns_obj": PLAIN_NS, "profile": None, "bindings": []},
            ("skipped", False, None),
            id="no-profile-unmanaged",
        ),
        pytest.param(
            {"mode": "psp", "ns_obj": NO, "profile": PROFILE, "bindings": [BINDING]},
            ("ok", True, None),
            id="psp-needs-no-namespace-read",
        ),
        pytest.param(
            {"mode": "psa", "ns_obj": NO, "profile": {}, "bindings": []},
            ("skipped", False, "no permission."),
            id="psa-needs-the-namespace",
        ),
        pytest.param(
            {"mode": "psp", "ns_obj": PLAIN_NS, "profile": {}, "bindings": NO},
            ("skipped", False, "no permission."),
            id="bindings-unreadable",
        ),
        pytest.param(
            {"mode": "psp", "ns_obj": PROFILE_NS, "profile": NO, "bindings": []},
            ("create", True, None),
            id="profile-unreadable-namespace-label-is-evidence",
        ),
        pytest.param(
            {"mode": "psp", "ns_obj": PLAIN_NS, "profile": NO, "bindings": []},
            ("skipped", False, "no permission."),
            id="profile-unreadable-no-evidence",
        ),
        pytest.param(
            {"mode": "off", "ns_obj": PLAIN_NS, "profile": None, "bindings": []},
            ("skipped", False, None),
            id="off",
        ),
    ],
)
def test_facts(kwargs: dict[str, Any], expected: tuple[str, bool, str | None]) -> None:
    facts = build_pod_security_facts("alice", settings=SETTINGS, **kwargs)

    assert (facts.outcome, facts.managed, facts.unreadable) == expected
    if facts.managed:
        assert facts.required == (
            "RoleBinding vsphere-kale-psp -> ClusterRole psp:vmware-system-privileged"
        )


def test_extra_namespace_is_managed_without_profile() -> None:
    settings = Settings(pod_security=PodSecuritySettings(extra_namespaces=("alice",)))

    facts = build_pod_security_facts(
        "alice", mode="psa", ns_obj=PLAIN_NS, profile=NO, bindings=[], settings=settings
    )

    assert facts.managed and facts.outcome == "create"
    assert "enforce=baseline" in facts.required
