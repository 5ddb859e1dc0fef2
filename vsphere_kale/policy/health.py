"""Health verdicts for one namespace: PVCs, pod security, the webhook -> the status model.

Pure: the objects :mod:`vsphere_kale.health.status` read from the API (decoded JSON), the
settings and "now" in; frozen dataclasses out, whose ``to_json()`` is the ``NamespaceStatus``
document the admin API serves and the Jupyter widget renders (schema in docs/health.md).

Where: the values in :mod:`~vsphere_kale.policy.health_model`, the claim rules in
:mod:`~vsphere_kale.policy.health_pvc`, the webhook rules in
:mod:`~vsphere_kale.policy.health_webhook`; pod security and the whole namespace here. Every
name is importable from this module.

Rules, in one place:

* Every finding has a severity. ``error``: something a user is stuck on now (a ReadWriteMany
  claim Pending on a block class, a managed namespace without its pod-security grant, no
  webhook). ``warning``: works today but will bite (CA expiring within 30 days, a claim Pending
  for another reason). ``info``: worth showing, not a problem (a component the caller may not
  read, a claim waiting for its first consumer).
* ``overall`` is ``broken`` when any finding is an error, ``degraded`` when any is a warning,
  else ``healthy``. It judges what could be read: a component the caller may not read is
  ``unknown`` and listed as an ``info`` problem naming the missing permission, so a notebook
  user's read-only view is not "degraded" merely for lacking cluster-scope rights.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from vsphere_kale.policy.health_model import (
    ADMISSION_POLICY_NAME,
    API_VERSION,
    BLOCK_PROVISIONERS,
    CA_EXPIRY_WARNING,
    DEFAULT_CLASS_ANNOTATIONS,
    KALE_MARSHAL_SUFFIX,
    KIND,
    PENDING_GRACE,
    SELECTED_NODE_ANNOTATION,
    SEVERITY_RANK,
    WEBHOOK_CONFIGURATION_NAME,
    Event,
    MutatingWebhook,
    MutatingWebhookConfiguration,
    NamespaceHealth,
    ObjectMeta,
    ObjectReference,
    Overall,
    PersistentVolumeClaim,
    PodSecurityFacts,
    PodSecurityHealth,
    PodSecurityVerdict,
    Problem,
    PvcHealth,
    PvcSpec,
    PvcStatus,
    PvcVerdict,
    Severity,
    StorageClass,
    Unreadable,
    WebhookClientConfig,
    WebhookHealth,
    WebhookVerdict,
    iso_or_none,
)
from vsphere_kale.policy.health_pvc import (
    PVC_RULES,
    ClaimFacts,
    ClaimVerdict,
    ClassContext,
    build_claim_facts,
    build_class_context,
    decide_pvc,
    default_class,
    is_kale_marshal,
    latest_provisioning_failures,
)
from vsphere_kale.policy.health_webhook import WEBHOOK_RULES, decide_webhook
from vsphere_kale.policy.recreate import decide_recreate_refusal
from vsphere_kale.policy.text import sentence
from vsphere_kale.settings import StorageSettings

__all__ = [
    "ADMISSION_POLICY_NAME",
    "API_VERSION",
    "BLOCK_PROVISIONERS",
    "CA_EXPIRY_WARNING",
    "DEFAULT_CLASS_ANNOTATIONS",
    "KALE_MARSHAL_SUFFIX",
    "KIND",
    "PENDING_GRACE",
    "PVC_RULES",
    "SELECTED_NODE_ANNOTATION",
    "SEVERITY_RANK",
    "WEBHOOK_CONFIGURATION_NAME",
    "WEBHOOK_RULES",
    "ClaimFacts",
    "ClaimVerdict",
    "ClassContext",
    "Event",
    "MutatingWebhook",
    "MutatingWebhookConfiguration",
    "NamespaceHealth",
    "ObjectMeta",
    "ObjectReference",
    "Overall",
    "PersistentVolumeClaim",
    "PodSecurityFacts",
    "PodSecurityHealth",
    "PodSecurityVerdict",
    "Problem",
    "PvcHealth",
    "PvcSpec",
    "PvcStatus",
    "PvcVerdict",
    "Severity",
    "StorageClass",
    "Unreadable",
    "WebhookClientConfig",
    "WebhookHealth",
    "WebhookVerdict",
    "build_claim_facts",
    "build_class_context",
    "build_classes_by_name",
    "build_namespace_status",
    "build_pods_by_claim",
    "decide_overall",
    "decide_pod_security",
    "decide_pvc",
    "decide_webhook",
    "default_class",
    "is_kale_marshal",
    "iso_or_none",
    "latest_provisioning_failures",
]


# --- pod security -----------------------------------------------------------------------------


_PLAN_VERDICTS: Mapping[str, tuple[PodSecurityVerdict, Severity | None, bool | None, str]] = {
    # plan outcome -> (verdict, severity, present, fallback message)
    "ok": ("ok", None, True, "{required} is in place"),
    "create": ("missing", "error", False, "{required} is missing: pods cannot start"),
    "repair": ("drifted", "error", False, "{required} has drifted from what is required"),
    "conflict": ("conflict", "warning", False, "An existing setting conflicts with {required}"),
    "skipped": ("unmanaged", None, None, "Nothing to do for this namespace"),
}


def decide_pod_security(
    facts: PodSecurityFacts, *, namespace: str, can_reconcile: bool
) -> PodSecurityHealth:
    """Map the planner's outcome to a verdict.

    ``create`` -> ``missing`` (error: pods cannot start), ``repair`` -> ``drifted`` (error:
    the binding or labels no longer admit Kale's pods), ``conflict`` -> ``conflict`` (warning:
    an admin's own setting we do not override), ``ok``; not managed -> ``unmanaged``, mode
    ``off`` -> ``off`` (neither is a problem); not readable -> ``unknown`` (info).
    """
    if facts.unreadable is not None:
        return PodSecurityHealth(
            facts.mode,
            None,
            facts.required,
            None,
            "unknown",
            "info",
            sentence(facts.unreadable, capitalize=False),
            "",
        )
    if facts.mode == "off":
        message = "Pod-security management is off (podSecurity.mode: off)."
        return PodSecurityHealth("off", False, "", None, "off", None, message, "")
    if not facts.managed:
        message = facts.managed_reason or f"Namespace {namespace} is not managed by vsphere-kale"
        return PodSecurityHealth(
            facts.mode,
            False,
            facts.required,
            None,
            "unmanaged",
            None,
            sentence(message, capitalize=False),
            "",
        )
    verdict, severity, present, fallback = _PLAN_VERDICTS.get(
        facts.outcome, _PLAN_VERDICTS["skipped"]
    )
    if verdict in ("missing", "drifted"):
        hint = (
            "Run Reconcile"
            if can_reconcile
            else f"Ask an admin to run Reconcile for namespace {namespace}"
        )
    elif verdict == "conflict":
        hint = (
            "Ask an admin: a hand-set value vsphere-kale does not override "
            "(podSecurity.overrideExisting) blocks the required setting"
        )
    else:
        hint = ""
    message = sentence(facts.reason or fallback.format(required=facts.required), capitalize=False)
    return PodSecurityHealth(
        facts.mode, True, facts.required, present, verdict, severity, message, hint
    )


# --- the whole namespace ----------------------------------------------------------------------


def build_classes_by_name(
    storage_classes: Sequence[StorageClass] | Unreadable,
) -> dict[str, Mapping[str, Any]]:
    """StorageClass name -> class, as the recreation rule takes them; empty when unreadable
    (then every class counts as missing: only the claim's own facts decide a refusal)."""
    if isinstance(storage_classes, Unreadable):
        return {}
    return {str((sc.get("metadata") or {}).get("name", "")): sc for sc in storage_classes}


def build_pods_by_claim(
    pods: Iterable[Mapping[str, Any]],
) -> dict[str, list[Mapping[str, Any]]]:
    """Claim name -> the pods whose volumes name it: each claim's rule then reads its own few
    pods, not every pod of the namespace (hundreds of claims times hundreds of pods)."""
    found: dict[str, list[Mapping[str, Any]]] = {}
    for pod in pods:
        names = {
            (volume.get("persistentVolumeClaim") or {}).get("claimName")
            for volume in (pod.get("spec") or {}).get("volumes") or ()
        }
        for name in names - {None}:
            found.setdefault(str(name), []).append(pod)
    return found


def decide_overall(severities: Iterable[Severity | None]) -> Overall:
    """``broken`` on any error, ``degraded`` on any warning, else ``healthy`` (info ignored)."""
    worst = max((SEVERITY_RANK[s] for s in severities if s), default=0)
    if worst >= SEVERITY_RANK["error"]:
        return "broken"
    if worst >= SEVERITY_RANK["warning"]:
        return "degraded"
    return "healthy"


def build_namespace_status(
    namespace: str,
    *,
    pvcs: Sequence[PersistentVolumeClaim] | Unreadable,
    events: Sequence[Event] | Unreadable,
    storage_classes: Sequence[StorageClass] | Unreadable,
    webhook_configuration: MutatingWebhookConfiguration | Unreadable | None,
    pod_security: PodSecurityFacts,
    storage: StorageSettings,
    can_reconcile: bool,
    source: str,
    now: dt.datetime,
    webhook_name: str = WEBHOOK_CONFIGURATION_NAME,
    admission_policy: Mapping[str, Any] | Unreadable | None = None,
    pods: Sequence[Mapping[str, Any]] | Unreadable | None = None,
) -> NamespaceHealth:
    """Every verdict for one namespace, the problems list (worst first) and ``overall``.

    ``pods`` (the namespace's pods; ``None`` when not read because
    :func:`~vsphere_kale.policy.recreate.decide_refusal_needs_pods` said no claim needs
    them, :class:`Unreadable` when the caller may not list them) decide the "in use" refusal
    of each row's ``recreateRefusal``; unread, only the claim's own facts decide it (the
    admin API checks the pods again when asked)."""
    webhook = decide_webhook(
        webhook_configuration,
        storage_classes,
        storage=storage,
        now=now,
        name=webhook_name,
        admission_policy=admission_policy,
    )
    ctx = build_class_context(storage, storage_classes, webhook_verdict=webhook.verdict)
    event_list: Sequence[Event] = [] if isinstance(events, Unreadable) else events
    failures = latest_provisioning_failures(event_list)

    problems: list[Problem] = []
    pvc_results: list[PvcHealth] = []
    if isinstance(pvcs, Unreadable):
        problems.append(Problem("pvc", "", "info", sentence(pvcs.reason, capitalize=False), ""))
    else:
        classes = build_classes_by_name(storage_classes)
        mounting = build_pods_by_claim(() if pods is None or isinstance(pods, Unreadable) else pods)
        for pvc in sorted(pvcs, key=lambda p: (p.get("metadata") or {}).get("name", "")):
            refusal = decide_recreate_refusal(
                pvc,
                pods=mounting.get((pvc.get("metadata") or {}).get("name", ""), ()),
                storage_classes=classes,
                storage=storage,
            )
            health = decide_pvc(
                pvc,
                storage=storage,
                ctx=ctx,
                failures=failures,
                now=now,
                recreate_refusal=refusal.message if refusal is not None else None,
            )
            pvc_results.append(health)
            if health.severity in ("error", "warning"):
                problems.append(
                    Problem("pvc", health.name, health.severity, health.message, health.hint)
                )
    if isinstance(events, Unreadable):
        problems.append(Problem("pvc", "", "info", sentence(events.reason, capitalize=False), ""))

    ps = decide_pod_security(pod_security, namespace=namespace, can_reconcile=can_reconcile)
    if ps.severity is not None:
        problems.append(Problem("podSecurity", namespace, ps.severity, ps.message, ps.hint))

    if webhook.findings:
        problems.extend(webhook.findings)
    elif webhook.severity is not None:
        problems.append(
            Problem("webhook", webhook_name, webhook.severity, webhook.message, webhook.hint)
        )

    problems.sort(key=lambda p: SEVERITY_RANK[p.severity], reverse=True)
    return NamespaceHealth(
        namespace=namespace,
        generated_at=now,
        source=source,
        overall=decide_overall(p.severity for p in problems),
        can_reconcile=can_reconcile,
        pvcs=tuple(pvc_results),
        pod_security=ps,
        webhook=webhook,
        problems=tuple(problems),
    )
