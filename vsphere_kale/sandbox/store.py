"""The sandbox's in-memory object store: one global resourceVersion, a bounded event history.

Everything happens under one re-entrant lock, so a write, its resourceVersion and the
delivery of its watch event to every registered watcher are one atomic step: watchers see
events in resourceVersion order and a watch started "from version N" never misses or repeats
an event (the history replay and the registration happen under the same lock).

Stored objects are never mutated in place (a write stores a new dict), so the history and
the watch queues share them safely; everything handed to callers is a deep copy.

The store is also the sandbox's namespace controller: deleting a namespace marks it
Terminating, then (shortly after, on a timer thread, as kube-controller-manager does) removes
every namespaced object in it, waits for objects held by finalizers, and finally removes the
namespace.
"""

from __future__ import annotations

import base64
import json
import logging
import queue
import secrets
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TypeVar, cast

from vsphere_kale.errors import KubeConflict, KubeError, KubeNotFound
from vsphere_kale.sandbox.resources import (
    Registry,
    ResourceType,
    StatusError,
    already_exists,
    conflict,
    forbidden,
    invalid,
    namespace_not_found,
    not_found,
    to_storage,
)
from vsphere_kale.sandbox.types import JSONObject, ResourceRef

log = logging.getLogger(__name__)

T = TypeVar("T")

NAMESPACES = ResourceRef("", "namespaces")
SECRETS = ResourceRef("", "secrets")
SERVICES = ResourceRef("", "services")
#: The finalizer kube-apiserver puts in every namespace's spec; the namespace controller
#: removes it once the namespace is empty.
NAMESPACE_FINALIZER = "kubernetes"
_SUFFIX_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # as k8s.io/apiserver's names.SimpleNameGenerator

Listener = Callable[[str, ResourceRef, JSONObject], None]


def clone(obj: T) -> T:
    """Deep copy of JSON data (a JSON round trip is faster than copy.deepcopy)."""
    return cast(T, json.loads(json.dumps(obj)))


def now_rfc3339() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass(frozen=True)
class WatchEvent:
    """One committed change. ``obj`` is shared: never mutate it."""

    rv: int
    ref: ResourceRef
    type: str  # ADDED | MODIFIED | DELETED | BOOKMARK
    obj: JSONObject
    prev: JSONObject | None = None
    """The object before this change (None for ADDED); watches with selectors need it."""


class Watcher:
    """A registered watch on one storage; ``deliver`` is called under the store lock.

    ``deliver`` must not block and must not call back into the store (the server's watcher
    hands events to its IOLoop with ``call_soon_threadsafe``).
    """

    def __init__(self, ref: ResourceRef, deliver: Callable[[WatchEvent], None]) -> None:
        self.ref = ref
        self.deliver = deliver


def _meta(obj: JSONObject) -> JSONObject:
    meta = obj.get("metadata")
    if meta is None:
        meta = obj["metadata"] = {}
    if not isinstance(meta, dict):
        raise StatusError(400, "BadRequest", "metadata must be an object")
    return meta


#: ObjectMeta fields Go serializes with ``omitempty``: an empty one is as good as absent.
_OMIT_EMPTY_META = ("labels", "annotations", "finalizers", "ownerReferences", "managedFields")


def _normalize_meta(meta: JSONObject) -> None:
    """Drop empty maps and lists kube-apiserver would not store (Go's omitempty), so a
    patch that leaves ``annotations: {}`` behind reads back as it would from a cluster."""
    for key in _OMIT_EMPTY_META:
        if key in meta and meta[key] in ({}, [], None):
            del meta[key]


def _content(obj: JSONObject) -> JSONObject:
    """Everything generation tracks: the object without metadata and status."""
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}


class Store:
    """Thread-safe object store implementing ``types.ObjectWriter`` (and ``ObjectReader``)."""

    def __init__(
        self,
        registry: Registry,
        *,
        watch_history: int = 10_000,
        namespace_sweep_delay: float = 0.05,
    ) -> None:
        self.registry = registry
        self.lock = threading.RLock()
        self._objects: dict[ResourceRef, dict[tuple[str, str], JSONObject]] = {
            rt.ref: {} for rt in registry.storage_types()
        }
        # Per-namespace index over the same objects: a namespaced list must not scan (and
        # sort) every object of the type in the cluster -- with thousands of profile
        # namespaces that dominated the reconciler benchmark.
        self._by_namespace: dict[ResourceRef, dict[str, dict[str, JSONObject]]] = {
            ref: {} for ref in self._objects
        }
        self._rv = 0
        self._history: deque[WatchEvent] = deque(maxlen=max(1, watch_history))
        self._history_floor = 0  # newest resourceVersion that fell out of the history
        self._watchers: set[Watcher] = set()
        self._listeners: list[Listener] = []
        self._dispatch: queue.Queue[WatchEvent | None] = queue.Queue()
        self._dispatcher: threading.Thread | None = None
        self._idle = threading.Condition()
        self._undispatched = 0
        self._timers: set[threading.Timer] = set()
        self._closed = False
        self.namespace_sweep_delay = namespace_sweep_delay

    # --- plumbing ---------------------------------------------------------------------------

    @property
    def resource_version(self) -> str:
        with self.lock:
            return str(self._rv)

    def storage_type(self, ref: ResourceRef) -> ResourceType:
        """The storage-owning type for ``ref`` (``KeyError`` if not served)."""
        return self.registry.by_ref(self.registry.by_ref(ref).storage_ref)

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], JSONObject]:
        return self._objects[rt.storage_ref]

    def _commit(self, rt: ResourceType, event_type: str, obj: JSONObject) -> JSONObject:
        """Assign the next resourceVersion, store/remove, record and deliver the event."""
        self._rv += 1
        meta = obj["metadata"]
        meta["resourceVersion"] = str(self._rv)
        key = (meta.get("namespace", ""), meta["name"])
        bucket = self._bucket(rt)
        prev = bucket.get(key)
        in_namespace = self._by_namespace[rt.storage_ref].setdefault(key[0], {})
        if event_type == "DELETED":
            bucket.pop(key, None)
            in_namespace.pop(key[1], None)
        else:
            bucket[key] = obj
            in_namespace[key[1]] = obj
        if len(self._history) == self._history.maxlen:
            self._history_floor = self._history[0].rv
        event = WatchEvent(self._rv, rt.storage_ref, event_type, obj, prev)
        self._history.append(event)
        for watcher in list(self._watchers):
            if watcher.ref == event.ref:
                watcher.deliver(event)
        if self._listeners:
            with self._idle:
                self._undispatched += 1
            self._dispatch.put(event)
        return clone(obj)

    def add_listener(self, listener: Listener) -> None:
        """Call ``listener(event_type, ref, obj)`` after every committed change.

        Listeners run in order on one dispatcher thread (not under the store lock), so they
        may write back through the store; exceptions are logged and ignored.
        """
        with self.lock:
            self._listeners.append(listener)
            if self._dispatcher is None:
                self._dispatcher = threading.Thread(
                    target=self._dispatch_loop, name="sandbox-controllers", daemon=True
                )
                self._dispatcher.start()

    def _dispatch_loop(self) -> None:
        while True:
            event = self._dispatch.get()
            if event is None:
                return
            for listener in list(self._listeners):
                try:
                    listener(event.type, event.ref, clone(event.obj))
                except Exception:  # a controller bug must not stop the others
                    log.exception("sandbox controller failed on %s %s", event.type, event.ref)
            with self._idle:
                self._undispatched -= 1
                self._idle.notify_all()

    def wait_dispatched(self, timeout: float = 5.0) -> bool:
        """Wait until every committed change has been handed to every listener."""
        with self._idle:
            return self._idle.wait_for(lambda: self._undispatched <= 0, timeout)

    def close(self) -> None:
        with self.lock:
            self._closed = True
            for timer in self._timers:
                timer.cancel()
            self._timers.clear()
            if self._dispatcher is not None:
                self._dispatch.put(None)
        if self._dispatcher is not None:
            self._dispatcher.join(timeout=2)

    # --- reads ------------------------------------------------------------------------------

    def get(self, rt: ResourceType, namespace: str | None, name: str) -> JSONObject | None:
        with self.lock:
            obj = self._bucket(rt).get((namespace or "", name))
            return clone(obj) if obj is not None else None

    def list_items(
        self, rt: ResourceType, namespace: str | None = None
    ) -> tuple[list[JSONObject], str]:
        """Objects (deep copies, sorted by namespace/name) and the current resourceVersion."""
        with self.lock:
            if namespace is None:
                items = [obj for _, obj in sorted(self._bucket(rt).items())]
            else:
                in_namespace = self._by_namespace[rt.storage_ref].get(namespace, {})
                items = [in_namespace[name] for name in sorted(in_namespace)]
            return clone(items), str(self._rv)

    def watch(
        self, rt: ResourceType, since: int | None, deliver: Callable[[WatchEvent], None]
    ) -> tuple[list[WatchEvent], Watcher]:
        """Register a watcher; return the events to send first and the watcher.

        ``since`` None: synthetic ADDED events for the current state. Otherwise the recorded
        events after ``since``; 410 Expired if the history no longer reaches back that far.
        """
        ref = rt.storage_ref
        with self.lock:
            if since is None:
                initial = sorted(
                    (
                        WatchEvent(int(o["metadata"]["resourceVersion"]), ref, "ADDED", o)
                        for o in self._bucket(rt).values()
                    ),
                    key=lambda e: e.rv,
                )
            else:
                if since < self._history_floor:
                    raise StatusError(
                        410,
                        "Expired",
                        f"too old resource version: {since} ({self._history_floor + 1})",
                    )
                initial = []
                for event in reversed(self._history):
                    if event.rv <= since:
                        break
                    if event.ref == ref:
                        initial.append(event)
                initial.reverse()
            watcher = Watcher(ref, deliver)
            self._watchers.add(watcher)
            return initial, watcher

    def bookmark(self, watcher: Watcher) -> None:
        """Send ``watcher`` a BOOKMARK with the current resourceVersion, in order with its
        events (through the same ``deliver`` channel, under the lock)."""
        with self.lock:
            if watcher in self._watchers:
                watcher.deliver(
                    WatchEvent(
                        self._rv,
                        watcher.ref,
                        "BOOKMARK",
                        {"metadata": {"resourceVersion": str(self._rv)}},
                    )
                )

    def unwatch(self, watcher: Watcher) -> None:
        with self.lock:
            self._watchers.discard(watcher)

    # --- writes -----------------------------------------------------------------------------

    def _check_namespace(self, rt: ResourceType, namespace: str, name: str) -> None:
        ns = self._objects[NAMESPACES].get(("", namespace))
        if ns is None:
            raise namespace_not_found(namespace)
        if ns.get("metadata", {}).get("deletionTimestamp"):
            raise forbidden(
                rt,
                name,
                f"unable to create new content in namespace {namespace} because it is being "
                "terminated",
            )

    def _generate_name(self, rt: ResourceType, namespace: str, prefix: str) -> str:
        bucket = self._bucket(rt)
        for _ in range(100):
            name = prefix + "".join(secrets.choice(_SUFFIX_ALPHABET) for _ in range(5))
            if (namespace, name) not in bucket:
                return name
        raise StatusError(500, "InternalError", f"could not generate a unique name for {prefix}")

    def create(
        self, rt: ResourceType, namespace: str | None, obj: JSONObject, *, dry_run: bool = False
    ) -> JSONObject:
        """Store a new object (``obj`` is consumed). Raises StatusError (404/403/409/422)."""
        meta = _meta(obj)
        _normalize_meta(meta)
        ns = (namespace or "") if rt.namespaced else ""
        with self.lock:
            name = meta.get("name") or ""
            if not name and meta.get("generateName"):
                name = self._generate_name(rt, ns, str(meta["generateName"]))
            if not name:
                raise invalid(
                    rt, "", [("metadata.name", "Required value: name or generateName is required")]
                )
            if rt.namespaced:
                if not ns:
                    raise StatusError(400, "BadRequest", "the namespace of the object must be set")
                self._check_namespace(rt, ns, name)
            if (ns, name) in self._bucket(rt):
                raise already_exists(rt, name)
            meta["name"] = name
            if rt.namespaced:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            meta["uid"] = str(uuid.uuid4())
            meta["creationTimestamp"] = now_rfc3339()
            for field in ("resourceVersion", "deletionTimestamp", "deletionGracePeriodSeconds"):
                meta.pop(field, None)
            if "spec" in obj and rt.ref != NAMESPACES:
                meta["generation"] = 1
            _apply_defaults(rt, obj)
            if dry_run:
                return clone(obj)
            return self._commit(rt, "ADDED", obj)

    def update(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        obj: JSONObject,
        *,
        dry_run: bool = False,
        expect_rv: str | None = None,
    ) -> JSONObject:
        """Replace an object. ``obj``'s resourceVersion (or ``expect_rv``) is a precondition.

        A no-op update keeps the resourceVersion and sends no event, as kube-apiserver does.
        Removing the last finalizer of an object being deleted deletes it.
        """
        ns = (namespace or "") if rt.namespaced else ""
        meta = _meta(obj)
        _normalize_meta(meta)
        with self.lock:
            current = self._bucket(rt).get((ns, name))
            if current is None:
                raise not_found(rt, name)
            cur_meta = current["metadata"]
            wanted_rv = meta.get("resourceVersion") or expect_rv
            if wanted_rv and str(wanted_rv) != cur_meta["resourceVersion"]:
                raise conflict(rt, name)
            meta["name"] = name
            if rt.namespaced:
                meta["namespace"] = ns
            else:
                meta.pop("namespace", None)
            for field in (
                "uid",
                "creationTimestamp",
                "deletionTimestamp",
                "deletionGracePeriodSeconds",
            ):
                if field in cur_meta:
                    meta[field] = cur_meta[field]
                else:
                    meta.pop(field, None)
            _apply_update_defaults(rt, obj, current)
            if "generation" in cur_meta:
                changed = _content(obj) != _content(current)
                meta["generation"] = cur_meta["generation"] + (1 if changed else 0)
            if rt.ref == NAMESPACES and cur_meta.get("deletionTimestamp"):
                obj.setdefault("status", {})["phase"] = "Terminating"
            meta["resourceVersion"] = cur_meta["resourceVersion"]
            if obj == current:
                return clone(current)
            if dry_run:
                return clone(obj)
            if meta.get("deletionTimestamp") and not meta.get("finalizers"):
                if rt.ref == NAMESPACES and (obj.get("spec") or {}).get("finalizers"):
                    # The namespace controller still holds it: it removes the namespace once
                    # its content is gone.
                    result = self._commit(rt, "MODIFIED", obj)
                    self._schedule_sweep(name)
                    return result
                result = self._commit(rt, "DELETED", obj)
                if rt.namespaced:
                    self._schedule_sweep(ns)
                return result
            return self._commit(rt, "MODIFIED", obj)

    def delete(
        self,
        rt: ResourceType,
        namespace: str | None,
        name: str,
        *,
        dry_run: bool = False,
        preconditions: JSONObject | None = None,
    ) -> JSONObject:
        """Delete now, or mark for deletion if finalizers hold the object (or it is a
        namespace: those are emptied first). Returns the object as last stored."""
        ns = (namespace or "") if rt.namespaced else ""
        with self.lock:
            current = self._bucket(rt).get((ns, name))
            if current is None:
                raise not_found(rt, name)
            cur_meta = current["metadata"]
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != cur_meta.get("uid"):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, "
                    f"UID in object meta: {cur_meta.get('uid')}",
                )
            if pre.get("resourceVersion") and pre["resourceVersion"] != cur_meta["resourceVersion"]:
                raise conflict(rt, name)
            if rt.ref == NAMESPACES or cur_meta.get("finalizers"):
                if cur_meta.get("deletionTimestamp"):
                    return clone(current)
                obj = clone(current)
                obj["metadata"]["deletionTimestamp"] = now_rfc3339()
                obj["metadata"]["deletionGracePeriodSeconds"] = 0
                if rt.ref == NAMESPACES:
                    obj.setdefault("status", {})["phase"] = "Terminating"
                if dry_run:
                    return obj
                result = self._commit(rt, "MODIFIED", obj)
                if rt.ref == NAMESPACES:
                    self._schedule_sweep(name)
                return result
            if dry_run:
                return clone(current)
            return self._commit(rt, "DELETED", clone(current))

    # --- namespace controller ---------------------------------------------------------------

    def _schedule_sweep(self, namespace: str) -> None:
        ns = self._objects[NAMESPACES].get(("", namespace))
        if ns is None or not ns["metadata"].get("deletionTimestamp") or self._closed:
            return
        if self.namespace_sweep_delay <= 0:
            self.sweep_namespace(namespace)
            return
        timer = threading.Timer(self.namespace_sweep_delay, self._timer_sweep, args=(namespace,))
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _timer_sweep(self, namespace: str) -> None:
        with self.lock:
            self._timers = {
                t for t in self._timers if t.is_alive() and t is not threading.current_thread()
            }
            if not self._closed:
                self.sweep_namespace(namespace)

    def sweep_namespace(self, namespace: str) -> None:
        """Remove a Terminating namespace's content, then the namespace once it is empty."""
        with self.lock:
            ns_obj = self._objects[NAMESPACES].get(("", namespace))
            if ns_obj is None or not ns_obj["metadata"].get("deletionTimestamp"):
                return
            remaining = 0
            for rt in self.registry.storage_types():
                if not rt.namespaced:
                    continue
                for (ns, name), obj in sorted(self._bucket(rt).items()):
                    if ns != namespace:
                        continue
                    if obj["metadata"].get("finalizers"):
                        remaining += 1
                        if not obj["metadata"].get("deletionTimestamp"):
                            self.delete(rt, namespace, name)
                    else:
                        self._commit(rt, "DELETED", clone(obj))
            if remaining:
                log.debug("namespace %s waits for %d finalized objects", namespace, remaining)
                return
            ns_rt = self.registry.by_ref(NAMESPACES)
            obj = clone(ns_obj)
            spec_finalizers = (obj.get("spec") or {}).get("finalizers") or []
            if NAMESPACE_FINALIZER in spec_finalizers:
                obj["spec"]["finalizers"] = [f for f in spec_finalizers if f != NAMESPACE_FINALIZER]
            if obj["metadata"].get("finalizers") or obj["spec"].get("finalizers"):
                if obj != ns_obj:
                    self._commit(ns_rt, "MODIFIED", obj)
                return
            self._commit(ns_rt, "DELETED", obj)

    # --- types.ObjectWriter -----------------------------------------------------------------

    def list_objects(self, ref: ResourceRef, namespace: str | None = None) -> list[JSONObject]:
        rt = self.storage_type(ref)
        return self.list_items(rt, namespace)[0]

    def get_object(self, ref: ResourceRef, namespace: str | None, name: str) -> JSONObject | None:
        return self.get(self.storage_type(ref), namespace, name)

    def create_object(self, ref: ResourceRef, namespace: str | None, obj: JSONObject) -> JSONObject:
        """Create for in-process writers (controllers, seed data); no admission, no authz."""
        served = self.registry.by_ref(ref)
        body = to_storage(served, clone(obj))
        try:
            return self.create(self.storage_type(ref), namespace, body)
        except StatusError as exc:
            if exc.code == 409:
                raise KubeConflict(exc.message, status=409, reason=exc.reason) from exc
            if exc.code == 404:
                raise KubeNotFound(exc.message, status=404, reason=exc.reason) from exc
            raise KubeError(exc.message, status=exc.code, reason=exc.reason) from exc

    def update_object(self, ref: ResourceRef, namespace: str | None, obj: JSONObject) -> JSONObject:
        """Replace for in-process writers; ``obj``'s resourceVersion is a precondition."""
        served = self.registry.by_ref(ref)
        body = to_storage(served, clone(obj))
        name = str((body.get("metadata") or {}).get("name") or "")
        try:
            return self.update(self.storage_type(ref), namespace, name, body)
        except StatusError as exc:
            if exc.code == 409:
                raise KubeConflict(exc.message, status=409, reason=exc.reason) from exc
            if exc.code == 404:
                raise KubeNotFound(exc.message, status=404, reason=exc.reason) from exc
            raise KubeError(exc.message, status=exc.code, reason=exc.reason) from exc

    def delete_object(self, ref: ResourceRef, namespace: str | None, name: str) -> None:
        """Delete for in-process writers; a missing object is not an error."""
        try:
            self.delete(self.storage_type(ref), namespace, name)
        except StatusError as exc:
            if exc.code != 404:
                raise KubeError(exc.message, status=exc.code, reason=exc.reason) from exc


def _apply_defaults(rt: ResourceType, obj: JSONObject) -> None:
    """The few defaults kube-apiserver fills in that our users look at."""
    if rt.ref == NAMESPACES:
        meta = obj["metadata"]
        # Since Kubernetes 1.21 every namespace carries its name as a label, which is what
        # webhook namespaceSelectors usually match on.
        meta.setdefault("labels", {})["kubernetes.io/metadata.name"] = meta["name"]
        obj.setdefault("spec", {}).setdefault("finalizers", [NAMESPACE_FINALIZER])
        obj.setdefault("status", {})["phase"] = "Active"
    elif rt.ref == ResourceRef("", "persistentvolumeclaims"):
        obj.setdefault("status", {}).setdefault("phase", "Pending")
        if isinstance(obj.get("spec"), dict):
            obj["spec"].setdefault("volumeMode", "Filesystem")
    elif rt.ref == ResourceRef("", "persistentvolumes"):
        obj.setdefault("status", {}).setdefault("phase", "Available")
    _apply_update_defaults(rt, obj, None)


def _apply_update_defaults(rt: ResourceType, obj: JSONObject, current: JSONObject | None) -> None:
    """Defaults kube applies on every write: Secret ``stringData`` folds into ``data``;
    a Service keeps (or gets) its cluster IP, type and port defaults."""
    if rt.ref == SECRETS and isinstance(obj.get("stringData"), dict):
        data: JSONObject = obj["data"] if isinstance(obj.get("data"), dict) else {}
        for key, value in obj.pop("stringData").items():
            data[key] = base64.b64encode(str(value).encode()).decode("ascii")
        obj["data"] = data
    elif rt.ref == SERVICES and isinstance(obj.get("spec"), dict):
        spec = obj["spec"]
        spec.setdefault("type", "ClusterIP")
        old_ip = ((current or {}).get("spec") or {}).get("clusterIP")
        if not spec.get("clusterIP"):
            spec["clusterIP"] = old_ip or _cluster_ip(str(obj["metadata"].get("uid", "")))
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
        for port in spec.get("ports") or []:
            if isinstance(port, dict):
                port.setdefault("protocol", "TCP")
                port.setdefault("targetPort", port.get("port"))


def _cluster_ip(seed: str) -> str:
    """A stable address in 10.96.0.0/12 (kube's default service range) for a Service uid."""
    digest = int(uuid.UUID(seed).hex[:8], 16) if seed else secrets.randbits(32)
    return f"10.{96 + (digest >> 16) % 16}.{(digest >> 8) % 256}.{1 + digest % 254}"
