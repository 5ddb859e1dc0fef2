"""Leader election on a coordination.k8s.io Lease, with the client's ``kubernetes.leaderelection``.

We reuse the library's election logic (``LeaderElection.try_acquire_or_renew``: create the
Lease, take it over once the holder stopped renewing for ``lease_duration``, renew it while
we hold it) and its ``LeaseLock``, and adapt three things it lacks (kubernetes 37.0.2):

- **An ApiClient**: ``LeaseLock`` builds ``CoordinationV1Api()`` on the default client, which
  knows nothing of our kubeconfig; :class:`_LeaseLock` points it at ours.
- **Stopping**: ``LeaderElection.acquire`` and ``renew_loop`` loop forever with
  ``time.sleep``; :class:`_StoppableElection` overrides both with the same logic waiting on a
  stop event, so shutdown is bounded and leaves no thread behind. Exceptions other than
  ``ApiException`` (connection refused, timeouts) would kill the library's thread; they count
  as a failed attempt instead.
- **Release on stop**: the library has none, so a replacement would wait a whole lease
  duration. :meth:`LeaderElector.stop` clears ``holderIdentity`` through the same
  ``LeaseLock.update`` (as client-go's ``ReleaseOnCancel``); the library's followers treat an
  empty holder as free and take the Lease on their next retry. ``update`` replaces the Lease
  with the resourceVersion of our last read, so if someone else took it meanwhile the
  release fails with 409 instead of clearing their hold.
- **Sub-second periods**: ``electionconfig.Config`` exits the process (``sys.exit``) for a
  retry period under one second; :class:`_Config` validates with exceptions and allows the
  short periods tests need. ``lease_duration`` stays whole seconds because the Lease field
  ``leaseDurationSeconds`` is an integer.
"""

from __future__ import annotations

import datetime
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from kubernetes.leaderelection import leaderelection
from kubernetes.leaderelection.leaderelectionrecord import LeaderElectionRecord
from kubernetes.leaderelection.resourcelock.leaselock import LeaseLock

from vsphere_kale.kube.api import Kube, translate

log = logging.getLogger(__name__)

LIBRARY_METHODS: dict[str, tuple[str, ...]] = {
    "LeaderElection.__init__": ("self", "election_config"),
    "LeaderElection.try_acquire_or_renew": ("self",),
    "LeaderElection.acquire": ("self",),
    "LeaderElection.renew_loop": ("self", "leading_failed"),
    "LeaderElection.run": ("self",),
    "LeaseLock.__init__": ("self", "name", "namespace", "identity"),
    "LeaseLock.get": ("self", "name", "namespace"),
    "LeaseLock.create": ("self", "name", "namespace", "election_record"),
    "LeaseLock.update": ("self", "name", "namespace", "updated_record"),
    "LeaseLock.get_lease_spec": ("self", "leader_election_record", "current_spec"),
}
"""The library methods this module overrides or calls, with the parameters it relies on
(kubernetes 37): a unit test compares them with the installed library, so an upgrade that
changes them fails loudly instead of breaking the election at run time."""


class _LeaseLock(LeaseLock):  # type: ignore[misc]
    """``LeaseLock`` on our ApiClient, warning (once per distinct problem) when the Lease
    cannot be read or created: the library only logs that at INFO, so a missing namespace
    or missing RBAC would leave every replica a silent follower forever."""

    def __init__(
        self, name: str, namespace: str, identity: str, *, api_client: client.ApiClient
    ) -> None:
        super().__init__(name, namespace, identity)
        self.api_instance = client.CoordinationV1Api(api_client)
        self._last_problem = ""

    def _problem(self, exc: ApiException, verb: str) -> None:
        message = str(translate(exc, action=f"{verb} lease {self.namespace}/{self.name}"))
        if message != self._last_problem:
            self._last_problem = message
            log.warning("leader election: %s", message)

    def get(self, name: str, namespace: str) -> tuple[bool, Any]:
        found, record = super().get(name, namespace)
        if not found and isinstance(record, ApiException) and record.status != 404:
            self._problem(record, "get")
        return found, record

    def create(self, name: str, namespace: str, election_record: LeaderElectionRecord) -> bool:
        body = client.V1Lease(metadata={"name": name}, spec=self.get_lease_spec(election_record))
        try:
            self.lease_reference = self.api_instance.create_namespaced_lease(namespace, body)
        except ApiException as exc:
            if exc.status != 409:  # another replica won the race: not a problem
                self._problem(exc, "create")
            return False
        return True


class _Config:
    """Attribute-compatible with ``electionconfig.Config`` (which ``sys.exit``s on bad
    values and refuses periods under one second)."""

    def __init__(
        self,
        lock: _LeaseLock,
        *,
        lease_duration: int,
        renew_deadline: float,
        retry_period: float,
        onstarted_leading: Callable[[], None],
        onstopped_leading: Callable[[], None],
    ) -> None:
        if lease_duration < 1 or int(lease_duration) != lease_duration:
            raise ValueError("lease_duration must be a whole number of seconds, at least 1")
        if not 0 < retry_period < renew_deadline < lease_duration:
            raise ValueError("need 0 < retry_period < renew_deadline < lease_duration")
        self.jitter_factor = 1.2
        self.lock = lock
        self.lease_duration = int(lease_duration)
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self.onstarted_leading = onstarted_leading
        self.onstopped_leading = onstopped_leading


class _StoppableElection(leaderelection.LeaderElection):  # type: ignore[misc]
    def __init__(self, config: _Config, stop: threading.Event) -> None:
        super().__init__(config)
        self._stop = stop

    def try_acquire_or_renew(self) -> bool:
        try:
            return bool(super().try_acquire_or_renew())
        except Exception as exc:  # loop boundary: a failed attempt, retried
            log.warning("leader election: lease %s: %s", self.election_config.lock.name, exc)
            return False

    def acquire(self) -> bool:
        retry = self.election_config.retry_period
        while not self._stop.is_set():
            if self.try_acquire_or_renew():
                return True
            self._stop.wait(retry)
        return False

    def renew_loop(self, leading_failed: threading.Event | None = None) -> None:
        retry = self.election_config.retry_period
        deadline_s = self.election_config.renew_deadline
        while not self._stop.is_set():
            if leading_failed is not None and leading_failed.is_set():
                return
            deadline = time.monotonic() + deadline_s
            renewed = False
            while time.monotonic() < deadline and not self._stop.is_set():
                if self.try_acquire_or_renew():
                    renewed = True
                    break
                self._stop.wait(retry)
            if not renewed:
                return
            self._stop.wait(retry)


class LeaderElector:
    """Runs the election in one thread; ``on_started``/``on_stopped`` are called from it.

    ``on_started`` must return promptly (the library runs it in a throwaway thread and stops
    leading if it raises); the leader keeps renewing until :meth:`stop` or a failed renewal,
    after which it stands for election again.
    """

    def __init__(
        self,
        kube: Kube,
        *,
        namespace: str,
        identity: str,
        name: str,
        on_started: Callable[[], None],
        on_stopped: Callable[[], None],
        lease_duration: int = 15,
        renew_deadline: float = 10.0,
        retry_period: float = 2.0,
    ) -> None:
        self.identity = identity
        self._lock = _LeaseLock(name, namespace, identity, api_client=kube.api_client)
        self._on_started = on_started
        self._on_stopped = on_stopped
        self._leading = threading.Event()
        self._stop = threading.Event()
        self._config = _Config(
            self._lock,
            lease_duration=lease_duration,
            renew_deadline=renew_deadline,
            retry_period=retry_period,
            onstarted_leading=self._started,
            onstopped_leading=self._stopped,
        )
        self._thread: threading.Thread | None = None

    @property
    def is_leader(self) -> bool:
        return self._leading.is_set()

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="leader-election", daemon=True)
        self._thread.start()

    def _started(self) -> None:
        log.info("leader election: %s leads (lease %s)", self.identity, self._lock.name)
        self._leading.set()
        self._on_started()

    def _stopped(self) -> None:
        if self._leading.is_set():
            log.info("leader election: %s stopped leading", self.identity)
        self._leading.clear()
        self._on_stopped()

    def _run(self) -> None:
        while not self._stop.is_set():
            election = _StoppableElection(self._config, self._stop)
            election.run()  # returns after losing the lease or on stop
            if not self._stop.is_set():
                # Lost the lease without being asked to stop (API unreachable past the renew
                # deadline, or someone else took it): stand for election again.
                self._stop.wait(self._config.retry_period)

    def stop(self, *, release: bool = True, timeout: float = 10.0) -> None:
        """Stop renewing and, when we hold it, release the Lease. Bounded by ``timeout``."""
        was_leader = self.is_leader
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.warning("leader election thread did not stop within %.1fs", timeout)
        if release and was_leader:
            self._release()

    def _release(self) -> None:
        try:
            found, record = self._lock.get(self._lock.name, self._lock.namespace)
            if not found or record is None or record.holder_identity != self.identity:
                return
            now = str(datetime.datetime.fromtimestamp(time.time()))
            # lease_duration "1": the smallest valid value; an empty holder already frees it.
            if self._lock.update(
                self._lock.name,
                self._lock.namespace,
                LeaderElectionRecord("", "1", record.acquire_time or now, now),
            ):
                log.info("leader election: %s released lease %s", self.identity, self._lock.name)
        except Exception as exc:  # shutdown path: the lease simply expires
            log.warning("leader election: could not release lease %s: %s", self._lock.name, exc)
