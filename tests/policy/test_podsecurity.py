"""policy.podsecurity: modes, managed namespaces, and plan() in PSP and PSA modes (pure)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import settings as hsettings
from hypothesis import strategies as st

from vsphere_kale.policy.podsecurity import (
    MANAGED_BY_LABEL,
    MANAGED_LABELS_ANNOTATION,
    PSA_AUDIT,
    PSA_ENFORCE,
    PSA_ENFORCE_VERSION,
    PSA_WARN,
    CreateBinding,
    DeleteBinding,
    NamespaceFacts,
    PatchBinding,
    PatchNamespaceLabels,
    Plan,
    build_binding_patch,
    build_desired,
    build_namespace_patch,
    build_owned_annotation,
    build_role_binding,
    decide_managed,
    decide_mode,
    decide_owned_labels,
    facts_from_objects,
    plan,
)
from vsphere_kale.settings import PodSecuritySettings

PS = PodSecuritySettings()
ROLE = PS.psp_cluster_role


def rb(
    name: str,
    *,
    ns: str = "alice",
    role: str = ROLE,
    kind: str = "ClusterRole",
    subjects: list[dict[str, str]] | None = None,
    managed: bool = False,
) -> dict[str, Any]:
    labels = {MANAGED_BY_LABEL: "vsphere-kale"} if managed else {}
    return {
        "metadata": {"name": name, "namespace": ns, "labels": labels, "uid": f"uid-{name}"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": subjects
        if subjects is not None
        else [
            {
                "kind": "Group",
                "apiGroup": "rbac.authorization.k8s.io",
                "name": f"system:serviceaccounts:{ns}",
            }
        ],
    }


def ns_obj(
    name: str = "alice",
    *,
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    phase: str = "Active",
) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}, "annotations": annotations or {}},
        "status": {"phase": phase},
    }


def psp_plan(*bindings: dict[str, Any], all_bindings: bool = True) -> Plan:
    desired = build_desired("alice", mode="psp", settings=PS)
    facts = facts_from_objects("alice", ns_obj(), bindings=bindings, all_bindings=all_bindings)
    return plan(desired, facts, settings=PS)


def psa_plan(
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    *,
    settings: PodSecuritySettings = PS,
) -> Plan:
    desired = build_desired("alice", mode="psa", settings=settings)
    facts = facts_from_objects("alice", ns_obj(labels=labels, annotations=annotations))
    return plan(desired, facts, settings=settings)


WANT_LABELS = {
    PSA_ENFORCE: "baseline",
    PSA_ENFORCE_VERSION: "latest",
    PSA_WARN: "restricted",
    PSA_AUDIT: "restricted",
}


# --- mode and managed ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("configured", "psp_served", "expected"),
    [
        ("auto", True, "psp"),
        ("auto", False, "psa"),
        ("psp", False, "psp"),
        ("psa", True, "psa"),
        ("off", True, "off"),
    ],
)
def test_decide_mode(configured: str, psp_served: bool, expected: str) -> None:
    assert decide_mode(configured, psp_served=psp_served) == expected


def test_decide_mode_rejects_unknown() -> None:
    with pytest.raises(ValueError, match="unknown"):
        decide_mode("maybe", psp_served=True)


def profile_obj(name: str, uid: str = "p-uid") -> dict[str, Any]:
    return {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "metadata": {"name": name, "uid": uid},
    }


def owned_ns(ns: str, /, **ref: Any) -> dict[str, Any]:
    """A namespace as the profile controller creates it: controller ref to its Profile."""
    owner = {
        "apiVersion": "kubeflow.org/v1",
        "kind": "Profile",
        "name": ns,
        "uid": "p-uid",
        "controller": True,
        "blockOwnerDeletion": True,
    }
    owner.update(ref)
    return {"metadata": {"name": ns, "uid": "ns-uid", "ownerReferences": [owner]}}


@pytest.mark.parametrize(
    ("ns", "has_profile", "managed", "why"),
    [
        ("alice", True, True, "Kubeflow Profile alice exists and owns the namespace"),
        ("bob", False, False, "no Kubeflow Profile named bob"),
        ("kubeflow", False, True, "extraNamespaces"),
        ("carol", True, False, "excludedNamespaces"),
        # Excluded wins over extra: the stricter list is the safer reading of a contradiction.
        ("both", True, False, "excludedNamespaces"),
    ],
)
def test_decide_managed(ns: str, has_profile: bool, managed: bool, why: str) -> None:
    settings = PodSecuritySettings(
        extra_namespaces=("kubeflow", "both"), excluded_namespaces=("carol", "both")
    )
    got, reason = decide_managed(
        ns,
        profile=profile_obj(ns) if has_profile else None,
        namespace_obj=owned_ns(ns),
        settings=settings,
        service_namespace="vsphere-kale",
    )
    assert got is managed
    assert why in reason


@pytest.mark.parametrize("ns", ["default", "kube-system", "kube-public", "kube-node-lease", "ops"])
def test_a_profile_name_never_pulls_in_a_system_namespace(ns: str) -> None:
    # Even with a matching controller reference (an admin could add one by hand): system
    # namespaces and the service's own ("ops" here) are managed only when listed.
    got, reason = decide_managed(
        ns,
        profile=profile_obj(ns),
        namespace_obj=owned_ns(ns),
        settings=PS,
        service_namespace="ops",
    )
    assert got is False and "extraNamespaces" in reason
    listed = PodSecuritySettings(extra_namespaces=(ns,))
    got, _ = decide_managed(
        ns, profile=None, namespace_obj=None, settings=listed, service_namespace="ops"
    )
    assert got is True


@pytest.mark.parametrize(
    "namespace_obj",
    [
        {"metadata": {"name": "alice"}},  # no owner at all (pre-existing namespace)
        owned_ns("alice", uid="other-uid"),  # a Profile deleted and re-created by someone
        owned_ns("alice", controller=False),  # an owner, but not the controller
        owned_ns("alice", kind="Notebook"),
        owned_ns("alice", apiVersion="evil.example.com/v1"),
        owned_ns("alice", name="mallory"),
    ],
)
def test_a_same_named_profile_that_does_not_own_the_namespace_is_refused(
    namespace_obj: dict[str, Any],
) -> None:
    got, reason = decide_managed(
        "alice",
        profile=profile_obj("alice"),
        namespace_obj=namespace_obj,
        settings=PS,
        service_namespace="vsphere-kale",
    )
    assert got is False
    assert reason == "namespace not owned by Profile alice"


def test_owner_with_v1beta1_profile_is_accepted() -> None:
    ns = owned_ns("alice", apiVersion="kubeflow.org/v1beta1")
    got, _ = decide_managed(
        "alice",
        profile=profile_obj("alice"),
        namespace_obj=ns,
        settings=PS,
        service_namespace="vsphere-kale",
    )
    assert got is True


def test_desired_required_lines() -> None:
    psp = build_desired("alice", mode="psp", settings=PS)
    assert (
        psp.required == "RoleBinding vsphere-kale-psp -> ClusterRole psp:vmware-system-privileged"
    )
    assert psp.binding is not None and psp.binding.group == "system:serviceaccounts:alice"
    psa = build_desired("alice", mode="psa", settings=PS)
    assert dict(psa.labels) == WANT_LABELS
    assert "pod-security.kubernetes.io/enforce=baseline" in psa.required


# --- common skips --------------------------------------------------------------------------------


def test_off_mode_skips() -> None:
    got = plan(
        build_desired("alice", mode="off", settings=PS), NamespaceFacts("alice"), settings=PS
    )
    assert got.outcome == "skipped" and not got.actions and "off" in got.reason


def test_missing_namespace_skips() -> None:
    facts = facts_from_objects("alice", None)
    got = plan(build_desired("alice", mode="psp", settings=PS), facts, settings=PS)
    assert got.outcome == "skipped" and "does not exist yet" in got.reason


def test_terminating_namespace_skips() -> None:
    facts = facts_from_objects("alice", ns_obj(phase="Terminating"))
    got = plan(build_desired("alice", mode="psa", settings=PS), facts, settings=PS)
    assert got.outcome == "skipped" and "being deleted" in got.reason


# --- PSP -----------------------------------------------------------------------------------------


def test_psp_no_binding_creates() -> None:
    got = psp_plan(rb("namespaceAdmin", role="kubeflow-admin"))
    assert got.outcome == "create"
    assert got.actions == (
        CreateBinding("alice", build_desired("alice", mode="psp", settings=PS).binding),  # type: ignore[arg-type]
    )
    assert got.describe() == (
        "create rolebinding alice/vsphere-kale-psp -> clusterrole/psp:vmware-system-privileged",
    )


def test_psp_only_managed_known_asks_for_all_bindings() -> None:
    got = psp_plan(all_bindings=False)
    assert got.needs_all_bindings and not got.actions and got.outcome == "create"


def test_psp_managed_binding_ok_without_full_list() -> None:
    got = psp_plan(rb("vsphere-kale-psp", managed=True), all_bindings=False)
    assert got.outcome == "ok" and not got.actions and not got.needs_all_bindings


def test_psp_old_tool_binding_is_enough_and_left_alone() -> None:
    # Not patched: RBAC lets the service patch only its own binding (resourceNames).
    got = psp_plan(rb("rb-all-sa_ns-alice"))
    assert got.outcome == "ok" and got.actions == ()
    assert "rb-all-sa_ns-alice" in got.reason and "left as it is" in got.reason


def test_psp_adopted_binding_is_ok_thereafter() -> None:
    got = psp_plan(rb("rb-all-sa_ns-alice", managed=True), all_bindings=False)
    assert got.outcome == "ok" and not got.actions


def test_psp_equivalent_binding_with_extra_subjects_satisfies() -> None:
    subjects = [
        {
            "kind": "Group",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": "system:serviceaccounts:alice",
        },
        {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "admin@example.com"},
    ]
    got = psp_plan(rb("legacy", subjects=subjects))
    assert got.outcome == "ok" and got.actions == ()  # enough, and not ours to patch


def test_psp_binding_for_other_namespace_group_does_not_satisfy() -> None:
    other = [
        {
            "kind": "Group",
            "apiGroup": "rbac.authorization.k8s.io",
            "name": "system:serviceaccounts:bob",
        }
    ]
    got = psp_plan(rb("legacy", subjects=other))
    assert got.outcome == "create"


def test_psp_edited_subjects_are_patched_back() -> None:
    wrong = [{"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory"}]
    got = psp_plan(rb("vsphere-kale-psp", managed=True, subjects=wrong), all_bindings=False)
    assert got.outcome == "repair"
    (action,) = got.actions
    assert isinstance(action, PatchBinding) and action.subjects is not None
    assert build_binding_patch(action) == {
        "subjects": [
            {
                "kind": "Group",
                "name": "system:serviceaccounts:alice",
                "apiGroup": "rbac.authorization.k8s.io",
            }
        ]
    }


def test_psp_edited_role_ref_is_deleted_then_created() -> None:
    got = psp_plan(rb("vsphere-kale-psp", managed=True, role="psp:vmware-system-restricted"))
    assert got.outcome == "repair"
    assert [type(a) for a in got.actions] == [DeleteBinding, CreateBinding]
    delete = got.actions[0]
    assert isinstance(delete, DeleteBinding) and delete.uid == "uid-vsphere-kale-psp"
    assert "roleRef is immutable" in delete.describe()
    assert "psp:vmware-system-restricted" in got.reason


def test_psp_managed_drift_repaired_even_if_another_binding_grants() -> None:
    got = psp_plan(rb("vsphere-kale-psp", managed=True, role="view"), rb("rb-all-sa_ns-alice"))
    assert got.outcome == "repair"


def test_psp_unlabelled_same_name_binding_is_labelled() -> None:
    got = psp_plan(rb("vsphere-kale-psp"))
    assert got.outcome == "ok"
    assert got.actions == (PatchBinding("alice", "vsphere-kale-psp", label=True, adopt=True),)


def test_psp_unlabelled_same_name_wrong_role_is_repaired() -> None:
    got = psp_plan(rb("vsphere-kale-psp", kind="Role", role="something"))
    assert got.outcome == "repair"
    assert [type(a) for a in got.actions] == [DeleteBinding, CreateBinding]


def test_role_binding_body() -> None:
    desired = build_desired("alice", mode="psp", settings=PS)
    assert desired.binding is not None
    body = build_role_binding("alice", desired.binding)
    assert body["metadata"] == {
        "name": "vsphere-kale-psp",
        "namespace": "alice",
        "labels": {"app.kubernetes.io/managed-by": "vsphere-kale"},
    }
    assert body["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": "ClusterRole",
        "name": "psp:vmware-system-privileged",
    }
    assert body["subjects"] == [
        {
            "kind": "Group",
            "name": "system:serviceaccounts:alice",
            "apiGroup": "rbac.authorization.k8s.io",
        }
    ]
    # The body we create satisfies plan() once it is read back.
    facts = facts_from_objects("alice", ns_obj(), bindings=[body], all_bindings=False)
    assert plan(desired, facts, settings=PS).outcome == "ok"


# --- PSA -----------------------------------------------------------------------------------------


def test_psa_fresh_namespace_gets_all_labels_and_ownership() -> None:
    got = psa_plan()
    assert got.outcome == "create"
    (action,) = got.actions
    assert isinstance(action, PatchNamespaceLabels)
    assert dict(action.labels) == WANT_LABELS
    patch = build_namespace_patch(action)
    assert patch["metadata"]["labels"] == WANT_LABELS
    assert json.loads(patch["metadata"]["annotations"][MANAGED_LABELS_ANNOTATION]) == WANT_LABELS


def test_psa_after_apply_is_ok_with_no_actions() -> None:
    got = psa_plan(WANT_LABELS, {MANAGED_LABELS_ANNOTATION: build_owned_annotation(WANT_LABELS)})
    assert got.outcome == "ok" and got.actions == ()


def test_psa_other_labels_are_never_in_the_patch() -> None:
    got = psa_plan({"istio-injection": "enabled", "app.kubernetes.io/part-of": "kubeflow-profile"})
    (action,) = got.actions
    assert isinstance(action, PatchNamespaceLabels)
    assert set(build_namespace_patch(action)["metadata"]["labels"]) == set(WANT_LABELS)


def test_psa_admin_value_is_left_alone_and_reported() -> None:
    got = psa_plan({PSA_ENFORCE: "privileged"})
    assert got.outcome == "conflict"
    assert "pod-security.kubernetes.io/enforce=privileged" in got.reason
    assert "overrideExisting" in got.reason
    (action,) = got.actions
    assert isinstance(action, PatchNamespaceLabels)
    assert PSA_ENFORCE not in action.labels  # the others are still applied
    assert PSA_ENFORCE not in action.owned
    assert set(action.labels) == {PSA_ENFORCE_VERSION, PSA_WARN, PSA_AUDIT}


def test_psa_admin_value_is_stable_conflict_without_writes() -> None:
    labels = {**WANT_LABELS, PSA_ENFORCE: "privileged"}
    owned = {k: v for k, v in WANT_LABELS.items() if k != PSA_ENFORCE}
    got = psa_plan(labels, {MANAGED_LABELS_ANNOTATION: build_owned_annotation(owned)})
    assert got.outcome == "conflict" and got.actions == ()


def test_psa_override_replaces_admin_value() -> None:
    got = psa_plan(
        {PSA_ENFORCE: "privileged"}, settings=PodSecuritySettings(override_existing=True)
    )
    assert got.outcome == "create"
    (action,) = got.actions
    assert isinstance(action, PatchNamespaceLabels)
    assert action.labels[PSA_ENFORCE] == "baseline" and action.owned[PSA_ENFORCE] == "baseline"


def test_psa_admin_edit_of_our_label_becomes_theirs() -> None:
    # We set enforce=baseline; an admin relabelled it privileged by hand: hands off.
    labels = {**WANT_LABELS, PSA_ENFORCE: "privileged"}
    got = psa_plan(labels, {MANAGED_LABELS_ANNOTATION: build_owned_annotation(WANT_LABELS)})
    assert got.outcome == "conflict" and got.actions == ()


def test_psa_our_label_removed_is_repaired() -> None:
    labels = {k: v for k, v in WANT_LABELS.items() if k != PSA_WARN}
    got = psa_plan(labels, {MANAGED_LABELS_ANNOTATION: build_owned_annotation(WANT_LABELS)})
    assert got.outcome == "repair"
    (action,) = got.actions
    assert isinstance(action, PatchNamespaceLabels) and dict(action.labels) == {
        PSA_WARN: "restricted"
    }


def test_psa_level_change_in_config_updates_our_labels() -> None:
    settings = PodSecuritySettings(psa_level="privileged")
    got = psa_plan(
        WANT_LABELS,
        {MANAGED_LABELS_ANNOTATION: build_owned_annotation(WANT_LABELS)},
        settings=settings,
    )
    assert got.outcome == "repair"
    (action,) = got.actions
    assert isinstance(action, PatchNamespaceLabels)
    assert dict(action.labels) == {PSA_ENFORCE: "privileged"}


def test_psa_matching_admin_value_is_not_claimed() -> None:
    got = psa_plan({PSA_ENFORCE: "baseline"})
    (action,) = got.actions
    assert isinstance(action, PatchNamespaceLabels)
    assert PSA_ENFORCE not in action.labels and PSA_ENFORCE not in action.owned


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("", {}),
        ('{"a": "1", "b": "2"}', {"a": "1", "b": "2"}),
        ('["a", "b"]', {"a": None, "b": None}),
        ("a, b", {"a": None, "b": None}),
        ("42", {}),
    ],
)
def test_owned_annotation_formats(raw: str, expected: dict[str, str | None]) -> None:
    assert decide_owned_labels({MANAGED_LABELS_ANNOTATION: raw}) == expected


def test_psa_legacy_list_annotation_owns_any_value_and_is_rewritten_as_json() -> None:
    labels = {**WANT_LABELS, PSA_ENFORCE: "privileged"}
    got = psa_plan(labels, {MANAGED_LABELS_ANNOTATION: ",".join(WANT_LABELS)})
    assert got.outcome == "repair"
    (action,) = got.actions
    assert isinstance(action, PatchNamespaceLabels)
    assert dict(action.labels) == {PSA_ENFORCE: "baseline"}
    assert dict(action.owned) == WANT_LABELS


# --- property: one apply converges --------------------------------------------------------------

_levels = st.sampled_from(["privileged", "baseline", "restricted", "latest", "v1.30"])
_label_maps = st.dictionaries(st.sampled_from([*sorted(WANT_LABELS), "team"]), _levels)


@hsettings(max_examples=200, deadline=None)
@given(labels=_label_maps, owned=_label_maps, override=st.booleans())
def test_psa_one_apply_converges(
    labels: dict[str, str], owned: dict[str, str], override: bool
) -> None:
    # Given any labels and any ownership record, when the plan's patch is applied, then
    # planning again asks for nothing, and labels we do not manage are untouched.
    settings = PodSecuritySettings(override_existing=override)
    annotations = {MANAGED_LABELS_ANNOTATION: build_owned_annotation(owned)} if owned else {}
    first = psa_plan(labels, annotations, settings=settings)
    new_labels, new_annotations = dict(labels), dict(annotations)
    for action in first.actions:
        assert isinstance(action, PatchNamespaceLabels)
        meta = build_namespace_patch(action)["metadata"]
        new_labels.update(meta["labels"])
        new_annotations.update(meta["annotations"])
    second = psa_plan(new_labels, new_annotations, settings=settings)
    assert second.actions == ()
    assert second.outcome in ("ok", "conflict")
    assert new_labels.get("team") == labels.get("team")
    if override:
        assert {k: new_labels[k] for k in WANT_LABELS} == WANT_LABELS
