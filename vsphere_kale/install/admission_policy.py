"""The RWX rewrite as admission policies evaluated inside kube-apiserver (no webhook, no TLS).

``vsphere-kale install --admission policy`` applies what :func:`build_policy_objects` renders
instead of the MutatingWebhookConfiguration:

- a MutatingAdmissionPolicy + binding: every rule of
  :func:`vsphere_kale.policy.storage.decide_storage_class`, in its order, as ``matchConditions``
  (CEL), and one JSONPatch that sets the class and records the original one, on CREATE of
  ``persistentvolumeclaims`` only;
- a ValidatingAdmissionPolicy + binding with ``validationActions: [Warn, Audit]`` that gives
  kubectl the webhook's warnings and the webhook's audit annotation.

**The settings are CEL literals, not parameters.** An earlier version read them from a
ConfigMap through ``paramKind``/``paramRef``. On kube-apiserver 1.36.3 a policy with
``paramKind`` that is deleted and created again (``uninstall`` then ``install``) could stay
inert for minutes: the binding's parameter was not resolved again, and
``parameterNotFoundAction: Allow`` made that silent -- claims were admitted unchanged. With
the values inlined there is nothing to resolve: a policy is active as soon as the API
server's policy informer has it. The price is that a settings change re-renders the policies,
which ``install`` does anyway (it applies every object it renders, in place).

The validating policy runs after every mutating one and sees the *mutated* claim, so it
recognises a rewrite by its result: on the target class with
``vsphere-kale.io/original-storage-class`` set. (The one claim it cannot tell apart: one
*created* already carrying that annotation and already on the target, e.g. a restored copy of
a rewritten claim; it gets the rewrite warning, which the webhook would not give. The object
stored is the same. See docs/admission-policy.md.)

``apiVersion`` is ``admissionregistration.k8s.io/v1`` on Kubernetes >= 1.36 (GA) and
``v1beta1`` on 1.34-1.35 (beta, behind the ``MutatingAdmissionPolicy`` gate): chosen from
discovery (:attr:`vsphere_kale.kube.Discovery.mutating_admission_policy_version`), or a flag
when rendering offline.

Pure: settings in, dicts out. The CEL strings are built here, from the same constants
:mod:`vsphere_kale.policy.storage` uses, so a renamed annotation cannot drift.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, Literal

from vsphere_kale.errors import ConfigError
from vsphere_kale.policy.storage import (
    LEGACY_CLASS_ANNOTATION,
    MAX_WARNING_LENGTH,
    OPT_OUT_ANNOTATION,
    ORIGINAL_CLASS_ANNOTATION,
)
from vsphere_kale.settings import Settings

Obj = dict[str, Any]

ADMISSION_MODES = ("webhook", "policy")
POLICY_GROUP = "admissionregistration.k8s.io"
POLICY_VERSIONS = ("v1", "v1beta1")
"""Preferred first: v1 is GA from 1.36; v1beta1 is served on 1.34-1.35 when enabled."""

MUTATING_POLICY = "vsphere-kale"
VALIDATING_POLICY = "vsphere-kale"
"""Short: kube-apiserver quotes it in every warning (``Validation failed for
ValidatingAdmissionPolicy 'vsphere-kale' with binding 'vsphere-kale': ...``)."""
AUDIT_KEY = "storage-class-rewrite"
"""Same key as the webhook's audit annotation (kube-apiserver prefixes the policy's name)."""
SERVER_FLAGS = ("--no-webhook", "--no-cert-rotation")
"""``serve``'s flags in policy mode: no review route, and no rotation (its steps keep the
webhook configuration's caBundle in lock-step with the Secret; install renews instead)."""
WEBHOOK_CONTAINER = "webhook"
WEBHOOK_SERVICE_PORT = "https"

LABELS = {"app.kubernetes.io/name": "vsphere-kale", "app.kubernetes.io/managed-by": "vsphere-kale"}
"""render.COMMON_LABELS (not imported: render imports this module)."""

Status = Literal["ok", "warn", "fail"]


def cel_string(value: str) -> str:
    """A CEL string literal (JSON's double-quoted escaping is valid CEL)."""
    return json.dumps(value)


def cel_list(values: Iterable[str]) -> str:
    """A CEL list of string literals, de-duplicated in order (``[]`` when empty)."""
    return json.dumps(list(dict.fromkeys(values)))


def _pointer(key: str) -> str:
    return "/metadata/annotations/" + key.replace("~", "~0").replace("/", "~1")


def build_literals(settings: Settings) -> dict[str, str]:
    """The settings the policies use, as CEL literals (what doctor compares, too)."""
    target = settings.storage.rwx_storage_class
    if not target:
        raise ConfigError(
            "storage.rwxStorageClass",
            "required for --admission policy; pass --rwx-storage-class (e.g. nfs-client)",
        )
    return {
        "target": cel_string(target),
        "accessModes": cel_list(settings.storage.access_modes),
        "rwxCapableClasses": cel_list(settings.storage.rwx_capable_classes),
        # The install namespace is always excluded, as in Settings.webhook_excluded_namespaces.
        "excludedNamespaces": cel_list([*settings.storage.excluded_namespaces, settings.namespace]),
    }


# --- CEL building blocks, shared by both policies ----------------------------------------------
# Optional chaining (`.?`, `[?]`) reads a key that may be absent without an error; the API
# server's CEL environment has it on from 1.29.

_ANNOTATIONS = "object.metadata.?annotations"
_LEGACY = f"{_ANNOTATIONS}[?{cel_string(LEGACY_CLASS_ANNOTATION)}]"
_HAS_CLASS = f"({_LEGACY}.hasValue() || has(object.spec.storageClassName))"
# The effective class (policy.storage.effective_class): the legacy annotation wins. "" when
# the claim names none; every use is guarded by _HAS_CLASS where "" and "none" differ.
_CURRENT = f'({_LEGACY}.hasValue() ? {_LEGACY}.value() : object.spec.?storageClassName.orValue(""))'
_PRE_BOUND = f'(object.spec.?volumeName.orValue("") != "" || ({_HAS_CLASS} && {_CURRENT} == ""))'
_DATA_SOURCE = "(has(object.spec.dataSource) || has(object.spec.dataSourceRef))"
_BLOCK = '(object.spec.?volumeMode.orValue("Filesystem") == "Block")'
_STATIC_BINDING = cel_string('storageClassName "" (static binding)')


def _condition(name: str, expression: str) -> Obj:
    return {"name": name, "expression": expression}


def _common_conditions(lit: Mapping[str, str]) -> list[Obj]:
    """policy.storage's rules 3, 5 and 6 (rule 2, no class, refuses to render): both policies
    start from these."""
    return [
        _condition(
            "namespace-not-excluded", f"!(request.namespace in {lit['excludedNamespaces']})"
        ),
        _condition(
            "not-opted-out",
            f"{_ANNOTATIONS}[?{cel_string(OPT_OUT_ANNOTATION)}]"
            '.orValue("").lowerAscii() != "false"',
        ),
        _condition(
            "requests-a-rewritten-mode",
            f"object.spec.?accessModes.orValue([]).exists(m, m in {lit['accessModes']})",
        ),
    ]


def _rewrite_conditions(lit: Mapping[str, str]) -> list[Obj]:
    """Rules 7-10: the mutating policy mutates only when all of these hold too."""
    return [
        _condition("not-pre-bound", f"!{_PRE_BOUND}"),
        _condition("no-data-source", f"!{_DATA_SOURCE}"),
        _condition("not-block-mode", f"!{_BLOCK}"),
        _condition("not-already-on-target", f"!({_HAS_CLASS} && {_CURRENT} == {lit['target']})"),
        _condition(
            "not-rwx-capable", f"!({_HAS_CLASS} && {_CURRENT} in {lit['rwxCapableClasses']})"
        ),
    ]


def build_rewrite_patch_expression(target: str) -> str:
    """The JSONPatch: the same operations as ``policy.storage.build_rewrite_patch``."""
    original = (
        f'JSONPatch{{op: "add", path: {cel_string(_pointer(ORIGINAL_CLASS_ANNOTATION))}, '
        f"value: {_CURRENT}}}"
    )
    return (
        # "add" below a missing map fails: create it first (metadata itself always exists).
        "(has(object.metadata.annotations) ? [] : "
        '[JSONPatch{op: "add", path: "/metadata/annotations", value: {}}])'
        f" + [{original}]"
        f" + ({_LEGACY}.hasValue() ? "
        f'[JSONPatch{{op: "replace", path: {cel_string(_pointer(LEGACY_CLASS_ANNOTATION))}, '
        f"value: {target}}}] : [])"
        f' + [JSONPatch{{op: "add", path: "/spec/storageClassName", value: {target}}}]'
    )


def _short(expr: str, limit: int = 40) -> str:
    """policy.storage._short in CEL."""
    return f'({expr}.size() <= {limit} ? {expr} : {expr}.substring(0, {limit - 1}) + "…")'


def build_rewrite_warning_expression(target: str) -> str:
    """policy.storage.build_rewrite_warning in CEL (three lengths, the same cut-offs)."""
    prev = "variables.previous"
    head = f'"storageClassName rewritten from " + {prev} + " to " + {target}'
    why = '" (ReadWriteMany needs an RWX-capable class)"'
    short = f'"storageClassName rewritten from " + {_short(prev)} + " to " + {_short(target)}'
    return (
        f"({head} + {why}).size() <= {MAX_WARNING_LENGTH} ? {head} + {why} : "
        f"(({head}).size() <= {MAX_WARNING_LENGTH} ? {head} : {short})"
    )


_CLAIM_CREATES = {
    "resourceRules": [
        {
            "apiGroups": [""],
            "apiVersions": ["v1"],
            "operations": ["CREATE"],
            "resources": ["persistentvolumeclaims"],
        }
    ],
    # Also PVCs sent through any other served version (as the webhook's).
    "matchPolicy": "Equivalent",
}


def build_mutating_policy(settings: Settings, *, api_version: str) -> Obj:
    lit = build_literals(settings)
    return {
        "apiVersion": f"{POLICY_GROUP}/{api_version}",
        "kind": "MutatingAdmissionPolicy",
        "metadata": {"name": MUTATING_POLICY, "labels": dict(LABELS)},
        "spec": {
            "matchConstraints": json.loads(json.dumps(_CLAIM_CREATES)),
            "matchConditions": [*_common_conditions(lit), *_rewrite_conditions(lit)],
            # Ignore, as the webhook's failurePolicy: an error in our policy must not block
            # every claim in the cluster; doctor reports claims left on a block class.
            "failurePolicy": "Ignore",
            # Seen again if a later mutation changes the claim (the webhook's IfNeeded).
            "reinvocationPolicy": "IfNeeded",
            "mutations": [
                {
                    "patchType": "JSONPatch",
                    "jsonPatch": {"expression": build_rewrite_patch_expression(lit["target"])},
                }
            ],
        },
    }


def build_validating_policy(settings: Settings) -> Obj:
    """Warnings only. ``apiVersion`` v1 (GA since 1.30) on every cluster that has MAP."""
    lit = build_literals(settings)
    target = lit["target"]
    rewritten = (
        f"{_ANNOTATIONS}[?{cel_string(ORIGINAL_CLASS_ANNOTATION)}].hasValue() && {_HAS_CLASS} && "
        f"{_CURRENT} == {target} && !{_PRE_BOUND} && !{_DATA_SOURCE} && !{_BLOCK}"
    )
    original = f'{_ANNOTATIONS}[?{cel_string(ORIGINAL_CLASS_ANNOTATION)}].orValue("")'
    volume = 'object.spec.?volumeName.orValue("")'
    pre_bound_message = (
        f'"claim is " + ({volume} != "" ? "pre-bound to volume " + {_short(volume)} : '
        f"{_STATIC_BINDING}) + "
        '"; storage class not rewritten"'
    )
    return {
        "apiVersion": f"{POLICY_GROUP}/v1",
        "kind": "ValidatingAdmissionPolicy",
        "metadata": {"name": VALIDATING_POLICY, "labels": dict(LABELS)},
        "spec": {
            "matchConstraints": json.loads(json.dumps(_CLAIM_CREATES)),
            "matchConditions": _common_conditions(lit),
            "failurePolicy": "Ignore",
            "variables": [
                {"name": "rewritten", "expression": rewritten},
                {
                    "name": "previous",
                    "expression": f'{original} == "" ? "the cluster default" : {original}',
                },
            ],
            # One validation per webhook warning; they exclude each other in the webhook's
            # order, so at most one warning, as from the webhook.
            "validations": [
                {
                    "expression": f"!{_PRE_BOUND}",
                    "messageExpression": pre_bound_message,
                    "reason": "Invalid",
                },
                {
                    "expression": f"{_PRE_BOUND} || !{_DATA_SOURCE}",
                    "message": "claim has a dataSource (clone/restore stays on its driver); "
                    "storage class not rewritten",
                },
                {
                    "expression": f"{_PRE_BOUND} || {_DATA_SOURCE} || !{_BLOCK}",
                    "message": "volumeMode Block cannot be served by NFS; "
                    "storage class not rewritten",
                },
                {
                    "expression": "!variables.rewritten",
                    "messageExpression": build_rewrite_warning_expression(target),
                },
            ],
            "auditAnnotations": [
                {
                    "key": AUDIT_KEY,
                    # "" (no annotation) unless rewritten; the webhook's value format.
                    "valueExpression": (
                        f'variables.rewritten ? ({original} == "" ? "(default)" : {original})'
                        f' + " -> " + {target} : ""'
                    ),
                }
            ],
        },
    }


def _binding(kind: str, *, api_version: str, policy: str) -> Obj:
    # No paramRef and no matchResources: the policy's own matchConditions decide (the
    # excluded namespaces among them), so the binding is the on/off switch only.
    return {
        "apiVersion": f"{POLICY_GROUP}/{api_version}",
        "kind": kind,
        "metadata": {"name": policy, "labels": dict(LABELS)},
        "spec": {"policyName": policy},
    }


def check_policy_version(api_version: str) -> str:
    if api_version not in POLICY_VERSIONS:
        raise ConfigError(
            "--admission-policy-version",
            f"{api_version!r} is not one of {', '.join(POLICY_VERSIONS)}",
        )
    return api_version


def build_policy_objects(settings: Settings, *, api_version: str) -> list[Obj]:
    """MutatingAdmissionPolicy + binding, ValidatingAdmissionPolicy + binding, in apply order
    (each policy before its binding: a binding to a missing policy is only inactive, but a
    reader of ``-o yaml`` expects this order)."""
    check_policy_version(api_version)
    validating_binding = _binding(
        "ValidatingAdmissionPolicyBinding", api_version="v1", policy=VALIDATING_POLICY
    )
    # Warn: the claim is never refused; kubectl prints the message. Audit: also in the log.
    validating_binding["spec"]["validationActions"] = ["Warn", "Audit"]
    return [
        build_mutating_policy(settings, api_version=api_version),
        _binding("MutatingAdmissionPolicyBinding", api_version=api_version, policy=MUTATING_POLICY),
        build_validating_policy(settings),
        validating_binding,
    ]


def build_policy_mode(
    manifests: Sequence[Obj], settings: Settings, *, api_version: str, deployment: str
) -> list[Obj]:
    """``--admission policy``: the rendered manifests without the MutatingWebhookConfiguration,
    the Deployment's ``webhook`` container and the Service's ``https`` port, with the policy
    objects. The ``serve`` container stays (the reconciler, the admin API and the probes), with
    :data:`SERVER_FLAGS`. A new list; ``manifests`` is untouched."""
    kept = [
        json.loads(json.dumps(o))
        for o in manifests
        if o.get("kind") != "MutatingWebhookConfiguration"
    ]
    for obj in kept:
        if (obj.get("metadata") or {}).get("name") != deployment:
            continue
        if obj.get("kind") == "Deployment":
            pod = obj["spec"]["template"]["spec"]
            pod["containers"] = [c for c in pod["containers"] if c.get("name") != WEBHOOK_CONTAINER]
            for container in pod["containers"]:
                if container.get("name") == deployment:
                    args = container.setdefault("args", [])
                    args.extend(flag for flag in SERVER_FLAGS if flag not in args)
        if obj.get("kind") == "Service":
            obj["spec"]["ports"] = [
                p for p in obj["spec"].get("ports") or [] if p.get("name") != WEBHOOK_SERVICE_PORT
            ]
    return [*kept, *build_policy_objects(settings, api_version=api_version)]


# --- doctor (pure) -----------------------------------------------------------------------------


def _contains(live: Any, want: Any) -> bool:
    """Every field of ``want`` in ``live`` with the same value (server defaults may be extra)."""
    if isinstance(want, dict):
        return isinstance(live, dict) and all(
            k in live and _contains(live[k], v) for k, v in want.items()
        )
    if isinstance(want, list):
        return (
            isinstance(live, list)
            and len(live) == len(want)
            and all(_contains(a, b) for a, b in zip(live, want, strict=True))
        )
    return bool(live == want)


def decide_policy_check(
    policy: Mapping[str, Any] | None,
    binding: Mapping[str, Any] | None,
    *,
    webhook_configured: bool,
    settings: Settings,
) -> tuple[Status, str, str]:
    """doctor's ``admission`` line when a MutatingAdmissionPolicy of ours is found.

    ``policy``/``binding`` as read (None: absent). A policy whose CEL differs from what the
    installed settings render means a hand edit or a settings change not yet installed: the
    API server rewrites by the policy, not by config.yaml.
    """
    fix = "vsphere-kale install --admission policy"
    if policy is None or binding is None:
        missing = "MutatingAdmissionPolicy" if policy is None else "MutatingAdmissionPolicyBinding"
        return "fail", f"{missing} {MUTATING_POLICY} is missing: claims are not rewritten", fix
    if webhook_configured:
        return (
            "warn",
            "both the webhook and the admission policy are installed (the first to run "
            "rewrites; the other finds the claim on the target)",
            "vsphere-kale uninstall, then install with the --admission you want",
        )
    version = str(policy.get("apiVersion", "")).rpartition("/")[2]
    try:
        want = build_mutating_policy(settings, api_version=version or "v1")["spec"]
    except ConfigError as exc:
        return "fail", str(exc), fix
    live = policy.get("spec") or {}
    drift = [
        key for key in ("matchConditions", "mutations") if not _contains(live.get(key), want[key])
    ]
    if drift:
        return (
            "warn",
            f"the admission policy's {' and '.join(drift)} differ from the installed settings",
            fix,
        )
    return (
        "ok",
        f"admission by policy: {policy.get('apiVersion', '?')} {MUTATING_POLICY}, class "
        f"{settings.storage.rwx_storage_class} (no webhook on the admission path)",
        "",
    )
