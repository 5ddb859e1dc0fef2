"""``POST /mutate/persistentvolumeclaims``: decode, :func:`~vsphere_kale.webhook.admission.review`,
answer. Never a 500: internal errors fail open.

Two handlers share the review: the fast path, whose body tornado has already read, and the
streaming one for bodies too large to buffer up front or of unknown size (chunked). A
routing rule (:class:`StreamedBodies`) picks between them from the headers alone.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, NoReturn

import orjson
import tornado.http1connection
import tornado.routing
import tornado.web
from tornado import httputil

from vsphere_kale.errors import AdmissionError
from vsphere_kale.webhook import admission
from vsphere_kale.webhook.handlers import BaseHandler

if TYPE_CHECKING:
    from vsphere_kale.webhook.server import WebhookServer

# One logger for every line of the HTTPS edge, as before the split into modules: operators'
# logging config (and the tests) name ``vsphere_kale.webhook.server``.
log = logging.getLogger("vsphere_kale.webhook.server")

MUTATE_PATHS = ("/mutate/persistentvolumeclaims", "/pvc/mutate")
"""``/pvc/mutate`` is the path the earlier Java tool's webhook configuration points at, so an
existing MutatingWebhookConfiguration keeps working after the switch."""

MAX_BODY_BYTES = 8 * 1024 * 1024
"""Largest AdmissionReview we read (413 above). A PVC review is a few KiB; the API server's
own request limit is 3 MiB per object, and a review carries at most two objects."""

DISCARD_LIMIT = 4 * MAX_BODY_BYTES
# Bodies up to this size are read and discarded before answering 413: replying while the
# client is still sending makes TCP reset the connection, and the client then sees a broken
# pipe instead of our answer. Beyond it tornado closes the connection.


def _is_json(content_type: str) -> bool:
    if content_type == "application/json":  # what the API server sends: skip the parsing
        return True
    media_type = content_type.split(";", 1)[0].strip().lower()
    return media_type == "application/json"


class MutateHandler(BaseHandler):
    """``POST`` an AdmissionReview, get one back. Never a 500: internal errors fail open.

    This is the fast path: tornado has already read the body (at most MAX_BODY_BYTES, the
    server's limit). Larger or chunked bodies are routed to :class:`StreamingMutateHandler`.
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
            self._answer(fail_open(decoded), "error")
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
class StreamingMutateHandler(MutateHandler):
    """Bodies declared larger than MAX_BODY_BYTES, or chunked (size unknown up front).

    Streaming costs tornado two more event-loop turns per request, so only these take it.
    Up to DISCARD_LIMIT the body is read (and beyond MAX_BODY_BYTES discarded) before
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
        if length is not None and int(length) > DISCARD_LIMIT:
            self._reject(413, f"request body of {length} bytes exceeds {MAX_BODY_BYTES} bytes")
        connection = self.request.connection
        if isinstance(connection, tornado.http1connection.HTTP1Connection):
            # We count the bytes ourselves (data_received) so that a chunked body over the
            # limit is answered 413; tornado's own limit would answer a bare 400. Declared
            # lengths above DISCARD_LIMIT were refused above; time is bounded by the body
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


class StreamedBodies(tornado.routing.PathMatches):
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


def fail_open(decoded: object) -> object:
    try:
        return admission.build_fail_open(decoded)
    except Exception:  # the last resort must not raise either (see post())
        log.exception("could not build a fail-open response")
        return {
            "apiVersion": admission.API_VERSIONS[0],
            "kind": "AdmissionReview",
            "response": {"uid": "", "allowed": True},
        }
