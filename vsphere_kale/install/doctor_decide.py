"""``vsphere-kale doctor``'s verdicts (pure): facts in, one :class:`Check` per line out.

:mod:`~vsphere_kale.install.doctor_fetch` reads the facts (:class:`DoctorFacts`; a 403 makes
a read :class:`~vsphere_kale.policy.health.Unreadable`, never a crash) and :func:`run_checks`
turns them into lines with the ``decide_*`` functions below, which reuse the verdicts the rest
of vsphere-kale already has: ``policy.health.decide_webhook`` (caBundle),
``policy.health.decide_pvc`` (stuck claims), ``policy.podsecurity`` (mode and the plan the
reconciler would run) and ``rotation.plan_rotation`` (the served certificate).

Truthful texts: a read the caller may not do is "cannot check", never "not set" or "missing";
when the missing right is the caller's own, the hint says so (and names a user as a user and
a service account as a service account) instead of suggesting a re-install.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from vsphere_kale.install import admission_policy, doctor_psa, render, rotation
from vsphere_kale.install.certs import service_dns_names
from vsphere_kale.install.doctor_access import AccessResult, decide_rbac
from vsphere_kale.install.doctor_check import Check, decide_unreadable
from vsphere_kale.install.doctor_guard import decide_guard_check
from vsphere_kale.install.doctor_namespaces import decide_extra_namespaces
from vsphere_kale.policy import health, podsecurity
from vsphere_kale.settings import Settings

EXPIRY_MARGIN = dt.timedelta(days=30)


@dataclass
class DoctorFacts:
    settings: Settings
    settings_source: str
    storage_classes: list[Any] | health.Unreadable = field(default_factory=list)
    webhook: dict[str, Any] | health.Unreadable | None = None
    endpoints: dict[str, Any] | health.Unreadable | None = None
    secret: dict[str, Any] | health.Unreadable | None = None
    psp_served: bool = False
    namespaces: list[Any] | health.Unreadable = field(default_factory=list)
    profiles: list[Any] | health.Unreadable | None = None
    """None: kubeflow.org Profiles are not served."""
    bindings: list[Any] | health.Unreadable = field(default_factory=list)
    pvcs: list[Any] | health.Unreadable = field(default_factory=list)
    events: list[Any] | health.Unreadable = field(default_factory=list)
    access: list[AccessResult] = field(default_factory=list)
    settings_unreadable: health.Unreadable | None = None
    """Neither the ConfigMap nor the Deployment could be read: ``settings`` is the fallback."""
    caller: str = ""
    """Who runs doctor (SelfSubjectReview); ``""`` when the server cannot say."""
    psa: list[Any] | str | None = None
    """``psaLevel`` decisions per managed namespace (:mod:`.doctor_psa`), psa mode only."""
    admission_policy: tuple[dict[str, Any] | None, dict[str, Any] | None] | None = None
    """(MutatingAdmissionPolicy, its binding) of ``install --admission policy``; None: neither."""
    guard_served: bool = False
    """The cluster serves ValidatingAdmissionPolicy v1 (the namespace guard can exist)."""
    guard: tuple[
        dict[str, Any] | health.Unreadable | None, dict[str, Any] | health.Unreadable | None
    ] = (None, None)
    """(the namespace guard's policy, its binding) as read."""
    reviews_forbidden: bool = False
    """The caller may not create SubjectAccessReviews."""

    @property
    def webhook_url(self) -> str | None:
        """``clientConfig.url`` of our webhook: called by URL, not through the Service."""
        if not isinstance(self.webhook, dict):
            return None
        for hook in self.webhook.get("webhooks") or []:
            url = (hook.get("clientConfig") or {}).get("url")
            if url:
                return str(url)
        return None

    @property
    def cert_manager(self) -> bool:
        if not isinstance(self.webhook, dict):
            return False
        annotations = (self.webhook.get("metadata") or {}).get("annotations") or {}
        return render.INJECT_CA_ANNOTATION in annotations


# --- verdicts (pure) ---------------------------------------------------------------------------


def decide_storage_class_check(
    settings: Settings,
    storage_classes: list[Any] | health.Unreadable,
    *,
    settings_unreadable: health.Unreadable | None = None,
    caller: str = "",
) -> Check:
    name = "rwx-storage-class"
    target = settings.storage.rwx_storage_class
    if target is None and settings_unreadable is not None:
        # Not "not set": the settings are there, the caller may not read them.
        return decide_unreadable(name, settings_unreadable, caller=caller)
    if target is None:
        return Check(
            name,
            "fail",
            "storage.rwxStorageClass is not set: the webhook rewrites nothing",
            "vsphere-kale install --rwx-storage-class nfs-client",
        )
    if isinstance(storage_classes, health.Unreadable):
        return decide_unreadable(name, storage_classes, caller=caller)
    found = next(
        (sc for sc in storage_classes if (sc.get("metadata") or {}).get("name") == target), None
    )
    if found is None:
        return Check(
            name,
            "fail",
            f"storage class {target} does not exist: rewritten claims stay Pending",
            f"create storage class {target} (e.g. install nfs-subdir-external-provisioner) or "
            "reinstall with --rwx-storage-class <an existing RWX class>",
        )
    provisioner = str(found.get("provisioner") or "")
    if not provisioner:
        return Check(
            name,
            "fail",
            f"storage class {target} names no provisioner",
            f"fix storage class {target}: set its provisioner",
        )
    if provisioner in health.BLOCK_PROVISIONERS:
        return Check(
            name,
            "fail",
            f"storage class {target} uses {provisioner}, which gives block volumes only",
            "point storage.rwxStorageClass at an NFS or vSAN File Services class",
        )
    return Check(name, "ok", f"storage class {target} exists (provisioner {provisioner})")


def decide_webhook_configuration(
    webhook: dict[str, Any] | health.Unreadable | None,
    *,
    settings: Settings,
    now: dt.datetime,
    caller: str = "",
) -> Check:
    name = "webhook-configuration"
    verdict = health.decide_webhook(
        webhook,  # type: ignore[arg-type]
        [],  # the class has its own line
        storage=settings.storage,
        now=now,
        name=render.WEBHOOK_CONFIGURATION,
    )
    if verdict.verdict == "unknown" and isinstance(webhook, health.Unreadable):
        return decide_unreadable(name, webhook, caller=caller)
    if verdict.verdict == "missing":
        return Check(
            name,
            "fail",
            f"MutatingWebhookConfiguration {render.WEBHOOK_CONFIGURATION} is missing",
            "vsphere-kale install --rwx-storage-class <class>",
        )
    ca_problems = [p for p in verdict.findings if "class" not in p.message.lower()]
    if ca_problems:
        return Check(
            name,
            "fail",
            ca_problems[0].message.rstrip("."),
            "re-run vsphere-kale install (it renews certificates expiring within 30 days)",
        )
    until = verdict.ca_bundle_not_after
    when = rotation.format_time(until) if until else "?"
    return Check(
        name, "ok", f"{render.WEBHOOK_CONFIGURATION} installed; caBundle valid until {when}"
    )


def decide_endpoints(
    endpoints: dict[str, Any] | health.Unreadable | None,
    *,
    namespace: str,
    webhook_url: str | None = None,
    caller: str = "",
) -> Check:
    name = "webhook-endpoints"
    if webhook_url is not None:
        # `install --webhook-url`: the API server never asks the Service for an endpoint.
        return Check(
            name,
            "ok",
            f"the API server calls the webhook at {webhook_url} (clientConfig.url), not through "
            f"service {namespace}/{render.NAME}",
        )
    if isinstance(endpoints, health.Unreadable):
        return decide_unreadable(name, endpoints, caller=caller)
    ready = sum(
        len(subset.get("addresses") or []) for subset in (endpoints or {}).get("subsets") or []
    )
    if ready == 0:
        return Check(
            name,
            "fail",
            f"service {namespace}/{render.NAME} has no ready endpoints: the API server cannot "
            "reach the webhook (failurePolicy Ignore: claims are admitted unchanged)",
            f"kubectl -n {namespace} get pods,events; kubectl -n {namespace} describe "
            f"deployment {render.NAME}",
        )
    return Check(name, "ok", f"service {namespace}/{render.NAME} has {ready} ready endpoint(s)")


def decide_certificate(
    secret: dict[str, Any] | health.Unreadable | None,
    webhook: dict[str, Any] | health.Unreadable | None,
    *,
    settings: Settings,
    cert_manager: bool,
    now: dt.datetime,
    caller: str = "",
) -> Check:
    """The served certificate: present, trusted by the caBundle, not expiring within 30 days."""
    name = "serving-certificate"
    if isinstance(secret, health.Unreadable):
        return decide_unreadable(name, secret, caller=caller)
    if secret is None:
        return Check(
            name,
            "fail",
            f"secret {settings.namespace}/{render.TLS_SECRET} is missing: the pods cannot start",
            "vsphere-kale install"
            + (" (cert-manager: check the Certificate)" if cert_manager else ""),
        )
    data = rotation.decode_secret_data(secret)
    tls_pem = data.get(rotation.TLS_CERT, b"")
    tls = rotation.parse_bundle(tls_pem)
    if not tls:
        return Check(
            name, "fail", f"{render.TLS_SECRET} has no readable tls.crt", "vsphere-kale install"
        )
    leaf = tls[0]
    bundle = rotation.parse_bundle(
        rotation.bundle_of(webhook if isinstance(webhook, dict) else None)
    )
    if bundle and not any(rotation.signed_by(leaf, ca) for ca in bundle):
        return Check(
            name,
            "fail",
            "the served certificate is not signed by any CA in the webhook's caBundle: the API "
            "server's calls fail TLS verification",
            "vsphere-kale install (repairs the caBundle)",
        )
    if leaf.not_valid_after_utc <= now + EXPIRY_MARGIN:
        fix = (
            "check cert-manager's Certificate status"
            if cert_manager
            else "the leader renews it within the hour; or run vsphere-kale install now"
        )
        return Check(
            name,
            "fail",
            f"the serving certificate expires {rotation.format_time(leaf.not_valid_after_utc)}",
            fix,
        )
    if not cert_manager:
        annotations = (secret.get("metadata") or {}).get("annotations") or {}
        plan = rotation.plan_rotation(
            data,
            rotation.bundle_of(webhook if isinstance(webhook, dict) else None),
            now=now,
            annotations=annotations,
            # The names the leader renews with: the Service's and the Secret's extras.
            dns_names=rotation.serving_names(
                service_dns_names(render.NAME, settings.namespace), annotations
            ),
        )
        if plan.action == "blocked":
            return Check(name, "fail", plan.reason, "vsphere-kale install")
        if plan.writes:
            return Check(
                name,
                "warn",
                f"the leader has a rotation step to do ({plan.action}): {plan.reason}",
                "nothing, if serve is running; else vsphere-kale install",
            )
    return Check(
        name,
        "ok",
        f"served certificate valid until {rotation.format_time(leaf.not_valid_after_utc)}"
        + (" (cert-manager)" if cert_manager else ""),
    )


def decide_pod_security_check(
    *,
    settings: Settings,
    psp_served: bool,
    namespaces: list[Any] | health.Unreadable,
    profiles: list[Any] | health.Unreadable | None,
    bindings: list[Any] | health.Unreadable,
    caller: str = "",
) -> Check:
    """The mode, and every managed namespace whose plan is not ``ok`` (the reconciler's plan)."""
    name = "pod-security"
    ps = settings.pod_security
    mode = podsecurity.decide_mode(ps.mode, psp_served=psp_served)
    if mode == "off":
        return Check(name, "ok", "mode off (podSecurity.mode: off): nothing to check")
    for read in (namespaces, profiles, bindings):
        if isinstance(read, health.Unreadable):
            return decide_unreadable(name, read, caller=caller)
    assert not isinstance(namespaces, health.Unreadable)
    assert not isinstance(bindings, health.Unreadable)
    assert not isinstance(profiles, health.Unreadable)
    profile_by_name = {
        (p.get("metadata") or {}).get("name"): p for p in (profiles or []) if isinstance(p, dict)
    }
    by_ns: dict[str, list[Any]] = {}
    for b in bindings:
        by_ns.setdefault((b.get("metadata") or {}).get("namespace", ""), []).append(b)
    managed: list[str] = []
    lacking: list[str] = []
    conflicts: list[str] = []
    for ns_obj in namespaces:
        ns = (ns_obj.get("metadata") or {}).get("name", "")
        is_managed, _ = podsecurity.decide_managed(
            ns,
            profile=profile_by_name.get(ns),
            namespace_obj=ns_obj,
            settings=ps,
            service_namespace=settings.namespace,
        )
        if not is_managed:
            continue
        managed.append(ns)
        # With psaLevel auto any level we set is fine here; doctor_psa judges the level.
        current = ((ns_obj.get("metadata") or {}).get("labels") or {}).get(podsecurity.PSA_ENFORCE)
        desired = podsecurity.build_desired(
            ns, mode=mode, settings=ps, enforce_level=current or "restricted"
        )
        facts = podsecurity.facts_from_objects(ns, ns_obj, bindings=by_ns.get(ns, []))
        outcome = podsecurity.plan(desired, facts, settings=ps).outcome
        if outcome in ("create", "repair"):
            lacking.append(ns)
        elif outcome == "conflict":
            conflicts.append(ns)
    what = (
        f"RoleBinding {ps.role_binding_name} -> ClusterRole {ps.psp_cluster_role}"
        if mode == "psp"
        else "pod-security.kubernetes.io labels"
    )
    source = "detected" if ps.mode == "auto" else "configured"
    if lacking:
        return Check(
            name,
            "fail",
            f"mode {mode} ({source}): {len(lacking)} of {len(managed)} managed namespaces lack "
            f"{what}: {', '.join(sorted(lacking))}",
            "check that serve runs (its leader reconciles), or run vsphere-kale reconcile --all",
        )
    if conflicts:
        return Check(
            name,
            "warn",
            f"mode {mode} ({source}): labels set by hand left alone in "
            f"{', '.join(sorted(conflicts))}",
            "set podSecurity.overrideExisting: true, or fix the labels by hand",
        )
    return Check(
        name, "ok", f"mode {mode} ({source}): all {len(managed)} managed namespaces have {what}"
    )


def decide_pvcs(
    *,
    settings: Settings,
    pvcs: list[Any] | health.Unreadable,
    storage_classes: list[Any] | health.Unreadable,
    events: list[Any] | health.Unreadable,
    webhook_verdict: str,
    now: dt.datetime,
    caller: str = "",
) -> Check:
    """Claims asking a rewritten access mode that are stuck (reusing the status verdicts).

    A warning, not a failure: a claim made before the webhook (or while it was down) is a
    workload to repair once, not a broken installation.
    """
    name = "rwx-claims"
    if isinstance(pvcs, health.Unreadable):
        return decide_unreadable(name, pvcs, caller=caller)
    storage = settings.storage
    ctx = health.build_class_context(storage, storage_classes, webhook_verdict=webhook_verdict)
    events_by_ns: dict[str, list[Any]] = {}
    for event in events if not isinstance(events, health.Unreadable) else []:
        events_by_ns.setdefault((event.get("metadata") or {}).get("namespace", ""), []).append(
            event
        )
    stuck: list[str] = []
    fixes: list[str] = []
    checked = 0
    for pvc in pvcs:
        md = pvc.get("metadata") or {}
        ns = md.get("namespace", "")
        modes = (pvc.get("spec") or {}).get("accessModes") or []
        if ns in storage.excluded_namespaces or not any(m in storage.access_modes for m in modes):
            continue
        if md.get("deletionTimestamp"):
            continue  # being deleted (recreated, as the hint says): no longer stuck
        checked += 1
        failures = health.latest_provisioning_failures(events_by_ns.get(ns, []))
        verdict = health.decide_pvc(pvc, storage=storage, ctx=ctx, failures=failures, now=now)
        if verdict.severity in ("error", "warning") and verdict.verdict != "ok":
            stuck.append(f"{ns}/{verdict.name} ({verdict.verdict})")
            fixes.append(decide_claim_fix(ns, verdict.name, verdict.verdict, settings=settings))
    if stuck:
        shown = ", ".join(stuck[:5]) + (f" and {len(stuck) - 5} more" if len(stuck) > 5 else "")
        unique = list(dict.fromkeys(fixes))
        hint = "; ".join(unique[:3]) + (" (and so on for each)" if len(unique) > 3 else "")
        return Check(name, "warn", f"{len(stuck)} ReadWriteMany claim(s) stuck: {shown}", hint)
    return Check(name, "ok", f"no stuck ReadWriteMany claims ({checked} checked)")


def decide_claim_fix(namespace: str, claim: str, verdict: str, *, settings: Settings) -> str:
    """The command that repairs one stuck claim."""
    if verdict == "rwx-on-block-class":
        target = settings.storage.rwx_storage_class or "<the RWX class>"
        return (
            f"vsphere-kale recreate-pvc {claim} -n {namespace} --rwx-storage-class {target} "
            "(a Kale marshal volume: or re-run the pipeline)"
        )
    return f"kubectl describe pvc {claim} -n {namespace} (its events say why it waits)"


def run_checks(facts: DoctorFacts, *, now: dt.datetime) -> list[Check]:
    settings = facts.settings
    caller = facts.caller
    webhook_check = decide_webhook_configuration(
        facts.webhook, settings=settings, now=now, caller=caller
    )
    webhook_verdict = "missing" if facts.webhook is None else "ok"
    if facts.admission_policy is not None:  # install --admission policy: no webhook to check
        status, message, fix = admission_policy.decide_policy_check(
            *facts.admission_policy,
            webhook_configured=isinstance(facts.webhook, dict),
            settings=settings,
        )
        webhook_check, webhook_verdict = Check("admission", status, message, fix), "ok"
    return [
        decide_storage_class_check(
            settings,
            facts.storage_classes,
            settings_unreadable=facts.settings_unreadable,
            caller=caller,
        ),
        webhook_check,
        decide_endpoints(
            facts.endpoints,
            namespace=settings.namespace,
            webhook_url=facts.webhook_url,
            caller=caller,
        ),
        decide_certificate(
            facts.secret,
            facts.webhook,
            settings=settings,
            cert_manager=facts.cert_manager,
            now=now,
            caller=caller,
        ),
        decide_pod_security_check(
            settings=settings,
            psp_served=facts.psp_served,
            namespaces=facts.namespaces,
            profiles=facts.profiles,
            bindings=facts.bindings,
            caller=caller,
        ),
        decide_pvcs(
            settings=settings,
            pvcs=facts.pvcs,
            storage_classes=facts.storage_classes,
            events=facts.events,
            webhook_verdict=webhook_verdict,
            now=now,
            caller=caller,
        ),
        Check(
            doctor_psa.NAME,
            *doctor_psa.decide_psa_level_check(
                facts.psa, settings=settings, psp_served=facts.psp_served
            ),
        ),
        decide_rbac(
            facts.access,
            namespace=settings.namespace,
            caller=caller,
            reviews_forbidden=facts.reviews_forbidden,
        ),
        decide_guard_check(
            settings=settings,
            served=facts.guard_served,
            policy=facts.guard[0],
            binding=facts.guard[1],
            caller=caller,
        ),
        *decide_extra_namespaces(settings),
    ]
