"""One claim's health verdict: small rules, the first that matches decides. PURE.

:func:`decide_pvc` reads the claim once into :class:`ClaimFacts`, then asks each rule of
:data:`PVC_RULES` in turn; a rule answers a :class:`ClaimVerdict` or None (not mine). Importable
from :mod:`vsphere_kale.policy.health` as well.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from vsphere_kale.policy.health_model import (
    BLOCK_PROVISIONERS,
    DEFAULT_CLASS_ANNOTATIONS,
    KALE_MARSHAL_SUFFIX,
    PENDING_GRACE,
    SELECTED_NODE_ANNOTATION,
    Event,
    ObjectMeta,
    PersistentVolumeClaim,
    PvcHealth,
    PvcVerdict,
    Severity,
    StorageClass,
    Unreadable,
)
from vsphere_kale.policy.storage import OPT_OUT_ANNOTATION, effective_class
from vsphere_kale.policy.text import parse_time
from vsphere_kale.settings import StorageSettings

# --- helpers ----------------------------------------------------------------------------------


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


_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


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


def _failure_for(failures: Mapping[str, Event], meta: ObjectMeta) -> str | None:
    event = failures.get(f"uid:{meta['uid']}") if meta.get("uid") else None
    if event is None:
        event = failures.get(f"name:{meta.get('name', '')}")
    if event is None:
        return None
    return (event.get("message") or "").strip() or None


# --- what the rules read ----------------------------------------------------------------------


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


@dataclass(frozen=True)
class ClaimFacts:
    """One claim as the rules see it, read from its JSON once."""

    name: str
    who: str
    """How a sentence names it (:func:`_describe`)."""
    modes: tuple[str, ...]
    asks_rwx: tuple[str, ...]
    """Its access modes the webhook rewrites (``storage.accessModes``)."""
    phase: str
    klass: str | None
    """The class it gets: its own, or the default class when it names none."""
    volume_name: str
    annotations: Mapping[str, str]
    age: int | None
    failure: str | None
    """The latest ProvisioningFailed message."""


def build_claim_facts(
    pvc: PersistentVolumeClaim,
    *,
    storage: StorageSettings,
    ctx: ClassContext,
    failures: Mapping[str, Event],
    now: dt.datetime,
) -> ClaimFacts:
    meta = pvc.get("metadata") or {}
    spec = pvc.get("spec") or {}
    status = pvc.get("status") or {}
    name = meta.get("name", "")
    annotations = meta.get("annotations") or {}
    modes = tuple(spec.get("accessModes") or ())
    requested = effective_class(annotations, spec.get("storageClassName"))
    created = parse_time(meta.get("creationTimestamp"))
    return ClaimFacts(
        name=name,
        who=_describe(name),
        modes=modes,
        asks_rwx=tuple(m for m in modes if m in storage.access_modes),
        phase=status.get("phase") or "Pending",
        # No class means the default class; "" means "no class" (static binding only).
        klass=ctx.default_class if requested is None else (requested or None),
        volume_name=spec.get("volumeName") or "",
        annotations=annotations,
        age=int((now - created).total_seconds()) if created else None,
        failure=_failure_for(failures, meta),
    )


@dataclass(frozen=True)
class ClaimVerdict:
    verdict: PvcVerdict
    severity: Severity | None
    message: str
    hint: str


PvcRule = Callable[[ClaimFacts, ClassContext], ClaimVerdict | None]


# --- the rules, in order ----------------------------------------------------------------------


def rule_lost(claim: ClaimFacts, ctx: ClassContext) -> ClaimVerdict | None:
    """``lost`` (error): its volume is gone."""
    if claim.phase != "Lost":
        return None
    return ClaimVerdict(
        "lost",
        "error",
        f"{claim.who} lost its volume {claim.volume_name or '(unknown)'}: the data "
        "cannot be reached.",
        "Restore the PersistentVolume, or delete and recreate the claim",
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


def rule_rwx_on_block_class(claim: ClaimFacts, ctx: ClassContext) -> ClaimVerdict | None:
    """``rwx-on-block-class``: asks an RWX mode the webhook rewrites, its class is neither the
    rwxStorageClass nor an rwxCapableClass, and either the class's provisioner is a vSphere
    block provisioner or (with an rwxStorageClass configured) it is not Bound. Error unless
    Bound; a Bound one is a warning (vSAN File Services served it: list the class in
    rwxCapableClasses)."""
    klass = claim.klass
    if not claim.asks_rwx or not klass or klass in ctx.rwx_classes:
        return None
    block = (ctx.provisioners or {}).get(klass) in BLOCK_PROVISIONERS
    if not (block or (ctx.rwx_storage_class and claim.phase != "Bound")):
        return None
    kind = "gives block volumes only" if block else "is not a ReadWriteMany class"
    mode = claim.asks_rwx[0]
    if claim.phase == "Bound":
        return ClaimVerdict(
            "rwx-on-block-class",
            "warning",
            f"{claim.who} asks {mode} on class {klass}, which {kind}, but is Bound "
            "(vSAN File Services may serve it).",
            f"If {klass} serves ReadWriteMany, add it to storage.rwxCapableClasses; "
            "otherwise recreate the claim",
        )
    # Same test as the webhook's (policy.storage): "False" opts out too.
    opted_out = claim.annotations.get(OPT_OUT_ANNOTATION, "").lower() == "false"
    if opted_out:
        why = "it opted out of the rewrite"
    elif ctx.webhook_verdict == "missing":
        why = "no webhook is installed to rewrite it"
    else:
        why = "it was created before the webhook rewrote such claims"
    message = f"{claim.who} asks {mode} but class {klass} {kind} ({why})"
    message += f"; provisioning failed: {claim.failure}" if claim.failure else "."
    return ClaimVerdict(
        "rwx-on-block-class",
        "error",
        message if message.endswith(".") else message + ".",
        _recreate_hint(claim.name, ctx, opted_out=opted_out),
    )


def rule_provisioning_failed(claim: ClaimFacts, ctx: ClassContext) -> ClaimVerdict | None:
    """``pending`` (error): Pending with a ProvisioningFailed event."""
    if claim.phase != "Pending" or not claim.failure:
        return None
    return ClaimVerdict(
        "pending",
        "error",
        f"{claim.who} is Pending: provisioning failed: {claim.failure}".rstrip(".") + ".",
        f"Check that storage class {claim.klass or '(default)'} can provision this claim",
    )


def rule_pending_by_design(claim: ClaimFacts, ctx: ClassContext) -> ClaimVerdict | None:
    """``pending`` (info): waiting for its first consumer, or younger than PENDING_GRACE."""
    if claim.phase != "Pending":
        return None
    # The scheduler records the chosen node on the claim; until then a claim of a
    # WaitForFirstConsumer class is waiting for a pod, not stuck.
    wait_for_consumer = claim.klass in ctx.wait_for_consumer and not claim.annotations.get(
        SELECTED_NODE_ANNOTATION
    )
    young = claim.age is not None and dt.timedelta(seconds=claim.age) < PENDING_GRACE
    if not (wait_for_consumer or young):
        return None
    why = " until a pod uses it." if wait_for_consumer else " while its volume is created."
    return ClaimVerdict("pending", "info", f"{claim.who} is Pending{why}", "")


def rule_pending_too_long(claim: ClaimFacts, ctx: ClassContext) -> ClaimVerdict | None:
    """``pending`` (warning): Pending past the grace period without a provisioning error."""
    if claim.phase != "Pending":
        return None
    return ClaimVerdict(
        "pending",
        "warning",
        f"{claim.who} has been Pending for {claim.age if claim.age is not None else '?'} s "
        "without a provisioning error.",
        f"Check the claim's events: kubectl describe pvc {claim.name}",
    )


PVC_RULES: tuple[PvcRule, ...] = (
    rule_lost,
    rule_rwx_on_block_class,
    rule_provisioning_failed,
    rule_pending_by_design,
    rule_pending_too_long,
)
"""First match wins; a claim no rule matches is ``ok``."""


def decide_pvc(
    pvc: PersistentVolumeClaim,
    *,
    storage: StorageSettings,
    ctx: ClassContext,
    failures: Mapping[str, Event],
    now: dt.datetime,
    recreate_refusal: str | None = None,
) -> PvcHealth:
    """One claim's verdict: the first of :data:`PVC_RULES` that matches decides, else ``ok``.

    ``recreate_refusal`` is carried into the row as it is (the recreation rule's sentence,
    decided by :func:`~vsphere_kale.policy.recreate.decide_recreate_refusal`)."""
    claim = build_claim_facts(pvc, storage=storage, ctx=ctx, failures=failures, now=now)
    verdict = next(
        (found for rule in PVC_RULES if (found := rule(claim, ctx)) is not None),
        ClaimVerdict("ok", None, "", ""),
    )
    status = pvc.get("status") or {}
    spec = pvc.get("spec") or {}
    capacity = (status.get("capacity") or {}).get("storage") or (
        ((spec.get("resources") or {}).get("requests") or {}).get("storage")
    )
    return PvcHealth(
        name=claim.name,
        access_modes=claim.modes,
        storage_class=claim.klass,
        phase=claim.phase,
        capacity=str(capacity) if capacity is not None else None,
        age_seconds=claim.age,
        kale_marshal=is_kale_marshal(claim.name),
        verdict=verdict.verdict,
        severity=verdict.severity,
        message=verdict.message,
        hint=verdict.hint,
        recreate_refusal=recreate_refusal,
    )
