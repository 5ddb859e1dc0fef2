"""The admin API served by ``vsphere-kale serve``: namespace status and reconcile, per caller.

Routes (mounted by ``serve`` from :func:`build_admin_routes`):

* ``GET  /api/v1/namespaces/{ns}/status``    needs ``list persistentvolumeclaims`` in ``ns``
* ``POST /api/v1/namespaces/{ns}/reconcile`` needs ``create reconciles.vsphere-kale.io`` in ``ns``
* ``POST /api/v1/reconcile``                 needs ``create reconciles.vsphere-kale.io``
  cluster-wide

Who asks: ``Authorization: Bearer <token>`` -> TokenReview (authentication.k8s.io/v1), the
answer cached for :data:`TOKEN_CACHE_SECONDS` keyed by the token's SHA-256 (never the token
itself). What they may do: one SubjectAccessReview per request, so RBAC changes apply at
once. The service's own credentials then do the reads and writes: the caller needs no rights
on webhook configurations or RoleBindings to see their namespace's health.

Fail closed: no or invalid token -> 401, denied -> 403 with the missing permission, TokenReview
or SubjectAccessReview unavailable -> 503. Nothing is allowed by default. Error bodies are
``{"kind": "Status", "status": "Failure", "code", "reason", "message"}`` like the API server's.

Blocking client calls run in a thread pool, never on the IOLoop that also answers admission
reviews.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

import tornado.web

from vsphere_kale.errors import (
    KubeConflict,
    KubeError,
    KubeNotFound,
    KubeUnavailable,
    VsphereKaleError,
)
from vsphere_kale.health.status import collect_status
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.reconcile.recreate import apply_recreate
from vsphere_kale.settings import Settings

log = logging.getLogger(__name__)

T = TypeVar("T")

TOKEN_CACHE_SECONDS = 10.0
"""How long a TokenReview answer is reused. Short: a revoked token stops working within
seconds, while a notebook polling its status does not cost one TokenReview per request."""

TOKEN_CACHE_SIZE = 1024
"""Bounded, oldest first out: a flood of distinct tokens cannot grow memory."""

REVIEW_TIMEOUT = 5.0
"""Seconds for a TokenReview or SubjectAccessReview before answering 503."""

RECONCILE_GROUP = "vsphere-kale.io"
RECONCILE_RESOURCE = "reconciles"

# \Z, not $: "$" also matches before a trailing newline, so "alice\n" passed (issue 10).
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")

NEGATIVE_CACHE_SECONDS = 5.0
"""How long a rejected token stays rejected without asking again: a flood of the same garbage
token costs one TokenReview per 5 s instead of one per request."""

MAX_REVIEWS_IN_FLIGHT = 8
"""TokenReviews sent at once; more callers with unknown tokens get 429 and Retry-After. The
API server's own rate limits would otherwise turn a token flood into slow answers for
everyone (a status call went from 19 ms to 167 ms p50 in the review)."""

RETRY_AFTER_SECONDS = 1


# --- what we need from the reconciler -----------------------------------------------------------


class ResultLike(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class ReconcilerLike(Protocol):
    """The part of :class:`vsphere_kale.reconcile.reconciler.Reconciler` the admin API uses."""

    @property
    def mode(self) -> str: ...

    def reconcile_now(self, namespace: str, *, timeout: float = 10.0) -> ResultLike: ...

    def reconcile_all(self, *, timeout: float = 30.0) -> Sequence[ResultLike]: ...


# --- authentication and authorization --------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated user (authentication.k8s.io/v1 UserInfo)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


class ApiError(Exception):
    """An answer other than 200: HTTP code, Status reason and a sentence for the user."""

    def __init__(
        self, code: int, reason: str, message: str, *, retry_after: int | None = None
    ) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        self.retry_after = retry_after
        super().__init__(message)


def _unavailable(what: str, exc: Exception) -> ApiError:
    return ApiError(
        503,
        "ServiceUnavailable",
        f"Cannot check {what} right now ({exc}); try again shortly.",
        retry_after=RETRY_AFTER_SECONDS,
    )


def _too_many() -> ApiError:
    return ApiError(
        429,
        "TooManyRequests",
        "Too many requests are being checked at once; retry in a second.",
        retry_after=RETRY_AFTER_SECONDS,
    )


REJECTED = Caller("")
"""Cached stand-in for "TokenReview said no" (never handed out as a caller)."""


class TokenCache:
    """TokenReview answers by SHA-256 of the token, with a TTL and a size bound (thread-safe).

    Rejections are cached too (:data:`REJECTED`, for ``negative_ttl``), so repeating a bad
    token is cheap; the token itself is never stored, only its hash.
    """

    def __init__(
        self,
        *,
        ttl: float = TOKEN_CACHE_SECONDS,
        negative_ttl: float = NEGATIVE_CACHE_SECONDS,
        size: int = TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
        self._negative_ttl = negative_ttl
        self._size = size
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[str, tuple[float, Caller]] = OrderedDict()

    @staticmethod
    def key(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    def get(self, token: str) -> Caller | None:
        key = self.key(token)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[0] <= self._clock():
                del self._entries[key]
                return None
            return entry[1]

    def put(self, token: str, caller: Caller) -> None:
        key = self.key(token)
        ttl = self._negative_ttl if caller is REJECTED else self._ttl
        with self._lock:
            self._entries[key] = (self._clock() + ttl, caller)
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        return len(self._entries)


@dataclass(frozen=True)
class Permission:
    verb: str
    resource: str
    group: str = ""
    namespace: str = ""

    def describe(self) -> str:
        qualified = f"{self.resource}.{self.group}" if self.group else self.resource
        where = f"in namespace {self.namespace}" if self.namespace else "cluster-wide"
        return f"{self.verb} {qualified} {where}"


def status_permission(namespace: str) -> Permission:
    return Permission("list", "persistentvolumeclaims", namespace=namespace)


def reconcile_permission(namespace: str = "") -> Permission:
    return Permission("create", RECONCILE_RESOURCE, RECONCILE_GROUP, namespace)


RECREATE_RESOURCE = "pvcrecreations"
"""``create`` on ``pvcrecreations.vsphere-kale.io`` in the namespace: who may have the service
recreate a stuck claim (it deletes the claim, so it is asked for separately from reconcile)."""


def recreate_permission(namespace: str) -> Permission:
    return Permission("create", RECREATE_RESOURCE, RECONCILE_GROUP, namespace)


class Authorizer:
    """TokenReview + SubjectAccessReview through the service's own API client (blocking)."""

    def __init__(
        self,
        kube: Kube,
        *,
        cache: TokenCache | None = None,
        max_in_flight: int = MAX_REVIEWS_IN_FLIGHT,
        audience: str = "vsphere-kale",
        require_audience: bool = False,
    ) -> None:
        self._kube = kube
        self.cache = cache or TokenCache()
        self.audience = audience
        self.require_audience = require_audience
        self._slots = threading.BoundedSemaphore(max_in_flight)
        self._pending_lock = threading.Lock()
        self._pending: dict[str, threading.Event] = {}

    def authenticate(self, token: str) -> Caller:
        """The caller behind ``token``; :class:`ApiError` 401, 429 or 503 otherwise.

        Concurrent requests with the same unknown token share one TokenReview (the others
        wait for its answer); beyond ``max_in_flight`` reviews a caller gets 429.
        """
        cached = self.cache.get(token)
        if cached is REJECTED:
            raise ApiError(401, "Unauthorized", "The bearer token is not valid.")
        if cached is not None:
            return cached
        key = TokenCache.key(token)
        with self._pending_lock:
            waiting = self._pending.get(key)
            if waiting is None:
                self._pending[key] = threading.Event()
        if waiting is not None:
            waiting.wait(REVIEW_TIMEOUT)
            again = self.cache.get(token)
            if again is REJECTED:
                raise ApiError(401, "Unauthorized", "The bearer token is not valid.")
            if again is not None:
                return again
            raise _unavailable("who you are", TimeoutError("TokenReview did not answer"))
        try:
            if not self._slots.acquire(blocking=False):
                raise _too_many()
            try:
                return self._review(token)
            finally:
                self._slots.release()
        finally:
            with self._pending_lock:
                self._pending.pop(key).set()

    def _token_review(self, token: str, audiences: list[str] | None) -> dict[str, Any]:
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = audiences
        review = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        try:
            answer = self._kube.create(r.TOKEN_REVIEW, review, timeout=REVIEW_TIMEOUT)
        except KubeError as exc:
            log.warning("TokenReview failed: %s", exc)
            raise _unavailable("who you are (TokenReview failed)", exc) from exc
        status = answer.get("status")
        return status if isinstance(status, dict) else {}

    @staticmethod
    def _authenticated(status: Mapping[str, Any]) -> bool:
        return bool(status.get("authenticated")) and isinstance(status.get("user"), dict)

    def _review(self, token: str) -> Caller:
        # Ask for our audience first: a projected token minted for vsphere-kale is useless
        # against the API server, so a compromised service cannot act as the notebook.
        status = self._token_review(token, [self.audience])
        ok = self._authenticated(status)
        audiences = status.get("audiences") or []
        if ok and audiences and self.audience not in audiences:
            ok = False
        if not ok and not self.require_audience:
            # Migration: Kubernetes-API-audience tokens (a notebook's default service-account
            # token) are still accepted until adminApi.requireAudience is set.
            status = self._token_review(token, None)
            ok = self._authenticated(status)
            if ok:
                log.debug("accepted a token without audience %s (migration)", self.audience)
        user = status.get("user")
        if not ok or not isinstance(user, dict):
            # The reason the API server gives may describe the token; keep it out of the
            # answer and the log at INFO.
            log.debug("TokenReview rejected a token: %s", status.get("error"))
            self.cache.put(token, REJECTED)
            raise ApiError(401, "Unauthorized", "The bearer token is not valid.")
        caller = Caller(
            username=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(user.get("groups") or ()),
            extra={k: tuple(v) for k, v in (user.get("extra") or {}).items()},
        )
        self.cache.put(token, caller)
        return caller

    def allowed(self, caller: Caller, permission: Permission) -> bool:
        """One SubjectAccessReview; :class:`ApiError` 503 when it cannot be answered."""
        attributes = {
            "verb": permission.verb,
            "group": permission.group,
            "resource": permission.resource,
        }
        if permission.namespace:
            attributes["namespace"] = permission.namespace
        spec: dict[str, Any] = {
            "user": caller.username,
            "groups": list(caller.groups),
            "resourceAttributes": attributes,
        }
        if caller.uid:
            spec["uid"] = caller.uid
        if caller.extra:
            spec["extra"] = {k: list(v) for k, v in caller.extra.items()}
        review = {
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SubjectAccessReview",
            "spec": spec,
        }
        try:
            answer = self._kube.create(r.SUBJECT_ACCESS_REVIEW, review, timeout=REVIEW_TIMEOUT)
        except KubeError as exc:
            log.warning("SubjectAccessReview failed: %s", exc)
            raise _unavailable("permissions (SubjectAccessReview failed)", exc) from exc
        return bool((answer.get("status") or {}).get("allowed"))

    def require(self, caller: Caller, permission: Permission) -> None:
        if not self.allowed(caller, permission):
            raise ApiError(
                403,
                "Forbidden",
                f"User {caller.username!r} may not {permission.describe()}; ask an admin for a "
                "Role or ClusterRole granting it.",
            )


# --- the service behind the handlers ---------------------------------------------------------


class AdminService:
    """Everything the handlers share: built once by :func:`build_admin_routes`."""

    def __init__(
        self,
        *,
        kube: Kube,
        settings: Settings,
        reconciler: ReconcilerLike | None,
        authorizer: Authorizer | None = None,
        workers: int = 8,
    ) -> None:
        self.kube = kube
        self.settings = settings
        self.reconciler = reconciler
        self.authorizer = authorizer or Authorizer(
            kube,
            audience=settings.admin_api.audience,
            require_audience=settings.admin_api.require_audience,
        )
        self.max_in_flight = settings.server.admin_max_in_flight
        self.in_flight = 0
        self.executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="adminapi")

    async def run(self, fn: Callable[[], T]) -> T:
        """Run a blocking call in the pool: the IOLoop keeps answering admission reviews."""
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn)

    def status(self, namespace: str, *, can_reconcile: bool) -> dict[str, Any]:
        mode = self.reconciler.mode if self.reconciler is not None else None
        return collect_status(
            self.kube,
            namespace,
            settings=self.settings,
            mode=mode,
            can_reconcile=can_reconcile,
            source="admin-api",
        )


def _status_body(code: int, reason: str, message: str) -> dict[str, Any]:
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "code": code,
        "reason": reason,
        "message": message,
    }


class _AdminHandler(tornado.web.RequestHandler):
    """Bearer-token auth, JSON in and out, our errors mapped to Status bodies once."""

    service: AdminService

    def initialize(self, service: AdminService) -> None:
        self.service = service

    def check_xsrf_cookie(self) -> None:
        """No XSRF check: callers authenticate with a bearer token, never with a cookie the
        browser would send on its own, so a cross-site request cannot borrow credentials."""

    def set_default_headers(self) -> None:
        self.set_header("Content-Type", "application/json; charset=utf-8")
        self.set_header("Cache-Control", "no-store")

    def write_json(self, body: Mapping[str, Any]) -> None:
        self.finish(json.dumps(body))

    def fail(self, error: ApiError) -> None:
        self.set_status(error.code)
        if error.retry_after is not None:
            self.set_header("Retry-After", str(error.retry_after))
        if error.code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="vsphere-kale"')
        self.write_json(_status_body(error.code, error.reason, error.message))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Anything unexpected (a bug) is still a JSON Status, never an HTML traceback."""
        reason = self._reason or "InternalError"
        self.finish(json.dumps(_status_body(status_code, reason.replace(" ", ""), f"{reason}.")))

    def namespace_arg(self, namespace: str) -> str:
        if len(namespace) > 63 or not _NAMESPACE.match(namespace):
            raise ApiError(
                400,
                "BadRequest",
                f"{namespace[:80]!r} is not a valid namespace name (lower-case RFC 1123 label).",
            )
        return namespace

    _admitted = False

    def prepare(self) -> None:
        # The admin API's own concurrency budget (on the event loop thread: no lock): a flood
        # of admin calls waits for TokenReviews in our thread pool, and must not take the
        # server from admission reviews, which never wait on anything.
        service = self.service
        if service.in_flight >= service.max_in_flight:
            self.fail(_too_many())
            return
        service.in_flight += 1
        self._admitted = True

    def _leave(self) -> None:
        if self._admitted:
            self._admitted = False
            self.service.in_flight -= 1

    def on_finish(self) -> None:
        self._leave()

    def on_connection_close(self) -> None:
        self._leave()

    async def caller(self) -> Caller:
        header = self.request.headers.get("Authorization", "")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise ApiError(
                401, "Unauthorized", "Send a bearer token: Authorization: Bearer <token>."
            )
        return await self.service.run(lambda: self.service.authorizer.authenticate(token))

    async def guarded(self, work: Callable[[], Any]) -> None:
        """Run a request, mapping our errors to Status answers in one place."""
        try:
            await work()
        except ApiError as error:
            self.fail(error)
        except KubeNotFound as exc:
            self.fail(ApiError(404, "NotFound", f"{exc}."))
        except KubeConflict as exc:
            # e.g. a claim that is Bound, has a data source or is in use: not recreated.
            self.fail(ApiError(409, "Conflict", f"{exc}"))
        except KubeUnavailable as exc:
            self.fail(ApiError(503, "ServiceUnavailable", f"The Kubernetes API failed: {exc}."))
        except TimeoutError:
            self.fail(
                ApiError(
                    504,
                    "Timeout",
                    "Reconcile did not finish in time; it continues in the background.",
                )
            )
        except VsphereKaleError as exc:
            self.fail(ApiError(502, "BadGateway", f"{exc}."))


class NamespaceStatusHandler(_AdminHandler):
    async def get(self, namespace: str) -> None:
        async def work() -> None:
            ns = self.namespace_arg(namespace)
            who = await self.caller()
            authz = self.service.authorizer

            # canReconcile is a second SAR, asked beside the required one. If it cannot be
            # answered the Reconcile button stays off (fail closed); the status is still shown.
            async def can_reconcile() -> bool:
                try:
                    return await self.service.run(
                        lambda: authz.allowed(who, reconcile_permission(ns))
                    )
                except ApiError:
                    return False

            required, allowed = await asyncio.gather(
                self.service.run(lambda: authz.require(who, status_permission(ns))),
                can_reconcile(),
                return_exceptions=True,
            )
            if isinstance(required, BaseException):
                raise required
            document = await self.service.run(
                lambda: self.service.status(ns, can_reconcile=allowed is True)
            )
            # DEBUG: notebooks poll the status; reconciles (writes) are logged at INFO.
            log.debug("status %s for %s: %s", ns, who.username, document["overall"])
            self.write_json(document)

        await self.guarded(work)


class _ReconcileHandler(_AdminHandler):
    def reconciler(self) -> ReconcilerLike:
        """The reconciler, if this replica leads: only the leader writes (a follower's write
        would race the leader's; both replicas once created the same Event 10-40 ms apart)."""
        reconciler = self.service.reconciler
        if reconciler is None:
            raise ApiError(
                503,
                "ServiceUnavailable",
                "The reconciler is not running (podSecurity.mode: off); nothing to reconcile.",
            )
        is_leader = getattr(reconciler, "is_leader", None)
        if is_leader is not None and not is_leader():
            leader = getattr(reconciler, "leader_identity", lambda: "")()
            self.set_header("X-Vsphere-Kale-Leader", leader)
            who = f"the leader, {leader}," if leader else "the leader (none elected yet)"
            raise ApiError(
                503,
                "ServiceUnavailable",
                f"This replica is not the leader; {who} reconciles. Retry: the Service sends "
                "the next request to any replica.",
                retry_after=RETRY_AFTER_SECONDS,
            )
        return reconciler


class NamespaceReconcileHandler(_ReconcileHandler):
    async def post(self, namespace: str) -> None:
        async def work() -> None:
            ns = self.namespace_arg(namespace)
            who = await self.caller()
            authz = self.service.authorizer
            await self.service.run(lambda: authz.require(who, reconcile_permission(ns)))
            reconciler = self.reconciler()
            result = await self.service.run(lambda: reconciler.reconcile_now(ns))
            body = result.to_json()
            log.info("reconcile %s by %s: %s", ns, who.username, body.get("outcome"))
            self.write_json({"kind": "ReconcileResult", "results": [body]})

        await self.guarded(work)


class ReconcileAllHandler(_ReconcileHandler):
    async def post(self) -> None:
        async def work() -> None:
            who = await self.caller()
            authz = self.service.authorizer
            await self.service.run(lambda: authz.require(who, reconcile_permission()))
            reconciler = self.reconciler()
            results = await self.service.run(reconciler.reconcile_all)
            log.info("reconcile all by %s: %d namespaces", who.username, len(results))
            self.write_json(
                {"kind": "ReconcileResult", "results": [res.to_json() for res in results]}
            )

        await self.guarded(work)


_CLAIM_NAME = re.compile(r"[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?\Z")


class ClaimRecreateHandler(_ReconcileHandler):
    """``POST .../persistentvolumeclaims/{name}/recreate``: a stuck claim again, on the RWX
    class. Checked with SubjectAccessReview, done by the leader only (as reconcile)."""

    async def post(self, namespace: str, name: str) -> None:
        async def work() -> None:
            ns = self.namespace_arg(namespace)
            if not _CLAIM_NAME.match(name):
                raise ApiError(400, "BadRequest", f"{name[:80]!r} is not a valid claim name.")
            who = await self.caller()
            authz = self.service.authorizer
            await self.service.run(lambda: authz.require(who, recreate_permission(ns)))
            self.reconciler()  # only the leader writes
            kube, settings = self.service.kube, self.service.settings
            result = await self.service.run(
                lambda: apply_recreate(kube, ns, name, settings=settings)
            )
            log.info("recreated claim %s/%s by %s", ns, name, who.username)
            self.write_json({"kind": "RecreateResult", "outcome": "recreated", **result.to_json()})

        await self.guarded(work)


RouteSpec = tuple[str, type[tornado.web.RequestHandler], dict[str, Any]]


def build_admin_routes(
    *,
    kube: Kube,
    settings: Settings,
    reconciler: ReconcilerLike | None,
) -> list[RouteSpec]:
    """The admin API's tornado route specs; ``serve`` mounts them on its TLS server."""
    service = AdminService(kube=kube, settings=settings, reconciler=reconciler)
    args: dict[str, Any] = {"service": service}
    return [
        (r"/api/v1/namespaces/([^/]+)/status", NamespaceStatusHandler, args),
        (r"/api/v1/namespaces/([^/]+)/reconcile", NamespaceReconcileHandler, args),
        (r"/api/v1/reconcile", ReconcileAllHandler, args),
        (
            r"/api/v1/namespaces/([^/]+)/persistentvolumeclaims/([^/]+)/recreate",
            ClaimRecreateHandler,
            args,
        ),
    ]
