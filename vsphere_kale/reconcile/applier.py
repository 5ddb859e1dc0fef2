"""One namespace's pod security, planned and applied: the write half of the reconciler.

:class:`PodSecurityApplier` reads a namespace's facts (from the informer caches or live),
asks the pure :func:`vsphere_kale.policy.podsecurity.plan` what to do and writes it: create
and handle 409 rather than check-then-create, merge patches that touch only our labels, delete
then create for an edited roleRef (immutable in RBAC). The informer-driven
:class:`vsphere_kale.reconcile.reconciler.Reconciler` and the one-shot ``vsphere-kale reconcile``
share it.
Results (:class:`NamespaceResult`) and metrics live here too, since both use them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any, Protocol

from vsphere_kale.errors import KubeConflict, KubeError, KubeForbidden, KubeNotFound
from vsphere_kale.kube import Discovery, Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.kube.informers import LIST_TIMEOUT
from vsphere_kale.policy.podsecurity import (
    MANAGED_SELECTOR,
    Action,
    CreateBinding,
    DeleteBinding,
    Desired,
    NamespaceFacts,
    PatchBinding,
    PatchNamespaceLabels,
    Plan,
    binding_facts,
    build_binding_patch,
    build_desired,
    build_namespace_patch,
    build_role_binding,
    decide_managed,
    decide_owned_by_profile,
    facts_from_objects,
    plan,
)
from vsphere_kale.policy.text import (
    SERVICE_ACCOUNT_PREFIX,
    describe_user,
    forbidden_user,
    sentence,
)
from vsphere_kale.reconcile.events import (
    BINDING_CREATED,
    BINDING_REPAIRED,
    LABELS_APPLIED,
    RECONCILE_FAILED,
    EventRecorder,
)
from vsphere_kale.reconcile.metrics import ReconcilerMetrics
from vsphere_kale.reconcile.psa_auto import PsaAuto
from vsphere_kale.settings import Settings

log = logging.getLogger(__name__)

SETTLE_SECONDS = 3.0
"""How long a namespace waits for the caches to show our own write before acting anyway."""

# --- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class NamespaceResult:
    """What one reconcile of one namespace did (or, in a dry run, would do).

    ``outcome``: created | repaired | labels-applied | ok | skipped | conflict | failed |
    would-create | would-repair. ``conflict`` is an admin's hand-set PSA label we leave alone
    (not a failure). ``actions`` are human-readable lines; ``message`` is one sentence, for a
    failure what to do.
    """

    namespace: str
    outcome: str
    actions: tuple[str, ...]
    message: str

    @property
    def failed(self) -> bool:
        return self.outcome == "failed"

    def to_json(self) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "outcome": self.outcome,
            "actions": list(self.actions),
            "message": self.message,
        }


# --- where facts come from -------------------------------------------------------------------


class FactSource(Protocol):
    def profile(self, name: str) -> Mapping[str, Any] | None:
        """The same-named Profile (its uid decides ownership), or None."""
        ...

    def namespace(self, name: str) -> Mapping[str, Any] | None: ...

    def managed_bindings(self, namespace: str) -> list[Mapping[str, Any]] | None:
        """The managed RoleBindings of ``namespace``, or None when this source does not know
        them (the namespace's bindings are then listed if needed)."""
        ...


def profiles(discovery: Discovery) -> r.Resource | None:
    """The served Profile resource (``v1``, else ``v1beta1``), or None without Kubeflow."""
    version = discovery.profile_version
    return None if version is None else r.PROFILE.at(version)


#: Event reason on a namespace a same-named Profile exists for but that we refuse to manage.
NOT_OWNED = "PodSecurityNamespaceSkipped"


class LiveSource:
    """Reads with one GET per question: for ``reconcile --namespace`` and after a 409."""

    def __init__(self, kube: Kube, discovery: Discovery) -> None:
        self._kube = kube
        self._profiles = profiles(discovery)

    def profile(self, name: str) -> Mapping[str, Any] | None:
        if self._profiles is None:
            return None
        found: Mapping[str, Any] | None = self._kube.get_optional(self._profiles, name)
        return found

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self._kube.get_optional(r.NAMESPACE, name)

    def managed_bindings(self, namespace: str) -> list[Mapping[str, Any]] | None:
        return None


class SnapshotSource:
    """One list per resource type, for ``reconcile --all`` and a follower's reconcile_all."""

    def __init__(self, kube: Kube, discovery: Discovery, *, psp: bool) -> None:
        items = kube.list(r.NAMESPACE, timeout=LIST_TIMEOUT)
        self.namespaces = {i["metadata"]["name"]: i for i in items.get("items") or []}
        self.profiles: dict[str, Mapping[str, Any]] = {}
        served = profiles(discovery)
        if served is not None:
            listed = kube.list(served, timeout=LIST_TIMEOUT)
            self.profiles = {p["metadata"]["name"]: p for p in listed.get("items") or []}
        self._bindings: dict[str, list[Mapping[str, Any]]] = {}
        if psp:
            bindings = kube.list(
                r.ROLE_BINDING, label_selector=MANAGED_SELECTOR, timeout=LIST_TIMEOUT
            )
            for b in bindings.get("items") or []:
                self._bindings.setdefault(b["metadata"]["namespace"], []).append(b)

    def profile(self, name: str) -> Mapping[str, Any] | None:
        return self.profiles.get(name)

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self.namespaces.get(name)

    def managed_bindings(self, namespace: str) -> list[Mapping[str, Any]] | None:
        return list(self._bindings.get(namespace, ()))


# --- apply -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Written:
    """An object we wrote, and its resourceVersion: the caches must reach it (settling)."""

    kind: str  # "namespace" | "rolebinding"
    name: str
    resource_version: str


@dataclass(frozen=True)
class Attempt:
    result: NamespaceResult
    retry_after: float | None = None
    written: tuple[Written, ...] = ()


def resource_version_of(obj: Mapping[str, Any] | None) -> str:
    if obj is None:
        return ""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class PodSecurityApplier:
    """Plans one namespace and applies the plan; shared by the informer path and the CLI."""

    def __init__(
        self,
        kube: Kube,
        settings: Settings,
        *,
        mode: str,
        discovery: Discovery,
        events: EventRecorder | None = None,
        metrics: ReconcilerMetrics | None = None,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.mode = mode
        self.discovery = discovery
        self.events = events
        self.metrics = metrics
        ps = settings.pod_security
        self.psa_auto = (
            PsaAuto(kube, cni_ttl=ps.resync_seconds)
            if mode == "psa" and ps.psa_level == "auto"
            else None
        )

    # -- reads --

    def _facts(self, name: str, source: FactSource) -> NamespaceFacts:
        ns = source.namespace(name)
        managed = (source.managed_bindings(name) or []) if self.mode == "psp" else []
        # Sources know at most our managed bindings; plan() asks for the full list when those
        # do not satisfy the namespace.
        return facts_from_objects(name, ns, bindings=managed, all_bindings=False)

    def fetch_bindings(self, namespace: str) -> list[dict[str, Any]]:
        data = self.kube.list(r.ROLE_BINDING, namespace=namespace, timeout=LIST_TIMEOUT)
        return list(data.get("items") or [])

    # -- the reconcile --

    def reconcile(self, name: str, source: FactSource, *, dry_run: bool = False) -> Attempt:
        attempt = self._reconcile(name, source, dry_run=dry_run)
        if self.metrics is not None:
            self.metrics.reconciles.labels(attempt.result.outcome).inc()
        return attempt

    def _reconcile(self, name: str, source: FactSource, *, dry_run: bool) -> Attempt:
        ps = self.settings.pod_security
        if self.mode == "off":
            return Attempt(NamespaceResult(name, "skipped", (), "Pod-security management is off."))
        uid = ""
        try:
            profile = source.profile(name)
            ns_obj = source.namespace(name)
            managed, why = decide_managed(
                name,
                profile=profile,
                namespace_obj=ns_obj,
                settings=ps,
                service_namespace=self.settings.namespace,
            )
            if not managed:
                if profile is not None and ns_obj is not None:
                    # A same-named Profile exists but we refuse the namespace (not its owner,
                    # or a system namespace): say so where the admin looks.
                    self._refused(name, ns_obj, why, dry_run=dry_run)
                return Attempt(
                    NamespaceResult(name, "skipped", (), sentence(f"not managed: {why}"))
                )
            desired, auto_why = self._desired(name, ns_obj, profile, dry_run=dry_run)
            facts = self._facts(name, source)
            uid = facts.uid
            for _ in range(3):
                current = plan(desired, facts, settings=ps)
                if current.needs_all_bindings:
                    everything = tuple(binding_facts(b) for b in self.fetch_bindings(name))
                    facts = replace(facts, bindings=everything, all_bindings=True)
                    current = plan(desired, facts, settings=ps)
                if auto_why:
                    current = replace(current, reason=f"{current.reason}; {auto_why}")
                if dry_run or not current.actions:
                    return Attempt(self._result(current, applied=False, dry_run=dry_run))
                try:
                    written = self._apply(current, uid=facts.uid)
                except (KubeConflict, KubeNotFound) as exc:
                    # Changed between our read and our write (AlreadyExists, a uid
                    # precondition, a binding deleted under our patch): read live, plan again.
                    log.info("namespace %s: %s; planning again", name, exc)
                    facts = self._facts(name, LiveSource(self.kube, self.discovery))
                    continue
                return Attempt(self._result(current, applied=True, dry_run=False), written=written)
            raise KubeConflict(f"namespace {name} kept changing while we reconciled it")
        except KubeError as exc:
            message = self._failure_message(name, exc)
            log.warning(
                "namespace %s: reconcile failed: %s",
                name,
                message,
                extra={"namespace": name, "outcome": "failed"},
            )
            if self.events is not None and not dry_run:
                self.events.record(
                    name, uid=uid, reason=RECONCILE_FAILED, message=message, warning=True
                )
            return Attempt(
                NamespaceResult(name, "failed", (), message), retry_after=exc.retry_after
            )

    def _desired(
        self,
        name: str,
        ns_obj: Mapping[str, Any] | None,
        profile: Mapping[str, Any] | None,
        *,
        dry_run: bool,
    ) -> tuple[Desired, str]:
        """What the namespace must have; with ``psaLevel: auto`` the level decided for it
        (:mod:`.psa_auto`) and a sentence saying why."""
        ps = self.settings.pod_security
        if self.psa_auto is None or self.mode != "psa":
            return build_desired(name, mode=self.mode, settings=ps), ""
        if ns_obj is None:
            # Not there yet: plan() skips it, and the namespace's ADDED event brings it back.
            return build_desired(name, mode=self.mode, settings=ps, enforce_level="restricted"), ""
        decision = self.psa_auto.decide(
            ns_obj,
            runs_notebooks=decide_owned_by_profile(ns_obj, profile),
            dry_run=dry_run,
        )
        desired = build_desired(name, mode=self.mode, settings=ps, enforce_level=decision.level)
        return desired, f"psaLevel auto chose {decision.level}: {decision.auto.why}"

    def _refused(self, name: str, ns_obj: Mapping[str, Any], why: str, *, dry_run: bool) -> None:
        log.warning(
            "namespace %s: skipped: %s",
            name,
            why,
            extra={"namespace": name, "outcome": "skipped"},
        )
        if self.events is not None and not dry_run:
            uid = str((ns_obj.get("metadata") or {}).get("uid") or "")
            self.events.record(
                name, uid=uid, reason=NOT_OWNED, message=sentence(f"skipped: {why}"), warning=True
            )

    def _failure_message(self, name: str, exc: KubeError) -> str:
        if isinstance(exc, BindingForbidden):
            return str(exc)
        hint = ""
        if isinstance(exc, KubeForbidden):
            hint = forbidden_hint(forbidden_user(str(exc)), message=str(exc))
        elif exc.status in (0, 429) or exc.status >= 500:
            hint = "; it will be retried"
        return sentence(f"could not reconcile namespace {name}: {exc}{hint}")

    def _result(self, current: Plan, *, applied: bool, dry_run: bool) -> NamespaceResult:
        ns = current.namespace
        actions = current.describe()
        if dry_run and actions and current.outcome in ("create", "repair"):
            return NamespaceResult(
                ns, f"would-{current.outcome}", actions, sentence(current.reason)
            )
        if current.outcome in ("create", "repair") and applied:
            if self.mode == "psa":
                outcome = "labels-applied"
            else:
                outcome = "created" if current.outcome == "create" else "repaired"
            return NamespaceResult(ns, outcome, actions, sentence(current.reason))
        if current.outcome in ("create", "repair"):
            # Not applied and not a dry run cannot happen (plans with these outcomes have
            # actions); report it rather than pretend.
            return NamespaceResult(ns, "failed", actions, sentence(current.reason))
        return NamespaceResult(ns, current.outcome, actions, sentence(current.reason))

    # -- writes --

    def _count(self, verb: str, resource: str) -> None:
        if self.metrics is not None:
            self.metrics.writes.labels(verb, resource).inc()

    def _apply(self, current: Plan, *, uid: str) -> tuple[Written, ...]:
        written: list[Written] = []
        deleted = False
        for action in current.actions:
            written.extend(self._apply_one(action))
            deleted = deleted or isinstance(action, DeleteBinding)
        self._emit_events(current, uid=uid, repaired=deleted)
        log.info(
            "namespace %s: %s (%s)",
            current.namespace,
            current.outcome,
            "; ".join(current.describe()),
            extra={"namespace": current.namespace, "outcome": current.outcome},
        )
        return tuple(written)

    def _apply_one(self, action: Action) -> list[Written]:
        if isinstance(action, CreateBinding):
            return [self._create_binding(action)]
        if isinstance(action, DeleteBinding):
            self._delete_binding(action)
            return []
        if isinstance(action, PatchBinding):
            self._count("patch", "rolebindings")
            obj = self.kube.patch(
                r.ROLE_BINDING,
                action.name,
                build_binding_patch(action),
                namespace=action.namespace,
            )
            return [Written("rolebinding", action.name, resource_version_of(obj))]
        if isinstance(action, PatchNamespaceLabels):
            self._count("patch", "namespaces")
            obj = self.kube.patch(r.NAMESPACE, action.namespace, build_namespace_patch(action))
            return [Written("namespace", action.namespace, resource_version_of(obj))]
        raise TypeError(f"unknown action {action!r}")

    def _create_binding(self, action: CreateBinding) -> Written:
        try:
            self._count("create", "rolebindings")
            obj = self.kube.create(
                r.ROLE_BINDING,
                build_role_binding(action.namespace, action.binding),
                namespace=action.namespace,
            )
        except KubeForbidden as exc:
            raise BindingForbidden.explain(action, exc) from exc
        return Written("rolebinding", action.binding.name, resource_version_of(obj))

    def _delete_binding(self, action: DeleteBinding) -> None:
        try:
            self._count("delete", "rolebindings")
            self.kube.delete(
                r.ROLE_BINDING,
                action.name,
                namespace=action.namespace,
                preconditions={"uid": action.uid} if action.uid else None,
            )
        except KubeNotFound:
            pass  # already gone: the create that follows is what matters

    def _emit_events(self, current: Plan, *, uid: str, repaired: bool) -> None:
        if self.events is None:
            return
        ns = current.namespace
        for action in current.actions:
            if isinstance(action, CreateBinding):
                b = action.binding
                if repaired:
                    reason = BINDING_REPAIRED
                    text = f"Re-created RoleBinding {b.name}: {current.reason}"
                else:
                    reason = BINDING_CREATED
                    text = (
                        f"Created RoleBinding {b.name} granting clusterrole/{b.cluster_role} "
                        f"to {b.group}, so the namespace's pods may use its PodSecurityPolicy"
                    )
                self.events.record(ns, uid=uid, reason=reason, message=sentence(text))
            elif isinstance(action, PatchBinding):
                if action.adopt:
                    text = f"Adopted RoleBinding {action.name} (it already grants the role)"
                else:
                    text = f"Repaired RoleBinding {action.name}: {current.reason}"
                self.events.record(ns, uid=uid, reason=BINDING_REPAIRED, message=sentence(text))
            elif isinstance(action, PatchNamespaceLabels) and action.labels:
                pairs = ", ".join(f"{k}={v}" for k, v in sorted(action.labels.items()))
                self.events.record(
                    ns, uid=uid, reason=LABELS_APPLIED, message=sentence(f"Set labels {pairs}")
                )


def forbidden_hint(username: str, *, message: str = "") -> str:
    """What to do about a 403, for whoever was refused: the service's own account needs its
    RBAC back; a person (``vsphere-kale reconcile`` run as a user) lacks the right themselves.
    A 403 from an admission policy (ours: install/namespace_guard.py) is not about RBAC at all:
    granting more would change nothing."""
    if "ValidatingAdmissionPolicy" in message:
        return (
            "; an admission policy refused the write, not RBAC: see the policy named above "
            "(vsphere-kale's own is the namespace guard, docs/security.md)"
        )
    if not username or username.startswith(SERVICE_ACCOUNT_PREFIX):
        who = describe_user(username) if username else "the service account"
        return f"; grant {who} the permission named above (see deploy/ RBAC)"
    return (
        f"; {describe_user(username)} lacks the permission named above (your own right, not "
        "the service's): ask a cluster admin to run this or to grant it"
    )


class BindingForbidden(KubeForbidden):
    """A 403 creating the RoleBinding, with what to grant.

    Usually RBAC's escalation check: creating a binding to a ClusterRole requires holding
    every permission in it (here ``use`` on a PodSecurityPolicy) or the ``bind`` verb on that
    ClusterRole. Our RBAC grants ``bind`` on exactly the configured role, not ``use`` on
    every PSP as the earlier tool did.
    """

    @classmethod
    def explain(cls, action: CreateBinding, exc: KubeForbidden) -> BindingForbidden:
        where = f"rolebinding {action.namespace}/{action.binding.name}"
        refused = forbidden_user(str(exc))
        who = describe_user(refused) if refused else "the service account"
        if "cannot create resource" in str(exc):
            text = (
                f"cannot create {where}: {who} needs `create` on "
                f"rolebindings.rbac.authorization.k8s.io in namespace {action.namespace}"
            )
        else:
            text = (
                f"cannot create {where}: {who} needs `bind` on "
                f"clusterrole/{action.binding.cluster_role} (RBAC refuses to grant a role "
                "its creator neither holds nor may bind)"
            )
        return cls(sentence(text), status=exc.status, reason=exc.reason)
