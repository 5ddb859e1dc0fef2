"""The pod-security reconciler: informers -> keyed queue -> plan -> apply, on the leader only.

Flow
----
Three ``kubernetes.informer.SharedInformer`` caches (list, then watch from the list's
resourceVersion; relist on 410 Gone) feed a :class:`~vsphere_kale.workqueue.WorkQueue` keyed
by namespace name:

- Profiles (kubeflow.org ``v1``, or ``v1beta1`` when ``v1`` is not served) -> the Profile's
  name, which is its namespace's name;
- Namespaces -> the name;
- RoleBindings labelled ``app.kubernetes.io/managed-by=vsphere-kale`` (psp mode only) -> their
  namespace.

A worker reads the caches (never a per-namespace GET), asks
:func:`vsphere_kale.policy.podsecurity.plan` what to do, and :class:`PodSecurityApplier`
writes. Only the leader (a Lease, :mod:`vsphere_kale.leader`) enqueues and writes; followers
keep warm caches so a failover starts without a relist. Every ``podSecurity.resyncSeconds``
the leader enqueues every managed namespace from the caches: zero list calls of ours, and
zero writes when nothing drifted (each informer also relists once per period, three list
calls, which heals any watch event a broken connection may have lost).

Why not watch every RoleBinding
-------------------------------
To find an equivalent binding we did not create (the earlier tool's ``rb-all-sa_ns-<ns>``) we
need bindings by roleRef and subject, not only ours. Kubeflow makes three or four RoleBindings
per profile namespace, so watching all of them means caching ~20,000 objects at 5,000
namespaces, for a question we ask once per namespace. Instead we watch only managed bindings
and, when those do not satisfy a namespace, list that namespace's RoleBindings (one call). An
equivalent binding found that way is *adopted* (labelled managed-by), so it enters the watched
set and the question is never asked again for that namespace: at steady state no lists.

Memory
------
Requests go through :mod:`vsphere_kale.jsonapi` (the client's ``ApiClient``, without the
generated ``CoreV1Api``, whose first use alone costs ~20 MB), caches hold plain dicts rather
than pydantic models, and :func:`_trim` keeps only what planning reads of each cached object.
Measured peak RSS: 83 MB at 1,000 profile namespaces, 122 MB at 5,000 (see the benchmark).

Writes
------
Create and handle 409 rather than check-then-create; a 409 (or a 404 under a patch, or a
failed uid precondition) means someone changed the objects after we read them, so we read
them again (live) and plan again. Namespace labels are a JSON merge patch touching only our
labels and our annotation. After a write the namespace waits (briefly, bounded) until the
caches have seen it, so a reconcile triggered in between does not act on stale state twice.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import SimpleNamespace
from typing import Any, Protocol

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.informer import ADDED, DELETED, MODIFIED, SharedInformer
from prometheus_client import CollectorRegistry, Counter, Gauge
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from vsphere_kale.errors import KubeConflict, KubeError, KubeForbidden, KubeNotFound
from vsphere_kale.events import (
    BINDING_CREATED,
    BINDING_REPAIRED,
    LABELS_APPLIED,
    RECONCILE_FAILED,
    EventRecorder,
)
from vsphere_kale.jsonapi import MERGE_PATCH, JsonApi, path
from vsphere_kale.kube import kube_errors, translate
from vsphere_kale.leader import LeaderElector
from vsphere_kale.policy.podsecurity import (
    MANAGED_SELECTOR,
    Action,
    CreateBinding,
    DeleteBinding,
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
    decide_mode,
    facts_from_objects,
    plan,
)
from vsphere_kale.settings import Settings
from vsphere_kale.workqueue import WorkQueue

log = logging.getLogger(__name__)

PROFILE_GROUP = "kubeflow.org"
WATCH_TIMEOUT_SECONDS = 300
"""Server-side watch timeout: a silently dead connection is noticed within this long."""
LIST_TIMEOUT = (10.0, 120.0)
SETTLE_SECONDS = 3.0
"""How long a namespace waits for the caches to show our own write before acting anyway."""

OUTCOMES = (
    "created",
    "repaired",
    "labels-applied",
    "ok",
    "skipped",
    "conflict",
    "failed",
    "would-create",
    "would-repair",
)


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


def _sentence(text: str) -> str:
    text = text.strip()
    if not text:
        return text
    text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


# --- metrics ---------------------------------------------------------------------------------


class ReconcilerMetrics:
    """Prometheus metrics of the reconciler, on the registry ``serve`` exposes at /metrics."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        self.reconciles = Counter(
            "vsphere_kale_podsecurity_reconciles",
            "Namespace reconciles, by result (created, repaired, labels-applied, ok, skipped, "
            "conflict, failed).",
            ["result"],
            registry=self.registry,
        )
        self.writes = Counter(
            "vsphere_kale_podsecurity_writes",
            "Writes sent to the API server by this replica, by verb and resource.",
            ["verb", "resource"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "vsphere_kale_podsecurity_queue_depth",
            "Namespaces waiting to be reconciled (not counting delayed retries).",
            registry=self.registry,
        )
        self.last_resync = Gauge(
            "vsphere_kale_podsecurity_last_full_resync_timestamp_seconds",
            "Unix time of the last full resync (every managed namespace enqueued).",
            registry=self.registry,
        )
        self.is_leader = Gauge(
            "vsphere_kale_podsecurity_is_leader",
            "1 while this replica holds the leader Lease and reconciles.",
            registry=self.registry,
        )
        self.mode = Gauge(
            "vsphere_kale_podsecurity_mode",
            "The resolved pod-security mode (1 for the mode in use).",
            ["mode"],
            registry=self.registry,
        )
        for result in OUTCOMES:
            self.reconciles.labels(result)

    def register_into(self, registry: CollectorRegistry) -> None:
        """Also expose these metrics on ``registry`` (the server's, for one /metrics)."""
        for collector in (
            self.reconciles,
            self.writes,
            self.queue_depth,
            self.last_resync,
            self.is_leader,
            self.mode,
        ):
            registry.register(collector)

    def write_count(self) -> float:
        """All writes so far (tests and the benchmark use it)."""
        total = 0.0
        for metric in self.writes.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    total += sample.value
        return total


# --- discovery -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Discovery:
    psp_served: bool
    profile_version: str | None
    """``v1``, ``v1beta1``, or None when Kubeflow's Profile CRD is not installed."""


def fetch_json(api_client: client.ApiClient, resource_path: str) -> dict[str, Any]:
    """GET a discovery path as JSON (the generated APIs have no call for /apis/<g>/<v>)."""
    with kube_errors(f"get {resource_path}"):
        data = JsonApi(api_client).get(resource_path)
    return data if isinstance(data, dict) else {}


def fetch_discovery(api_client: client.ApiClient) -> Discovery:
    """Which Profile version is served, and whether policy/v1beta1 serves PSPs."""
    groups = fetch_json(api_client, "/apis").get("groups") or []
    versions = {g.get("name"): [v.get("version") for v in g.get("versions") or []] for g in groups}
    kubeflow = versions.get(PROFILE_GROUP, [])
    profile_version = "v1" if "v1" in kubeflow else ("v1beta1" if "v1beta1" in kubeflow else None)
    psp_served = False
    if "v1beta1" in versions.get("policy", []):
        resources = fetch_json(api_client, "/apis/policy/v1beta1").get("resources") or []
        psp_served = any(r.get("name") == "podsecuritypolicies" for r in resources)
    return Discovery(psp_served=psp_served, profile_version=profile_version)


# --- where facts come from -------------------------------------------------------------------


class FactSource(Protocol):
    def has_profile(self, name: str) -> bool: ...

    def namespace(self, name: str) -> Mapping[str, Any] | None: ...

    def managed_bindings(self, namespace: str) -> list[Mapping[str, Any]] | None:
        """The managed RoleBindings of ``namespace``, or None when this source does not know
        them (the namespace's bindings are then listed if needed)."""
        ...


def _profiles_path(version: str, *name: str) -> str:
    return path("apis", PROFILE_GROUP, version, "profiles", *name)


NAMESPACES_PATH = path("api", "v1", "namespaces")
ALL_ROLEBINDINGS_PATH = path("apis", "rbac.authorization.k8s.io", "v1", "rolebindings")


def _rolebindings_path(namespace: str, *name: str) -> str:
    return path(
        "apis", "rbac.authorization.k8s.io", "v1", "namespaces", namespace, "rolebindings", *name
    )


class LiveSource:
    """Reads with one GET per question: for ``reconcile --namespace`` and after a 409."""

    def __init__(self, api_client: client.ApiClient, discovery: Discovery) -> None:
        self._api = JsonApi(api_client)
        self._discovery = discovery

    def has_profile(self, name: str) -> bool:
        version = self._discovery.profile_version
        if version is None:
            return False
        try:
            with kube_errors(f"get profile {name}"):
                self._api.get(_profiles_path(version, name))
        except KubeNotFound:
            return False
        return True

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        try:
            with kube_errors(f"get namespace {name}"):
                obj: dict[str, Any] = self._api.get(path("api", "v1", "namespaces", name))
                return obj
        except KubeNotFound:
            return None

    def managed_bindings(self, namespace: str) -> list[Mapping[str, Any]] | None:
        return None


class SnapshotSource:
    """One list per resource type, for ``reconcile --all`` and a follower's reconcile_all."""

    def __init__(self, api_client: client.ApiClient, discovery: Discovery, *, psp: bool) -> None:
        api = JsonApi(api_client)
        with kube_errors("list namespaces"):
            items = api.request("GET", NAMESPACES_PATH, timeout=LIST_TIMEOUT)
        self.namespaces = {i["metadata"]["name"]: i for i in items.get("items") or []}
        self.profiles: set[str] = set()
        if discovery.profile_version is not None:
            with kube_errors("list profiles"):
                profiles = api.request(
                    "GET", _profiles_path(discovery.profile_version), timeout=LIST_TIMEOUT
                )
            self.profiles = {p["metadata"]["name"] for p in profiles.get("items") or []}
        self._bindings: dict[str, list[Mapping[str, Any]]] = {}
        if psp:
            with kube_errors("list managed rolebindings"):
                bindings = api.request(
                    "GET",
                    ALL_ROLEBINDINGS_PATH,
                    query={"labelSelector": MANAGED_SELECTOR},
                    timeout=LIST_TIMEOUT,
                )
            for b in bindings.get("items") or []:
                self._bindings.setdefault(b["metadata"]["namespace"], []).append(b)

    def has_profile(self, name: str) -> bool:
        return name in self.profiles

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


def _retry_after(exc: BaseException) -> float | None:
    cause = exc.__cause__ if not isinstance(exc, ApiException) else exc
    if isinstance(cause, ApiException) and cause.headers:
        value = cause.headers.get("Retry-After")
        if value is not None:
            try:
                return max(0.0, float(value))
            except ValueError:
                return None
    return None


def _rv(obj: Mapping[str, Any] | None) -> str:
    if obj is None:
        return ""
    return str((obj.get("metadata") or {}).get("resourceVersion") or "")


class PodSecurityApplier:
    """Plans one namespace and applies the plan; shared by the informer path and the CLI."""

    def __init__(
        self,
        api_client: client.ApiClient,
        settings: Settings,
        *,
        mode: str,
        discovery: Discovery,
        events: EventRecorder | None = None,
        metrics: ReconcilerMetrics | None = None,
    ) -> None:
        self.api_client = api_client
        self.settings = settings
        self.mode = mode
        self.discovery = discovery
        self.events = events
        self.metrics = metrics
        self._api = JsonApi(api_client)

    # -- reads --

    def _facts(self, name: str, source: FactSource) -> NamespaceFacts:
        ns = source.namespace(name)
        managed = (source.managed_bindings(name) or []) if self.mode == "psp" else []
        # Sources know at most our managed bindings; plan() asks for the full list when those
        # do not satisfy the namespace.
        return facts_from_objects(name, ns, bindings=managed, all_bindings=False)

    def fetch_bindings(self, namespace: str) -> list[dict[str, Any]]:
        with kube_errors(f"list rolebindings in namespace {namespace}"):
            data = self._api.request("GET", _rolebindings_path(namespace), timeout=LIST_TIMEOUT)
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
            managed, why = decide_managed(name, has_profile=source.has_profile(name), settings=ps)
            if not managed:
                return Attempt(
                    NamespaceResult(name, "skipped", (), _sentence(f"not managed: {why}"))
                )
            desired = build_desired(name, mode=self.mode, settings=ps)
            facts = self._facts(name, source)
            uid = facts.uid
            for _ in range(3):
                current = plan(desired, facts, settings=ps)
                if current.needs_all_bindings:
                    everything = tuple(binding_facts(b) for b in self.fetch_bindings(name))
                    facts = replace(facts, bindings=everything, all_bindings=True)
                    current = plan(desired, facts, settings=ps)
                if dry_run or not current.actions:
                    return Attempt(self._result(current, applied=False, dry_run=dry_run))
                try:
                    written = self._apply(current, uid=facts.uid)
                except (KubeConflict, KubeNotFound) as exc:
                    # Changed between our read and our write (AlreadyExists, a uid
                    # precondition, a binding deleted under our patch): read live, plan again.
                    log.info("namespace %s: %s; planning again", name, exc)
                    facts = self._facts(name, LiveSource(self.api_client, self.discovery))
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
                NamespaceResult(name, "failed", (), message), retry_after=_retry_after(exc)
            )

    def _failure_message(self, name: str, exc: KubeError) -> str:
        if isinstance(exc, BindingForbidden):
            return str(exc)
        hint = ""
        if isinstance(exc, KubeForbidden):
            hint = "; grant the service account the permission named above (see deploy/ RBAC)"
        elif exc.status in (0, 429) or exc.status >= 500:
            hint = "; it will be retried"
        return _sentence(f"could not reconcile namespace {name}: {exc}{hint}")

    def _result(self, current: Plan, *, applied: bool, dry_run: bool) -> NamespaceResult:
        ns = current.namespace
        actions = current.describe()
        if dry_run and actions and current.outcome in ("create", "repair"):
            return NamespaceResult(
                ns, f"would-{current.outcome}", actions, _sentence(current.reason)
            )
        if current.outcome in ("create", "repair") and applied:
            if self.mode == "psa":
                outcome = "labels-applied"
            else:
                outcome = "created" if current.outcome == "create" else "repaired"
            return NamespaceResult(ns, outcome, actions, _sentence(current.reason))
        if current.outcome in ("create", "repair"):
            # Not applied and not a dry run cannot happen (plans with these outcomes have
            # actions); report it rather than pretend.
            return NamespaceResult(ns, "failed", actions, _sentence(current.reason))
        return NamespaceResult(ns, current.outcome, actions, _sentence(current.reason))

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
            with kube_errors(f"patch rolebinding {action.namespace}/{action.name}"):
                self._count("patch", "rolebindings")
                obj = self._api.request(
                    "PATCH",
                    _rolebindings_path(action.namespace, action.name),
                    body=build_binding_patch(action),
                    content_type=MERGE_PATCH,
                )
            return [Written("rolebinding", action.name, _rv(obj))]
        if isinstance(action, PatchNamespaceLabels):
            with kube_errors(f"patch namespace {action.namespace}"):
                self._count("patch", "namespaces")
                obj = self._api.request(
                    "PATCH",
                    path("api", "v1", "namespaces", action.namespace),
                    body=build_namespace_patch(action),
                    content_type=MERGE_PATCH,
                )
            return [Written("namespace", action.namespace, _rv(obj))]
        raise TypeError(f"unknown action {action!r}")

    def _create_binding(self, action: CreateBinding) -> Written:
        what = f"create rolebinding {action.namespace}/{action.binding.name}"
        try:
            with kube_errors(what):
                self._count("create", "rolebindings")
                obj = self._api.request(
                    "POST",
                    _rolebindings_path(action.namespace),
                    body=build_role_binding(action.namespace, action.binding),
                )
        except KubeForbidden as exc:
            raise BindingForbidden.explain(action, exc) from exc
        return Written("rolebinding", action.binding.name, _rv(obj))

    def _delete_binding(self, action: DeleteBinding) -> None:
        body: dict[str, Any] = {"preconditions": {"uid": action.uid}} if action.uid else {}
        try:
            with kube_errors(f"delete rolebinding {action.namespace}/{action.name}"):
                self._count("delete", "rolebindings")
                self._api.request(
                    "DELETE", _rolebindings_path(action.namespace, action.name), body=body or None
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
                self.events.record(ns, uid=uid, reason=reason, message=_sentence(text))
            elif isinstance(action, PatchBinding):
                if action.adopt:
                    text = f"Adopted RoleBinding {action.name} (it already grants the role)"
                else:
                    text = f"Repaired RoleBinding {action.name}: {current.reason}"
                self.events.record(ns, uid=uid, reason=BINDING_REPAIRED, message=_sentence(text))
            elif isinstance(action, PatchNamespaceLabels) and action.labels:
                pairs = ", ".join(f"{k}={v}" for k, v in sorted(action.labels.items()))
                self.events.record(
                    ns, uid=uid, reason=LABELS_APPLIED, message=_sentence(f"Set labels {pairs}")
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
        if "cannot create resource" in str(exc):
            text = (
                f"cannot create {where}: the service account needs `create` on "
                f"rolebindings.rbac.authorization.k8s.io in namespace {action.namespace}"
            )
        else:
            text = (
                f"cannot create {where}: the service account needs `bind` on "
                f"clusterrole/{action.binding.cluster_role} (RBAC refuses to grant a role "
                "its creator neither holds nor may bind)"
            )
        return cls(_sentence(text), status=exc.status, reason=exc.reason)


# --- informers -------------------------------------------------------------------------------


class _WatchDropFilter(logging.Filter):
    """Turns the informer's ERROR traceback for a dropped watch connection into one INFO line.

    ``SharedInformer`` logs every connection-level end of a watch with ``logger.exception``
    and then resumes from its last resourceVersion. Connections end routinely (API server
    restarts, load-balancer idle timeouts, our own shutdown), so a traceback each time would
    drown real errors.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Urllib3HTTPError | OSError) and "watch loop" in str(record.msg):
            self._rewrite(record, logging.INFO, "watch connection ended (%s); resuming", exc)
        elif isinstance(exc, ApiException) and "initial list" in str(record.msg):
            # e.g. 403 when RBAC lacks list on a resource: one line that says which, not a
            # traceback every 5 s.
            text = str(translate(exc, action="informer list"))
            self._rewrite(record, logging.WARNING, "%s; retrying in 5 s", text)
        return True

    @staticmethod
    def _rewrite(record: logging.LogRecord, level: int, msg: str, arg: object) -> None:
        record.msg = msg
        record.args = (type(arg).__name__ if isinstance(arg, BaseException) else arg,)
        record.exc_info = None
        record.exc_text = None
        record.levelno = level
        record.levelname = logging.getLevelName(level)


def _quiet_dropped_watches() -> None:
    informer_log = logging.getLogger("kubernetes.informer.informer")
    if not any(isinstance(f, _WatchDropFilter) for f in informer_log.filters):
        informer_log.addFilter(_WatchDropFilter())


class RawList:
    """List-and-watch function for ``SharedInformer`` that keeps objects as plain dicts.

    For a list it asks for the raw response and returns an object with ``items`` (dicts) and
    ``metadata.resource_version``, the shape the informer reads. For a watch it returns the
    raw stream; ``Watch`` decodes events according to the function's ``:rtype:`` docstring
    line, and ``object`` makes it keep dicts while still tracking each event's
    resourceVersion (with no return type at all it would stop tracking and resume every
    reconnect from the initial list's version).

    The informer opens its first watch only after its initial list filled the cache and
    fired ADDED for every object, so the first watch call marks the cache ``synced``.
    """

    def __init__(self, fetch: Callable[..., Any], *, what: str) -> None:
        self._fetch = fetch
        self.what = what
        # Watch reads the return type with pydoc.getdoc(), which ignores a class docstring
        # for an instance: give the instance its own.
        self.__doc__ = ":rtype: object"
        self.synced = threading.Event()
        self.lists = 0

    def __call__(self, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            self.synced.set()
            kwargs.setdefault("timeout_seconds", WATCH_TIMEOUT_SECONDS)
            kwargs.setdefault("allow_watch_bookmarks", True)
            kwargs.setdefault(
                "_request_timeout", (LIST_TIMEOUT[0], float(kwargs["timeout_seconds"]) + 30)
            )
            return self._fetch(**kwargs)
        self.lists += 1
        kwargs.pop("_preload_content", None)
        data = self._fetch(_request_timeout=LIST_TIMEOUT, **kwargs)
        meta = data.get("metadata") or {}
        return SimpleNamespace(
            items=data.get("items") or [],
            metadata=SimpleNamespace(resource_version=meta.get("resourceVersion")),
        )


@dataclass
class _Informer:
    name: str
    lister: RawList
    informer: SharedInformer

    def stop(self, timeout: float) -> None:
        # SharedInformer.stop() joins its thread without a bound; Watch.stop() shuts the
        # socket so it returns at once, but keep our shutdown bounded regardless.
        stopper = threading.Thread(target=self.informer.stop, name=f"stop-{self.name}", daemon=True)
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.warning("informer %s did not stop within %.1fs", self.name, timeout)


_KEEP_META = ("name", "namespace", "uid", "resourceVersion", "deletionTimestamp")
_KEEP: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # informer: (top-level keys kept besides metadata, metadata maps kept and interned)
    "namespaces": (("status",), ("labels", "annotations")),
    "profiles": ((), ()),
    "rolebindings": (("roleRef", "subjects"), ("labels",)),
}


def _trim(obj: Any, informer: str) -> None:
    """Keep only what planning reads of a cached object, in place, with strings interned.

    ``SharedInformer`` hands its handlers the very dict it just stored in its cache, so
    trimming here shrinks the cache. Parsed JSON costs several KiB per object in Python;
    of a Profile we need only that it exists, of a Namespace its labels, annotations and
    phase. ``managedFields`` alone is often the largest part of an object on a real cluster.
    Label keys and values repeat across thousands of profile namespaces, so they are
    interned.
    """
    if not isinstance(obj, dict):
        return
    top, maps = _KEEP[informer]
    meta = obj.get("metadata")
    for key in [k for k in obj if k != "metadata" and k not in top]:
        del obj[key]
    if not isinstance(meta, dict):
        return
    for key in [k for k in meta if k not in _KEEP_META and k not in maps]:
        del meta[key]
    for key in maps:
        values = meta.get(key)
        if isinstance(values, dict):
            meta[key] = {
                sys.intern(k): sys.intern(v) if isinstance(v, str) and len(v) < 64 else v
                for k, v in values.items()
            }
    status = obj.get("status")
    if isinstance(status, dict) and informer == "namespaces":
        obj["status"] = {"phase": status["phase"]} if "phase" in status else {}


def _key_namespace(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str((meta or {}).get("namespace") or "")


def _key_name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str((meta or {}).get("name") or "")


class CacheSource:
    """Facts from the informer caches (no API calls)."""

    def __init__(self, reconciler: Reconciler) -> None:
        self._r = reconciler

    def has_profile(self, name: str) -> bool:
        return self._r._get("profiles", name) is not None

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self._r._get("namespaces", name)

    def managed_bindings(self, namespace: str) -> list[Mapping[str, Any]] | None:
        return self._r._managed_bindings(namespace)


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    result: NamespaceResult | None = None


# --- the reconciler --------------------------------------------------------------------------


class Reconciler:
    """Informers + keyed queue + leader election. ``start()`` then ``stop()``.

    Thread-based, like the client's informer and leader election: handlers and workers run on
    their own threads; the public methods are safe to call from any thread (tornado handlers
    should call the blocking ones, :meth:`reconcile_now` and :meth:`reconcile_all`, in an
    executor).
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        settings: Settings,
        *,
        identity: str,
        registry: CollectorRegistry | None = None,
        workers: int = 8,
        leader_election: bool = True,
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
        resync_seconds: float | None = None,
        backoff_base: float = 0.2,
        backoff_max: float = 60.0,
    ) -> None:
        self.api_client = api_client
        self.settings = settings
        self.identity = identity
        self.metrics = ReconcilerMetrics(registry)
        self.mode: str = settings.pod_security.mode
        """Resolved by :meth:`start` (``auto`` becomes ``psp`` or ``psa``)."""
        self.discovery: Discovery | None = None
        self._workers_n = workers
        self._use_election = leader_election
        self._election_args = (lease_duration, renew_deadline, retry_period)
        self._resync = float(resync_seconds or settings.pod_security.resync_seconds)
        self._queue = WorkQueue(base_delay=backoff_base, max_delay=backoff_max)
        self.metrics.queue_depth.set_function(lambda: len(self._queue))
        self._informers: dict[str, _Informer] = {}
        self._bindings_index: dict[str, set[str]] = {}
        self._index_lock = threading.Lock()
        self._waiters: dict[str, list[_Waiter]] = {}
        self._waiters_lock = threading.Lock()
        self._settling: dict[str, tuple[float, tuple[Written, ...]]] = {}
        self._settle_lock = threading.Lock()
        self._stop = threading.Event()
        self._kick = threading.Event()
        self._threads: list[threading.Thread] = []
        self._elector: LeaderElector | None = None
        self._leading = threading.Event()
        self._leader_callbacks: list[Callable[[], None]] = []
        self._started = False
        self.events = EventRecorder(api_client, instance=identity)
        self._applier: PodSecurityApplier | None = None
        self._cache_source = CacheSource(self)

    # -- lifecycle --

    def start(self) -> None:
        """Discover the mode, start informers, workers, resync and the election. Raises
        :class:`~vsphere_kale.errors.KubeError` when the API server cannot be reached."""
        if self._started:
            return
        self._started = True
        self.discovery = fetch_discovery(self.api_client)
        configured = self.settings.pod_security.mode
        self.mode = decide_mode(configured, psp_served=self.discovery.psp_served)
        self.metrics.mode.labels(self.mode).set(1)
        log.info(
            "pod-security mode %s (configured %s; policy/v1beta1 podsecuritypolicies %s; "
            "Profiles %s)",
            self.mode,
            configured,
            "served" if self.discovery.psp_served else "not served",
            f"kubeflow.org/{self.discovery.profile_version}"
            if self.discovery.profile_version
            else "not installed",
        )
        if self.discovery.profile_version is None:
            log.warning(
                "kubeflow.org Profiles are not served: only podSecurity.extraNamespaces are managed"
            )
        self._applier = PodSecurityApplier(
            self.api_client,
            self.settings,
            mode=self.mode,
            discovery=self.discovery,
            events=self.events,
            metrics=self.metrics,
        )
        if self.mode != "off":
            _quiet_dropped_watches()
            self._build_informers()
            self.events.start()
            for informer in self._informers.values():
                informer.informer.start()
            for i in range(self._workers_n):
                self._spawn(self._work, f"reconcile-worker-{i}")
            self._spawn(self._resync_loop, "reconcile-resync")
        # Even with mode off: serve's certificate rotation also runs on the leader only.
        if self._use_election:
            lease, renew, retry = self._election_args
            self._elector = LeaderElector(
                self.api_client,
                namespace=self.settings.namespace,
                identity=self.identity,
                on_started=self._on_started_leading,
                on_stopped=self._on_stopped_leading,
                lease_duration=lease,
                renew_deadline=renew,
                retry_period=retry,
            )
            self._elector.start()
        else:
            self._on_started_leading()

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        thread.start()
        self._threads.append(thread)

    def stop(self, *, timeout: float = 10.0, release_lease: bool = True) -> None:
        """Stop writing, release the Lease, stop watching. Every join is bounded.

        ``release_lease=False`` leaves the Lease to expire, as a crash would (tests)."""
        if not self._started:
            return
        deadline = time.monotonic() + timeout

        def left() -> float:
            return max(0.1, deadline - time.monotonic())

        self._stop.set()
        self._kick.set()
        self._queue.shutdown()
        for thread in self._threads:
            thread.join(left())  # workers finish the write in flight, then exit
        # Only now release the Lease: no write of ours can follow the release.
        if self._elector is not None:
            self._elector.stop(timeout=left(), release=release_lease)
        self._on_stopped_leading()
        for informer in self._informers.values():
            informer.stop(left())
        self.events.stop(timeout=min(left(), 5.0))
        self._resolve_all_waiters("the reconciler is shutting down")
        alive = [t.name for t in self._threads if t.is_alive()]
        if alive:
            log.warning("threads still running after stop: %s", ", ".join(alive))
        self._started = False

    # -- informers --

    def _build_informers(self) -> None:
        assert self.discovery is not None
        api = JsonApi(self.api_client)
        self._add_informer("namespaces", api.list_function(NAMESPACES_PATH))
        if self.discovery.profile_version is not None:
            profiles = _profiles_path(self.discovery.profile_version)
            self._add_informer("profiles", api.list_function(profiles))
        if self.mode == "psp":
            self._add_informer(
                "rolebindings",
                api.list_function(ALL_ROLEBINDINGS_PATH),
                label_selector=MANAGED_SELECTOR,
            )

    def _add_informer(
        self, name: str, fetch: Callable[..., Any], *, label_selector: str | None = None
    ) -> None:
        lister = RawList(fetch, what=name)
        informer = SharedInformer(
            lister, resync_period=int(self._resync), label_selector=label_selector
        )
        if name == "rolebindings":
            informer.add_event_handler(ADDED, self._on_binding)
            informer.add_event_handler(MODIFIED, self._on_binding)
            informer.add_event_handler(DELETED, self._on_binding_deleted)
        else:
            handler = self._on_profile if name == "profiles" else self._on_namespace
            for event in (ADDED, MODIFIED, DELETED):
                informer.add_event_handler(event, handler)
        self._informers[name] = _Informer(name, lister, informer)

    def _on_profile(self, obj: Any) -> None:
        _trim(obj, "profiles")
        self._on_named(obj)

    def _on_namespace(self, obj: Any) -> None:
        _trim(obj, "namespaces")
        self._on_named(obj)

    def _on_named(self, obj: Any) -> None:
        name = _key_name(obj)
        if name and self._leading.is_set():
            self._queue.add(name)

    def _on_binding(self, obj: Any) -> None:
        _trim(obj, "rolebindings")
        ns, name = _key_namespace(obj), _key_name(obj)
        with self._index_lock:
            self._bindings_index.setdefault(ns, set()).add(name)
        if self._leading.is_set():
            self._queue.add(ns)

    def _on_binding_deleted(self, obj: Any) -> None:
        ns, name = _key_namespace(obj), _key_name(obj)
        with self._index_lock:
            names = self._bindings_index.get(ns)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._bindings_index[ns]
        if self._leading.is_set():
            self._queue.add(ns)

    def _get(self, informer: str, key: str) -> dict[str, Any] | None:
        found = self._informers.get(informer)
        if found is None:
            return None
        obj: dict[str, Any] | None = found.informer.cache.get_by_key(key)
        return obj

    def _managed_bindings(self, namespace: str) -> list[Mapping[str, Any]]:
        with self._index_lock:
            names = sorted(self._bindings_index.get(namespace, ()))
        found = (self._get("rolebindings", f"{namespace}/{n}") for n in names)
        return [b for b in found if b is not None]

    # -- leadership --

    def add_leader_callback(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` (promptly returning, from the election thread) whenever this
        replica becomes the leader; ``serve`` kicks its certificate rotation with it."""
        self._leader_callbacks.append(callback)

    def _on_started_leading(self) -> None:
        self._leading.set()
        self.metrics.is_leader.set(1)
        self._kick.set()  # the resync thread enqueues everything once the caches synced
        for callback in self._leader_callbacks:
            try:
                callback()
            except Exception:  # another component's hook must not stop us leading
                log.exception("leader callback %r failed", callback)

    def _on_stopped_leading(self) -> None:
        self._leading.clear()
        self.metrics.is_leader.set(0)

    def is_leader(self) -> bool:
        return self._leading.is_set() and not self._stop.is_set()

    def has_synced(self) -> bool:
        if not self._started or self.discovery is None:
            return False
        return all(i.lister.synced.is_set() for i in self._informers.values())

    def unsynced(self) -> list[str]:
        """Informers (namespaces, profiles, rolebindings) still waiting for their first list."""
        if not self._started or self.discovery is None:
            return ["(not started)"]
        return [name for name, i in self._informers.items() if not i.lister.synced.is_set()]

    def wait_for_sync(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while not self.has_synced():
            if time.monotonic() > deadline or self._stop.is_set():
                return False
            self._stop.wait(0.02)
        return True

    # -- resync --

    def managed_namespaces(self) -> list[str]:
        """Existing namespaces we manage, from the caches (sorted)."""
        informer = self._informers.get("namespaces")
        if informer is None:
            return []
        ps = self.settings.pod_security
        names = []
        for name in informer.informer.cache.list_keys():
            managed, _ = decide_managed(
                name, has_profile=self._get("profiles", name) is not None, settings=ps
            )
            if managed:
                names.append(name)
        return sorted(names)

    def resync_now(self) -> int:
        """Enqueue every managed namespace (what the periodic resync does); returns how many."""
        names = self.managed_namespaces()
        for name in names:
            self._queue.add(name)
        self.metrics.last_resync.set(time.time())
        log.debug("full resync: %d namespaces enqueued", len(names))
        return len(names)

    def _resync_loop(self) -> None:
        while not self._stop.is_set():
            kicked = self._kick.wait(self._resync)
            self._kick.clear()
            if self._stop.is_set():
                return
            if not self.is_leader():
                continue
            if not self.wait_for_sync(timeout=self._resync):
                continue
            if kicked:
                # A new leader: the informers' ADDED events were dropped while we followed.
                log.info("leader %s: reconciling all managed namespaces", self.identity)
            self.resync_now()

    # -- workers --

    def _work(self) -> None:
        while True:
            key = self._queue.get()
            if key is None:
                return
            try:
                self._process(key)
            except Exception:  # loop boundary: one namespace never stops the workers
                log.exception("namespace %s: unexpected error; will retry", key)
                self._queue.add_rate_limited(key)
            finally:
                self._queue.done(key)

    def _process(self, key: str) -> None:
        with self._waiters_lock:
            waiters = self._waiters.pop(key, [])
        if not self.is_leader() or self._applier is None:
            self._resolve(
                waiters,
                NamespaceResult(
                    key, "failed", (), "This replica is not the leader any more; try again."
                ),
            )
            return
        if not self._settled(key):
            with self._waiters_lock:
                self._waiters.setdefault(key, []).extend(waiters)
            self._queue.add_after(key, 0.05)
            return
        attempt = self._applier.reconcile(key, self._cache_source)
        if attempt.written:
            with self._settle_lock:
                self._settling[key] = (time.monotonic() + SETTLE_SECONDS, attempt.written)
        if attempt.result.failed:
            delay = self._queue.add_rate_limited(key, retry_after=attempt.retry_after)
            log.info("namespace %s: retrying in %.1fs", key, delay)
        else:
            self._queue.forget(key)
        self._resolve(waiters, attempt.result)

    def _settled(self, namespace: str) -> bool:
        """Have the caches seen our last writes to this namespace (or did we wait enough)?"""
        with self._settle_lock:
            entry = self._settling.get(namespace)
            if entry is None:
                return True
            deadline, written = entry
            if time.monotonic() > deadline:
                del self._settling[namespace]
                return True
        for w in written:
            key = w.name if w.kind == "namespace" else f"{namespace}/{w.name}"
            cached = self._get("namespaces" if w.kind == "namespace" else "rolebindings", key)
            if not _at_least(_rv(cached), w.resource_version):
                return False
        with self._settle_lock:
            self._settling.pop(namespace, None)
        return True

    @staticmethod
    def _resolve(waiters: Iterable[_Waiter], result: NamespaceResult) -> None:
        for waiter in waiters:
            waiter.result = result
            waiter.done.set()

    def _resolve_all_waiters(self, why: str) -> None:
        with self._waiters_lock:
            pending = self._waiters
            self._waiters = {}
        for key, waiters in pending.items():
            self._resolve(waiters, NamespaceResult(key, "failed", (), _sentence(why)))

    # -- on demand (admin API) --

    def _one_shot(self) -> PodSecurityApplier:
        if self._applier is None:
            raise KubeError("the reconciler has not started")
        return self._applier

    def reconcile_now(self, namespace: str, *, timeout: float = 10.0) -> NamespaceResult:
        """Reconcile one namespace now. Through the queue on the leader (so it never races
        a worker on the same namespace); on a follower, the same one-shot path the CLI uses
        (reads live, idempotent)."""
        if not self.is_leader():
            applier = self._one_shot()
            assert self.discovery is not None
            return applier.reconcile(namespace, LiveSource(self.api_client, self.discovery)).result
        waiter = _Waiter()
        with self._waiters_lock:
            self._waiters.setdefault(namespace, []).append(waiter)
        self._queue.add(namespace)
        if not waiter.done.wait(timeout) or waiter.result is None:
            return NamespaceResult(
                namespace,
                "failed",
                (),
                f"Timed out after {timeout:g}s waiting for the reconcile; it stays queued.",
            )
        return waiter.result

    def reconcile_all(self, *, timeout: float = 30.0) -> list[NamespaceResult]:
        """Reconcile every managed namespace now; results sorted by namespace."""
        if not self.is_leader():
            applier = self._one_shot()
            assert self.discovery is not None
            snapshot = SnapshotSource(self.api_client, self.discovery, psp=self.mode == "psp")
            names = _candidates(snapshot, self.settings)
            return [applier.reconcile(n, snapshot).result for n in names]
        names = self.managed_namespaces()
        waiters = {name: _Waiter() for name in names}
        with self._waiters_lock:
            for name, waiter in waiters.items():
                self._waiters.setdefault(name, []).append(waiter)
        for name in names:
            self._queue.add(name)
        deadline = time.monotonic() + timeout
        results = []
        for name, waiter in waiters.items():
            if waiter.done.wait(max(0.0, deadline - time.monotonic())) and waiter.result:
                results.append(waiter.result)
            else:
                results.append(
                    NamespaceResult(
                        name, "failed", (), f"Timed out after {timeout:g}s; it stays queued."
                    )
                )
        return results

    def wait_idle(self, timeout: float) -> bool:
        """Until the queue is empty and no worker is busy (tests, benchmark)."""
        return self._queue.wait_idle(timeout)


def _at_least(have: str, want: str) -> bool:
    """resourceVersions are opaque strings; kube-apiserver's (and the sandbox's) are
    increasing integers, which is all settling relies on. Anything else counts as seen."""
    if not want:
        return True
    try:
        return int(have or "0") >= int(want)
    except ValueError:
        return True


def _candidates(source: SnapshotSource, settings: Settings) -> list[str]:
    """Names ``reconcile --all`` reports on: every Profile and every extra/excluded name."""
    ps = settings.pod_security
    names = set(source.profiles) | set(ps.extra_namespaces)
    names |= {n for n in ps.excluded_namespaces if n in source.namespaces}
    return sorted(names)


# --- one shot (the CLI) ----------------------------------------------------------------------


def reconcile_once(
    api_client: client.ApiClient,
    settings: Settings,
    *,
    namespaces: Iterable[str] | None = None,
    dry_run: bool = False,
    identity: str = "vsphere-kale-cli",
    on_result: Callable[[NamespaceResult], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> tuple[str, list[NamespaceResult]]:
    """Reconcile the named namespaces (None: every Profile and extra namespace) once.

    A dry run plans only: it sends no write at all, not even a ``dryRun=All`` one, so it
    needs nothing but read access. Returns the resolved mode and the results.
    """
    discovery = fetch_discovery(api_client)
    mode = decide_mode(settings.pod_security.mode, psp_served=discovery.psp_served)
    events = None if dry_run else EventRecorder(api_client, instance=identity)
    applier = PodSecurityApplier(
        api_client, settings, mode=mode, discovery=discovery, events=events
    )
    source: FactSource
    if namespaces is None:
        snapshot = SnapshotSource(api_client, discovery, psp=mode == "psp")
        names = _candidates(snapshot, settings)
        source = snapshot
    else:
        names = list(namespaces)
        source = LiveSource(api_client, discovery)
    if on_total is not None:
        on_total(len(names))
    results = []
    for name in names:
        result = applier.reconcile(name, source, dry_run=dry_run).result
        results.append(result)
        if on_result is not None:
            on_result(result)
    return mode, results
