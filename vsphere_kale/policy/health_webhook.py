"""The webhook's health verdict: small rules over facts read once. PURE.

Each rule of :data:`WEBHOOK_RULES` returns the findings it sees; the rules are listed worst
first, so every finding is reported and the first one is the verdict. Importable from
:mod:`vsphere_kale.policy.health` as well.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vsphere_kale.policy.health_model import (
    ADMISSION_POLICY_NAME,
    CA_EXPIRY_WARNING,
    WEBHOOK_CONFIGURATION_NAME,
    MutatingWebhookConfiguration,
    Problem,
    Severity,
    StorageClass,
    Unreadable,
    WebhookHealth,
    WebhookVerdict,
    iso_or_none,
)
from vsphere_kale.policy.pem import decode_ca_bundle
from vsphere_kale.policy.text import sentence
from vsphere_kale.settings import StorageSettings

ROTATE = "Ask an admin to rotate the webhook certificate (vsphere-kale certs)"


@dataclass(frozen=True)
class HookCa:
    """One webhook's caBundle: its newest certificate's expiry, or why it cannot be used."""

    name: str
    not_after: dt.datetime | None
    problem: str = ""
    """``empty`` or the decoder's sentence; set when ``not_after`` is None."""


@dataclass(frozen=True)
class WebhookFacts:
    name: str
    target: str | None
    """storage.rwxStorageClass."""
    class_exists: bool | None
    """None: no class configured, or storage classes unreadable."""
    hooks: tuple[HookCa, ...]
    not_after: dt.datetime | None
    """The earliest expiry among the webhooks (each judged by its newest CA)."""
    now: dt.datetime


Finding = tuple[WebhookVerdict, Severity, str, str]
WebhookRule = Callable[[WebhookFacts], Iterable[Finding]]


def build_hook_ca(name: str, bundle: str) -> HookCa:
    if not bundle:
        return HookCa(name, None, "empty")
    try:
        certificates = decode_ca_bundle(bundle)
    except ValueError as exc:
        return HookCa(name, None, str(exc) or "the caBundle cannot be decoded")
    # During a rotation the bundle holds the old and the new CA: the webhook works as long
    # as the newest one does, so that is the expiry that matters.
    return HookCa(name, max(c.not_valid_after_utc for c in certificates))


def build_webhook_facts(
    configuration: MutatingWebhookConfiguration,
    storage_classes: Sequence[StorageClass] | Unreadable,
    *,
    storage: StorageSettings,
    now: dt.datetime,
    name: str,
) -> WebhookFacts:
    hooks = tuple(
        build_hook_ca(hook.get("name", ""), (hook.get("clientConfig") or {}).get("caBundle") or "")
        for hook in configuration.get("webhooks") or []
    )
    expiries = [h.not_after for h in hooks if h.not_after is not None]
    return WebhookFacts(
        name=name,
        target=storage.rwx_storage_class,
        class_exists=_class_exists(storage_classes, storage.rwx_storage_class),
        hooks=hooks,
        not_after=min(expiries) if expiries else None,
        now=now,
    )


def _class_exists(
    storage_classes: Sequence[StorageClass] | Unreadable, target: str | None
) -> bool | None:
    if isinstance(storage_classes, Unreadable) or not target:
        return None
    return any((sc.get("metadata") or {}).get("name") == target for sc in storage_classes)


# --- the rules, worst first -------------------------------------------------------------------


def rule_no_webhooks(facts: WebhookFacts) -> Iterable[Finding]:
    if not facts.hooks:
        yield (
            "ca-invalid",
            "error",
            f"MutatingWebhookConfiguration {facts.name} has no webhooks.",
            "Reinstall vsphere-kale (vsphere-kale install)",
        )


def rule_unusable_bundle(facts: WebhookFacts) -> Iterable[Finding]:
    """``ca-invalid``: empty or unparsable: kube-apiserver cannot call the webhook."""
    for hook in facts.hooks:
        if hook.problem == "empty":
            message = f"Webhook {hook.name} has an empty caBundle: the API server cannot verify it."
            yield ("ca-invalid", "error", message, ROTATE)
        elif hook.problem:
            yield ("ca-invalid", "error", f"Webhook {hook.name}: {hook.problem}.", ROTATE)


def rule_ca_expired(facts: WebhookFacts) -> Iterable[Finding]:
    if facts.not_after is not None and facts.not_after <= facts.now:
        yield (
            "ca-invalid",
            "error",
            f"The webhook's CA expired on {iso_or_none(facts.not_after)}: claims are admitted "
            "without the rewrite or refused.",
            ROTATE,
        )


def rule_class_missing(facts: WebhookFacts) -> Iterable[Finding]:
    """``class-missing`` (error): rewritten claims stay Pending."""
    if facts.class_exists is False:
        yield (
            "class-missing",
            "error",
            f"Storage class {facts.target} (storage.rwxStorageClass) does not exist: rewritten "
            "claims stay Pending.",
            f"Ask an admin to create storage class {facts.target} or change "
            "storage.rwxStorageClass",
        )


def rule_ca_expiring(facts: WebhookFacts) -> Iterable[Finding]:
    left = facts.not_after - facts.now if facts.not_after is not None else None
    if left is not None and dt.timedelta(0) < left <= CA_EXPIRY_WARNING:
        yield (
            "ca-expiring",
            "warning",
            f"The webhook's CA expires on {iso_or_none(facts.not_after)} (in {left.days} days).",
            ROTATE,
        )


WEBHOOK_RULES: tuple[WebhookRule, ...] = (
    rule_no_webhooks,
    rule_unusable_bundle,
    rule_ca_expired,
    rule_class_missing,
    rule_ca_expiring,
)
"""Worst first: the first finding is the verdict; none found is ``ok``."""


def decide_admission_policy(
    storage_classes: Sequence[StorageClass] | Unreadable,
    *,
    storage: StorageSettings,
    now: dt.datetime,
) -> WebhookHealth:
    """``install --admission policy``: kube-apiserver rewrites claims itself. No caBundle, no
    webhook to call: of :data:`WEBHOOK_RULES` only the missing RWX class applies."""
    target = storage.rwx_storage_class
    exists = _class_exists(storage_classes, target)
    facts = WebhookFacts(ADMISSION_POLICY_NAME, target, exists, (), None, now)
    findings = list(rule_class_missing(facts))
    if findings:
        verdict, severity, message, hint = findings[0]
        problem = Problem("webhook", ADMISSION_POLICY_NAME, severity, message, hint)
        return WebhookHealth(
            True, target, exists, None, verdict, severity, message, hint, (problem,), "policy"
        )
    message = (
        f"MutatingAdmissionPolicy {ADMISSION_POLICY_NAME} (evaluated by the API server) "
        "is installed"
    )
    message += f" and places ReadWriteMany claims on {target}." if target else "."
    return WebhookHealth(True, target, exists, None, "ok", None, message, "", (), "policy")


def decide_webhook(
    configuration: MutatingWebhookConfiguration | Unreadable | None,
    storage_classes: Sequence[StorageClass] | Unreadable,
    *,
    storage: StorageSettings,
    now: dt.datetime,
    name: str = WEBHOOK_CONFIGURATION_NAME,
    admission_policy: Mapping[str, Any] | Unreadable | None = None,
) -> WebhookHealth:
    """Webhook configuration present, every caBundle parses and outlives 30 days, RWX class exists.

    No webhook configuration but our MutatingAdmissionPolicy (``admission_policy``, read only
    when served): :func:`decide_admission_policy`. Verdict precedence (worst first):
    ``unknown`` (not readable) / ``missing`` (error: RWX claims keep landing on block
    classes), then :data:`WEBHOOK_RULES`: ``ca-invalid`` (error:
    no webhooks, an empty, unparsable or expired bundle), ``class-missing`` (error),
    ``ca-expiring`` (warning), else ``ok``.
    """
    target = storage.rwx_storage_class
    if configuration is None and isinstance(admission_policy, Mapping):
        return decide_admission_policy(storage_classes, storage=storage, now=now)
    if configuration is None and isinstance(admission_policy, Unreadable):
        # No webhook configuration, and the policy mode cannot be checked: say so, rather
        # than "missing" to a caller who cannot see the MutatingAdmissionPolicy.
        exists = _class_exists(storage_classes, target)
        reason = (
            f"No MutatingWebhookConfiguration {name}, and "
            f"{sentence(admission_policy.reason, capitalize=False)}"
        )
        return WebhookHealth(None, target, exists, None, "unknown", "info", reason, "")
    if isinstance(configuration, Unreadable):
        exists = _class_exists(storage_classes, target)
        reason = sentence(configuration.reason, capitalize=False)
        return WebhookHealth(None, target, exists, None, "unknown", "info", reason, "")
    if configuration is None:
        return WebhookHealth(
            False,
            target,
            _class_exists(storage_classes, target),
            None,
            "missing",
            "error",
            f"MutatingWebhookConfiguration {name} is missing: ReadWriteMany claims stay on "
            "block storage classes.",
            "Ask an admin to install vsphere-kale: the webhook configuration is missing",
        )
    facts = build_webhook_facts(configuration, storage_classes, storage=storage, now=now, name=name)
    findings = [finding for rule in WEBHOOK_RULES for finding in rule(facts)]
    problems = tuple(Problem("webhook", name, sev, msg, hint) for _, sev, msg, hint in findings)
    exists, not_after = facts.class_exists, facts.not_after
    if findings:
        verdict, severity, message, hint = findings[0]
        return WebhookHealth(
            True, target, exists, not_after, verdict, severity, message, hint, problems
        )
    message = f"MutatingWebhookConfiguration {name} is installed"
    message += f" and places ReadWriteMany claims on {target}." if target else "."
    return WebhookHealth(True, target, exists, not_after, "ok", None, message, "")
