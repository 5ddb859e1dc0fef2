"""The HTTPS edge: tornado server for the admission webhook, health, readiness and metrics.

The handlers only decode, call :func:`vsphere_kale.webhook.admission.review`, and map errors to HTTP
codes (kopf's ``_kits/webhooks.py`` split). ``serve`` builds on :class:`WebhookServer` with
more routes (``extra_handlers``), readiness checks (``ready_checks``) and collectors on
:attr:`WebhookServer.registry`.

TLS details that matter in a cluster:

* The serving certificate comes from a Secret volume. The kubelet updates it by swapping a
  symlink (``..data``), so the files are re-checked every second (resolved path, inode,
  mtime, size) and a complete, matching pair is loaded into a *new* ``SSLContext``. New
  connections pick it up through the ``sni_callback`` (called for every ClientHello, with or
  without SNI), which is Python's documented way to switch a connection's context. Open
  connections and in-flight requests are untouched. A broken or mismatched pair never
  replaces a working one: the old certificate stays and an ERROR is logged.
* TLS 1.2 is the minimum. With ``client_ca_file`` every connection must present a client
  certificate signed by that CA (``CERT_REQUIRED``); note that kubelet HTTPS probes present
  none, so use ``tcpSocket`` probes with client verification on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

import orjson
import tornado.http1connection
import tornado.httpserver
import tornado.ioloop
import tornado.iostream
import tornado.netutil
import tornado.routing
import tornado.web
from tornado import httputil

from vsphere_kale.errors import AdmissionError, ConfigError
from vsphere_kale.policy.kubestatus import build_status
from vsphere_kale.settings import Settings
from vsphere_kale.webhook import admission
from vsphere_kale.webhook.limits import Budget, decide_body_reservation
from vsphere_kale.webhook.logs import TEXT_FORMAT as TEXT_FORMAT
from vsphere_kale.webhook.logs import JsonFormatter as JsonFormatter
from vsphere_kale.webhook.logs import TextFormatter as TextFormatter
from vsphere_kale.webhook.logs import configure_logging as configure_logging
from vsphere_kale.webhook.logs import reduce_logging_overhead as reduce_logging_overhead
from vsphere_kale.webhook.metrics import CONTENT_TYPE, WebhookMetrics
from vsphere_kale.webhook.tls import TlsMaterial, build_tls_context, file_signature

log = logging.getLogger(__name__)

MUTATE_PATHS = ("/mutate/persistentvolumeclaims", "/pvc/mutate")
"""``/pvc/mutate`` is the path the earlier Java tool's webhook configuration points at, so an
existing MutatingWebhookConfiguration keeps working after the switch."""

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest AdmissionReview we read (413 above). A PVC review is a few KiB; the API server's
own request limit is 3 MiB per object, and a review carries at most two objects."""

_DISCARD_LIMIT = 4 * MAX_BODY_BYTES
# Bodies up to this size are read and discarded before answering 413: replying while the
# client is still sending makes TCP reset the connection, and the client then sees a broken
# pipe instead of our answer. Beyond it tornado closes the connection.

JsonObject = dict[str, Any]
ReadyCheck = Callable[[], "str | None"]


# --- handlers ------------------------------------------------------------------------------

_STATUS_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def _status_body(code: int, message: str) -> bytes:
    """A Kubernetes ``Status`` object: what kubectl and the API server expect from errors."""
    reason = _STATUS_REASONS.get(code, "InternalError")
    return json.dumps(build_status(code=code, reason=reason, message=message)).encode()


class _BaseHandler(tornado.web.RequestHandler):
    webhook: WebhookServer
    body_read = True  # only the streaming mutate handler reads its body itself

    def initialize(self, webhook: WebhookServer) -> None:
        self.webhook = webhook
        if webhook.draining:
            # Ask keep-alive clients to reconnect (to another replica) while we drain.
            # (tornado's first set_default_headers() call comes before initialize().)
            self.set_header("Connection", "close")

    def set_default_headers(self) -> None:
        self.clear_header("Server")  # no version banner
        self.set_header("X-Content-Type-Options", "nosniff")
        webhook: WebhookServer | None = getattr(self, "webhook", None)
        if webhook is not None and webhook.draining:
            self.set_header("Connection", "close")

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        message = self._reason if status_code in _STATUS_REASONS else "internal error"
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.SUPPORTED_METHODS))
            message = f"{self.request.method} is not allowed on {self.request.path}"
        elif status_code == 404:
            message = f"no route for {self.request.path}"
        exc = kwargs.get("exc_info", (None, None, None))[1]
        if isinstance(exc, tornado.web.HTTPError) and exc.log_message:
            message = exc.log_message
        if not self.body_read:
            # tornado closes a connection whose request body it did not read (a 405 before
            # prepare(), a 413 by Content-Length); say so, or the client reuses a dead socket.
            self.set_header("Connection", "close")
        self.set_header("Content-Type", "application/json")
        self.finish(_status_body(status_code, message))

    def compute_etag(self) -> None:
        return None  # health and metrics change between requests; caching them is wrong

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Expected client errors are answered, counted and (where useful) logged by the
        # handler; tornado's default would log every 4xx as a WARNING with the request line.
        if isinstance(value, tornado.web.HTTPError) and value.status_code < 500:
            return
        super().log_exception(typ, value, tb)


class _NotFoundHandler(_BaseHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class _PlainHandler(_BaseHandler):
    """GET endpoints whose answers change between requests: never cached."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")


class _HealthHandler(_PlainHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("ok\n")

    head = get


class _ReadyHandler(_PlainHandler):
    def get(self) -> None:
        reasons = self.webhook.readiness_problems()
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if reasons:
            self.set_status(503)
            self.finish("not ready:\n" + "".join(f"- {reason}\n" for reason in reasons))
        else:
            self.finish("ok\n")

    head = get


class _MetricsHandler(_PlainHandler):
    SUPPORTED_METHODS = ("GET",)

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.webhook.metrics.exposition())


def _is_json(content_type: str) -> bool:
    if content_type == "application/json":  # what the API server sends: skip the parsing
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json"


class _MutateHandler(_BaseHandler):
    """``POST`` an AdmissionReview, get one back. Never a 500: internal errors fail open.

    This is the fast path: tornado has already read the body (at most MAX_BODY_BYTES, the
    server's limit). Larger or chunked bodies are routed to :class:`_StreamingMutateHandler`.
    """

    SUPPORTED_METHODS = ("POST",)

    def initialize(self, webhook: WebhookServer) -> None:
        super().initialize(webhook)
        self._counted = False
        self._started = 0.0

    def post(self) -> None:
        self._started = time.perf_counter()
        self.review(self.request.body)

    def review(self, body: bytes) -> None:
        content_type = self.request.headers.get("Content-Type", "")
        if not _is_json(content_type):
            self._reject(
                415,
                f"Content-Type must be application/json, got {content_type or 'none'!r}",
            )
        try:
            # orjson, not json: parsing and encoding were a quarter of the server's own work
            # per review with the standard library (measured, see the benchmark notes). It
            # takes UTF-8 only, which is what the API server sends; invalid UTF-8, NaN and
            # nesting deeper than 1024 are errors (400), never an exception that escapes.
            decoded = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            self._reject(400, f"request body is not valid JSON ({exc.msg})")
        try:
            outcome = admission.review(decoded, self.webhook.settings)
        except AdmissionError as exc:
            self._reject(400, f"invalid AdmissionReview: {exc}")
        except Exception:
            # Our bug must not block the user's PVC (nor crash the process): answer
            # allowed:true without a patch; the claim keeps its class and doctor reports it.
            log.exception("internal error while reviewing a request; allowing it unchanged")
            self._answer(_fail_open(decoded), "error")
            return
        decision = outcome.decision
        # Answer first, then log and count: the API server (and the user's kubectl) waits
        # for the response, nobody waits for the log line.
        self._answer(outcome.response, "rewritten" if decision.rewrite else "unchanged")
        if decision.rewrite:
            self.webhook.metrics.observe_decision(
                decision.reason, decision.from_class, decision.to_class
            )
            log.info(
                "rewrote storage class of PVC %s/%s from %s to %s (uid %s, user %s)",
                outcome.namespace,
                outcome.name,
                decision.from_class or "(default)",
                decision.to_class,
                outcome.uid,
                outcome.user,
                extra={
                    "namespace": outcome.namespace,
                    "pvc": outcome.name,
                    "uid": outcome.uid,
                    "user": outcome.user,
                    "from_class": decision.from_class,
                    "to_class": decision.to_class,
                },
            )
            return
        self.webhook.metrics.observe_decision(decision.reason, None, None)
        if log.isEnabledFor(logging.DEBUG):
            log.debug(
                "left %s %s/%s unchanged: %s (uid %s)",
                outcome.operation,
                outcome.namespace,
                outcome.name,
                decision.reason,
                outcome.uid,
            )

    def _answer(self, review: object, result: str) -> None:
        self.set_header("Content-Type", "application/json")
        payload = orjson.dumps(review)
        self._count(result)  # before finish(): finish() runs on_finish(), which counts 4xx
        self.finish(payload)

    def _reject(self, status: int, message: str) -> NoReturn:
        log.warning(
            "rejected request %s %s from %s: %s",
            self.request.method,
            self.request.path,
            self.request.remote_ip,
            message,
        )
        raise tornado.web.HTTPError(status, message)

    def _count(self, result: str) -> None:
        if not self._counted:
            self._counted = True
            elapsed = time.perf_counter() - self._started if self._started else 0.0
            self.webhook.metrics.observe(result, elapsed)

    def on_finish(self) -> None:
        # Everything not answered by _answer (4xx, including 405 before prepare) is a bad
        # request from the client's side.
        self._count("bad_request")


@tornado.web.stream_request_body
class _StreamingMutateHandler(_MutateHandler):
    """Bodies declared larger than MAX_BODY_BYTES, or chunked (size unknown up front).

    Streaming costs tornado two more event-loop turns per request, so only these take it.
    Up to _DISCARD_LIMIT the body is read (and beyond MAX_BODY_BYTES discarded) before
    answering 413: replying while the client is still sending makes TCP reset the
    connection, and the client sees a broken pipe instead of our answer.
    """

    def initialize(self, webhook: WebhookServer) -> None:
        super().initialize(webhook)
        self._chunks: list[bytes] = []
        self._size = 0
        self.body_read = False

    def prepare(self) -> None:
        length = self.request.headers.get("Content-Length")
        if length is not None and not length.isdigit():
            # "-1", "1e3", " 5": not a length (RFC 9110 8.6); a 413 would blame the size.
            self._reject(400, f"Content-Length {length[:32]!r} is not a number of bytes")
        if length is not None and int(length) > _DISCARD_LIMIT:
            self._reject(413, f"request body of {length} bytes exceeds {MAX_BODY_BYTES} bytes")
        connection = self.request.connection
        if isinstance(connection, tornado.http1connection.HTTP1Connection):
            # We count the bytes ourselves (data_received) so that a chunked body over the
            # limit is answered 413; tornado's own limit would answer a bare 400. Declared
            # lengths above _DISCARD_LIMIT were refused above; time is bounded by the body
            # timeout.
            connection.set_max_body_size(2**62)

    def data_received(self, chunk: bytes) -> None:
        self._size += len(chunk)
        if self._size <= MAX_BODY_BYTES:
            self._chunks.append(chunk)
            return
        # Keep reading but stop buffering: a chunked body has no length to refuse up front,
        # and answering before it ends makes TCP reset the connection under the client's
        # feet. The body timeout bounds how long this may go on; post() answers 413.
        self._chunks = []

    def post(self) -> None:
        self.body_read = True
        self._started = time.perf_counter()
        if self._size > MAX_BODY_BYTES:
            self._reject(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        body = b"".join(self._chunks)
        self._chunks = []
        self.review(body)


class _StreamedBodies(tornado.routing.PathMatches):
    """Matches a mutate path only when the body must be streamed (see the handler)."""

    def match(self, request: httputil.HTTPServerRequest) -> dict[str, Any] | None:
        headers = request.headers
        length = headers.get("Content-Length")
        if length is None:
            if "Transfer-Encoding" not in headers:
                return None
        elif length.isdigit() and int(length) <= MAX_BODY_BYTES:
            return None
        return super().match(request)


def _remote_ip(server_conn: object) -> str:
    return str(getattr(getattr(server_conn, "context", None), "remote_ip", "") or "")


class _RequestTracker(httputil.HTTPServerConnectionDelegate):
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
        return _TrackedMessage(
            self,
            server_conn,
            request_conn,
            self.application.start_request(server_conn, request_conn),
        )

    def in_flight(self) -> int:
        # A connection closed right after its last response never starts another request.
        self.busy = {conn for conn in self.busy if not conn.stream.closed()}
        return len(self.busy)


class _TrackedMessage(httputil.HTTPMessageDelegate):
    def __init__(
        self,
        tracker: _RequestTracker,
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
    body = _status_body(status, message)
    head = (
        f"HTTP/1.1 {status} {_STATUS_REASONS.get(status, 'Error')}\r\n"
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


class _LimitedHTTPServer(tornado.httpserver.HTTPServer):
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


def _fail_open(decoded: object) -> object:
    try:
        return admission.build_fail_open(decoded)
    except Exception:  # the last resort must not raise either (see post())
        log.exception("could not build a fail-open response")
        return {
            "apiVersion": admission.API_VERSIONS[0],
            "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": True},
        }


def _log_request(handler: tornado.web.RequestHandler) -> None:
    """tornado's access log, demoted: one INFO line per request would drown the rewrites."""
    status = handler.get_status()
    if status >= 500 or log.isEnabledFor(logging.DEBUG):
        log.log(
            logging.WARNING if status >= 500 else logging.DEBUG,
            "%s %s %d %.2fms",
            handler.request.method,
            handler.request.path,
            status,
            1000.0 * handler.request.request_time(),
        )


# --- server --------------------------------------------------------------------------------


class WebhookServer:
    """The HTTPS server: webhook routes, ``/healthz``, ``/readyz``, ``/metrics``.

    Construct it (loads and checks the certificate: a bad file raises ConfigError naming the
    flag), ``await start()`` on a running event loop, ``await stop()`` to drain and close.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        address: str = "0.0.0.0",
        port: int = 8443,
        client_ca_file: str | os.PathLike[str] | None = None,
        extra_handlers: Sequence[tuple[Any, ...]] = (),
        ready_checks: Sequence[ReadyCheck] = (),
        app_settings: Mapping[str, Any] | None = None,
        reload_interval: float = 1.0,
    ) -> None:
        self.settings = settings
        self.limits = settings.server
        self.budget = Budget(self.limits)
        self.metrics = WebhookMetrics()
        self.registry = self.metrics.registry
        self.draining = False
        self._address = address
        self._requested_port = port
        self._ready_checks = tuple(ready_checks)
        self._reload_interval = reload_interval
        self._cert_file = Path(cert_file)
        self._key_file = Path(key_file)
        self._client_ca_file = Path(client_ca_file) if client_ca_file is not None else None
        self._watched = [self._cert_file, self._key_file]
        if self._client_ca_file is not None:
            self._watched.append(self._client_ca_file)
        self._loaded_signature = file_signature(self._watched)
        self._suspect_signature: tuple[object, ...] | None = None
        self._reported_signature: tuple[object, ...] | None = None
        self._tls = self._load_tls()
        # Connections are created from this first context; its sni_callback hands each new
        # handshake to whatever context is current, so reloads need no new listener.
        self._listen_context = self._tls.context
        self._listen_context.sni_callback = self._select_context
        self._set_tls(self._tls)

        route_args = {"webhook": self}
        mutate_paths = "|".join(re.escape(path) for path in MUTATE_PATHS)
        routes: list[Any] = [
            tornado.routing.Rule(
                _StreamedBodies(f"(?:{mutate_paths})"), _StreamingMutateHandler, route_args
            ),
            (f"(?:{mutate_paths})", _MutateHandler, route_args),
        ]
        routes += [
            ("/healthz", _HealthHandler, route_args),
            ("/readyz", _ReadyHandler, route_args),
            ("/metrics", _MetricsHandler, route_args),
        ]
        routes += list(extra_handlers)
        self.application = tornado.web.Application(
            routes,
            default_handler_class=_NotFoundHandler,
            default_handler_args=route_args,
            log_function=_log_request,
            compress_response=False,
            serve_traceback=False,
            **dict(app_settings or {}),
        )
        self._tracker = _RequestTracker(self.application, self)
        self._http: tornado.httpserver.HTTPServer | None = None
        self._reloader: tornado.ioloop.PeriodicCallback | None = None
        self._port: int | None = None

    # -- TLS --

    def _load_tls(self) -> TlsMaterial:
        return build_tls_context(
            self._cert_file, self._key_file, client_ca_file=self._client_ca_file
        )

    def _set_tls(self, material: TlsMaterial) -> None:
        self._tls = material
        self.metrics.cert_expiry.set(material.expires.timestamp())

    def _select_context(
        self, connection: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, _: Any
    ) -> None:
        current = self._tls.context
        if connection.context is not current:
            connection.context = current

    def check_certificate_files(self) -> bool:
        """Reload the certificate if its files changed; True when a new one was loaded.

        Runs every ``reload_interval`` seconds on the event loop; public so that tests and
        ``serve`` can trigger it. A pair that fails to load is retried once on the next tick
        before an ERROR is logged, because writers that replace the two files one after the
        other (``vsphere-kale certs --force``) briefly leave a new certificate with an old key.
        """
        signature = file_signature(self._watched)
        if signature in (self._loaded_signature, self._reported_signature):
            return False
        try:
            material = self._load_tls()
        except ConfigError as exc:
            if signature != self._suspect_signature:
                self._suspect_signature = signature
                log.debug("certificate files changed but do not load yet: %s", exc)
                return False
            self._reported_signature = signature
            self.metrics.cert_reloads.labels("failure").inc()
            log.error(
                "keeping the current serving certificate (%s, expires %s): the new files "
                "do not load: %s",
                self._tls.subject,
                self._tls.expires.isoformat(),
                exc,
            )
            return False
        self._loaded_signature = signature
        self._suspect_signature = self._reported_signature = None
        self._set_tls(material)
        self.metrics.cert_reloads.labels("success").inc()
        log.info(
            "loaded a new serving certificate for %s (expires %s)",
            material.subject,
            material.expires.isoformat(),
        )
        return True

    def _reload_tick(self) -> None:
        self.check_certificate_files()

    # -- lifecycle --

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for); only valid after start()."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    async def start(self) -> None:
        """Bind and serve on the running event loop. OSError when the port is taken."""
        http = _LimitedHTTPServer(
            self._tracker,
            ssl_options=self._listen_context,
            # Larger bodies are routed to the streaming handler, which raises the limit.
            max_body_size=MAX_BODY_BYTES,
            # A body timeout costs each review a gen.with_timeout (~15% more Python calls,
            # measured), but without one a client that stalls a byte short of its declared
            # length holds the buffered body for ever (issue 10, finding 2).
            body_timeout=self.limits.body_timeout_seconds,
            # Also tornado's header timeout: a slowloris header trickle and a stalled TLS
            # handshake end after it too.
            idle_connection_timeout=self.limits.idle_timeout_seconds,
            decompress_request=False,
        )
        http.webhook = self
        self._http = http
        sockets = tornado.netutil.bind_sockets(self._requested_port, address=self._address)
        self._http.add_sockets(sockets)
        self._port = sockets[0].getsockname()[1]
        self._reloader = tornado.ioloop.PeriodicCallback(
            self._reload_tick, self._reload_interval * 1000.0
        )
        self._reloader.start()
        log.info(
            "serving HTTPS on %s:%d (certificate %s, expires %s%s)",
            self._address,
            self._port,
            self._tls.subject,
            self._tls.expires.isoformat(),
            ", client certificates required" if self._client_ca_file else "",
            extra={"address": self._address, "port": self._port},
        )

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_timeout`` s), close."""
        self.draining = True
        if self._reloader is not None:
            self._reloader.stop()
        if self._http is None:
            return
        self._http.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if (left := self.in_flight) > 0:
            log.warning("closing with %d requests still in flight", left)
        try:
            await asyncio.wait_for(self._http.close_all_connections(), timeout=5.0)
        except asyncio.TimeoutError:
            log.warning("some connections did not close within 5 s")
        self._http = None
        log.info("stopped serving on port %s", self._port)

    @property
    def in_flight(self) -> int:
        """Requests whose headers arrived and whose response is not finished yet."""
        return self._tracker.in_flight()

    # -- readiness --

    def readiness_problems(self) -> list[str]:
        """Why the server should not get traffic; empty when ready."""
        problems: list[str] = []
        if self.draining:
            problems.append("shutting down")
        if self.settings.storage.rwx_storage_class is None:
            problems.append(
                "storage.rwxStorageClass is not set: every review would be answered unchanged"
            )
        for check in self._ready_checks:
            try:
                problem = check()
            except Exception as exc:  # a broken check means "not ready", never a 500
                problem = f"{getattr(check, '__name__', 'check')} failed: {exc}"
            if problem:
                problems.append(problem)
        return problems
