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

import logging
import secrets
import threading
import uuid

from vsphere_kale.errors import KubeConflict, KubeError, KubeNotFound
from vsphere_kale.sandbox.resources import (
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
from vsphere_kale.sandbox.store_base import StoreBase
from vsphere_kale.sandbox.store_objects import (
    NAMESPACE_FINALIZER,
    NAMESPACES,
    SUFFIX_ALPHABET,
    Watcher,
    WatchEvent,
    apply_create_defaults,
    apply_update_defaults,
    clone,
    ensure_meta,
    generation_content,
    normalize_meta,
    now_rfc3339,
)
from vsphere_kale.sandbox.types import JSONObject, ResourceRef

__all__ = ["Store", "WatchEvent", "Watcher", "clone", "now_rfc3339"]

log = logging.getLogger(__name__)


class Store(StoreBase):
    """Thread-safe object store implementing ``types.ObjectWriter`` (and ``ObjectReader``)."""

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
            name = prefix + "".join(secrets.choice(SUFFIX_ALPHABET) for _ in range(5))
            if (namespace, name) not in bucket:
                return name
        raise StatusError(500, "InternalError", f"could not generate a unique name for {prefix}")

    def create(
        self, rt: ResourceType, namespace: str | None, obj: JSONObject, *, dry_run: bool = False
    ) -> JSONObject:
        """Store a new object (``obj`` is consumed). Raises StatusError (404/403/409/422)."""
        meta = ensure_meta(obj)
        normalize_meta(meta)
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
            apply_create_defaults(rt, obj)
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
        meta = ensure_meta(obj)
        normalize_meta(meta)
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
            apply_update_defaults(rt, obj, current)
            if "generation" in cur_meta:
                changed = generation_content(obj) != generation_content(current)
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
