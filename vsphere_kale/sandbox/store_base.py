"""The sandbox store's core: objects, resourceVersions, watches and listeners (reads only).

:class:`~vsphere_kale.sandbox.store.Store` builds the writes, with kube-apiserver's semantics,
on it.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections import deque
from collections.abc import Callable

from vsphere_kale.sandbox.resources import (
    Registry,
    ResourceType,
    StatusError,
)
from vsphere_kale.sandbox.store_objects import (
    Listener,
    Watcher,
    WatchEvent,
    clone,
)
from vsphere_kale.sandbox.types import JSONObject, ResourceRef

log = logging.getLogger("vsphere_kale.sandbox.store")


class StoreBase:
    """The objects by type and namespace, the resourceVersion counter, the watch history
    and fan-out, and the listeners' dispatcher thread; :class:`Store` adds the writes."""

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
