"""Health verdicts for one namespace: PVCs, pod security, the webhook -> the status model.

Pure: the objects :mod:`vsphere_kale.health.status` read from the API (decoded JSON), the
settings and
"now" in; frozen dataclasses out, whose ``to_json()`` is the ``NamespaceStatus`` document the
admin API serves and the Jupyter widget renders (schema in ``/tmp/team/CONTRACTS.md`` and the
README).

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
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict

from vsphere_kale.policy.pem import decode_ca_bundle
from vsphere_kale.policy.storage import OPT_OUT_ANNOTATION, effective_class
from vsphere_kale.policy.text import format_time, parse_time, sentence
from vsphere_kale.settings import StorageSettings

API_VERSION = "vsphere-kale.io/v1alpha1"
KIND = "NamespaceStatus"

WEBHOOK_CONFIGURATION_NAME = "vsphere-kale"
"""The MutatingWebhookConfiguration the installer creates (deploy/base)."""

CA_EXPIRY_WARNING = dt.timedelta(days=30)
"""Warn this long before the caBundle expires: enough for an admin to rotate it calmly."""

PENDING_GRACE = dt.timedelta(seconds=60)
"""A claim younger than this is still being provisioned; Pending then is not yet a problem."""

KALE_MARSHAL_SUFFIX = "-kale-marshal-pvc"
"""Kale's KFP VolumeOp names the pipeline's marshal volume ``<workflow>-kale-marshal-pvc``."""

BLOCK_PROVISIONERS = frozenset({"csi.vsphere.vmware.com", "kubernetes.io/vsphere-volume"})
"""vSphere CSI (and the in-tree driver it replaced) give block volumes on a TKG guest cluster:
ReadWriteMany there needs vSAN File Services, which most clusters do not have."""

SELECTED_NODE_ANNOTATION = "volume.kubernetes.io/selected-node"

DEFAULT_CLASS_ANNOTATIONS = (
    "storageclass.kubernetes.io/is-default-class",
    "storageclass.beta.kubernetes.io/is-default-class",
)

Severity = Literal["error", "warning", "info"]
Overall = Literal["healthy", "degraded", "broken"]
PvcVerdict = Literal["ok", "rwx-on-block-class", "pending", "lost"]
PodSecurityVerdict = Literal["ok", "missing", "drifted", "conflict", "unmanaged", "off", "unknown"]
WebhookVerdict = Literal["ok", "missing", "ca-invalid", "ca-expiring", "class-missing", "unknown"]

_SEVERITY_RANK: Mapping[str, int] = {"error": 3, "warning": 2, "info": 1}


# --- Kubernetes JSON we read (not ours: TypedDicts, every key optional) --------------------


class ObjectMeta(TypedDict, total=False):
    name: str
    namespace: str
    uid: str
    creationTimestamp: str
    annotations: dict[str, str]
    labels: dict[str, str]


class PvcSpec(TypedDict, total=False):
    accessModes: list[str]
    storageClassName: str | None
    volumeName: str
    resources: dict[str, Any]


class PvcStatus(TypedDict, total=False):
    phase: str
    capacity: dict[str, str]


class PersistentVolumeClaim(TypedDict, total=False):
    metadata: ObjectMeta
    spec: PvcSpec
    status: PvcStatus


class ObjectReference(TypedDict, total=False):
    kind: str
    name: str
    namespace: str
    uid: str


class Event(TypedDict, total=False):
    metadata: ObjectMeta
    involvedObject: ObjectReference
    reason: str
    message: str
    type: str
    lastTimestamp: str | None
    eventTime: str | None
    firstTimestamp: str | None


class StorageClass(TypedDict, total=False):
    metadata: ObjectMeta
    provisioner: str
    volumeBindingMode: str


class WebhookClientConfig(TypedDict, total=False):
    caBundle: str
    url: str
    service: dict[str, Any]


class MutatingWebhook(TypedDict, total=False):
    name: str
    clientConfig: WebhookClientConfig


class MutatingWebhookConfiguration(TypedDict, total=False):
    metadata: ObjectMeta
    webhooks: list[MutatingWebhook]


@dataclass(frozen=True)
class Unreadable:
    """A read the caller was not allowed to do; ``reason`` names the missing permission."""

    reason: str


# --- results ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    component: Literal["pvc", "podSecurity", "webhook"]
    object: str
    severity: Severity
    message: str
    hint: str

    def to_json(self) -> dict[str, str]:
        return {
            "component": self.component,
            "object": self.object,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class PvcHealth:
    name: str
    access_modes: tuple[str, ...]
    storage_class: str | None
    phase: str
    capacity: str | None
    age_seconds: int | None
    kale_marshal: bool
    verdict: PvcVerdict
    severity: Severity | None
    message: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "accessModes": list(self.access_modes),
            "storageClass": self.storage_class,
            "phase": self.phase,
            "capacity": self.capacity,
            "ageSeconds": self.age_seconds,
            "kaleMarshal": self.kale_marshal,
            "verdict": self.verdict,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class PodSecurityFacts:
    """What :mod:`vsphere_kale.health.status` learned from ``policy.podsecurity`` for one namespace.

    Kept as plain values so this module does not depend on the planner's types: ``outcome``
    is ``Plan.outcome`` (``create`` | ``repair`` | ``ok`` | ``skipped`` | ``conflict``) and
    ``reason`` its sentence; ``unreadable`` is set instead when the facts could not be read.
    """

    mode: str
    managed: bool = False
    managed_reason: str = ""
    required: str = ""
    outcome: str = "skipped"
    reason: str = ""
    unreadable: str | None = None


@dataclass(frozen=True)
class PodSecurityHealth:
    mode: str
    managed: bool | None
    required: str
    present: bool | None
    verdict: PodSecurityVerdict
    severity: Severity | None
    message: str
    hint: str

    def to_json(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "managed": self.managed,
            "required": self.required,
            "present": self.present,
            "verdict": self.verdict,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class WebhookHealth:
    configured: bool | None
    rwx_storage_class: str | None
    rwx_class_exists: bool | None
    ca_bundle_not_after: dt.datetime | None
    verdict: WebhookVerdict
    severity: Severity | None
    message: str
    hint: str
    findings: tuple[Problem, ...] = ()
    """Every webhook problem found (the verdict is the worst): an expiring CA and a missing
    class are both worth fixing."""

    def to_json(self) -> dict[str, Any]:
        return {
            "configured": self.configured,
            "rwxStorageClass": self.rwx_storage_class,
            "rwxClassExists": self.rwx_class_exists,
            "caBundleNotAfter": _iso(self.ca_bundle_not_after),
            "verdict": self.verdict,
            "severity": self.severity,
            "message": self.message,
            "hint": self.hint,
        }


@dataclass(frozen=True)
class NamespaceHealth:
    namespace: str
    generated_at: dt.datetime
    source: str
    overall: Overall
    can_reconcile: bool
    pvcs: tuple[PvcHealth, ...]
    pod_security: PodSecurityHealth
    webhook: WebhookHealth
    problems: tuple[Problem, ...] = field(default=())

    def to_json(self) -> dict[str, Any]:
        return {
            "apiVersion": API_VERSION,
            "kind": KIND,
            "namespace": self.namespace,
            "generatedAt": _iso(self.generated_at),
            "source": self.source,
            "overall": self.overall,
            "canReconcile": self.can_reconcile,
            "pvcs": [p.to_json() for p in self.pvcs],
            "podSecurity": self.pod_security.to_json(),
            "webhook": self.webhook.to_json(),
            "problems": [p.to_json() for p in self.problems],
        }


# --- helpers ----------------------------------------------------------------------------------


def _iso(when: dt.datetime | None) -> str | None:
    if when is None:
        return None
    return format_time(when)


def is_kale_marshal(name: str) -> bool:
    return name.endswith(KALE_MARSHAL_SUFFIX)


def _describe(name: str) -> str:
    """How a sentence names the claim; Kale users know the marshal volume by its role."""
    if is_kale_marshal(name):
        return f"{name} (the Kale pipeline's marshal volume)"
    return f"Claim {name}"


def default_class(storage_classes: Iterable[StorageClass]) -> str | None:
    """The class a claim without ``storageClassName`` gets (newest default wins, as in 1.26+)."""
    defaults: list[tuple[str, str]] = []
    for sc in storage_classes:
        meta = sc.get("metadata") or {}
        annotations = meta.get("annotations") or {}
        if any(annotations.get(key) == "true" for key in DEFAULT_CLASS_ANNOTATIONS):
            defaults.append((meta.get("creationTimestamp") or "", meta.get("name") or ""))
    return max(defaults)[1] if defaults else None


def latest_provisioning_failures(events: Iterable[Event]) -> dict[str, Event]:
    """The latest ``ProvisioningFailed`` Event per claim, keyed ``uid:<uid>`` and ``name:<n>``.

    Events point at a claim by uid; a recreated claim with the same name must not inherit
    its predecessor's failure, so callers look up by uid first and by name only for events
    written without one.
    """
    latest: dict[str, tuple[dt.datetime, Event]] = {}
    for event in events:
        ref = event.get("involvedObject") or {}
        if event.get("reason") != "ProvisioningFailed" or ref.get("kind") != (
            "PersistentVolumeClaim"
        ):
            continue
        meta = event.get("metadata") or {}
        stamp = (
            parse_time(
                event.get("lastTimestamp")
                or event.get("eventTime")
                or event.get("firstTimestamp")
                or meta.get("creationTimestamp")
            )
            or _EPOCH  # undated events lose to dated ones
        )
        key = f"uid:{ref['uid']}" if ref.get("uid") else f"name:{ref.get('name', '')}"
        if key not in latest or stamp >= latest[key][0]:
            latest[key] = (stamp, event)
    return {key: value[1] for key, value in latest.items()}


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


def _failure_for(failures: Mapping[str, Event], meta: ObjectMeta) -> str | None:
    event = failures.get(f"uid:{meta['uid']}") if meta.get("uid") else None
    if event is None:
        event = failures.get(f"name:{meta.get('name', '')}")
    if event is None:
        return None
    return (event.get("message") or "").strip() or None


# --- PVCs -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ClassContext:
    """What the PVC rules need about storage classes and the webhook, decided once."""

    rwx_classes: frozenset[str]
    """The configured rwxStorageClass and every rwxCapableClass."""
    rwx_storage_class: str | None
    provisioners: Mapping[str, str] | None
    """Class name -> provisioner; ``None`` when storage classes could not be read."""
    default_class: str | None
    wait_for_consumer: frozenset[str]
    """Classes with ``volumeBindingMode: WaitForFirstConsumer``: their claims stay Pending
    until a pod uses them, by design."""
    webhook_verdict: str
    """The webhook's verdict: whether a recreated claim would now land on the RWX class."""


def build_class_context(
    storage: StorageSettings,
    storage_classes: Sequence[StorageClass] | Unreadable,
    *,
    webhook_verdict: str,
) -> ClassContext:
    rwx = set(storage.rwx_capable_classes)
    if storage.rwx_storage_class:
        rwx.add(storage.rwx_storage_class)
    if isinstance(storage_classes, Unreadable):
        return ClassContext(
            frozenset(rwx), storage.rwx_storage_class, None, None, frozenset(), webhook_verdict
        )
    provisioners = {
        (sc.get("metadata") or {}).get("name", ""): sc.get("provisioner", "")
        for sc in storage_classes
    }
    return ClassContext(
        frozenset(rwx),
        storage.rwx_storage_class,
        provisioners,
        default_class(storage_classes),
        frozenset(
            (sc.get("metadata") or {}).get("name", "")
            for sc in storage_classes
            if sc.get("volumeBindingMode") == "WaitForFirstConsumer"
        ),
        webhook_verdict,
    )


def _recreate_hint(name: str, ctx: ClassContext, *, opted_out: bool) -> str:
    if opted_out:
        return (
            f"Remove the annotation {OPT_OUT_ANNOTATION}=false and recreate the claim so the "
            f"webhook can place it on {ctx.rwx_storage_class or 'the RWX class'}"
        )
    if ctx.webhook_verdict == "missing":
        return "Ask an admin to install vsphere-kale: the webhook configuration is missing"
    if ctx.webhook_verdict == "class-missing":
        return (
            f"Ask an admin to create storage class {ctx.rwx_storage_class}, then recreate the claim"
        )
    target = ctx.rwx_storage_class or "the RWX class"
    if is_kale_marshal(name):
        return (
            f"Delete the claim and re-run the pipeline; the webhook now places RWX claims "
            f"on {target}"
        )
    return f"Delete and recreate the claim; the webhook now places RWX claims on {target}"


def decide_pvc(
    pvc: PersistentVolumeClaim,
    *,
    storage: StorageSettings,
    ctx: ClassContext,
    failures: Mapping[str, Event],
    now: dt.datetime,
) -> PvcHealth:
    """One claim's verdict. The first rule that matches decides:

    1. ``lost`` (error): its volume is gone.
    2. ``rwx-on-block-class``: asks one of the RWX access modes the webhook rewrites, its class
       is neither the rwxStorageClass nor an rwxCapableClass, and either the class's
       provisioner is a vSphere block provisioner, or (with an rwxStorageClass configured) it
       is not Bound. Error unless Bound; a Bound one is a warning (vSAN File Services served
       it: list the class in rwxCapableClasses). It was created before the webhook or opted
       out (annotation ``vsphere-kale.io/rewrite-storage-class: "false"``).
    3. ``pending``: error with the latest ProvisioningFailed message; else a warning once
       older than :data:`PENDING_GRACE`; info while waiting for its first consumer or young.
    4. ``ok``.
    """
    meta = pvc.get("metadata") or {}
    spec = pvc.get("spec") or {}
    status = pvc.get("status") or {}
    name = meta.get("name", "")
    annotations = meta.get("annotations") or {}
    modes = tuple(spec.get("accessModes") or ())
    phase = status.get("phase") or "Pending"
    requested = effective_class(annotations, spec.get("storageClassName"))
    # No class means the default class; "" means "no class" (static binding only).
    klass = ctx.default_class if requested is None else (requested or None)
    capacity = (status.get("capacity") or {}).get("storage") or (
        ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    )
    created = parse_time(meta.get("creationTimestamp"))
    age = int((now - created).total_seconds()) if created else None
    marshal = is_kale_marshal(name)
    failure = _failure_for(failures, meta)
    who = _describe(name)

    def result(
        verdict: PvcVerdict, severity: Severity | None, message: str, hint: str
    ) -> PvcHealth:
        return PvcHealth(
            name=name,
            access_modes=modes,
            storage_class=klass,
            phase=phase,
            capacity=str(capacity) if capacity is not None else None,
            age_seconds=age,
            kale_marshal=marshal,
            verdict=verdict,
            severity=severity,
            message=message,
            hint=hint,
        )

    if phase == "Lost":
        return result(
            "lost",
            "error",
            f"{who} lost its volume {spec.get('volumeName') or '(unknown)'}: the data "
            "cannot be reached.",
            "Restore the PersistentVolume, or delete and recreate the claim",
        )

    asks_rwx = [m for m in modes if m in storage.access_modes]
    if asks_rwx and klass and klass not in ctx.rwx_classes:
        provisioner = (ctx.provisioners or {}).get(klass)
        block = provisioner in BLOCK_PROVISIONERS
        if block or (ctx.rwx_storage_class and phase != "Bound"):
            # Same test as the webhook's (policy.storage): "False" opts out too.
            opted_out = annotations.get(OPT_OUT_ANNOTATION, "").lower() == "false"
            if opted_out:
                why = "it opted out of the rewrite"
            elif ctx.webhook_verdict == "missing":
                why = "no webhook is installed to rewrite it"
            else:
                why = "it was created before the webhook rewrote such claims"
            kind = "gives block volumes only" if block else "is not a ReadWriteMany class"
            if phase == "Bound":
                return result(
                    "rwx-on-block-class",
                    "warning",
                    f"{who} asks {asks_rwx[0]} on class {klass}, which {kind}, but is Bound "
                    "(vSAN File Services may serve it).",
                    f"If {klass} serves ReadWriteMany, add it to storage.rwxCapableClasses; "
                    "otherwise recreate the claim",
                )
            message = f"{who} asks {asks_rwx[0]} but class {klass} {kind} ({why})"
            message += f"; provisioning failed: {failure}" if failure else "."
            return result(
                "rwx-on-block-class",
                "error",
                message if message.endswith(".") else message + ".",
                _recreate_hint(name, ctx, opted_out=opted_out),
            )

    if phase == "Pending":
        if failure:
            return result(
                "pending",
                "error",
                f"{who} is Pending: provisioning failed: {failure}".rstrip(".") + ".",
                f"Check that storage class {klass or '(default)'} can provision this claim",
            )
        young = age is not None and dt.timedelta(seconds=age) < PENDING_GRACE
        # The scheduler records the chosen node on the claim; until then a claim of a
        # WaitForFirstConsumer class is waiting for a pod, not stuck.
        wait_for_consumer = klass in ctx.wait_for_consumer and not annotations.get(
            SELECTED_NODE_ANNOTATION
        )
        if wait_for_consumer or young:
            return result(
                "pending",
                "info",
                f"{who} is Pending"
                + (
                    " until a pod uses it."
                    if wait_for_consumer
                    else " while its volume is created."
                ),
                "",
            )
        return result(
            "pending",
            "warning",
            f"{who} has been Pending for {age if age is not None else '?'} s without a "
            "provisioning error.",
            f"Check the claim's events: kubectl describe pvc {name}",
        )

    return result("ok", None, "", "")


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


# --- webhook ----------------------------------------------------------------------------------


def decide_webhook(
    configuration: MutatingWebhookConfiguration | Unreadable | None,
    storage_classes: Sequence[StorageClass] | Unreadable,
    *,
    storage: StorageSettings,
    now: dt.datetime,
    name: str = WEBHOOK_CONFIGURATION_NAME,
) -> WebhookHealth:
    """Webhook configuration present, every caBundle parses and outlives 30 days, RWX class exists.

    Verdict precedence (worst first): ``unknown`` (not readable) / ``missing`` (error: RWX
    claims keep landing on block classes), ``ca-invalid`` (error: empty, unparsable or
    expired bundle — kube-apiserver cannot call the webhook), ``class-missing`` (error:
    rewritten claims stay Pending), ``ca-expiring`` (warning), ``ok``.
    """
    target = storage.rwx_storage_class
    findings: list[tuple[WebhookVerdict, Severity, str, str]] = []

    class_exists: bool | None
    if isinstance(storage_classes, Unreadable) or not target:
        class_exists = None
    else:
        class_exists = any(
            (sc.get("metadata") or {}).get("name") == target for sc in storage_classes
        )
    if class_exists is False:
        findings.append(
            (
                "class-missing",
                "error",
                f"Storage class {target} (storage.rwxStorageClass) does not exist: rewritten "
                "claims stay Pending.",
                f"Ask an admin to create storage class {target} or change storage.rwxStorageClass",
            )
        )

    if isinstance(configuration, Unreadable):
        return WebhookHealth(
            None,
            target,
            class_exists,
            None,
            "unknown",
            "info",
            sentence(configuration.reason, capitalize=False),
            "",
        )
    if configuration is None:
        return WebhookHealth(
            False,
            target,
            class_exists,
            None,
            "missing",
            "error",
            f"MutatingWebhookConfiguration {name} is missing: ReadWriteMany claims stay on "
            "block storage classes.",
            "Ask an admin to install vsphere-kale: the webhook configuration is missing",
        )

    not_after: dt.datetime | None = None
    webhooks = configuration.get("webhooks") or []
    if not webhooks:
        findings.append(
            (
                "ca-invalid",
                "error",
                f"MutatingWebhookConfiguration {name} has no webhooks.",
                "Reinstall vsphere-kale (vsphere-kale install)",
            )
        )
    for hook in webhooks:
        bundle = (hook.get("clientConfig") or {}).get("caBundle") or ""
        hook_name = hook.get("name", "")
        if not bundle:
            findings.append(
                (
                    "ca-invalid",
                    "error",
                    f"Webhook {hook_name} has an empty caBundle: the API server cannot verify it.",
                    "Ask an admin to rotate the webhook certificate (vsphere-kale certs)",
                )
            )
            continue
        try:
            certificates = decode_ca_bundle(bundle)
        except ValueError as exc:
            findings.append(
                (
                    "ca-invalid",
                    "error",
                    f"Webhook {hook_name}: {exc}.",
                    "Ask an admin to rotate the webhook certificate (vsphere-kale certs)",
                )
            )
            continue
        # During a rotation the bundle holds the old and the new CA: the webhook works as
        # long as the newest one does, so that is the expiry that matters.
        expiry = max(c.not_valid_after_utc for c in certificates)
        not_after = expiry if not_after is None else min(not_after, expiry)
    if not_after is not None:
        if not_after <= now:
            findings.append(
                (
                    "ca-invalid",
                    "error",
                    f"The webhook's CA expired on {_iso(not_after)}: claims are admitted "
                    "without the rewrite or refused.",
                    "Ask an admin to rotate the webhook certificate (vsphere-kale certs)",
                )
            )
        elif not_after - now <= CA_EXPIRY_WARNING:
            days = (not_after - now).days
            findings.append(
                (
                    "ca-expiring",
                    "warning",
                    f"The webhook's CA expires on {_iso(not_after)} (in {days} days).",
                    "Ask an admin to rotate the webhook certificate (vsphere-kale certs)",
                )
            )

    order: Mapping[str, int] = {"ca-invalid": 3, "class-missing": 2, "ca-expiring": 1}
    findings.sort(key=lambda f: order[f[0]], reverse=True)
    problems = tuple(Problem("webhook", name, sev, msg, hint) for _, sev, msg, hint in findings)
    if findings:
        verdict, severity, message, hint = findings[0]
        return WebhookHealth(
            True, target, class_exists, not_after, verdict, severity, message, hint, problems
        )
    message = f"MutatingWebhookConfiguration {name} is installed"
    message += f" and places ReadWriteMany claims on {target}." if target else "."
    return WebhookHealth(True, target, class_exists, not_after, "ok", None, message, "")


# --- the whole namespace ----------------------------------------------------------------------


def decide_overall(severities: Iterable[Severity | None]) -> Overall:
    """``broken`` on any error, ``degraded`` on any warning, else ``healthy`` (info ignored)."""
    worst = max((_SEVERITY_RANK[s] for s in severities if s), default=0)
    if worst >= _SEVERITY_RANK["error"]:
        return "broken"
    if worst >= _SEVERITY_RANK["warning"]:
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
) -> NamespaceHealth:
    """Every verdict for one namespace, the problems list (worst first) and ``overall``."""
    webhook = decide_webhook(
        webhook_configuration, storage_classes, storage=storage, now=now, name=webhook_name
    )
    ctx = build_class_context(storage, storage_classes, webhook_verdict=webhook.verdict)
    event_list: Sequence[Event] = [] if isinstance(events, Unreadable) else events
    failures = latest_provisioning_failures(event_list)

    problems: list[Problem] = []
    pvc_results: list[PvcHealth] = []
    if isinstance(pvcs, Unreadable):
        problems.append(Problem("pvc", "", "info", sentence(pvcs.reason, capitalize=False), ""))
    else:
        for pvc in sorted(pvcs, key=lambda p: (p.get("metadata") or {}).get("name", "")):
            health = decide_pvc(pvc, storage=storage, ctx=ctx, failures=failures, now=now)
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

    problems.sort(key=lambda p: _SEVERITY_RANK[p.severity], reverse=True)
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
