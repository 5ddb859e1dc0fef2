"""The namespace guard: a ValidatingAdmissionPolicy that narrows what our own service account
may change on a Namespace to what the reconciler writes.

RBAC cannot narrow ``patch namespaces``: profile namespaces are created at run time (no
``resourceNames``) and RBAC has no per-field rules. So a thief holding the service's token
could relabel any namespace -- ``enforce=privileged`` on ``kube-system``, or ``restricted`` to
break a team's workloads -- the broadest grant in docs/security.md's RBAC table. This policy,
evaluated by kube-apiserver for UPDATEs of namespaces *by our service account only*
(``matchConditions`` on the username), refuses:

- a change to any label outside ``pod-security.kubernetes.io/*``, any annotation other than
  ``vsphere-kale.io/managed-labels``, ``spec``, ``ownerReferences`` or ``finalizers``;
- a change to a Pod Security label on a namespace the reconciler would not manage
  (:func:`vsphere_kale.policy.podsecurity.decide_managed`, as far as one object shows it):
  one listed in ``podSecurity.extraNamespaces`` is allowed; one in ``excludedNamespaces`` is
  not; otherwise the namespace must carry a *controller* ownerReference to the same-named
  Profile (kind Profile, group kubeflow.org) and must not be ``default``, ``kube-*`` or ours.

What it cannot check: the reference's uid against the live Profile (a policy sees one object;
the reconciler checks the uid). It does not need to for this threat: the guard forbids our
account to add or edit ownerReferences, so the references it sees were written by someone
else -- the profile controller, or an admin.

The settings are CEL literals, as in :mod:`vsphere_kale.install.admission_policy` (a settings
change re-renders the policy; nothing to resolve at admission time). ``failurePolicy: Fail``:
if the API server cannot evaluate it, our writes to namespaces wait, nobody else's. Served as
``admissionregistration.k8s.io/v1`` from Kubernetes 1.30; ``podSecurity.namespaceGuard``
(:func:`decide_guard`) says whether to install it. Pure: settings in, dicts out.
"""

from __future__ import annotations

from vsphere_kale.errors import ConfigError
from vsphere_kale.install.admission_policy import LABELS, cel_list, cel_string
from vsphere_kale.policy.podsecurity_model import MANAGED_LABELS_ANNOTATION
from vsphere_kale.settings import Settings

Obj = dict[str, object]

NAME = "vsphere-kale-namespace-guard"
"""Policy and binding; kube-apiserver quotes it in every refusal."""
API_VERSION = "admissionregistration.k8s.io/v1"
RESOURCE = "validatingadmissionpolicies"
PSA_PREFIX = "pod-security.kubernetes.io/"
PROFILE_GROUP = "kubeflow.org"
SERVICE_ACCOUNT = "vsphere-kale"
"""render.NAME (not imported: render imports this module)."""


def decide_guard(choice: str, *, served: bool | None) -> bool:
    """Whether to install the guard. ``served``: the cluster serves
    ``validatingadmissionpolicies`` in v1 (None: rendering offline, no cluster to ask)."""
    if choice == "never":
        return False
    if served is False and choice == "always":
        raise ConfigError(
            "podSecurity.namespaceGuard",
            "'always' needs ValidatingAdmissionPolicy (admissionregistration.k8s.io/v1, Kubernetes "
            ">= 1.30), which this cluster does not serve; set it to auto or never",
        )
    # auto: whenever the cluster has it; offline, yes (v1 is in every supported Kubernetes).
    return served is not False


def _map_or_empty(path: str) -> str:
    """A map field of metadata, or an empty map when absent (``{}`` and absent are equal)."""
    return f"has({path}) ? {path} : {{}}"


def _unchanged_except(old: str, new: str, *, keep: str) -> str:
    """Every key of either map that ``keep`` (a predicate on ``k``) does not cover has the
    same value in both."""
    return (
        f"{old}.all(k, {keep} || (k in {new} && {new}[k] == {old}[k])) && "
        f"{new}.all(k, {keep} || k in {old})"
    )


def _same(parent: str, field: str) -> str:
    """``field`` of ``parent`` is equal in ``object`` and ``oldObject``; optional selection
    (``.?``), so absent in both is equal and absent in one is a change."""
    prefix = f".{parent}" if parent else ""
    return f"object{prefix}.?{field} == oldObject{prefix}.?{field}"


def build_guard_policy(settings: Settings) -> Obj:
    """The ValidatingAdmissionPolicy; its CEL is built here from the same constants the
    reconciler uses (the annotation's name, the Pod Security prefix)."""
    ps = settings.pod_security
    ours = settings.namespace
    username = f"system:serviceaccount:{ours}:{SERVICE_ACCOUNT}"
    is_psa = f"k.startsWith({cel_string(PSA_PREFIX)})"
    psa_changed = (
        "variables.oldLabels.exists(k, "
        f"{is_psa} && !(k in variables.newLabels && variables.newLabels[k] == "
        "variables.oldLabels[k])) || variables.newLabels.exists(k, "
        f"{is_psa} && !(k in variables.oldLabels))"
    )
    owned = (
        "has(object.metadata.ownerReferences) && object.metadata.ownerReferences.exists(r, "
        f'r.kind == "Profile" && r.apiVersion.startsWith({cel_string(PROFILE_GROUP + "/")}) && '
        "r.name == object.metadata.name && has(r.controller) && r.controller)"
    )
    protected = (
        f'(variables.name == {cel_string(ours)} || variables.name == "default" || '
        'variables.name.startsWith("kube-"))'
    )
    manageable = (
        "!(variables.name in variables.excluded) && (variables.name in variables.extra || "
        f"(!{protected} && variables.ownedByProfile))"
    )
    return {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": NAME, "labels": dict(LABELS)},
        "spec": {
            "failurePolicy": "Fail",
            "matchConstraints": {
                "resourceRules": [
                    {
                        "apiGroups": [""],
                        "apiVersions": ["v1"],
                        "operations": ["UPDATE"],
                        "resources": ["namespaces"],
                    }
                ]
            },
            "matchConditions": [
                {
                    "name": "by-vsphere-kale",
                    "expression": f"request.userInfo.username == {cel_string(username)}",
                }
            ],
            "variables": [
                {"name": "name", "expression": "object.metadata.name"},
                {"name": "extra", "expression": cel_list(ps.extra_namespaces)},
                {"name": "excluded", "expression": cel_list(ps.excluded_namespaces)},
                {"name": "oldLabels", "expression": _map_or_empty("oldObject.metadata.labels")},
                {"name": "newLabels", "expression": _map_or_empty("object.metadata.labels")},
                {
                    "name": "oldAnnotations",
                    "expression": _map_or_empty("oldObject.metadata.annotations"),
                },
                {
                    "name": "newAnnotations",
                    "expression": _map_or_empty("object.metadata.annotations"),
                },
                {"name": "ownedByProfile", "expression": owned},
            ],
            "validations": [
                {
                    "expression": _unchanged_except(
                        "variables.oldLabels", "variables.newLabels", keep=is_psa
                    ),
                    "message": "vsphere-kale may change only pod-security.kubernetes.io/* "
                    "labels of a namespace",
                    "reason": "Forbidden",
                },
                {
                    "expression": _unchanged_except(
                        "variables.oldAnnotations",
                        "variables.newAnnotations",
                        keep=f"k == {cel_string(MANAGED_LABELS_ANNOTATION)}",
                    ),
                    "message": "vsphere-kale may change only the "
                    f"{MANAGED_LABELS_ANNOTATION} annotation of a namespace",
                    "reason": "Forbidden",
                },
                {
                    "expression": " && ".join(
                        _same(parent, f)
                        for parent, f in (
                            ("", "spec"),
                            ("metadata", "ownerReferences"),
                            ("metadata", "finalizers"),
                        )
                    ),
                    "message": "vsphere-kale may not change a namespace's spec, "
                    "ownerReferences or finalizers",
                    "reason": "Forbidden",
                },
                {
                    "expression": f"!({psa_changed}) || {manageable}",
                    "messageExpression": (
                        '"vsphere-kale may set Pod Security labels only on a namespace its '
                        'Profile controls or one listed in podSecurity.extraNamespaces; " + '
                        'variables.name + " is neither (or is excluded) in the lists this '
                        "policy was rendered with; after changing them, re-run vsphere-kale "
                        'install"'
                    ),
                    "reason": "Forbidden",
                },
            ],
        },
    }


def build_guard_objects(settings: Settings) -> list[Obj]:
    """The policy and its binding (``Deny``: a refused write fails), in apply order."""
    if not settings.namespace:
        raise ConfigError("namespace", "the namespace guard needs the service's namespace")
    binding: Obj = {
        "apiVersion": API_VERSION,
        "kind": "ValidatingAdmissionPolicyBinding",
        "metadata": {"name": NAME, "labels": dict(LABELS)},
        "spec": {"policyName": NAME, "validationActions": ["Deny"]},
    }
    return [build_guard_policy(settings), binding]
