"""Fault injection for reliability tests: make the next N matching requests fail.

    sandbox.faults.inject(verb="create", resource="rolebindings", status=500, count=2)
    sandbox.faults.inject(verb="list", resource="namespaces", status=429, retry_after=1)
    sandbox.faults.inject(verb="get", resource="configmaps", drop_connection=True)
    sandbox.faults.inject(verb="watch", resource="namespaces", status=410)

A fault matches on verb (RBAC verb: get, list, watch, create, update, patch, delete,
deletecollection), resource (plural), and optionally namespace and name; ``None`` matches
anything. A watch fault with status 410 answers the watch with an ERROR event carrying a
410 Expired Status, as kube-apiserver does when the requested version left its history; any
other status fails the watch request itself. Thread-safe: tests inject from their own thread.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

from vsphere_kale.sandbox.resources import StatusError

_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}


@dataclass
class Fault:
    verb: str | None
    resource: str | None
    namespace: str | None
    name: str | None
    status: int
    remaining: int
    retry_after: int | None = None
    drop_connection: bool = False
    message: str = ""
    reason: str = ""

    def matches(self, verb: str, resource: str, namespace: str, name: str) -> bool:
        return (
            (self.verb is None or self.verb == verb)
            and (self.resource is None or self.resource == resource)
            and (self.namespace is None or self.namespace == namespace)
            and (self.name is None or self.name == name)
        )

    def error(self) -> StatusError:
        reason = self.reason or _REASONS.get(self.status, "InternalError")
        message = self.message or f"injected fault: {reason} ({self.status})"
        if self.status == 410 and not self.message:
            message = "too old resource version: injected fault"
        return StatusError(self.status, reason, message, retry_after=self.retry_after)


class FaultInjector:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.fired = 0
        """How many requests failed by injection (tests assert on it)."""

    def inject(
        self,
        *,
        verb: str | None = None,
        resource: str | None = None,
        namespace: str | None = None,
        name: str | None = None,
        status: int = 500,
        count: int = 1,
        retry_after: int | None = None,
        drop_connection: bool = False,
        message: str = "",
        reason: str = "",
    ) -> Fault:
        """Fail the next ``count`` requests matching verb/resource/namespace/name."""
        if count < 1:
            raise ValueError("count must be at least 1")
        if not drop_connection and not 400 <= status <= 599:
            raise ValueError(f"status {status} is not an error status")
        fault = Fault(
            verb,
            resource,
            namespace,
            name,
            status,
            count,
            retry_after,
            drop_connection,
            message,
            reason,
        )
        with self._lock:
            self._faults.append(fault)
        return fault

    def take(self, verb: str, resource: str, namespace: str = "", name: str = "") -> Fault | None:
        """Consume one matching fault, or None."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(verb, resource, namespace, name):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    self.fired += 1
                    return fault
        return None

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def pending(self) -> int:
        with self._lock:
            return sum(f.remaining for f in self._faults)
