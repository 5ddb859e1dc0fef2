"""What the reconciler keeps of the watched objects, and how it reads them back.

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
Requests go through :class:`vsphere_kale.kube.Kube` (the client's ``ApiClient``, without the
generated ``CoreV1Api``, whose first use alone costs ~20 MB), caches hold plain dicts rather
than pydantic models, and :func:`_trim` keeps only what planning reads of each cached object.
Measured peak RSS: 83 MB at 1,000 profile namespaces, 122 MB at 5,000 (see the benchmark).

Pod Security refusals (``psaLevel: auto``)
------------------------------------------
A controller that cannot create a pod records a ``FailedCreate`` Event whose message is the
API server's PodSecurity refusal; that is the evidence auto raises a level on. One
cluster-wide watch, selected by the server to ``reason=FailedCreate`` (Events' messages are
not a selectable field, and a watch per namespace would be thousands of connections), so the
stream carries only failed creations; the handler keeps a refusal's message and drops the
message of any other ``FailedCreate`` (quota, admission webhooks...), so the cache holds a few
hundred bytes per Event. Each refusal is reported once (by Event and message): the
controller's retries only bump the Event's ``count``, and the informer's periodic relist
hands every cached Event back as MODIFIED, neither of which is new evidence.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Mapping
from typing import Any

from vsphere_kale.health.psa_evidence import FAILED_CREATE_SELECTOR
from vsphere_kale.kube import Discovery, Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.kube.informers import ADDED, DELETED, MODIFIED, Informer
from vsphere_kale.policy.podsecurity import MANAGED_SELECTOR
from vsphere_kale.policy.podsecurity_evidence import Rejection, rejections_from_events
from vsphere_kale.reconcile.applier import profiles

# ownerReferences: a namespace is managed only when its controller reference is its Profile.
_KEEP_META = (
    "name",
    "namespace",
    "uid",
    "resourceVersion",
    "deletionTimestamp",
    "ownerReferences",
)
_KEEP: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # informer: (top-level keys kept besides metadata, metadata maps kept and interned)
    "namespaces": (("status",), ("labels", "annotations")),
    "profiles": ((), ()),
    "rolebindings": (("roleRef", "subjects"), ("labels",)),
    # What rejections_from_events reads (the message is dropped again unless it is a refusal).
    "events": (("reason", "involvedObject", "message"), ()),
}
_KEEP_INVOLVED = ("kind", "namespace", "name")


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
    involved = obj.get("involvedObject")
    if isinstance(involved, dict):
        obj["involvedObject"] = {k: involved[k] for k in _KEEP_INVOLVED if k in involved}
    status = obj.get("status")
    if isinstance(status, dict) and informer == "namespaces":
        obj["status"] = {"phase": status["phase"]} if "phase" in status else {}


def _key_namespace(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str((meta or {}).get("namespace") or "")


def _key_name(obj: Any) -> str:
    meta = obj.get("metadata") if isinstance(obj, dict) else None
    return str((meta or {}).get("name") or "")


RefusalHandler = Callable[[str, Rejection], None]
"""Called with the namespace and the refusal, once per new refusal (informer thread)."""


class Caches:
    """The informers (namespaces, profiles, and in psp mode our RoleBindings) and an index of
    managed bindings by namespace; every event hands ``on_key`` the namespace it concerns.
    With ``on_refusal``, also the ``FailedCreate`` Events (``psaLevel: auto``): each new Pod
    Security refusal goes to ``on_refusal`` instead (the caller decides whether its namespace
    is one we manage)."""

    def __init__(
        self,
        kube: Kube,
        *,
        resync_seconds: float,
        on_key: Callable[[str], None],
        on_refusal: RefusalHandler | None = None,
    ) -> None:
        self._kube = kube
        self._resync = resync_seconds
        self._on_key = on_key
        self._on_refusal = on_refusal
        self.informers: dict[str, Informer] = {}
        self._bindings_index: dict[str, set[str]] = {}
        self._index_lock = threading.Lock()
        self._refusals: dict[str, str] = {}
        """Event ``namespace/name`` -> the refusal's message, as last reported."""

    def build(self, discovery: Discovery, *, psp: bool, refusals: bool = False) -> None:
        self._add("namespaces", r.NAMESPACE)
        served = profiles(discovery)
        if served is not None:
            self._add("profiles", served)
        if psp:
            self._add("rolebindings", r.ROLE_BINDING, label_selector=MANAGED_SELECTOR)
        if refusals and self._on_refusal is not None:
            self._add("events", r.EVENT, field_selector=FAILED_CREATE_SELECTOR)

    def _add(
        self,
        name: str,
        resource: r.Resource,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> None:
        handlers: dict[str, Callable[[Any], None]]
        if name == "events":
            handlers = {ADDED: self._on_event, MODIFIED: self._on_event, DELETED: self._on_gone}
        elif name == "rolebindings":
            handlers = {
                ADDED: self._on_binding,
                MODIFIED: self._on_binding,
                DELETED: self._on_binding_deleted,
            }
        else:
            handler = self._on_profile if name == "profiles" else self._on_namespace
            handlers = {event: handler for event in (ADDED, MODIFIED, DELETED)}
        self.informers[name] = Informer(
            self._kube,
            resource,
            name=name,
            resync_seconds=self._resync,
            handlers=handlers,
            label_selector=label_selector,
            field_selector=field_selector,
        )

    def _on_profile(self, obj: Any) -> None:
        _trim(obj, "profiles")
        self._on_named(obj)

    def _on_namespace(self, obj: Any) -> None:
        _trim(obj, "namespaces")
        self._on_named(obj)

    def _on_named(self, obj: Any) -> None:
        name = _key_name(obj)
        if name:
            self._on_key(name)

    def _on_binding(self, obj: Any) -> None:
        _trim(obj, "rolebindings")
        ns, name = _key_namespace(obj), _key_name(obj)
        with self._index_lock:
            self._bindings_index.setdefault(ns, set()).add(name)
        self._on_key(ns)

    def _on_binding_deleted(self, obj: Any) -> None:
        ns, name = _key_namespace(obj), _key_name(obj)
        with self._index_lock:
            names = self._bindings_index.get(ns)
            if names is not None:
                names.discard(name)
                if not names:
                    del self._bindings_index[ns]
        self._on_key(ns)

    def _on_event(self, obj: Any) -> None:
        _trim(obj, "events")
        ns, name = _key_namespace(obj), _key_name(obj)
        key = f"{ns}/{name}"
        found = rejections_from_events([obj])
        if not found:
            obj.pop("message", None)  # not a refusal: its text is never read
            with self._index_lock:
                self._refusals.pop(key, None)
            return
        message = str(obj.get("message") or "")
        with self._index_lock:
            if self._refusals.get(key) == message:
                return  # a retry (count bumped) or a relist: nothing new
            self._refusals[key] = message
        if self._on_refusal is not None:
            self._on_refusal(ns, found[0])

    def _on_gone(self, obj: Any) -> None:
        key = f"{_key_namespace(obj)}/{_key_name(obj)}"
        with self._index_lock:
            self._refusals.pop(key, None)

    def get(self, informer: str, key: str) -> dict[str, Any] | None:
        found = self.informers.get(informer)
        if found is None:
            return None
        return found.get(key)

    def managed_bindings(self, namespace: str) -> list[Mapping[str, Any]]:
        with self._index_lock:
            names = sorted(self._bindings_index.get(namespace, ()))
        found = (self.get("rolebindings", f"{namespace}/{n}") for n in names)
        return [b for b in found if b is not None]


class CacheSource:
    """Facts from the informer caches (no API calls)."""

    def __init__(self, caches: Caches) -> None:
        self._c = caches

    def profile(self, name: str) -> Mapping[str, Any] | None:
        return self._c.get("profiles", name)

    def namespace(self, name: str) -> Mapping[str, Any] | None:
        return self._c.get("namespaces", name)

    def managed_bindings(self, namespace: str) -> list[Mapping[str, Any]] | None:
        return self._c.managed_bindings(namespace)


def _at_least(have: str, want: str) -> bool:
    """resourceVersions are opaque strings; kube-apiserver's (and the sandbox's) are
    increasing integers, which is all settling relies on. Anything else counts as seen."""
    if not want:
        return True
    try:
        return int(have or "0") >= int(want)
    except ValueError:
        return True
