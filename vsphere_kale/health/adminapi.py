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

from vsphere_kale.errors import KubeError, KubeNotFound, KubeUnavailable, VsphereKaleError
from vsphere_kale.health.status import collect_status
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
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

_NAMESPACE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


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

    def __init__(self, code: int, reason: str, message: str) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        super().__init__(message)


def _unavailable(what: str, exc: Exception) -> ApiError:
    return ApiError(
        503,
        "ServiceUnavailable",
        f"Cannot check {what} right now ({exc}); try again shortly.",
    )


class TokenCache:
    """TokenReview answers by SHA-256 of the token, with a TTL and a size bound (thread-safe)."""

    def __init__(
        self,
        *,
        ttl: float = TOKEN_CACHE_SECONDS,
        size: int = TOKEN_CACHE_SIZE,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl = ttl
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
        with self._lock:
            self._entries[key] = (self._clock() + self._ttl, caller)
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


class Authorizer:
    """TokenReview + SubjectAccessReview through the service's own API client (blocking)."""

    def __init__(self, kube: Kube, *, cache: TokenCache | None = None) -> None:
        self._kube = kube
        self.cache = cache or TokenCache()

    def authenticate(self, token: str) -> Caller:
        """The caller behind ``token``; :class:`ApiError` 401 or 503 otherwise."""
        cached = self.cache.get(token)
        if cached is not None:
            return cached
        review = {
            "apiVersion": "authentication.k8s.io/v1",
            "kind": "TokenReview",
            "spec": {"token": token},
        }
        try:
            answer = self._kube.create(r.TOKEN_REVIEW, review, timeout=REVIEW_TIMEOUT)
        except KubeError as exc:
            log.warning("TokenReview failed: %s", exc)
            raise _unavailable("who you are (TokenReview failed)", exc) from exc
        status = answer.get("status") or {}
        user = status.get("user")
        if not status.get("authenticated") or not isinstance(user, dict):
            # The reason the API server gives may describe the token; keep it out of the
            # answer and the log at INFO.
            log.debug("TokenReview rejected a token: %s", status.get("error"))
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
        self.authorizer = authorizer or Authorizer(kube)
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
        if self.service.reconciler is None:
            raise ApiError(
                503,
                "ServiceUnavailable",
                "The reconciler is not running (podSecurity.mode: off); nothing to reconcile.",
            )
        return self.service.reconciler


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
    ]
