"""``vsphere-kale doctor``: is this cluster's installation healthy, and if not, what to do.

:func:`fetch_facts` reads what the checks need (one request per resource type; a 403 makes
that read :class:`~vsphere_kale.policy.health.Unreadable`, never a crash) and
:func:`run_checks` turns the facts into :class:`Check` lines with the pure ``decide_*``
functions below, which reuse the verdicts the rest of vsphere-kale already has:
``policy.health.decide_webhook`` (caBundle), ``policy.health.decide_pvc`` (stuck claims),
``policy.podsecurity`` (mode and the per-namespace plan the reconciler would run) and
``rotation.plan_rotation`` (the served certificate).

Permissions: :func:`build_required_access` lists every (verb, resource) the service
uses, read from ``deploy/base/rbac.yaml`` as install renders it
(:func:`fetch_required_roles`). Each is asked
with a SubjectAccessReview for ``system:serviceaccount:<ns>:vsphere-kale``, which is what an
admin at a terminal wants to know; a caller that may not create SubjectAccessReviews gets a
SelfSubjectAccessReview of its own rights instead (the line says so), which is the right
question when doctor runs as the service account itself.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

import jsonpatch
import yaml

from vsphere_kale.errors import ConfigError, KubeForbidden
from vsphere_kale.install import render, rotation
from vsphere_kale.install.certs import service_dns_names
from vsphere_kale.policy import health, podsecurity
from vsphere_kale.settings import Settings

if TYPE_CHECKING:
    from vsphere_kale.kube import Kube

log = logging.getLogger(__name__)

Status = Literal["ok", "warn", "fail"]

EXPIRY_MARGIN = dt.timedelta(days=30)
SA_NAME = "vsphere-kale"


@dataclass(frozen=True)
class Check:
    name: str
    status: Status
    message: str
    hint: str = ""

    def to_json(self) -> dict[str, str]:
        return {
            "check": self.name,
            "status": self.status,
            "message": self.message,
            "hint": self.hint,
        }


# --- what the service needs (pure) -------------------------------------------------------------


@dataclass(frozen=True)
class Access:
    verb: str
    group: str
    resource: str
    namespace: str | None = None
    """None: cluster-wide (ClusterRole); else in our namespace (Role)."""
    name: str | None = None
    why: str = ""

    def describe(self) -> str:
        res = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f" in {self.namespace}" if self.namespace else ""
        named = f" {self.name!r}" if self.name else ""
        return f"{self.verb} {res}{named}{where}"


ROLE_NAME = "vsphere-kale"
"""The ClusterRole and the Role of deploy/base/rbac.yaml: what ``serve`` is granted."""


def build_required_access(roles: Sequence[Mapping[str, Any]]) -> tuple[Access, ...]:
    """Every permission ``serve`` uses, one per (verb, group, resource, name): the rules of
    our ClusterRole (cluster-wide) and Role (in its namespace), as rendered for this install.

    The manifest is the one source: :func:`fetch_required_roles` reads it, so doctor asks
    exactly what the installation grants (and what the RBAC tests prove is needed).
    """
    out: list[Access] = []
    for role in roles:
        md = role.get("metadata") or {}
        kind = role.get("kind")
        if md.get("name") != ROLE_NAME or kind not in ("ClusterRole", "Role"):
            continue
        where = (str(md.get("namespace") or "") or None) if kind == "Role" else None
        for index, rule in enumerate(role.get("rules") or []):
            why = f"{kind} {ROLE_NAME} rule {index + 1}"
            for group in rule.get("apiGroups") or []:
                for resource in rule.get("resources") or []:
                    for verb in rule.get("verbs") or []:
                        for name in rule.get("resourceNames") or [None]:
                            out.append(Access(verb, group, resource, where, name, why))
    return tuple(out)


def build_component_patches(kustomization: Mapping[str, Any]) -> list[tuple[str, list[Any]]]:
    """``(kind, JSON patch)`` of a kustomize Component's patches to our Role and ClusterRole."""
    found = []
    for entry in kustomization.get("patches") or []:
        target = entry.get("target") or {}
        if target.get("name") != ROLE_NAME or target.get("kind") not in ("ClusterRole", "Role"):
            continue
        ops = yaml.safe_load(entry.get("patch") or "[]")
        if isinstance(ops, list):
            found.append((str(target["kind"]), ops))
    return found


def fetch_required_roles(settings: Settings, *, cert_manager: bool) -> list[dict[str, Any]]:
    """Our Role and ClusterRole from deploy/base/rbac.yaml, with the cert-manager component's
    patches when it is used and this installation's settings (namespace, PSP role) applied,
    as ``vsphere-kale install`` renders them. Reads the shipped manifests."""
    deploy = render.find_deploy_dir()
    roles = render.read_documents(deploy / "base" / "rbac.yaml")
    if cert_manager:
        (kustomization,) = render.read_documents(
            deploy / "components" / "cert-manager" / "kustomization.yaml"
        )
        for kind, ops in build_component_patches(kustomization):
            roles = [
                jsonpatch.apply_patch(r, ops)
                if r.get("kind") == kind and (r.get("metadata") or {}).get("name") == ROLE_NAME
                else r
                for r in roles
            ]
    return render.build_manifests(roles, settings=settings)


# --- facts -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AccessResult:
    access: Access
    allowed: bool | None
    """None: the review itself could not be made."""
    how: str
    """"serviceaccount" (SubjectAccessReview for our SA) or "self" (SelfSubjectAccessReview)."""
    reason: str = ""


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

    @property
    def cert_manager(self) -> bool:
        if not isinstance(self.webhook, dict):
            return False
        annotations = (self.webhook.get("metadata") or {}).get("annotations") or {}
        return render.INJECT_CA_ANNOTATION in annotations


# --- verdicts (pure) ---------------------------------------------------------------------------


def _unreadable(name: str, what: health.Unreadable) -> Check:
    return Check(
        name,
        "fail",
        f"cannot check: {what.reason}",
        "run doctor as a cluster admin (or with a kubeconfig that may read it)",
    )


def decide_storage_class_check(
    settings: Settings, storage_classes: list[Any] | health.Unreadable
) -> Check:
    name = "rwx-storage-class"
    target = settings.storage.rwx_storage_class
    if target is None:
        return Check(
            name,
            "fail",
            "storage.rwxStorageClass is not set: the webhook rewrites nothing",
            "vsphere-kale install --rwx-storage-class nfs-client",
        )
    if isinstance(storage_classes, health.Unreadable):
        return _unreadable(name, storage_classes)
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
        return _unreadable(name, webhook)
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
    endpoints: dict[str, Any] | health.Unreadable | None, *, namespace: str
) -> Check:
    name = "webhook-endpoints"
    if isinstance(endpoints, health.Unreadable):
        return _unreadable(name, endpoints)
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
) -> Check:
    """The served certificate: present, trusted by the caBundle, not expiring within 30 days."""
    name = "serving-certificate"
    if isinstance(secret, health.Unreadable):
        return _unreadable(name, secret)
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
        plan = rotation.plan_rotation(
            data,
            rotation.bundle_of(webhook if isinstance(webhook, dict) else None),
            now=now,
            annotations=(secret.get("metadata") or {}).get("annotations") or {},
            dns_names=service_dns_names(render.NAME, settings.namespace),
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
) -> Check:
    """The mode, and every managed namespace whose plan is not ``ok`` (the reconciler's plan)."""
    name = "pod-security"
    ps = settings.pod_security
    mode = podsecurity.decide_mode(ps.mode, psp_served=psp_served)
    if mode == "off":
        return Check(name, "ok", "mode off (podSecurity.mode: off): nothing to check")
    for read in (namespaces, profiles, bindings):
        if isinstance(read, health.Unreadable):
            return _unreadable(name, read)
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
        desired = podsecurity.build_desired(ns, mode=mode, settings=ps)
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
) -> Check:
    """Claims asking a rewritten access mode that are stuck (reusing the status verdicts)."""
    name = "rwx-claims"
    if isinstance(pvcs, health.Unreadable):
        return _unreadable(name, pvcs)
    storage = settings.storage
    ctx = health.build_class_context(storage, storage_classes, webhook_verdict=webhook_verdict)
    events_by_ns: dict[str, list[Any]] = {}
    for event in events if not isinstance(events, health.Unreadable) else []:
        events_by_ns.setdefault((event.get("metadata") or {}).get("namespace", ""), []).append(
            event
        )
    stuck: list[str] = []
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
    if stuck:
        shown = ", ".join(stuck[:5]) + (f" and {len(stuck) - 5} more" if len(stuck) > 5 else "")
        return Check(
            name,
            "fail",
            f"{len(stuck)} ReadWriteMany claim(s) stuck: {shown}",
            "delete and recreate each claim (a Kale marshal volume: re-run the pipeline); "
            "the webhook now places it on " + (storage.rwx_storage_class or "the RWX class"),
        )
    return Check(name, "ok", f"no stuck ReadWriteMany claims ({checked} checked)")


def decide_rbac(results: Sequence[AccessResult], *, namespace: str) -> Check:
    name = "rbac"
    subject = f"system:serviceaccount:{namespace}:{SA_NAME}"
    if not results:
        return Check(
            name, "fail", "no access review could be made", "run doctor as a cluster admin"
        )
    unknown = [r for r in results if r.allowed is None]
    denied = [r for r in results if r.allowed is False]
    self_checked = any(r.how == "self" for r in results)
    who = "the current user" if self_checked else subject
    if denied:
        missing = "; ".join(f"{r.access.describe()} ({r.access.why})" for r in denied[:6])
        more = f" and {len(denied) - 6} more" if len(denied) > 6 else ""
        return Check(
            name,
            "fail",
            f"{who} lacks {len(denied)} permission(s): {missing}{more}",
            "re-run vsphere-kale install to restore the ClusterRole/Role vsphere-kale",
        )
    if unknown:
        return Check(
            name, "fail", f"could not review: {unknown[0].reason}", "run doctor as a cluster admin"
        )
    return Check(name, "ok", f"{who} has all {len(results)} permissions the service uses")


def run_checks(facts: DoctorFacts, *, now: dt.datetime) -> list[Check]:
    from vsphere_kale.install.doctor_namespaces import decide_extra_namespaces  # imports Check
    settings = facts.settings
    webhook_check = decide_webhook_configuration(facts.webhook, settings=settings, now=now)
    webhook_verdict = "missing" if facts.webhook is None else "ok"
    return [
        decide_storage_class_check(settings, facts.storage_classes),
        webhook_check,
        decide_endpoints(facts.endpoints, namespace=settings.namespace),
        decide_certificate(
            facts.secret,
            facts.webhook,
            settings=settings,
            cert_manager=facts.cert_manager,
            now=now,
        ),
        decide_pod_security_check(
            settings=settings,
            psp_served=facts.psp_served,
            namespaces=facts.namespaces,
            profiles=facts.profiles,
            bindings=facts.bindings,
        ),
        decide_pvcs(
            settings=settings,
            pvcs=facts.pvcs,
            storage_classes=facts.storage_classes,
            events=facts.events,
            webhook_verdict=webhook_verdict,
            now=now,
        ),
        decide_rbac(facts.access, namespace=settings.namespace),
        *decide_extra_namespaces(settings),
    ]


def decide_exit_code(checks: Sequence[Check]) -> int:
    return 1 if any(c.status == "fail" for c in checks) else 0


# --- fetch (I/O) -------------------------------------------------------------------------------


def _forbidden(what: str) -> str:
    return f"reading {what} is forbidden"


def fetch_settings(kube: Kube, namespace: str, fallback: Settings) -> tuple[Settings, str]:
    """The installed settings (ConfigMap), else ``fallback``."""
    from vsphere_kale.install.installer import fetch_installed_settings

    try:
        live = fetch_installed_settings(kube, namespace)
    except (KubeForbidden, ConfigError) as exc:
        log.info("doctor: installed settings not readable: %s", exc)
        live = None
    if live is None:
        return fallback, "defaults (no readable ConfigMap)"
    return live, f"configmap {namespace}/{render.CONFIG_MAP}"


def fetch_access(kube: Kube, accesses: Sequence[Access], *, namespace: str) -> list[AccessResult]:
    """One SubjectAccessReview per permission for our SA; SelfSubjectAccessReview if SARs are
    forbidden to the caller."""
    from vsphere_kale.kube import resources as r

    user = f"system:serviceaccount:{namespace}:{SA_NAME}"
    groups = [
        "system:serviceaccounts",
        f"system:serviceaccounts:{namespace}",
        "system:authenticated",
    ]
    results: list[AccessResult] = []
    use_self = False
    for access in accesses:
        attrs: dict[str, Any] = {
            "verb": access.verb,
            "group": access.group,
            "resource": access.resource,
        }
        if access.namespace:
            attrs["namespace"] = access.namespace
        if access.name:
            attrs["name"] = access.name
        if not use_self:
            body = {
                "apiVersion": "authorization.k8s.io/v1",
                "kind": "SubjectAccessReview",
                "spec": {"user": user, "groups": groups, "resourceAttributes": attrs},
            }
            try:
                answer = kube.create(r.SUBJECT_ACCESS_REVIEW, body)
                status = answer.get("status") or {}
                results.append(AccessResult(access, bool(status.get("allowed")), "serviceaccount"))
                continue
            except KubeForbidden:
                use_self = True
        body = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": attrs},
        }
        try:
            answer = kube.create(r.SELF_SUBJECT_ACCESS_REVIEW, body)
        except KubeForbidden as exc:
            results.append(AccessResult(access, None, "self", str(exc)))
            continue
        status = answer.get("status") or {}
        results.append(AccessResult(access, bool(status.get("allowed")), "self"))
    return results


def fetch_facts(kube: Kube, *, namespace: str, fallback: Settings) -> DoctorFacts:
    """Everything :func:`run_checks` needs, one request per resource type (plus the reviews)."""
    from vsphere_kale.health.status import (
        PVC_EVENTS_SELECTOR,
        fetch_psp_served,
        get_or_unreadable,
        read_or_unreadable,
    )
    from vsphere_kale.kube import resources as r

    settings, source = fetch_settings(kube, namespace, fallback)

    def items(resource: r.Resource, **query: Any) -> Callable[[], list[Any]]:
        return lambda: list(kube.list(resource, **query).get("items") or [])

    def get_one(
        resource: r.Resource, name: str, *, in_namespace: bool = False
    ) -> dict[str, Any] | health.Unreadable | None:
        where = namespace if in_namespace else None
        what = f"{resource.kind.lower()} {f'{where}/' if where else ''}{name}"
        return get_or_unreadable(
            lambda: kube.get(resource, name, namespace=where), forbidden=_forbidden(what)
        )

    facts = DoctorFacts(settings=settings, settings_source=source)
    facts.storage_classes = read_or_unreadable(
        items(r.STORAGE_CLASS), forbidden=_forbidden("storageclasses")
    )
    facts.webhook = get_one(r.MUTATING_WEBHOOK_CONFIGURATION, render.WEBHOOK_CONFIGURATION)
    facts.endpoints = get_one(r.ENDPOINTS, render.NAME, in_namespace=True)
    facts.secret = get_one(r.SECRET, render.TLS_SECRET, in_namespace=True)
    try:
        facts.psp_served = fetch_psp_served(kube)
    except KubeForbidden:
        facts.psp_served = False
    facts.namespaces = read_or_unreadable(items(r.NAMESPACE), forbidden=_forbidden("namespaces"))
    try:
        profile_version = kube.discovery().profile_version
    except KubeForbidden:
        profile_version = None
    if profile_version is not None:
        facts.profiles = read_or_unreadable(
            items(r.PROFILE.at(profile_version)), forbidden=_forbidden("profiles")
        )
    mode = podsecurity.decide_mode(settings.pod_security.mode, psp_served=facts.psp_served)
    if mode == "psp":
        facts.bindings = read_or_unreadable(
            items(r.ROLE_BINDING), forbidden=_forbidden("rolebindings")
        )
    facts.pvcs = read_or_unreadable(
        items(r.PERSISTENT_VOLUME_CLAIM), forbidden=_forbidden("persistentvolumeclaims")
    )
    facts.events = read_or_unreadable(
        items(r.EVENT, field_selector=PVC_EVENTS_SELECTOR), forbidden=_forbidden("events")
    )
    facts.access = fetch_access(
        kube,
        build_required_access(fetch_required_roles(settings, cert_manager=facts.cert_manager)),
        namespace=namespace,
    )
    return facts
