"""Who calls the admin API, and what they may do: TokenReview and SubjectAccessReview.

Who asks: ``Authorization: Bearer <token>`` -> TokenReview (authentication.k8s.io/v1), the
answer cached for :data:`TOKEN_CACHE_SECONDS` keyed by the token's SHA-256 (never the token
itself). What they may do: one SubjectAccessReview per request, so RBAC changes apply at
once. Fail closed: a refusal is a :class:`vsphere_kale.errors.RequestRefused` (401, 403, 429
or 503) that :mod:`vsphere_kale.health.adminapi` answers as a ``Status``. Blocking: the
admin API calls these from its thread pool.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from vsphere_kale.errors import KubeError, RequestRefused
from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r

log = logging.getLogger(__name__)

TOKEN_CACHE_SECONDS = 10.0
"""How long a TokenReview answer is reused. Short: a revoked token stops working within
seconds, while a notebook polling its status does not cost one TokenReview per request."""

TOKEN_CACHE_SIZE = 1024
"""Bounded, oldest first out: a flood of distinct tokens cannot grow memory."""

REVIEW_TIMEOUT = 5.0
"""Seconds for a TokenReview or SubjectAccessReview before answering 503."""

RECONCILE_GROUP = "vsphere-kale.io"
RECONCILE_RESOURCE = "reconciles"


NEGATIVE_CACHE_SECONDS = 5.0
"""How long a rejected token stays rejected without asking again: a flood of the same garbage
token costs one TokenReview per 5 s instead of one per request."""

MAX_REVIEWS_IN_FLIGHT = 8
"""TokenReviews sent at once; more callers with unknown tokens get 429 and Retry-After. The
API server's own rate limits would otherwise turn a token flood into slow answers for
everyone (a status call went from 19 ms to 167 ms p50 in the review)."""

RETRY_AFTER_SECONDS = 1


# --- authentication and authorization --------------------------------------------------------


@dataclass(frozen=True)
class Caller:
    """An authenticated user (authentication.k8s.io/v1 UserInfo)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def _unavailable(what: str, exc: Exception) -> RequestRefused:
    return RequestRefused(
        f"Cannot check {what} right now ({exc}); try again shortly.",
        code=503,
        reason="ServiceUnavailable",
        retry_after=RETRY_AFTER_SECONDS,
    )


def too_many() -> RequestRefused:
    return RequestRefused(
        "Too many requests are being checked at once; retry in a second.",
        code=429,
        reason="TooManyRequests",
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
        """The caller behind ``token``; :class:`RequestRefused` 401, 429 or 503 otherwise.

        Concurrent requests with the same unknown token share one TokenReview (the others
        wait for its answer); beyond ``max_in_flight`` reviews a caller gets 429.
        """
        cached = self.cache.get(token)
        if cached is REJECTED:
            raise RequestRefused("The bearer token is not valid.", code=401, reason="Unauthorized")
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
                raise RequestRefused(
                    "The bearer token is not valid.", code=401, reason="Unauthorized"
                )
            if again is not None:
                return again
            raise _unavailable("who you are", TimeoutError("TokenReview did not answer"))
        try:
            if not self._slots.acquire(blocking=False):
                raise too_many()
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
            raise RequestRefused("The bearer token is not valid.", code=401, reason="Unauthorized")
        caller = Caller(
            username=str(user.get("username") or ""),
            uid=str(user.get("uid") or ""),
            groups=tuple(user.get("groups") or ()),
            extra={k: tuple(v) for k, v in (user.get("extra") or {}).items()},
        )
        self.cache.put(token, caller)
        return caller

    def allowed(self, caller: Caller, permission: Permission) -> bool:
        """One SubjectAccessReview; :class:`RequestRefused` 503 when it cannot be answered."""
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
            raise RequestRefused(
                f"User {caller.username!r} may not {permission.describe()}; ask an admin for a "
                "Role or ClusterRole granting it.",
                code=403,
                reason="Forbidden",
            )
