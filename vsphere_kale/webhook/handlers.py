"""The HTTP handlers of the webhook server that are not the review: errors as Kubernetes
``Status`` objects, ``/healthz``, ``/readyz``, ``/metrics``, and the demoted access log.

They reach the server through ``self.webhook`` (:class:`~vsphere_kale.webhook.server.
WebhookServer`): its metrics, its readiness and whether it is draining.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

import tornado.web

from vsphere_kale.policy.kubestatus import build_status
from vsphere_kale.webhook.metrics import CONTENT_TYPE

if TYPE_CHECKING:
    from vsphere_kale.webhook.server import WebhookServer

# One logger for every line of the HTTPS edge, as before the split into modules: operators'
# logging config (and the tests) name ``vsphere_kale.webhook.server``.
log = logging.getLogger("vsphere_kale.webhook.server")

STATUS_REASONS = {
    400: "BadRequest",
    404: "NotFound",
    405: "MethodNotAllowed",
    413: "RequestEntityTooLarge",
    415: "UnsupportedMediaType",
    429: "TooManyRequests",
    503: "ServiceUnavailable",
}


def status_body(code: int, message: str) -> bytes:
    """A Kubernetes ``Status`` object: what kubectl and the API server expect from errors."""
    reason = STATUS_REASONS.get(code, "InternalError")
    return json.dumps(build_status(code=code, reason=reason, message=message)).encode()


class BaseHandler(tornado.web.RequestHandler):
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
        message = self._reason if status_code in STATUS_REASONS else "internal error"
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
        self.finish(status_body(status_code, message))

    def compute_etag(self) -> None:
        return None  # health and metrics change between requests; caching them is wrong

    def log_exception(self, typ: Any, value: Any, tb: Any) -> None:
        # Expected client errors are answered, counted and (where useful) logged by the
        # handler; tornado's default would log every 4xx as a WARNING with the request line.
        if isinstance(value, tornado.web.HTTPError) and value.status_code < 500:
            return
        super().log_exception(typ, value, tb)


class NotFoundHandler(BaseHandler):
    def prepare(self) -> None:
        raise tornado.web.HTTPError(404)


class PlainHandler(BaseHandler):
    """GET endpoints whose answers change between requests: never cached."""

    SUPPORTED_METHODS: tuple[str, ...] = ("GET", "HEAD")

    def set_default_headers(self) -> None:
        super().set_default_headers()
        self.set_header("Cache-Control", "no-store")


class HealthHandler(PlainHandler):
    def get(self) -> None:
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        self.finish("ok\n")

    head = get


class ReadyHandler(PlainHandler):
    def get(self) -> None:
        reasons = self.webhook.readiness_problems()
        self.set_header("Content-Type", "text/plain; charset=utf-8")
        if reasons:
            self.set_status(503)
            self.finish("not ready:\n" + "".join(f"- {reason}\n" for reason in reasons))
        else:
            self.finish("ok\n")

    head = get


class MetricsHandler(PlainHandler):
    SUPPORTED_METHODS = ("GET",)

    def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE)
        self.finish(self.webhook.metrics.exposition())


def log_request(handler: tornado.web.RequestHandler) -> None:
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
