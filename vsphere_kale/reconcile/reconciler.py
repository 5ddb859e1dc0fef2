"""The pod-security reconciler: informers -> keyed queue -> plan -> apply, on the leader only.

Flow
----
Up to four informers (``kubernetes.informer.SharedInformer`` through
:mod:`vsphere_kale.kube.informers`) (list, then watch from the list's
resourceVersion; relist on 410 Gone) feed a
:class:`~vsphere_kale.reconcile.workqueue.WorkQueue` keyed
by namespace name:

- Profiles (kubeflow.org ``v1``, or ``v1beta1`` when ``v1`` is not served) -> the Profile's
  name, which is its namespace's name;
- Namespaces -> the name;
- RoleBindings labelled ``app.kubernetes.io/managed-by=vsphere-kale`` (psp mode only) -> their
  namespace;
- ``FailedCreate`` Events (``psaLevel: auto`` only) -> the namespace of a new Pod Security
  refusal, if we manage it, so the level rises without waiting for the resync.

A worker reads the caches (never a per-namespace GET), asks
:func:`vsphere_kale.policy.podsecurity.plan` what to do, and
:class:`~vsphere_kale.reconcile.applier.PodSecurityApplier` writes.
Only the leader (a Lease, :mod:`vsphere_kale.reconcile.leader`) enqueues and writes; followers
keep warm caches so a failover starts without a relist. Every ``podSecurity.resyncSeconds``
the leader enqueues every managed namespace from the caches: zero list calls of ours, and
zero writes when nothing drifted (each informer also relists once per period, three list
calls, which heals any watch event a broken connection may have lost).

Writes
------
Create and handle 409 rather than check-then-create; a 409 (or a 404 under a patch, or a
failed uid precondition) means someone changed the objects after we read them, so we read
them again (live) and plan again. Namespace labels are a JSON merge patch touching only our
labels and our annotation. After a write the namespace waits (briefly, bounded) until the
caches have seen it, so a reconcile triggered in between does not act on stale state twice.

What the caches keep, and why only managed RoleBindings are watched: :mod:`.caches`. The
one-shot CLI path: :mod:`.once`. ``psaLevel: auto``: :mod:`.psa_auto`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from prometheus_client import CollectorRegistry

from vsphere_kale.errors import KubeError
from vsphere_kale.kube import Discovery, Kube
from vsphere_kale.kube.informers import Informer, quiet_dropped_watches
from vsphere_kale.policy.podsecurity import (
    decide_managed,
    decide_mode,
)
from vsphere_kale.policy.podsecurity_evidence import Rejection
from vsphere_kale.policy.text import sentence
from vsphere_kale.reconcile.applier import (
    SETTLE_SECONDS,
    LiveSource,
    NamespaceResult,
    PodSecurityApplier,
    SnapshotSource,
    Written,
    resource_version_of,
)
from vsphere_kale.reconcile.caches import Caches, CacheSource, _at_least
from vsphere_kale.reconcile.events import EventRecorder
from vsphere_kale.reconcile.leader import LEASE_NAME, LeaderElector
from vsphere_kale.reconcile.metrics import ReconcilerMetrics
from vsphere_kale.reconcile.once import _candidates, reconcile_once
from vsphere_kale.reconcile.workqueue import WorkQueue
from vsphere_kale.settings import Settings

__all__ = ["Reconciler", "reconcile_once"]

log = logging.getLogger(__name__)


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
        kube: Kube,
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
        self.kube = kube
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
        self.caches = Caches(
            kube, resync_seconds=self._resync, on_key=self._enqueue, on_refusal=self._on_refusal
        )
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
        self.events = EventRecorder(kube, instance=identity)
        self._applier: PodSecurityApplier | None = None
        self._cache_source = CacheSource(self.caches)

    # -- lifecycle --

    def start(self) -> None:
        """Discover the mode, start informers, workers, resync and the election. Raises
        :class:`~vsphere_kale.errors.KubeError` when the API server cannot be reached."""
        if self._started:
            return
        self._started = True
        # Read afresh: a restarted reconciler must see a Profile CRD installed meanwhile.
        self.discovery = self.kube.discovery(refresh=True)
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
            self.kube,
            self.settings,
            mode=self.mode,
            discovery=self.discovery,
            events=self.events,
            metrics=self.metrics,
        )
        if self.mode != "off":
            quiet_dropped_watches()
            self._build_informers()
            self.events.start()
            for informer in self._informers.values():
                informer.start()
            for i in range(self._workers_n):
                self._spawn(self._work, f"reconcile-worker-{i}")
            self._spawn(self._resync_loop, "reconcile-resync")
        # Even with mode off: serve's certificate rotation also runs on the leader only.
        if self._use_election:
            lease, renew, retry = self._election_args
            self._elector = LeaderElector(
                self.kube,
                namespace=self.settings.namespace,
                identity=self.identity,
                name=LEASE_NAME,
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
        auto = self.mode == "psa" and self.settings.pod_security.psa_level == "auto"
        self.caches.build(self.discovery, psp=self.mode == "psp", refusals=auto)

    @property
    def _informers(self) -> dict[str, Informer]:
        return self.caches.informers

    def _enqueue(self, key: str) -> None:
        if self._leading.is_set():
            self._queue.add(key)

    def _on_refusal(self, namespace: str, rejection: Rejection) -> None:
        """A new Pod Security refusal (``psaLevel: auto``): its namespace is reconciled now,
        not at the next resync, so the level rises within seconds of the refused pod."""
        if not self.is_leader() or not self._is_managed(namespace):
            return  # a follower's caches stay warm; a new leader reconciles everything
        self.metrics.refusals.inc()
        log.info(
            "namespace %s: Pod Security refused a pod of %s at %s; reconciling",
            namespace,
            rejection.source,
            rejection.level,
            extra={"namespace": namespace},
        )
        self._queue.add(namespace)

    def _get(self, informer: str, key: str) -> dict[str, Any] | None:
        return self.caches.get(informer, key)

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

    def leader_identity(self) -> str:
        """The current leader's identity as this replica last saw it ("" when unknown)."""
        if self.is_leader():
            return self.identity
        return self._elector.leader_identity() if self._elector is not None else ""

    def has_synced(self) -> bool:
        if not self._started or self.discovery is None:
            return False
        return all(i.synced for i in self._informers.values())

    def unsynced(self) -> list[str]:
        """Informers (namespaces, profiles, rolebindings) still waiting for their first list."""
        if not self._started or self.discovery is None:
            return ["(not started)"]
        return [name for name, i in self._informers.items() if not i.synced]

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
        return sorted(name for name in informer.cached_keys() if self._is_managed(name))

    def _is_managed(self, name: str) -> bool:
        namespace_obj = self._get("namespaces", name)
        if namespace_obj is None:
            return False
        managed, _ = decide_managed(
            name,
            profile=self._get("profiles", name),
            namespace_obj=namespace_obj,
            settings=self.settings.pod_security,
            service_namespace=self.settings.namespace,
        )
        return managed

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
            # A key that had failed and now succeeds means the API is back: the others'
            # backoffs are reset too, so convergence after a fault storm takes seconds.
            self._queue.forget(key, recovered=True)
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
            if not _at_least(resource_version_of(cached), w.resource_version):
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
            self._resolve(waiters, NamespaceResult(key, "failed", (), sentence(why)))

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
            return applier.reconcile(namespace, LiveSource(self.kube, self.discovery)).result
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
            snapshot = SnapshotSource(self.kube, self.discovery, psp=self.mode == "psp")
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
