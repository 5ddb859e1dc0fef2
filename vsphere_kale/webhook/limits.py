"""Budgets that keep unauthenticated clients from holding the HTTPS server's memory or sockets.

The webhook port must be reachable by the API server without credentials, so anything that
can open a TCP connection to it can try to exhaust it (issue 10, finding 2: 20 connections
declaring 8 MiB bodies and stalling one byte short held +154 MB for minutes). Four bounds:

* **time**: the body must arrive within ``bodyTimeoutSeconds`` of its headers, and a request's
  headers within ``idleTimeoutSeconds`` of the connection becoming idle (tornado's header
  timeout, which is also what bounds a slowloris header trickle and a stalled TLS handshake);
* **connections**: at most ``maxConnections`` open, ``maxConnectionsPerAddress`` per client
  address; beyond that a new connection is closed at once;
* **buffered body bytes**: a request reserves its declared body size (chunked: the largest
  body we read) when its headers arrive, against a per-address and a total budget; a request
  that does not fit is answered 503 with ``Retry-After`` and its connection closed without
  reading the body. The reservation is released when the body has been read (the review is
  answered synchronously right after) or the connection closes.

The bounds are :class:`vsphere_kale.settings.ServerSettings` (the ``server`` group of the
settings file). The API server reuses keep-alive connections and sends PVC reviews of a few
KiB, so these bounds do not touch it (numbers in docs/security.md). This module is pure
accounting (no sockets, no tornado): the server calls it from its event loop thread only, so
no locks.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vsphere_kale.settings import ServerSettings


@dataclass
class Budget:
    """Open connections and reserved body bytes, per client address and in total."""

    limits: ServerSettings
    connections: int = 0
    body_bytes: int = 0
    _connections_by: dict[str, int] = field(default_factory=dict)
    _bytes_by: dict[str, int] = field(default_factory=dict)

    def admit_connection(self, address: str) -> str | None:
        """Count a new connection; a reason (and nothing counted) when it is refused."""
        if self.connections >= self.limits.max_connections:
            return "total"
        if self._connections_by.get(address, 0) >= self.limits.max_connections_per_address:
            return "address"
        self.connections += 1
        self._connections_by[address] = self._connections_by.get(address, 0) + 1
        return None

    def release_connection(self, address: str) -> None:
        self.connections = max(0, self.connections - 1)
        left = self._connections_by.get(address, 0) - 1
        if left > 0:
            self._connections_by[address] = left
        else:
            self._connections_by.pop(address, None)

    def reserve_body(self, address: str, size: int) -> str | None:
        """Reserve ``size`` body bytes; a reason (and nothing reserved) when they do not fit."""
        if size <= 0:
            return None
        if self.body_bytes + size > self.limits.max_body_bytes:
            return "total"
        if self._bytes_by.get(address, 0) + size > self.limits.max_body_bytes_per_address:
            return "address"
        self.body_bytes += size
        self._bytes_by[address] = self._bytes_by.get(address, 0) + size
        return None

    def release_body(self, address: str, size: int) -> None:
        if size <= 0:
            return
        self.body_bytes = max(0, self.body_bytes - size)
        left = self._bytes_by.get(address, 0) - size
        if left > 0:
            self._bytes_by[address] = left
        else:
            self._bytes_by.pop(address, None)

    def by_address(self, address: str) -> tuple[int, int]:
        """(connections, reserved body bytes) of one address, for tests and metrics."""
        return self._connections_by.get(address, 0), self._bytes_by.get(address, 0)


def decide_body_reservation(
    content_length: str | None, *, chunked: bool, max_body_bytes: int
) -> int:
    """Bytes a request may buffer: its declared length, capped at what we ever keep in
    memory (larger bodies are streamed and discarded); chunked bodies the cap itself."""
    if content_length is not None:
        if not content_length.isdigit():
            return 0  # answered 400 before any body is read
        return min(int(content_length), max_body_bytes)
    return max_body_bytes if chunked else 0
