"""Collect one namespace's health from the API server -> :mod:`vsphere_kale.policy.health`.

One request per resource type, never one per claim, so a namespace with hundreds of PVCs
costs the same handful of requests:

* list PersistentVolumeClaims in the namespace
* list the namespace's PVC ``ProvisioningFailed`` Events (by field selector)
* list StorageClasses
* get the MutatingWebhookConfiguration (by name); only when there is none, our
  MutatingAdmissionPolicy (``install --admission policy``, where the kind is served)
* get the Namespace, get the Kubeflow Profile (same name)
* list RoleBindings in the namespace (psp mode only)
* list the namespace's running pods, only when a claim could be recreated but for a pod that
  mounts it (``pvcs[].recreateRefusal``), after the reads above
* and discovery (which Profile version, whether PSPs are served), read once per
  :class:`~vsphere_kale.kube.Kube` and cached

Lists are read as raw JSON (:class:`~vsphere_kale.kube.Kube`): the client's model
deserialisation costs more than the request itself for hundreds of objects, and the pure
policy works on the JSON anyway. The reads are independent, so they are sent concurrently (a
few threads for the duration of the call): the status costs about its slowest read, not the sum.

A read the caller is not allowed to do (403) makes *that component* ``unknown``, with a
sentence naming the missing permission; the rest of the status is still computed. This is the
Jupyter extension's local fallback, where a notebook's service account may list its own PVCs
but not read cluster-scoped webhook configurations. Any other API error (unreachable, 5xx)
fails the whole call with :class:`~vsphere_kale.errors.KubeUnavailable`, and a missing
namespace with :class:`~vsphere_kale.errors.KubeNotFound`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from vsphere_kale.errors import KubeForbidden, KubeNotFound
from vsphere_kale.health.psa_status import add_needs, fetch_needs
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.policy import podsecurity
from vsphere_kale.policy.health import (
    ADMISSION_POLICY_NAME,
    WEBHOOK_CONFIGURATION_NAME,
    Event,
    MutatingWebhookConfiguration,
    PersistentVolumeClaim,
    PodSecurityFacts,
    StorageClass,
    Unreadable,
    build_classes_by_name,
    build_namespace_status,
)
from vsphere_kale.policy.recreate import decide_refusal_needs_pods
from vsphere_kale.settings import Settings

log = logging.getLogger(__name__)

Source = Literal["admin-api", "local"]
T = TypeVar("T")

REQUEST_TIMEOUT = 10.0
"""Seconds per API request: a status page that hangs is worse than one that says why."""

PROFILE_LABEL = ("app.kubernetes.io/part-of", "kubeflow-profile")
"""The Kubeflow profile controller labels the namespaces it creates; used as evidence of a
Profile when the caller may not read Profiles."""

CACHED = "0"
"""``resourceVersion=0`` on lists: kube-apiserver answers from its watch cache instead of a
quorum read of etcd, far cheaper for hundreds of objects. The answer may be a few
milliseconds behind the latest write, which a status page can afford."""

PVC_EVENTS_SELECTOR = "involvedObject.kind=PersistentVolumeClaim,reason=ProvisioningFailed"
"""Only the Events the verdicts use. Both fields are selectable on core/v1 Events in
kube-apiserver; a busy namespace's other Events (ExternalProvisioning, pod churn) never cross
the wire."""


def read_or_unreadable(fn: Callable[[], T], *, forbidden: str) -> T | Unreadable:
    """One read; 403 becomes :class:`Unreadable` with ``forbidden`` (which permission).

    The one place a refused read becomes a component the checks call ``unknown`` (the
    status here and ``vsphere-kale doctor``), so a missing permission never fails the rest.
    """
    try:
        return fn()
    except KubeForbidden as exc:
        log.info("read forbidden: %s", exc)
        return Unreadable(forbidden)


def get_or_unreadable(fn: Callable[[], T], *, forbidden: str) -> T | Unreadable | None:
    """Like :func:`read_or_unreadable`, but 404 (object or its type not served) is ``None``."""
    try:
        return read_or_unreadable(fn, forbidden=forbidden)
    except KubeNotFound:
        return None


def fetch_psp_served(kube: Kube) -> bool:
    """Whether the API serves policy/v1beta1 podsecuritypolicies (TKG up to 1.24)."""
    return kube.discovery().psp_served


def resolve_mode(kube: Kube, *, settings: Settings, mode: str | None) -> str:
    """``psp`` | ``psa`` | ``off``: ``mode`` when given (e.g. the reconciler's resolved mode),
    else the configured mode, asking discovery only for ``auto``."""
    configured = mode or settings.pod_security.mode
    psp_served = fetch_psp_served(kube) if configured == "auto" else False
    return podsecurity.decide_mode(configured, psp_served=psp_served)


def _items(answer: Mapping[str, Any]) -> list[Any]:
    return list(answer.get("items") or [])


@dataclass(frozen=True)
class ReadContext:
    kube: Kube
    namespace: str
    webhook_name: str


def _list(
    resource: r.Resource, *, cached: bool = True, **query: Any
) -> Callable[[ReadContext], list[Any]]:
    def fetch(at: ReadContext) -> list[Any]:
        args = dict(query)
        if resource.namespaced:
            args["namespace"] = at.namespace
        if cached:
            args["resource_version"] = CACHED
        return _items(at.kube.list(resource, timeout=REQUEST_TIMEOUT, **args))

    return fetch


def _get_namespace(at: ReadContext) -> Any:
    return at.kube.get(r.NAMESPACE, at.namespace, timeout=REQUEST_TIMEOUT)


def _get_webhook(at: ReadContext) -> Any:
    return at.kube.get(r.MUTATING_WEBHOOK_CONFIGURATION, at.webhook_name, timeout=REQUEST_TIMEOUT)


def _get_admission_policy(at: ReadContext) -> Any:
    # install --admission policy: kube-apiserver rewrites claims, there is no webhook
    # configuration. Read only where the kind is served (discovery says at which version).
    version = at.kube.discovery().mutating_admission_policy_version
    if version is None:
        return None
    resource = r.MUTATING_ADMISSION_POLICY.at(version)
    return at.kube.get(resource, ADMISSION_POLICY_NAME, timeout=REQUEST_TIMEOUT)


def _get_profile(at: ReadContext) -> Any:
    # Kubeflow before 1.3 serves Profiles as v1beta1 only: discovery says which.
    version = at.kube.discovery().profile_version
    if version is None:
        return None
    return at.kube.get(r.PROFILE.at(version), at.namespace, timeout=REQUEST_TIMEOUT)


@dataclass(frozen=True)
class Read:
    """One read of the status: its key in the result, how to fetch it, the sentence a 403
    becomes (``{namespace}``, ``{webhook}`` filled in), and in which pod-security modes."""

    key: str
    fetch: Callable[[ReadContext], Any]
    forbidden: str
    absent_is_none: bool = False
    """404 (the object, or its type, is not served) is ``None`` rather than an error."""
    modes: frozenset[str] = frozenset({"off", "psp", "psa"})


STATUS_READS: tuple[Read, ...] = (
    # The namespace first: a missing namespace is a 404 although its claims list as [].
    Read(
        "namespace",
        _get_namespace,
        "Cannot check pod security: the caller may not get namespace {namespace}.",
    ),
    Read(
        "pvcs",
        _list(r.PERSISTENT_VOLUME_CLAIM),
        "The caller may not list persistentvolumeclaims in {namespace}.",
    ),
    Read(
        "events",
        _list(r.EVENT, field_selector=PVC_EVENTS_SELECTOR),
        "Provisioning errors are not shown: the caller may not list events in {namespace}.",
    ),
    Read(
        "storage_classes",
        _list(r.STORAGE_CLASS),
        "Storage classes are not checked: the caller may not list storageclasses.storage.k8s.io.",
    ),
    Read(
        "webhook",
        _get_webhook,
        "Cannot check the webhook: the caller may not get "
        "mutatingwebhookconfigurations.admissionregistration.k8s.io {webhook}.",
        absent_is_none=True,
    ),
    Read(
        "profile",
        _get_profile,
        "Cannot check pod security: the caller may not get profiles.kubeflow.org {namespace}.",
        absent_is_none=True,
        modes=frozenset({"psp", "psa"}),
    ),
    Read(
        "bindings",
        # A consistent read (no CACHED): the widget refreshes right after a Reconcile and
        # must see the binding it just created; the list is a handful of objects.
        _list(r.ROLE_BINDING, cached=False),
        "Cannot check pod security: the caller may not list "
        "rolebindings.rbac.authorization.k8s.io in {namespace}.",
        modes=frozenset({"psp"}),
    ),
)
"""Every read of the status, in the order their errors are raised (:func:`_fetch_all`)."""

ADMISSION_POLICY_READ = Read(
    "admission_policy",
    _get_admission_policy,
    "the caller may not get mutatingadmissionpolicies.admissionregistration.k8s.io "
    f"{ADMISSION_POLICY_NAME} to check the admission-policy mode.",
    absent_is_none=True,
)
"""Read after the others, and only when there is no webhook configuration: the policy
decides ``webhook.admission`` only then (``policy.health_webhook.decide_webhook``), so the
usual webhook install pays no request for it."""


def _readers(
    kube: Kube, namespace: str, *, mode: str, webhook_name: str
) -> dict[str, Callable[[], Any]]:
    """One callable per read of :data:`STATUS_READS` that ``mode`` needs, each translating
    errors and turning 403 into Unreadable."""
    at = ReadContext(kube, namespace, webhook_name)
    return {read.key: _reader(at, read) for read in STATUS_READS if mode in read.modes}


def _reader(at: ReadContext, read: Read) -> Callable[[], Any]:
    forbidden = read.forbidden.format(namespace=at.namespace, webhook=at.webhook_name)
    wrap = get_or_unreadable if read.absent_is_none else read_or_unreadable
    return lambda: wrap(lambda: read.fetch(at), forbidden=forbidden)


def _fetch_all(readers: Mapping[str, Callable[[], Any]]) -> dict[str, Any]:
    """Run every read concurrently; the first failure (in ``readers`` order) is raised.

    Order matters for the error a caller sees: the namespace read comes first, so a missing
    namespace is a 404 even though listing claims in it would answer an empty list.
    """
    with ThreadPoolExecutor(max_workers=len(readers), thread_name_prefix="status") as pool:
        futures: dict[str, Future[Any]] = {k: pool.submit(fn) for k, fn in readers.items()}
    return {key: future.result() for key, future in futures.items()}


def _profile_from_owner(ns_obj: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """A stand-in Profile (name and uid) from the namespace's controller reference."""
    meta = ns_obj.get("metadata") or {}
    for ref in meta.get("ownerReferences") or ():
        if (
            isinstance(ref, Mapping)
            and ref.get("controller") is True
            and ref.get("kind") == "Profile"
        ):
            return {"metadata": {"name": ref.get("name"), "uid": ref.get("uid")}}
    return None


def _owned_view(namespace: str, profile: Mapping[str, Any]) -> Mapping[str, Any]:
    uid = (profile.get("metadata") or {}).get("uid")
    ref = {
        "apiVersion": f"{podsecurity.PROFILE_GROUP}/v1",
        "kind": "Profile",
        "name": namespace,
        "uid": uid,
        "controller": True,
    }
    return {"metadata": {"name": namespace, "ownerReferences": [ref]}}


def build_pod_security_facts(
    namespace: str,
    *,
    mode: str,
    ns_obj: Mapping[str, Any] | Unreadable,
    profile: Mapping[str, Any] | Unreadable | None,
    bindings: list[Any] | Unreadable,
    settings: Settings,
    enforce_level: str | None = None,
) -> PodSecurityFacts:
    """What pod security requires here and the planner's verdict on what is present
    (``enforce_level``: what ``psaLevel: auto`` decided, :mod:`.psa_status`)."""
    if mode == "off":
        return PodSecurityFacts("off")
    ps = settings.pod_security
    desired = podsecurity.build_desired(
        namespace, mode=mode, settings=ps, enforce_level=enforce_level or "restricted"
    )
    if isinstance(ns_obj, Unreadable) and mode == "psa":
        return PodSecurityFacts(mode, required=desired.required, unreadable=ns_obj.reason)
    if isinstance(bindings, Unreadable):
        return PodSecurityFacts(mode, required=desired.required, unreadable=bindings.reason)
    ns_readable = not isinstance(ns_obj, Unreadable)
    if isinstance(ns_obj, Unreadable):
        # psp mode judges the bindings; the namespace only says whether it is terminating.
        ns_obj = {"metadata": {"name": namespace}}
    labels = (ns_obj.get("metadata") or {}).get("labels") or {}
    labelled = labels.get(PROFILE_LABEL[0]) == PROFILE_LABEL[1]
    owner_view: Mapping[str, Any] | None = ns_obj
    if isinstance(profile, Unreadable):
        listed = namespace in ps.extra_namespaces or namespace in ps.excluded_namespaces
        if not (labelled or listed):
            return PodSecurityFacts(mode, required=desired.required, unreadable=profile.reason)
        # The Profile cannot be read: judge by the namespace's own controller reference.
        profile_obj = _profile_from_owner(ns_obj) if labelled else None
    else:
        profile_obj = profile
    if not ns_readable and profile_obj is not None:
        # Display only (the reconciler checks ownership itself): without the namespace we
        # cannot see its ownerReferences, so show the binding verdict as for an owned one.
        owner_view = _owned_view(namespace, profile_obj)

    managed, why = podsecurity.decide_managed(
        namespace,
        profile=profile_obj,
        namespace_obj=owner_view,
        settings=ps,
        service_namespace=settings.namespace,
    )
    if not managed:
        return PodSecurityFacts(
            mode, managed=False, managed_reason=f"Not managed: {why}", required=desired.required
        )
    facts = podsecurity.facts_from_objects(namespace, ns_obj, bindings=bindings)
    plan = podsecurity.plan(desired, facts, settings=ps)
    return PodSecurityFacts(
        mode,
        managed=True,
        managed_reason=why,
        required=desired.required,
        outcome=plan.outcome,
        reason=plan.reason,
    )


def collect_status(
    kube: Kube,
    namespace: str,
    *,
    settings: Settings,
    mode: str | None,
    can_reconcile: bool,
    source: Source,
    webhook_name: str = WEBHOOK_CONFIGURATION_NAME,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """The ``NamespaceStatus`` document for ``namespace`` (schema in the README).

    ``mode`` is the resolved pod-security mode (the reconciler's), or ``None`` to resolve it
    here from the settings (discovery for ``auto``). Raises :class:`KubeNotFound` when the
    namespace does not exist, :class:`KubeUnavailable` when the API fails.
    """
    resolved = resolve_mode(kube, settings=settings, mode=mode)
    got = _fetch_all(_readers(kube, namespace, mode=resolved, webhook_name=webhook_name))
    pvcs: list[PersistentVolumeClaim] | Unreadable = got["pvcs"]
    events: list[Event] | Unreadable = got["events"]
    storage_classes: list[StorageClass] | Unreadable = got["storage_classes"]
    webhook: MutatingWebhookConfiguration | Unreadable | None = got["webhook"]
    admission_policy = None
    if webhook is None:
        at = ReadContext(kube, namespace, webhook_name)
        admission_policy = _reader(at, ADMISSION_POLICY_READ)()
    needs = None
    if resolved == "psa" and not isinstance(got["namespace"], Unreadable):
        needs = fetch_needs(
            kube,
            got["namespace"],
            settings=settings,
            runs_notebooks=_runs_notebooks(got["namespace"], got.get("profile")),
        )
    pod_security = build_pod_security_facts(
        namespace,
        mode=resolved,
        ns_obj=got["namespace"],
        profile=got.get("profile"),
        bindings=got.get("bindings", []),
        settings=settings,
        enforce_level=needs.level if needs is not None else None,
    )
    result = build_namespace_status(
        namespace,
        pvcs=pvcs,
        events=events,
        storage_classes=storage_classes,
        webhook_configuration=webhook,
        pod_security=pod_security,
        storage=settings.storage,
        can_reconcile=can_reconcile,
        source=source,
        now=now or dt.datetime.now(dt.timezone.utc),
        webhook_name=webhook_name,
        admission_policy=admission_policy,
        pods=fetch_pods_if_needed(
            kube, namespace, pvcs=pvcs, storage_classes=storage_classes, settings=settings
        ),
    )
    doc = result.to_json()
    if needs is not None:
        add_needs(doc, needs, settings=settings)
    return doc


RUNNING_PODS_SELECTOR = "status.phase!=Succeeded,status.phase!=Failed"
"""The pods that still hold their volumes: only they make a claim "in use" (policy.recreate)."""


def fetch_pods_if_needed(
    kube: Kube,
    namespace: str,
    *,
    pvcs: list[PersistentVolumeClaim] | Unreadable,
    storage_classes: list[StorageClass] | Unreadable,
    settings: Settings,
) -> list[Any] | Unreadable | None:
    """The namespace's running pods when some claim's ``recreateRefusal`` depends on them
    (:func:`~vsphere_kale.policy.recreate.decide_refusal_needs_pods`), else ``None``: a
    namespace without a recreatable claim costs no pod list."""
    if isinstance(pvcs, Unreadable) or not decide_refusal_needs_pods(
        pvcs, storage_classes=build_classes_by_name(storage_classes), storage=settings.storage
    ):
        return None
    return read_or_unreadable(
        lambda: _items(
            kube.list(
                r.POD,
                namespace=namespace,
                field_selector=RUNNING_PODS_SELECTOR,
                resource_version=CACHED,
                timeout=REQUEST_TIMEOUT,
            )
        ),
        forbidden=f"the caller may not list pods in {namespace}.",
    )


def _runs_notebooks(ns_obj: Mapping[str, Any], profile: Any) -> bool:
    """A profile namespace (owned by its Profile, or labelled so when Profiles are unreadable)."""
    if isinstance(profile, Mapping):
        return podsecurity.decide_owned_by_profile(ns_obj, profile)
    labels = (ns_obj.get("metadata") or {}).get("labels") or {}
    return bool(labels.get(PROFILE_LABEL[0]) == PROFILE_LABEL[1])
