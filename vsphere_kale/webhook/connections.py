"""Connections of the webhook server: caps on open connections and buffered bodies, and
knowing which connections are mid-request, so that SIGTERM drains those and closes the idle.

:class:`LimitedHTTPServer` refuses connections over the budget before the TLS handshake;
:class:`RequestTracker` wraps the tornado Application, reserves each request's body against
the budget before tornado reads it (503 otherwise), and counts requests in flight.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import tornado.http1connection
import tornado.httpserver
import tornado.iostream
import tornado.web
from tornado import httputil

from vsphere_kale.webhook.handlers import STATUS_REASONS, status_body
from vsphere_kale.webhook.limits import decide_body_reservation
from vsphere_kale.webhook.mutate import MAX_BODY_BYTES

if TYPE_CHECKING:
    from vsphere_kale.webhook.server import WebhookServer

# One logger for every line of the HTTPS edge, as before the split into modules: operators'
# logging config (and the tests) name ``vsphere_kale.webhook.server``.
log = logging.getLogger("vsphere_kale.webhook.server")


def _remote_ip(server_conn: object) -> str:
    return str(getattr(getattr(server_conn, "context", None), "remote_ip", "") or "")


class RequestTracker(httputil.HTTPServerConnectionDelegate):
    """Wraps the Application to know which connections are in the middle of a request, and
    to hold each request's body to the budget before tornado reads it.

    A connection is busy from the moment a request's headers arrive (its body may still be
    on the way) until tornado starts waiting for the next request on it, which it does only
    after the response is finished, or until the connection closes. Draining on SIGTERM
    waits for busy connections; idle keep-alive ones are simply closed.
    """

    def __init__(self, application: tornado.web.Application, webhook: WebhookServer) -> None:
        self.application = application
        self.webhook = webhook
        self.busy: set[Any] = set()

    def start_request(
        self, server_conn: object, request_conn: httputil.HTTPConnection
    ) -> httputil.HTTPMessageDelegate:
        self.busy.discard(server_conn)  # its previous response, if any, is finished
        return TrackedMessage(
            self,
            server_conn,
            request_conn,
            self.application.start_request(server_conn, request_conn),
        )

    def in_flight(self) -> int:
        # A connection closed right after its last response never starts another request.
        self.busy = {conn for conn in self.busy if not conn.stream.closed()}
        return len(self.busy)


class TrackedMessage(httputil.HTTPMessageDelegate):
    def __init__(
        self,
        tracker: RequestTracker,
        server_conn: object,
        request_conn: httputil.HTTPConnection,
        inner: httputil.HTTPMessageDelegate,
    ) -> None:
        self._tracker = tracker
        self._server_conn = server_conn
        self._request_conn = request_conn
        self._inner = inner
        self._reserved = 0
        self._address = ""

    def headers_received(
        self,
        start_line: httputil.RequestStartLine | httputil.ResponseStartLine,
        headers: httputil.HTTPHeaders,
    ) -> Awaitable[None] | None:
        webhook = self._tracker.webhook
        size = decide_body_reservation(
            headers.get("Content-Length"),
            chunked="Transfer-Encoding" in headers,
            max_body_bytes=MAX_BODY_BYTES,
        )
        address = _remote_ip(self._server_conn)
        refused = webhook.budget.reserve_body(address, size)
        if refused is not None:
            webhook.metrics.refused.labels(f"body_bytes_{refused}").inc()
            log.warning(
                "refused a request from %s: its %d body bytes exceed the %s body budget",
                address,
                size,
                "per-address" if refused == "address" else "total",
            )
            return _refuse(self._request_conn, 503, "too many request bodies in flight; retry")
        self._reserved, self._address = size, address
        self._tracker.busy.add(self._server_conn)
        return self._inner.headers_received(start_line, headers)

    def _release(self) -> None:
        if self._reserved:
            self._tracker.webhook.budget.release_body(self._address, self._reserved)
            self._reserved = 0

    def data_received(self, chunk: bytes) -> Awaitable[None] | None:
        return self._inner.data_received(chunk)

    def finish(self) -> None:
        # The whole body is here: the review runs now, synchronously, and frees it.
        self._release()
        self._inner.finish()

    def on_connection_close(self) -> None:
        self._release()
        self._tracker.busy.discard(self._server_conn)
        self._inner.on_connection_close()


async def _refuse(request_conn: httputil.HTTPConnection, status: int, message: str) -> None:
    """Answer without reading the body, then close: the body is what we cannot afford."""
    if not isinstance(request_conn, tornado.http1connection.HTTP1Connection):
        request_conn.finish()
        return
    body = status_body(status, message)
    head = (
        f"HTTP/1.1 {status} {STATUS_REASONS.get(status, 'Error')}\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Retry-After: 1\r\n"
        "Connection: close\r\n\r\n"
    )
    stream = request_conn.detach()
    try:
        await stream.write(head.encode() + body)
    except tornado.iostream.StreamClosedError:
        pass
    finally:
        stream.close()


class LimitedHTTPServer(tornado.httpserver.HTTPServer):
    """tornado's HTTPServer with a cap on open connections (in total and per address)."""

    webhook: WebhookServer

    def handle_stream(self, stream: tornado.iostream.IOStream, address: tuple[Any, ...]) -> None:
        ip = str(address[0]) if isinstance(address, tuple) and address else ""
        refused = self.webhook.budget.admit_connection(ip)
        if refused is not None:
            # Closed before the TLS handshake: a flood costs us an accept and a close.
            self.webhook.metrics.refused.labels(f"connections_{refused}").inc()
            log.debug("refused a connection from %s (%s connection limit)", ip, refused)
            stream.close()
            return
        stream.vsphere_kale_address = ip  # type: ignore[attr-defined]
        super().handle_stream(stream, address)

    def on_close(self, server_conn: object) -> None:
        stream = getattr(server_conn, "stream", None)
        ip = getattr(stream, "vsphere_kale_address", None)
        if ip is not None:
            del stream.vsphere_kale_address  # type: ignore[union-attr]
            self.webhook.budget.release_connection(ip)
        super().on_close(server_conn)
