"""Kubernetes Events about profile namespaces (core/v1), sent from a background thread.

Where the Event lives: in the namespace it is about, with ``involvedObject`` the Namespace
(``namespace`` set to its own name, which kube-apiserver's validation requires for an Event
outside ``default``). Kubeflow users usually may read only their own namespace, so
``kubectl get events -n alice`` shows them why their pods can (or cannot) start; the price is
that ``kubectl describe namespace alice``, which looks for Events of cluster-scoped objects
in ``default``, does not list them.

Recording never blocks a reconcile: events go through a bounded queue to one sender thread
and are dropped (with a debug log) when it is full. The same reason and message for the same
namespace is sent at most once per ``dedupe_seconds``, so a namespace retried with backoff
does not flood its Events.
"""

from __future__ import annotations

import datetime
import logging
import queue
import secrets
import threading
import time
from dataclasses import dataclass

from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r

log = logging.getLogger(__name__)

COMPONENT = "vsphere-kale"

BINDING_CREATED = "PodSecurityBindingCreated"
BINDING_REPAIRED = "PodSecurityBindingRepaired"
LABELS_APPLIED = "PodSecurityLabelsApplied"
RECONCILE_FAILED = "PodSecurityReconcileFailed"


@dataclass(frozen=True)
class _Pending:
    namespace: str
    uid: str
    reason: str
    message: str
    type: str


class EventRecorder:
    def __init__(
        self,
        kube: Kube,
        *,
        instance: str,
        component: str = COMPONENT,
        max_pending: int = 10_000,
        dedupe_seconds: float = 600.0,
    ) -> None:
        self._kube = kube
        self._instance = instance
        self._component = component
        self._queue: queue.Queue[_Pending | None] = queue.Queue(maxsize=max_pending)
        self._dedupe = dedupe_seconds
        self._recent: dict[tuple[str, str, str], float] = {}
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.sent = 0
        self.failed = 0

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="event-recorder", daemon=True)
            self._thread.start()

    def record(
        self, namespace: str, *, uid: str, reason: str, message: str, warning: bool = False
    ) -> None:
        key = (namespace, reason, message)
        now = time.monotonic()
        with self._lock:
            last = self._recent.get(key)
            if last is not None and now - last < self._dedupe:
                return
            self._recent[key] = now
            if len(self._recent) > 10_000:  # bound memory: forget the expired ones
                self._recent = {k: t for k, t in self._recent.items() if now - t < self._dedupe}
        pending = _Pending(namespace, uid, reason, message, "Warning" if warning else "Normal")
        if self._thread is None:
            self._send(pending)  # not started (one-shot CLI): send inline
            return
        try:
            self._queue.put_nowait(pending)
        except queue.Full:
            log.debug("event queue full, dropped %s for namespace %s", reason, namespace)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until queued events were sent (or failed). For tests and shutdown."""
        deadline = time.monotonic() + timeout
        while self._queue.unfinished_tasks and time.monotonic() < deadline:
            time.sleep(0.01)
        return not self._queue.unfinished_tasks

    def stop(self, timeout: float = 5.0) -> None:
        if self._thread is None:
            return
        self.flush(timeout / 2)
        try:
            self._queue.put(None, timeout=timeout / 2)
        except queue.Full:
            log.warning("event queue still full at shutdown")
        self._thread.join(timeout / 2)
        self._thread = None

    def _run(self) -> None:
        while True:
            item = self._queue.get()
            try:
                if item is None:
                    return
                self._send(item)
            finally:
                self._queue.task_done()

    def _send(self, item: _Pending) -> None:
        now = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
        body = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {
                # client-go's naming: <object>.<unique suffix>
                "name": f"{item.namespace}.{time.time_ns():x}{secrets.token_hex(2)}",
                "namespace": item.namespace,
            },
            "involvedObject": {
                "apiVersion": "v1",
                "kind": "Namespace",
                "name": item.namespace,
                "namespace": item.namespace,
                "uid": item.uid or None,
            },
            "reason": item.reason,
            "message": item.message,
            "type": item.type,
            "source": {"component": self._component},
            "reportingComponent": self._component,
            "reportingInstance": self._instance,
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
            "action": "Reconcile",
        }
        try:
            self._kube.create(r.EVENT, body)
            self.sent += 1
        except Exception as exc:  # loop boundary: an Event is best effort, never fatal
            self.failed += 1
            log.info("could not record event %s in %s: %s", item.reason, item.namespace, exc)
