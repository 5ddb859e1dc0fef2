"""Pod security for Kubeflow profile namespaces: what a namespace needs, and the plan to get there.

PURE: no I/O, no clients. :mod:`vsphere_kale.reconcile.reconciler` gathers :class:`NamespaceFacts`
(from informer caches or one-shot reads), calls :func:`plan`, and one ``apply`` performs
the plan's actions. :mod:`vsphere_kale.health.status` uses the same functions to report state.

API
---
- :func:`decide_mode` (``configured``, ``psp_served``) -> ``"psp" | "psa" | "off"``
- :func:`decide_managed` (namespace, ``profile``, ``namespace_obj``, settings,
  ``service_namespace``) -> ``(managed, why)``: ownership (the namespace's controller
  ownerReference is the same-named Profile, uid included) or an admin's explicit list, never
  a name alone; the service's own namespace, ``default`` and ``kube-*`` only when listed.
- :func:`build_desired` (namespace, ``mode``, settings) -> :class:`Desired`
- :func:`facts_from_objects` (API JSON of the Namespace and RoleBindings) -> :class:`NamespaceFacts`
- :func:`plan` (desired, actual, settings) -> :class:`Plan` with ``actions`` (a tuple of
  :class:`CreateBinding`, :class:`DeleteBinding`, :class:`PatchBinding`,
  :class:`PatchNamespaceLabels`), ``outcome`` (``create`` | ``repair`` | ``ok`` | ``skipped``
  | ``conflict``) and ``reason`` (a sentence).
- :func:`build_role_binding`, :func:`build_binding_patch`, :func:`build_namespace_patch`:
  the JSON bodies ``apply`` sends.

PSP mode
--------
RoleBinding ``roleBindingName`` -> ClusterRole ``pspClusterRole`` for Group
``system:serviceaccounts:<ns>``, labelled ``app.kubernetes.io/managed-by: vsphere-kale``.
Any RoleBinding with the same roleRef whose subjects include that group satisfies the
namespace (the earlier tool's ``rb-all-sa_ns-<ns>``), so no duplicate is ever created. It is
left untouched: the service may patch and delete only the binding named ``roleBindingName``
(RBAC ``resourceNames``; issue 10, finding 6). A binding with our name but no label is
*adopted* by adding our managed-by label, so it shows up in the label-selected watch. Our
own binding whose subjects were edited is patched back; one whose roleRef
was edited is deleted and re-created, because roleRef is immutable.

Facts may hold only the *managed* bindings of a namespace (what the reconciler's
label-selected informer sees). When those do not satisfy the namespace, :func:`plan` returns
``needs_all_bindings=True`` and no actions; the caller lists the namespace's RoleBindings
and plans again, so an unlabelled equivalent binding is found before anything is created.

PSA mode
--------
Namespace labels ``pod-security.kubernetes.io/enforce=<psaLevel>``,
``enforce-version=latest``, ``warn=<psaWarnLevel>``, ``audit=<psaWarnLevel>``. Which labels
we set, and the value we set, is recorded in the annotation
``vsphere-kale.io/managed-labels`` as a JSON object ``{"<label>": "<value we set>"}``. A
label is ours to change only while its current value is still the value we recorded; a
label that is absent is set and recorded. A label an admin set (never recorded, or changed by
hand since we set it) is left alone and reported as a conflict, unless
``podSecurity.overrideExisting`` is true. For compatibility the annotation may also be a JSON
list or a comma-separated list of label names; those labels count as ours whatever their
value.

The values (facts, desired state, actions, plans) live in
:mod:`vsphere_kale.policy.podsecurity_model`, the API JSON in and out in
:mod:`vsphere_kale.policy.podsecurity_objects`; every name stays importable from here.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vsphere_kale.policy.podsecurity_model import (
    MANAGED_BY_LABEL,
    MANAGED_BY_VALUE,
    MANAGED_LABELS_ANNOTATION,
    MANAGED_SELECTOR,
    PSA_AUDIT,
    PSA_ENFORCE,
    PSA_ENFORCE_VERSION,
    PSA_PREFIX,
    PSA_WARN,
    RBAC_GROUP,
    Action,
    BindingFacts,
    CreateBinding,
    DeleteBinding,
    Desired,
    DesiredBinding,
    Mode,
    NamespaceFacts,
    Outcome,
    PatchBinding,
    PatchNamespaceLabels,
    Plan,
    Subject,
)
from vsphere_kale.policy.podsecurity_objects import (
    binding_facts,
    build_binding_patch,
    build_namespace_patch,
    build_owned_annotation,
    build_role_binding,
    decide_owned_labels,
    facts_from_objects,
)
from vsphere_kale.settings import PodSecuritySettings

__all__ = [
    "MANAGED_BY_LABEL",
    "MANAGED_BY_VALUE",
    "MANAGED_LABELS_ANNOTATION",
    "MANAGED_SELECTOR",
    "PROFILE_GROUP",
    "PSA_AUDIT",
    "PSA_ENFORCE",
    "PSA_ENFORCE_VERSION",
    "PSA_PREFIX",
    "PSA_WARN",
    "RBAC_GROUP",
    "Action",
    "BindingFacts",
    "CreateBinding",
    "DeleteBinding",
    "Desired",
    "DesiredBinding",
    "Mode",
    "NamespaceFacts",
    "Outcome",
    "PatchBinding",
    "PatchNamespaceLabels",
    "Plan",
    "Subject",
    "binding_facts",
    "build_binding_patch",
    "build_desired",
    "build_namespace_patch",
    "build_owned_annotation",
    "build_role_binding",
    "decide_managed",
    "decide_mode",
    "decide_owned_by_profile",
    "decide_owned_labels",
    "decide_protected",
    "facts_from_objects",
    "plan",
]


# --- decisions ---------------------------------------------------------------------------------


def decide_mode(configured: str, *, psp_served: bool) -> Mode:
    """``auto`` -> ``psp`` when the API serves policy/v1beta1 podsecuritypolicies (TKG up to
    1.24), else ``psa`` (Kubernetes 1.25 removed PSP)."""
    if configured == "auto":
        return "psp" if psp_served else "psa"
    if configured in ("psp", "psa", "off"):
        return configured  # type: ignore[return-value]
    raise ValueError(f"unknown pod-security mode {configured!r}")


PROFILE_GROUP = "kubeflow.org"


def decide_protected(namespace: str, *, service_namespace: str) -> bool:
    """System namespaces a Profile's name must never pull in: ours, ``default``, ``kube-*``.

    A Profile is a cluster-scoped object any Kubeflow user can have created through the
    dashboard's registration flow with a name they choose; binding the privileged PSP role in
    ``kube-system`` or labelling it ``enforce=baseline`` (which rejects CNI and CSI pods)
    because of that name would be privilege escalation through a name.
    """
    return namespace == service_namespace or namespace == "default" or namespace.startswith("kube-")


def decide_owned_by_profile(
    namespace_obj: Mapping[str, Any] | None, profile: Mapping[str, Any] | None
) -> bool:
    """Whether the namespace's *controller* ownerReference is the same-named Profile.

    The Kubeflow profile controller creates a profile's namespace with
    ``controllerutil.SetControllerReference`` and refuses a namespace it does not own, so
    that reference (kind Profile, group kubeflow.org, the Profile's uid) is what makes a
    namespace a profile namespace; a matching name alone is not. The uid check stops a
    Profile deleted and re-created by someone else from inheriting the old namespace.
    """
    if namespace_obj is None or profile is None:
        return False
    meta = namespace_obj.get("metadata") or {}
    profile_meta = profile.get("metadata") or {}
    name = meta.get("name")
    uid = profile_meta.get("uid")
    if not uid or profile_meta.get("name") != name:
        return False
    for ref in meta.get("ownerReferences") or ():
        if not isinstance(ref, Mapping) or ref.get("controller") is not True:
            continue
        group = str(ref.get("apiVersion") or "").partition("/")[0]
        if (
            ref.get("kind") == "Profile"
            and group == PROFILE_GROUP
            and ref.get("name") == name
            and ref.get("uid") == uid
        ):
            return True
    return False


def decide_managed(
    namespace: str,
    *,
    profile: Mapping[str, Any] | None,
    namespace_obj: Mapping[str, Any] | None,
    settings: PodSecuritySettings,
    service_namespace: str,
) -> tuple[bool, str]:
    """Whether vsphere-kale manages ``namespace``, and why (a sentence fragment).

    ``profile`` is the same-named Profile's API JSON (None: there is none), ``namespace_obj``
    the Namespace's (None: it does not exist yet; nothing is written then, and its ADDED
    event brings the namespace back). Explicit admin lists win; otherwise ownership, never
    the name, decides.
    """
    if namespace in settings.excluded_namespaces:
        return False, f"namespace {namespace} is listed in podSecurity.excludedNamespaces"
    if namespace in settings.extra_namespaces:
        return True, f"namespace {namespace} is listed in podSecurity.extraNamespaces"
    if profile is None:
        return False, f"there is no Kubeflow Profile named {namespace}"
    if decide_protected(namespace, service_namespace=service_namespace):
        return False, (
            f"namespace {namespace} is a system namespace, never managed because of a "
            "Profile's name (list it in podSecurity.extraNamespaces to manage it)"
        )
    if namespace_obj is None:
        return False, f"namespace {namespace} does not exist yet"
    if not decide_owned_by_profile(namespace_obj, profile):
        return False, f"namespace not owned by Profile {namespace}"
    return True, f"Kubeflow Profile {namespace} exists and owns the namespace"


def build_desired(
    namespace: str, *, mode: str, settings: PodSecuritySettings, enforce_level: str | None = None
) -> Desired:
    """``enforce_level``: the level decided for this namespace when ``psaLevel`` is ``auto``
    (:mod:`vsphere_kale.policy.psa_level`); required then, ignored otherwise."""
    enforce = settings.psa_level if settings.psa_level != "auto" else enforce_level
    if mode == "psa" and enforce in (None, "auto"):
        raise ValueError("psaLevel auto: the enforce level is decided per namespace")
    if mode == "psp":
        return Desired(
            namespace,
            "psp",
            binding=DesiredBinding(
                name=settings.role_binding_name,
                cluster_role=settings.psp_cluster_role,
                group=f"system:serviceaccounts:{namespace}",
            ),
        )
    if mode == "psa":
        return Desired(
            namespace,
            "psa",
            labels={
                PSA_ENFORCE: str(enforce),
                PSA_ENFORCE_VERSION: "latest",
                PSA_WARN: settings.psa_warn_level,
                PSA_AUDIT: settings.psa_warn_level,
            },
        )
    if mode == "off":
        return Desired(namespace, "off")
    raise ValueError(f"unknown pod-security mode {mode!r}")


def plan(desired: Desired, actual: NamespaceFacts, *, settings: PodSecuritySettings) -> Plan:
    """What to do so ``actual`` satisfies ``desired``. Call only for managed namespaces
    (:func:`decide_managed`); ``settings`` supplies ``overrideExisting``."""
    ns = desired.namespace
    if desired.mode == "off":
        return Plan(ns, "skipped", "pod-security management is off (podSecurity.mode: off)")
    if not actual.exists:
        # Kubeflow creates the Profile first and the namespace right after; the namespace's
        # own ADDED event brings us back.
        return Plan(ns, "skipped", f"namespace {ns} does not exist yet")
    if actual.terminating:
        return Plan(ns, "skipped", f"namespace {ns} is being deleted")
    if desired.binding is not None:
        return _plan_binding(ns, desired.binding, actual)
    return _plan_labels(ns, desired.labels, actual, override=settings.override_existing)


def _grants(b: BindingFacts, want: DesiredBinding) -> bool:
    return _same_role(b, want) and Subject("Group", want.group) in b.subjects


def _same_role(b: BindingFacts, want: DesiredBinding) -> bool:
    return (
        b.role_ref_kind == "ClusterRole"
        and b.role_ref_name == want.cluster_role
        and b.role_ref_api_group == RBAC_GROUP
    )


def _plan_binding(ns: str, want: DesiredBinding, actual: NamespaceFacts) -> Plan:
    ours = next((b for b in actual.bindings if b.name == want.name), None)
    exact = (Subject("Group", want.group),)
    if ours is not None and _same_role(ours, want) and ours.subjects == exact:
        if ours.managed:
            return Plan(ns, "ok", f"rolebinding {want.name} grants clusterrole/{want.cluster_role}")
        # Same name and content but no label (created by hand, or label removed): ours by
        # name; label it so the watch sees it.
        return Plan(
            ns,
            "ok",
            f"rolebinding {want.name} grants clusterrole/{want.cluster_role}",
            actions=(PatchBinding(ns, want.name, label=True, adopt=True),),
        )
    if ours is not None and ours.managed:
        # Our binding was edited: repair it, even if another binding also grants the role,
        # because a managed object that silently differs from its spec misleads admins.
        return _repair(ns, want, ours)
    other = next((b for b in actual.bindings if b.name != want.name and _grants(b, want)), None)
    if other is not None:
        why = (
            f"rolebinding {other.name} already grants clusterrole/{want.cluster_role} "
            f"to {want.group}"
        )
        if other.managed:
            return Plan(ns, "ok", why)
        # Not labelled, and not ours to label: the service may patch and delete only the
        # RoleBinding named podSecurity.roleBindingName (RBAC resourceNames), so an equivalent
        # binding (the old tool's rb-all-sa_ns-<ns>) is left as it is and counted as enough.
        return Plan(ns, "ok", why + "; left as it is instead of creating a duplicate")
    if not actual.all_bindings:
        return Plan(
            ns,
            "create",
            "no managed rolebinding grants the role; the namespace's other bindings must be read",
            needs_all_bindings=True,
        )
    if ours is not None:
        # Same name, not labelled, wrong content: the name is ours by configuration.
        return _repair(ns, want, ours)
    return Plan(
        ns,
        "create",
        f"no rolebinding grants clusterrole/{want.cluster_role} to {want.group}: "
        "pods in the namespace cannot be created",
        actions=(CreateBinding(ns, want),),
    )


def _repair(ns: str, want: DesiredBinding, ours: BindingFacts) -> Plan:
    if _same_role(ours, want):
        return Plan(
            ns,
            "repair",
            f"rolebinding {want.name} was edited: its subjects no longer are exactly {want.group}",
            actions=(
                PatchBinding(
                    ns, want.name, subjects=(Subject("Group", want.group),), label=not ours.managed
                ),
            ),
        )
    return Plan(
        ns,
        "repair",
        f"rolebinding {want.name} refers to {ours.role_ref_kind.lower()}/{ours.role_ref_name} "
        f"instead of clusterrole/{want.cluster_role}",
        actions=(DeleteBinding(ns, want.name, uid=ours.uid), CreateBinding(ns, want)),
    )


def _plan_labels(
    ns: str, want: Mapping[str, str], actual: NamespaceFacts, *, override: bool
) -> Plan:
    owned = decide_owned_labels(actual.annotations)
    # The new ownership record: legacy name-only entries become "name: value we set".
    record = {k: v for k, v in owned.items() if v is not None}
    to_set: dict[str, str] = {}
    conflicts: list[str] = []
    drifted: list[str] = []
    for key, value in want.items():
        current = actual.labels.get(key)
        ours = key in owned and owned[key] in (None, current)
        if current == value:
            if key in owned:
                record[key] = value
            continue
        if current is None or ours or override:
            to_set[key] = value
            record[key] = value
            if key in owned:
                drifted.append(key)
            continue
        # An admin's explicit value: theirs, until overrideExisting says otherwise. A label we
        # once set but that was changed by hand keeps its old record, so it stays a conflict.
        conflicts.append(f"{key}={current}")
    actions: tuple[Action, ...] = ()
    if to_set or record != owned:
        actions = (PatchNamespaceLabels(ns, to_set, record),)
    if conflicts:
        found = ", ".join(sorted(conflicts))
        return Plan(
            ns,
            "conflict",
            f"namespace {ns} has {found} set by someone else, left alone "
            "(set podSecurity.overrideExisting: true to replace it)",
            actions,
        )
    if drifted:
        changed = ", ".join(sorted(drifted))
        return Plan(ns, "repair", f"pod-security labels we set were changed: {changed}", actions)
    if to_set:
        missing = ", ".join(sorted(to_set))
        return Plan(ns, "create", f"namespace {ns} lacks pod-security labels {missing}", actions)
    return Plan(ns, "ok", f"namespace {ns} has the pod-security labels", actions)
