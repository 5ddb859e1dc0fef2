"""The admin API served by ``vsphere-kale serve``: namespace status and reconcile, per caller.

Routes (mounted by ``serve`` from :func:`build_admin_routes`):

* ``GET  /api/v1/namespaces/{ns}/status``    needs ``list persistentvolumeclaims`` in ``ns``
* ``POST /api/v1/namespaces/{ns}/reconcile`` needs ``create reconciles.vsphere-kale.io`` in ``ns``
* ``POST /api/v1/reconcile``                 needs ``create reconciles.vsphere-kale.io``
  cluster-wide

Who asks and what they may do: TokenReview and one SubjectAccessReview per request
(:mod:`vsphere_kale.health.adminauth`, whose names are importable from here too). The
service's own credentials then do the reads and writes: the caller needs no rights on webhook
configurations or RoleBindings to see their namespace's health.

Fail closed: no or invalid token -> 401, denied -> 403 with the missing permission, TokenReview
or SubjectAccessReview unavailable -> 503. Nothing is allowed by default. Errors are
:class:`vsphere_kale.errors.RequestRefused` inside, Kubernetes ``Status`` bodies
(:func:`vsphere_kale.policy.kubestatus.build_status`) outside, like the API server's.

Blocking client calls run in a thread pool, never on the IOLoop that also answers admission
reviews.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol, TypeVar

import tornado.web

from vsphere_kale.errors import (
    KubeConflict,
    KubeNotFound,
    KubeUnavailable,
    RequestRefused,
    VsphereKaleError,
)
from vsphere_kale.health.adminauth import (
    MAX_REVIEWS_IN_FLIGHT,
    NEGATIVE_CACHE_SECONDS,
    RECONCILE_GROUP,
    RECONCILE_RESOURCE,
    RECREATE_RESOURCE,
    REJECTED,
    RETRY_AFTER_SECONDS,
    REVIEW_TIMEOUT,
    TOKEN_CACHE_SECONDS,
    TOKEN_CACHE_SIZE,
    Authorizer,
    Caller,
    Permission,
    TokenCache,
    reconcile_permission,
    recreate_permission,
    status_permission,
    too_many,
)
from vsphere_kale.health.status import collect_status
from vsphere_kale.kube import Kube
from vsphere_kale.policy.kubestatus import build_status
from vsphere_kale.reconcile.recreate import apply_recreate
from vsphere_kale.settings import Settings

__all__ = [
    "MAX_REVIEWS_IN_FLIGHT",
    "NEGATIVE_CACHE_SECONDS",
    "RECONCILE_GROUP",
    "RECONCILE_RESOURCE",
    "RECREATE_RESOURCE",
    "REJECTED",
    "RETRY_AFTER_SECONDS",
    "REVIEW_TIMEOUT",
    "TOKEN_CACHE_SECONDS",
    "TOKEN_CACHE_SIZE",
    "AdminService",
    "Authorizer",
    "Caller",
    "Permission",
    "ReconcilerLike",
    "ResultLike",
    "TokenCache",
    "build_admin_routes",
    "reconcile_permission",
    "recreate_permission",
    "status_permission",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

# \Z, not $: "$" also matches before a trailing newline, so "alice\n" passed (issue 10).
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?\Z")


# --- what we need from the reconciler -----------------------------------------------------------


class ResultLike(Protocol):
    def to_json(self) -> dict[str, Any]: ...


class ReconcilerLike(Protocol):
    """The part of :class:`vsphere_kale.reconcile.reconciler.Reconciler` the admin API uses."""

    @property
    def mode(self) -> str: ...

    def reconcile_now(self, namespace: str, *, timeout: float = 10.0) -> ResultLike: ...

    def reconcile_all(self, *, timeout: float = 30.0) -> Sequence[ResultLike]: ...


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

    def fail(self, error: RequestRefused) -> None:
        self.set_status(error.code)
        if error.retry_after is not None:
            self.set_header("Retry-After", str(error.retry_after))
        if error.code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="vsphere-kale"')
        self.write_json(build_status(code=error.code, reason=error.reason, message=str(error)))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Anything unexpected (a bug) is still a JSON Status, never an HTML traceback."""
        reason = self._reason or "InternalError"
        body = build_status(code=status_code, reason=reason.replace(" ", ""), message=f"{reason}.")
        self.finish(json.dumps(body))

    def namespace_arg(self, namespace: str) -> str:
        if len(namespace) > 63 or not _NAMESPACE.match(namespace):
            raise RequestRefused(
                f"{namespace[:80]!r} is not a valid namespace name (lower-case RFC 1123 label).",
                code=400,
                reason="BadRequest",
            )
        return namespace

    _admitted = False

    def prepare(self) -> None:
        # The admin API's own concurrency budget (on the event loop thread: no lock): a flood
        # of admin calls waits for TokenReviews in our thread pool, and must not take the
        # server from admission reviews, which never wait on anything.
        service = self.service
        if service.in_flight >= service.max_in_flight:
            self.fail(too_many())
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
            raise RequestRefused(
                "Send a bearer token: Authorization: Bearer <token>.",
                code=401,
                reason="Unauthorized",
            )
        return await self.service.run(lambda: self.service.authorizer.authenticate(token))

    async def guarded(self, work: Callable[[], Any]) -> None:
        """Run a request, mapping our errors to Status answers in one place."""
        try:
            await work()
        except RequestRefused as error:
            self.fail(error)
        except KubeNotFound as exc:
            self.fail(RequestRefused(f"{exc}.", code=404, reason="NotFound"))
        except KubeConflict as exc:
            # e.g. a claim that is Bound, has a data source or is in use: not recreated.
            self.fail(RequestRefused(f"{exc}", code=409, reason="Conflict"))
        except KubeUnavailable as exc:
            self.fail(
                RequestRefused(
                    f"The Kubernetes API failed: {exc}.", code=503, reason="ServiceUnavailable"
                )
            )
        except TimeoutError:
            self.fail(
                RequestRefused(
                    "Reconcile did not finish in time; it continues in the background.",
                    code=504,
                    reason="Timeout",
                )
            )
        except VsphereKaleError as exc:
            self.fail(RequestRefused(f"{exc}.", code=502, reason="BadGateway"))


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
                except RequestRefused:
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
            raise RequestRefused(
                "The reconciler is not running (podSecurity.mode: off); nothing to reconcile.",
                code=503,
                reason="ServiceUnavailable",
            )
        is_leader = getattr(reconciler, "is_leader", None)
        if is_leader is not None and not is_leader():
            leader = getattr(reconciler, "leader_identity", lambda: "")()
            self.set_header("X-Vsphere-Kale-Leader", leader)
            who = f"the leader, {leader}," if leader else "the leader (none elected yet)"
            raise RequestRefused(
                f"This replica is not the leader; {who} reconciles. Retry: the Service sends "
                "the next request to any replica.",
                code=503,
                reason="ServiceUnavailable",
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
                raise RequestRefused(
                    f"{name[:80]!r} is not a valid claim name.", code=400, reason="BadRequest"
                )
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
