"""Collect one namespace's health from the API server -> :mod:`vsphere_kale.policy.health`.

One request per resource type, never one per claim, so a namespace with hundreds of PVCs
costs the same handful of requests:

* list PersistentVolumeClaims in the namespace
* list the namespace's PVC ``ProvisioningFailed`` Events (by field selector)
* list StorageClasses
* get the MutatingWebhookConfiguration (by name)
* get the Namespace, get the Kubeflow Profile (same name)
* list RoleBindings in the namespace (psp mode only)
* and, only when the pod-security mode is ``auto`` and not given, one discovery request

Lists are read as raw JSON (``_preload_content=False``): the client's model deserialisation
costs more than the request itself for hundreds of objects, and the pure policy works on the
JSON anyway. The reads are independent, so they are sent concurrently (a few threads for the
duration of the call): the status costs about its slowest read, not the sum.

A read the caller is not allowed to do (403) makes *that component* ``unknown``, with a
sentence naming the missing permission; the rest of the status is still computed. This is the
Jupyter extension's local fallback, where a notebook's service account may list its own PVCs
but not read cluster-scoped webhook configurations. Any other API error (unreachable, 5xx)
fails the whole call with :class:`~vsphere_kale.errors.KubeUnavailable`, and a missing
namespace with :class:`~vsphere_kale.errors.KubeNotFound`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections.abc import Callable, Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Literal, TypeVar

from kubernetes import client

from vsphere_kale.errors import KubeForbidden, KubeNotFound
from vsphere_kale.kube import kube_errors
from vsphere_kale.policy import podsecurity
from vsphere_kale.policy.health import (
    WEBHOOK_CONFIGURATION_NAME,
    Event,
    MutatingWebhookConfiguration,
    PersistentVolumeClaim,
    PodSecurityFacts,
    StorageClass,
    Unreadable,
    build_namespace_status,
)
from vsphere_kale.reconcile.applier import fetch_json
from vsphere_kale.settings import Settings

log = logging.getLogger(__name__)

Source = Literal["admin-api", "local"]
T = TypeVar("T")

REQUEST_TIMEOUT = 10.0
"""Seconds per API request: a status page that hangs is worse than one that says why."""

PROFILE_LABEL = ("app.kubernetes.io/part-of", "kubeflow-profile")
"""The Kubeflow profile controller labels the namespaces it creates; used as evidence of a
Profile when the caller may not read Profiles."""

TYPE_NOT_SERVED = "the server could not find the requested resource"
"""kube-apiserver's 404 message for a resource type it does not serve (as opposed to
``profiles.kubeflow.org "x" not found`` for a missing object)."""

CACHED = "0"
"""``resourceVersion=0`` on lists: kube-apiserver answers from its watch cache instead of a
quorum read of etcd, far cheaper for hundreds of objects. The answer may be a few
milliseconds behind the latest write, which a status page can afford."""

PVC_EVENTS_SELECTOR = "involvedObject.kind=PersistentVolumeClaim,reason=ProvisioningFailed"
"""Only the Events the verdicts use. Both fields are selectable on core/v1 Events in
kube-apiserver; a busy namespace's other Events (ExternalProvisioning, pod churn) never cross
the wire."""


def _json(response: Any) -> Any:
    """The body of a ``_preload_content=False`` response, decoded."""
    return json.loads(response.data)


def _read(action: str, fn: Callable[[], T], *, forbidden: str) -> T | Unreadable:
    """One read; 403 becomes :class:`Unreadable` with ``forbidden`` (which permission)."""
    try:
        with kube_errors(action):
            return fn()
    except KubeForbidden:
        log.info("status: %s forbidden", action)
        return Unreadable(forbidden)


def _get_or_none(action: str, fn: Callable[[], T], *, forbidden: str) -> T | Unreadable | None:
    """Like :func:`_read`, but 404 (object or its type not served) is ``None``."""
    try:
        return _read(action, fn, forbidden=forbidden)
    except KubeNotFound:
        return None


def _items(response: Any) -> list[Any]:
    return list(_json(response).get("items") or [])


def fetch_psp_served(api_client: client.ApiClient) -> bool:
    """Whether the API serves policy/v1beta1 podsecuritypolicies (TKG up to 1.24).

    One discovery request (the reconciler's reader); 404 means the group-version is gone
    (Kubernetes 1.25+).
    """
    try:
        resources = fetch_json(api_client, "/apis/policy/v1beta1").get("resources") or []
    except KubeNotFound:
        return False
    return any(r.get("name") == "podsecuritypolicies" for r in resources)


def resolve_mode(api_client: client.ApiClient, *, settings: Settings, mode: str | None) -> str:
    """``psp`` | ``psa`` | ``off``: ``mode`` when given (e.g. the reconciler's resolved mode),
    else the configured mode, asking discovery only for ``auto``."""
    configured = mode or settings.pod_security.mode
    psp_served = fetch_psp_served(api_client) if configured == "auto" else False
    return podsecurity.decide_mode(configured, psp_served=psp_served)


def _readers(
    api_client: client.ApiClient, namespace: str, *, mode: str, webhook_name: str
) -> dict[str, Callable[[], Any]]:
    """One callable per read, each translating errors and turning 403 into Unreadable."""
    core = client.CoreV1Api(api_client)
    custom = client.CustomObjectsApi(api_client)
    timeout = REQUEST_TIMEOUT

    def get_profile() -> Any:
        try:
            with kube_errors(f"get profile {namespace}"):
                return custom.get_cluster_custom_object(
                    "kubeflow.org", "v1", "profiles", namespace, _request_timeout=timeout
                )
        except KubeNotFound as exc:
            if TYPE_NOT_SERVED not in str(exc):
                raise
        # Kubeflow before 1.3 serves Profiles as v1beta1 only (one more request, only there).
        return custom.get_cluster_custom_object(
            "kubeflow.org", "v1beta1", "profiles", namespace, _request_timeout=timeout
        )

    readers: dict[str, Callable[[], Any]] = {
        "namespace": lambda: _read(
            f"get namespace {namespace}",
            lambda: _json(
                core.read_namespace(namespace, _preload_content=False, _request_timeout=timeout)
            ),
            forbidden=f"Cannot check pod security: the caller may not get namespace {namespace}.",
        ),
        "pvcs": lambda: _read(
            f"list persistentvolumeclaims in {namespace}",
            lambda: _items(
                core.list_namespaced_persistent_volume_claim(
                    namespace,
                    resource_version=CACHED,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            ),
            forbidden=f"The caller may not list persistentvolumeclaims in {namespace}.",
        ),
        "events": lambda: _read(
            f"list events in {namespace}",
            lambda: _items(
                core.list_namespaced_event(
                    namespace,
                    field_selector=PVC_EVENTS_SELECTOR,
                    resource_version=CACHED,
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            ),
            forbidden="Provisioning errors are not shown: the caller may not list events in "
            f"{namespace}.",
        ),
        "storage_classes": lambda: _read(
            "list storageclasses",
            lambda: _items(
                client.StorageV1Api(api_client).list_storage_class(
                    resource_version=CACHED, _preload_content=False, _request_timeout=timeout
                )
            ),
            forbidden="Storage classes are not checked: the caller may not list "
            "storageclasses.storage.k8s.io.",
        ),
        "webhook": lambda: _get_or_none(
            f"get mutatingwebhookconfiguration {webhook_name}",
            lambda: _json(
                client.AdmissionregistrationV1Api(api_client).read_mutating_webhook_configuration(
                    webhook_name, _preload_content=False, _request_timeout=timeout
                )
            ),
            forbidden="Cannot check the webhook: the caller may not get "
            f"mutatingwebhookconfigurations.admissionregistration.k8s.io {webhook_name}.",
        ),
    }
    if mode != "off":
        readers["profile"] = lambda: _get_or_none(
            f"get profile {namespace}",
            get_profile,
            forbidden="Cannot check pod security: the caller may not get "
            f"profiles.kubeflow.org {namespace}.",
        )
    if mode == "psp":
        readers["bindings"] = lambda: _read(
            f"list rolebindings in {namespace}",
            lambda: _items(
                # A consistent read (no CACHED): the widget refreshes right after a Reconcile
                # and must see the binding it just created; the list is a handful of objects.
                client.RbacAuthorizationV1Api(api_client).list_namespaced_role_binding(
                    namespace, _preload_content=False, _request_timeout=timeout
                )
            ),
            forbidden="Cannot check pod security: the caller may not list "
            f"rolebindings.rbac.authorization.k8s.io in {namespace}.",
        )
    return readers


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
) -> PodSecurityFacts:
    """What pod security requires here and the planner's verdict on what is present."""
    if mode == "off":
        return PodSecurityFacts("off")
    ps = settings.pod_security
    desired = podsecurity.build_desired(namespace, mode=mode, settings=ps)
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
    api_client: client.ApiClient,
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
    resolved = resolve_mode(api_client, settings=settings, mode=mode)
    got = _fetch_all(_readers(api_client, namespace, mode=resolved, webhook_name=webhook_name))
    pvcs: list[PersistentVolumeClaim] | Unreadable = got["pvcs"]
    events: list[Event] | Unreadable = got["events"]
    storage_classes: list[StorageClass] | Unreadable = got["storage_classes"]
    webhook: MutatingWebhookConfiguration | Unreadable | None = got["webhook"]
    pod_security = build_pod_security_facts(
        namespace,
        mode=resolved,
        ns_obj=got["namespace"],
        profile=got.get("profile"),
        bindings=got.get("bindings", []),
        settings=settings,
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
    )
    return result.to_json()
