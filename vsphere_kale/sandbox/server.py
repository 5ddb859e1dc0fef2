"""The sandbox API server: tornado handlers over :class:`~vsphere_kale.sandbox.store.Store`.

One catch-all handler parses kube-apiserver's URL layout (``/api/v1/...``,
``/apis/<group>/<version>/...``, ``/watch/`` paths), then runs the request pipeline of
kube-apiserver in its order: authenticate -> authorize -> (injected faults) -> decode ->
validate -> escalation check (RBAC objects) -> admission (mutating webhooks) -> store.

Policy lives behind the hooks of :class:`Sandbox` (see ``sandbox/types.py``): the defaults
let everyone in as ``admin`` (``system:masters``) and admit everything, so the server works
on its own; ``testing.start_sandbox`` and the CLI plug in the RBAC, authentication, webhook
and Kubeflow modules.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
import secrets
import threading
import time
import urllib.parse
from asyncio import Future
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from typing import Any, TypeVar, Union, cast

import tornado.web
from tornado.iostream import StreamClosedError

from vsphere_kale.errors import KubeError
from vsphere_kale.policy.kubestatus import build_status
from vsphere_kale.sandbox import openapi, protobuf, tables
from vsphere_kale.sandbox.apply import apply as apply_config
from vsphere_kale.sandbox.apply import default_manager, record_update
from vsphere_kale.sandbox.faults import FaultInjector
from vsphere_kale.sandbox.impersonation import (
    ImpersonationError,
    build_impersonation_requests,
    impersonated_user,
)
from vsphere_kale.sandbox.paging import (
    Continue,
    ListSnapshots,
    decode_continue,
    encode_continue,
    expired,
    item_key,
    parse_limit,
)
from vsphere_kale.sandbox.patching import (
    APPLY_PATCH,
    PATCH_TYPES,
    apply_patch,
    parse_patch_body,
    unsupported_media_type,
)
from vsphere_kale.sandbox.protection import StorageProtection
from vsphere_kale.sandbox.resources import (
    Registry,
    ResourceType,
    StatusError,
    bad_request,
    invalid,
    method_not_allowed,
    not_found,
    selectable_fields,
    server_not_found,
    to_served,
    to_storage,
)
from vsphere_kale.sandbox.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from vsphere_kale.sandbox.store import Store, Watcher, WatchEvent, clone, now_rfc3339
from vsphere_kale.sandbox.types import (
    ANONYMOUS,
    AdmissionAttributes,
    AdmissionRejected,
    AdmissionResult,
    Attributes,
    Decision,
    JSONObject,
    ResourceRef,
    UserInfo,
)
from vsphere_kale.sandbox.validation import (
    check_pvc_decodes,
    invalid_error,
    needs_default_class,
    not_supported,
    pick_default_storage_class,
    required,
    validate_delete_options,
    validate_pvc,
    validate_pvc_update,
)

PVCS = ResourceRef("", "persistentvolumeclaims")
NAMESPACES = ResourceRef("", "namespaces")
STORAGE_CLASSES = ResourceRef("storage.k8s.io", "storageclasses")

log = logging.getLogger(__name__)

T = TypeVar("T")
MaybeAwaitable = Union[T, Awaitable[T]]  # noqa: UP007 - a generic alias needs Union

Authenticator = Callable[[str | None], MaybeAwaitable[UserInfo | None]]
Authorizer = Callable[[Attributes], MaybeAwaitable[Decision]]
EscalationCheck = Callable[[UserInfo, ResourceRef, JSONObject], MaybeAwaitable[str | None]]
Admitter = Callable[
    [AdmissionAttributes, JSONObject, JSONObject | None], Awaitable[AdmissionResult]
]
TokenReviewer = Callable[[JSONObject], MaybeAwaitable[JSONObject]]
AccessReviewer = Callable[[JSONObject, UserInfo], MaybeAwaitable[JSONObject]]
TokenIssuer = Callable[[str, str, JSONObject], MaybeAwaitable[JSONObject]]
Controller = Callable[[str, ResourceRef, JSONObject], None]

ADMIN = UserInfo("admin", uid="sandbox-admin", groups=("system:masters", "system:authenticated"))

RBAC_GROUP = "rbac.authorization.k8s.io"
#: Writes of these are checked by ``check_escalation`` (RBAC's escalation prevention).
ESCALATION_CHECKED = frozenset({"roles", "clusterroles", "rolebindings", "clusterrolebindings"})

#: Top-level fields of the object kinds we serve; anything else is an unknown field for
#: ``fieldValidation`` (the sandbox validates the top level only, not nested schemas).
KNOWN_TOP_LEVEL_FIELDS = frozenset(
    {
        "apiVersion",
        "kind",
        "metadata",
        "spec",
        "status",
        "data",
        "stringData",
        "type",
        "rules",
        "roleRef",
        "subjects",
        "aggregationRule",
        "webhooks",
        "subsets",
        "immutable",
        "binaryData",
        "provisioner",
        "parameters",
        "reclaimPolicy",
        "volumeBindingMode",
        "allowVolumeExpansion",
        "mountOptions",
        "allowedTopologies",
        "secrets",
        "imagePullSecrets",
        "automountServiceAccountToken",
        "involvedObject",
        "reason",
        "message",
        "source",
        "firstTimestamp",
        "lastTimestamp",
        "count",
        "eventTime",
        "action",
        "note",
        "regarding",
        "related",
        "reportingController",
        "reportingInstance",
        "series",
        "deprecatedSource",
        "deprecatedFirstTimestamp",
        "deprecatedLastTimestamp",
        "deprecatedCount",
        "reportingComponent",
    }
)

_DNS1123_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_DNS1123_SUBDOMAIN = re.compile(
    r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"
)
_DNS1035_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")


async def _resolve(value: MaybeAwaitable[T]) -> T:
    if inspect.isawaitable(value):
        return cast(T, await value)
    return value


# --- default (permissive) hooks --------------------------------------------------------------


def allow_everyone_as_admin(token: str | None) -> UserInfo | None:
    """Default authenticator: every request is ``admin`` in ``system:masters``."""
    return ADMIN


def allow_all(attrs: Attributes) -> Decision:
    return Decision(True, "sandbox authorization is off")


def no_escalation_check(user: UserInfo, ref: ResourceRef, obj: JSONObject) -> str | None:
    return None


async def admit_unchanged(
    attrs: AdmissionAttributes, obj: JSONObject, old: JSONObject | None
) -> AdmissionResult:
    return AdmissionResult(obj)


def review_token_as_admin(body: JSONObject) -> JSONObject:
    return {
        "authenticated": True,
        "user": {"username": ADMIN.username, "uid": ADMIN.uid, "groups": list(ADMIN.groups)},
        "audiences": (body.get("spec") or {}).get("audiences") or [],
    }


def review_access_allowed(body: JSONObject, user: UserInfo) -> JSONObject:
    return {"allowed": True, "reason": "sandbox authorization is off"}


def review_rules_everything(body: JSONObject, user: UserInfo) -> JSONObject:
    # Authorization off: every user may do everything (kube's AlwaysAllow answers the same).
    return {
        "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]}],
        "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
        "incomplete": False,
    }


def review_self_as_is(body: JSONObject, user: UserInfo) -> JSONObject:
    info: JSONObject = {"username": user.username, "groups": list(user.groups)}
    if user.uid:
        info["uid"] = user.uid
    return {"userInfo": info}


def issue_random_token(namespace: str, name: str, body: JSONObject) -> JSONObject:
    seconds = int((body.get("spec") or {}).get("expirationSeconds") or 3600)
    expires = datetime.now(timezone.utc) + timedelta(seconds=seconds)
    return {
        "token": f"sandbox-sa-{secrets.token_urlsafe(24)}",
        "expirationTimestamp": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


# --- the in-process sandbox ------------------------------------------------------------------


class Sandbox:
    """The store plus every pluggable policy hook; build the tornado app with :meth:`make_app`.

    Hooks may be plain or async callables (``admit`` is always async). Replace them by
    assignment before serving, e.g. ``sandbox.authorize = rbac.RBACAuthorizer(sandbox.store)``.
    """

    def __init__(
        self,
        *,
        flavor: str = "psa",
        watch_history: int = 10_000,
        bookmark_interval: float = 1.0,
        default_watch_timeout: float = 1800.0,
        namespace_sweep_delay: float = 0.05,
    ) -> None:
        self.flavor = flavor
        self.registry = Registry(flavor)
        self.store = Store(
            self.registry,
            watch_history=watch_history,
            namespace_sweep_delay=namespace_sweep_delay,
        )
        self.faults = FaultInjector()
        # Consistent pages of chunked lists; compact() makes outstanding tokens stale (410).
        self.list_snapshots = ListSnapshots()
        self.bookmark_interval = bookmark_interval
        self.default_watch_timeout = default_watch_timeout
        self.authenticate: Authenticator = allow_everyone_as_admin
        self.authorize: Authorizer = allow_all
        self.check_escalation: EscalationCheck = no_escalation_check
        self.admit: Admitter = admit_unchanged
        self.review_token: TokenReviewer = review_token_as_admin
        self.review_access: AccessReviewer = review_access_allowed
        self.review_rules: AccessReviewer = review_rules_everything
        self.review_self: AccessReviewer = review_self_as_is
        self.issue_token: TokenIssuer = issue_random_token
        self.controllers: list[Controller] = []
        self.server_address = "127.0.0.1:0"
        # Open watch streams, read from test threads (close_watches), written on the loop.
        self._watch_lock = threading.Lock()
        self._watch_queues: dict[asyncio.Queue[WatchEvent | None], asyncio.AbstractEventLoop] = {}

    def add_controller(self, controller: Controller) -> None:
        """Notify ``controller(event_type, ref, obj)`` after every stored change (in order,
        on the store's dispatcher thread)."""
        self.controllers.append(controller)
        self.store.add_listener(controller)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """Wait until every controller has reacted to every change so far (True if so)."""
        deadline = time.monotonic() + timeout
        if not self.store.wait_dispatched(timeout):
            return False
        for controller in self.controllers:
            wait = getattr(controller, "wait_idle", None)
            if wait is not None and not wait(max(0.0, deadline - time.monotonic())):
                return False
        return True

    def close_watches(self) -> None:
        """End every open watch stream cleanly (clients see the stream close and re-watch)."""
        with self._watch_lock:
            open_watches = list(self._watch_queues.items())
        for q, loop in open_watches:
            loop.call_soon_threadsafe(q.put_nowait, None)

    @property
    def open_watches(self) -> int:
        with self._watch_lock:
            return len(self._watch_queues)

    def close(self) -> None:
        self.close_watches()
        for controller in self.controllers:
            stop = getattr(controller, "stop", None)
            if stop is not None:
                stop()
        self.store.close()

    def make_app(self) -> tornado.web.Application:
        return tornado.web.Application(
            [(r"/.*", ApiHandler, {"sandbox": self})], log_function=_no_log
        )


def _no_log(handler: tornado.web.RequestHandler) -> None:
    """ApiHandler logs its requests itself (see ApiHandler.finish)."""


def _log_request(handler: tornado.web.RequestHandler) -> None:
    # Error answers are part of the contract here (409s, 404s): debug, not warnings.
    log.debug(
        "%d %s %.2fms",
        handler.get_status(),
        handler._request_summary(),
        1000.0 * handler.request.request_time(),
    )


# --- request parsing ------------------------------------------------------------------------


@dataclass(frozen=True)
class RequestInfo:
    rt: ResourceType
    version: str
    namespace: str | None
    name: str | None
    subresource: str
    watch_path: bool

    @property
    def group(self) -> str:
        return self.rt.group


def parse_resource_path(registry: Registry, segments: list[str]) -> RequestInfo | None:
    """``["api","v1","namespaces","a","configmaps","x"]`` -> RequestInfo; None if not a
    resource path this server serves."""
    if segments[:1] == ["api"] and len(segments) >= 3:
        group, version, rest = "", segments[1], segments[2:]
    elif segments[:1] == ["apis"] and len(segments) >= 4:
        group, version, rest = segments[1], segments[2], segments[3:]
    else:
        return None
    watch_path = False
    if rest[0] == "watch":
        watch_path, rest = True, rest[1:]
    namespace: str | None = None
    if len(rest) >= 3 and rest[0] == "namespaces":
        candidate = registry.lookup(group, version, rest[2])
        if candidate is not None and candidate.namespaced:
            namespace, rest = rest[1], rest[2:]
    if not rest or len(rest) > 3 or any(not s for s in rest):
        return None
    rt = registry.lookup(group, version, rest[0])
    if rt is None:
        return None
    if namespace is not None and not rt.namespaced:
        return None
    name = rest[1] if len(rest) > 1 else None
    sub = rest[2] if len(rest) > 2 else ""
    if sub and sub not in rt.subresources:
        return None
    return RequestInfo(rt, version, namespace, name, sub, watch_path)


def _json_dumps(obj: Any) -> str:
    return json.dumps(obj, separators=(",", ":"))


def validate_name(rt: ResourceType, name: str) -> None:
    """kube-apiserver's name rules, per type (422 Invalid)."""
    if not isinstance(name, str):
        raise invalid(rt, str(name), [("metadata.name", "Invalid value: must be a string")])
    if rt.group == RBAC_GROUP:
        # RBAC objects may use any path segment name (``psp:vmware-system-privileged``).
        if name in (".", "..") or "/" in name or "%" in name:
            raise invalid(
                rt,
                name,
                [
                    (
                        "metadata.name",
                        f'Invalid value: "{name}": may not '
                        "be '.' or '..' and may not contain '/' or '%'",
                    )
                ],
            )
        return
    if rt.kind == "Namespace":
        ok, what = bool(_DNS1123_LABEL.match(name)) and len(name) <= 63, "RFC 1123 label"
        regex = _DNS1123_LABEL.pattern
    elif rt.kind == "Service":
        ok, what = bool(_DNS1035_LABEL.match(name)) and len(name) <= 63, "RFC 1035 label"
        regex = _DNS1035_LABEL.pattern
    else:
        ok, what = bool(_DNS1123_SUBDOMAIN.match(name)) and len(name) <= 253, "RFC 1123 subdomain"
        regex = _DNS1123_SUBDOMAIN.pattern
    if not ok:
        raise invalid(
            rt,
            name,
            [
                (
                    "metadata.name",
                    f'Invalid value: "{name}": a lowercase {what} must consist of lower case '
                    "alphanumeric characters, '-' or '.', and must start and end with an "
                    f"alphanumeric character (regex used for validation is '{regex.strip('^$')}')",
                )
            ],
        )


def _validate_meta(rt: ResourceType, obj: JSONObject) -> None:
    meta = obj.get("metadata")
    name = str((meta or {}).get("name") or (meta or {}).get("generateName") or "")
    causes: list[tuple[str, str]] = []
    for field in ("labels", "annotations"):
        value = (meta or {}).get(field)
        if value is None:
            continue
        if not isinstance(value, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in value.items()
        ):
            causes.append((f"metadata.{field}", "Invalid value: must be a map of strings"))
    if causes:
        raise invalid(rt, name, causes)


# --- the handler ----------------------------------------------------------------------------


class ApiHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

    def initialize(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._watch_queue: asyncio.Queue[WatchEvent | None] | None = None

    def compute_etag(self) -> str | None:
        return None

    # -- responses --

    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> Future[None]:
        # Log before the answer leaves, so a client holding the answer can rely on the log
        # record existing (tests count requests from it).
        if not self._finished:
            _log_request(self)
        return super().finish(chunk)

    def _send(self, code: int, body: Any) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(_json_dumps(body))

    def _send_error(self, exc: StatusError) -> None:
        if exc.retry_after is not None:
            self.set_header("Retry-After", str(exc.retry_after))
        self._send(exc.code, exc.to_status())

    def _warn(self, text: str) -> None:
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        self.add_header("Warning", f'299 - "{escaped}"')

    def on_connection_close(self) -> None:
        if self._watch_queue is not None:
            self._watch_queue.put_nowait(None)

    # -- entry points --

    async def get(self) -> None:
        await self._handle("GET")

    async def head(self) -> None:
        await self._handle("GET")

    async def post(self) -> None:
        await self._handle("POST")

    async def put(self) -> None:
        await self._handle("PUT")

    async def patch(self) -> None:
        await self._handle("PATCH")

    async def delete(self) -> None:
        await self._handle("DELETE")

    async def options(self) -> None:
        self._send_error(method_not_allowed())

    async def _handle(self, method: str) -> None:
        try:
            await self._dispatch(method)
        except StatusError as exc:
            if not self._finished:
                self._send_error(exc)
        except KubeError as exc:
            # Policy hooks (authn, RBAC, token requests) speak our error tree: keep their
            # code and reason (422 Invalid, 404 NotFound) rather than a blanket 500.
            if not self._finished:
                self._send_error(
                    StatusError(exc.status or 500, exc.reason or "InternalError", str(exc))
                )
        except StreamClosedError:
            pass
        except Exception as exc:  # one request's bug becomes a 500 Status, never a hang
            log.exception("sandbox request %s %s failed", method, self.request.path)
            if not self._finished:
                self._send_error(StatusError(500, "InternalError", f"internal error: {exc}"))

    async def _dispatch(self, method: str) -> None:
        sb = self.sandbox
        user = await self._authenticate()
        path = self.request.path
        segments = [urllib.parse.unquote(s) for s in path.split("/") if s != ""]
        info = parse_resource_path(sb.registry, segments)
        if info is None:
            target = Attributes(user, method.lower(), path=path)
            user = await self._impersonate(user, target)
            await self._authorize(replace(target, user=user))
            if method != "GET":
                if self._non_resource(segments) is not None:
                    raise method_not_allowed()
                raise server_not_found()
            body = self._non_resource(segments)
            if body is None:
                raise server_not_found()
            if isinstance(body, str):
                self.set_header("Content-Type", "text/plain")
                self.finish(body)
            else:
                self._send(200, body)
            return
        verb = self._verb(method, info)
        self._check_accept()
        target = Attributes(
            user,
            verb,
            api_group=info.group,
            api_version=info.version,
            resource=info.rt.plural,
            subresource=info.subresource,
            # kube's RequestInfo: a namespace object's namespace is its own name.
            namespace=info.namespace
            or (info.name if info.rt.ref == NAMESPACES and info.name else "")
            or "",
            name=info.name or "",
        )
        user = await self._impersonate(user, target)
        await self._authorize(replace(target, user=user))
        fault = sb.faults.take(verb, info.rt.plural, info.namespace or "", info.name or "")
        if fault is not None:
            if fault.drop_connection:
                log.info("injected fault: dropping %s %s", verb, path)
                cast(Any, self.request.connection).stream.close()
                self._finished = True
                return
            if not (verb == "watch" and fault.status == 410):
                raise fault.error()
        if verb == "watch":
            await self._watch(info, fault_410=fault is not None)
        elif verb == "get":
            self._get(info)
        elif verb == "list":
            self._list(info)
        elif verb == "create":
            await self._create(info, user)
        elif verb == "update":
            await self._update(info, user)
        elif verb == "patch":
            await self._patch(info, user)
        elif verb == "delete":
            self._delete(info)
        elif verb == "deletecollection":
            self._delete_collection(info)
        else:  # pragma: no cover - _verb returns only the verbs above
            raise method_not_allowed()

    def _check_accept(self) -> None:
        """406 unless the client accepts JSON (we answer nothing else)."""
        accept = self.request.headers.get("Accept", "")
        if not accept:
            return
        for part in accept.split(","):
            media = part.split(";")[0].strip().lower()
            if media in ("*/*", "application/*", "application/json"):
                return
        raise StatusError(
            406,
            "NotAcceptable",
            f"only the following media types are accepted: application/json (asked for {accept})",
        )

    # -- authn / authz --

    async def _authenticate(self) -> UserInfo:
        header = self.request.headers.get("Authorization", "")
        token: str | None = None
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise StatusError(401, "Unauthorized", "Unauthorized")
            token = value.strip()
        if token is None:
            # kube-apiserver's anonymous auth. Note kubectl never sends a bearer token over
            # plain HTTP, so over HTTP kubectl is always anonymous.
            return ANONYMOUS
        user = await _resolve(self.sandbox.authenticate(token))
        if user is None:
            raise StatusError(401, "Unauthorized", "Unauthorized")
        return user

    async def _impersonate(self, user: UserInfo, target: Attributes) -> UserInfo:
        """The user to serve the request as: ``user``, or whom the Impersonate-* headers name.

        Each header is checked with verb ``impersonate`` before any of it is honoured (kube's
        WithImpersonation filter). Like kube-apiserver 1.36 with constrained impersonation,
        a requester who may not impersonate the user at all is refused on the request itself
        (verb ``impersonate-on:user-info:<verb>``, or ``...:serviceaccount:...``); a refused
        group, uid or extra after that is refused on that item (``impersonate`` on groups).
        The constrained grants themselves are not evaluated: only legacy ``impersonate``.
        """
        try:
            requests = build_impersonation_requests(self.request.headers.get_all())
        except ImpersonationError as exc:
            raise bad_request(str(exc)) from exc
        for index, req in enumerate(requests):
            attrs = Attributes(
                user,
                "impersonate",
                api_group=req.api_group,
                api_version="v1",
                resource=req.resource,
                subresource=req.subresource,
                namespace=req.namespace,
                name=req.name,
            )
            decision = await _resolve(self.sandbox.authorize(attrs))
            if decision.allowed:
                continue
            if index == 0:
                mode = "serviceaccount" if req.resource == "serviceaccounts" else "user-info"
                raise self._forbidden(
                    replace(target, verb=f"impersonate-on:{mode}:{target.verb}"), ""
                )
            raise self._forbidden(attrs, decision.reason)
        return impersonated_user(requests) or user

    async def _authorize(self, attrs: Attributes) -> None:
        decision = await _resolve(self.sandbox.authorize(attrs))
        if decision.allowed:
            return
        raise self._forbidden(attrs, decision.reason)

    def _forbidden(self, attrs: Attributes, reason: str) -> StatusError:
        """kube's 403 for ``attrs`` (responsewriters.Forbidden's message and details)."""
        user = attrs.user.username
        suffix = f": {reason}" if reason else ""
        if not attrs.resource:
            return StatusError(
                403,
                "Forbidden",
                f'forbidden: User "{user}" cannot {attrs.verb} path "{attrs.path}"{suffix}',
                details={},
            )
        resource = attrs.resource + (f"/{attrs.subresource}" if attrs.subresource else "")
        qualified = f"{attrs.resource}.{attrs.api_group}" if attrs.api_group else attrs.resource
        subject = f'{qualified} "{attrs.name}"' if attrs.name else qualified
        scope = (
            f'in the namespace "{attrs.namespace}"' if attrs.namespace else "at the cluster scope"
        )
        message = (
            f'{subject} is forbidden: User "{user}" cannot {attrs.verb} resource '
            f'"{resource}" in API group "{attrs.api_group}" {scope}{suffix}'
        )
        details: JSONObject = {"name": attrs.name, "kind": attrs.resource}
        if attrs.api_group:
            details["group"] = attrs.api_group
        return StatusError(403, "Forbidden", message, details=details)

    # -- discovery --

    def _non_resource(self, segments: list[str]) -> JSONObject | str | None:
        reg = self.sandbox.registry
        if segments == ["version"]:
            git = reg.git_version
            major, minor = git.lstrip("v").split(".")[:2]
            return {
                "major": major,
                "minor": minor,
                "gitVersion": git,
                "gitCommit": "vsphere-kale-sandbox",
                "gitTreeState": "clean",
                "buildDate": "2024-01-01T00:00:00Z",
                "goVersion": "go1.22.0",
                "compiler": "gc",
                "platform": "linux/amd64",
            }
        if segments in (["healthz"], ["livez"], ["readyz"]):
            return "ok"
        if segments == ["api"]:
            return {
                "kind": "APIVersions",
                "versions": ["v1"],
                "serverAddressByClientCIDRs": [
                    {"clientCIDR": "0.0.0.0/0", "serverAddress": self.sandbox.server_address}
                ],
            }
        if segments == ["apis"]:
            return {
                "kind": "APIGroupList",
                "apiVersion": "v1",
                "groups": [self._api_group(g) for g in reg.groups()],
            }
        if len(segments) == 2 and segments[0] == "apis" and segments[1] in reg.groups():
            return {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(segments[1])}
        if segments == ["api", "v1"]:
            return self._resource_list("", "v1")
        if len(segments) == 3 and segments[0] == "apis" and reg.types_in(segments[1], segments[2]):
            return self._resource_list(segments[1], segments[2])
        if segments == ["openapi", "v2"]:
            self._check_accept()  # kubectl asks for protobuf only: 406, never a silent JSON
            return openapi.swagger_v2(reg)
        if segments[:2] == ["openapi", "v3"]:
            if len(segments) == 2:
                return openapi.index(reg)
            doc = openapi.group_version_document(reg, "/".join(segments[2:]))
            return doc
        return None

    def _api_group(self, group: str) -> JSONObject:
        versions = [
            {"groupVersion": f"{group}/{v}", "version": v}
            for v in self.sandbox.registry.versions_of(group)
        ]
        return {"name": group, "versions": versions, "preferredVersion": versions[0]}

    def _resource_list(self, group: str, version: str) -> JSONObject:
        resources: list[JSONObject] = []
        for rt in self.sandbox.registry.types_in(group, version):
            entry: JSONObject = {
                "name": rt.plural,
                "singularName": rt.singular,
                "namespaced": rt.namespaced,
                "kind": rt.kind,
                "verbs": list(rt.verbs),
            }
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            if "token" in rt.subresources:
                resources.append(
                    {
                        "name": f"{rt.plural}/token",
                        "singularName": "",
                        "namespaced": True,
                        "group": "authentication.k8s.io",
                        "version": "v1",
                        "kind": "TokenRequest",
                        "verbs": ["create"],
                    }
                )
        gv = f"{group}/{version}" if group else version
        return {
            "kind": "APIResourceList",
            "apiVersion": "v1",
            "groupVersion": gv,
            "resources": resources,
        }

    # -- verbs --

    def _verb(self, method: str, info: RequestInfo) -> str:
        verb = self._http_verb(method, info)
        if info.rt.read_only and verb not in info.rt.verbs:
            raise method_not_allowed(
                f"the sandbox runs no {info.rt.plural} (no scheduler, no kubelet): "
                f"{info.rt.plural} can be read, always empty, but not written"
            )
        return verb

    def _http_verb(self, method: str, info: RequestInfo) -> str:
        watch = info.watch_path or self.get_query_argument("watch", "") in ("true", "1")
        if info.rt.virtual:
            if method != "POST" or info.name:
                raise method_not_allowed()
            return "create"
        if info.subresource:  # serviceaccounts/<name>/token
            if method != "POST":
                raise method_not_allowed()
            return "create"
        if method == "GET":
            if watch:
                return "watch"
            return "get" if info.name else "list"
        if info.watch_path:
            raise method_not_allowed()
        if method == "POST":
            if info.name:
                raise method_not_allowed()
            return "create"
        if not info.name and method in ("PUT", "PATCH"):
            raise method_not_allowed()
        if method == "PUT":
            return "update"
        if method == "PATCH":
            return "patch"
        if method == "DELETE":
            return "delete" if info.name else "deletecollection"
        raise method_not_allowed()

    def _storage_type(self, info: RequestInfo) -> ResourceType:
        return self.sandbox.registry.by_ref(info.rt.storage_ref)

    def _served(self, info: RequestInfo, obj: JSONObject) -> JSONObject:
        return to_served(info.rt, info.version, obj)

    def _selectors(self, info: RequestInfo) -> tuple[LabelSelector, FieldSelector]:
        try:
            labels = parse_label_selector(self.get_query_argument("labelSelector", ""))
            fields = parse_field_selector(
                self.get_query_argument("fieldSelector", ""), supported=selectable_fields(info.rt)
            )
        except ValueError as exc:
            raise bad_request(str(exc)) from exc
        return labels, fields

    def _get(self, info: RequestInfo) -> None:
        assert info.name is not None
        obj = self.sandbox.store.get(self._storage_type(info), info.namespace, info.name)
        if obj is None:
            raise not_found(info.rt, info.name)
        served = self._served(info, obj)
        table = self._table(info, [served], resource_version=None)
        self._send(200, table if table is not None else served)

    def _table(
        self, info: RequestInfo, objects: list[JSONObject], *, resource_version: str | None
    ) -> JSONObject | None:
        """The objects as a meta.k8s.io Table if the client asked for one (kubectl get)."""
        version = tables.wants_table(self.request.headers.get("Accept", ""))
        if version is None:
            return None
        include = self.get_query_argument("includeObject", "") or "Metadata"
        return tables.build_table(
            info.rt,
            objects,
            table_version=version,
            resource_version=resource_version,
            include_object=include,
        )

    def _matching(self, info: RequestInfo) -> tuple[list[JSONObject], str]:
        labels, fields = self._selectors(info)
        items, rv = self.sandbox.store.list_items(self._storage_type(info), info.namespace)
        served = [self._served(info, o) for o in items]
        return [
            o
            for o in served
            if labels.matches((o.get("metadata") or {}).get("labels")) and fields.matches(o)
        ], rv

    def _list(self, info: RequestInfo) -> None:
        limit = parse_limit(self.get_query_argument("limit", None))
        token_text = self.get_query_argument("continue", "")
        if not limit and not token_text:
            items, rv = self._matching(info)
            page_meta: JSONObject = {"resourceVersion": rv}
        else:
            items, page_meta = self._page(info, limit, token_text)
            rv = page_meta["resourceVersion"]
        table = self._table(info, items, resource_version=rv)
        if table is not None:
            table.setdefault("metadata", {}).update(page_meta)
            self._send(200, table)
            return
        self._send(
            200,
            {
                "kind": f"{info.rt.kind}List",
                "apiVersion": info.rt.api_version(info.version),
                "metadata": page_meta,
                "items": items,
            },
        )

    def _page(
        self, info: RequestInfo, limit: int, token_text: str
    ) -> tuple[list[JSONObject], JSONObject]:
        """One page of a chunked list (see ``paging.py``): items and the list metadata."""
        labels, fields = self._selectors(info)
        scope = f"{info.rt.storage_ref.group}/{info.rt.storage_ref.plural}/{info.namespace or ''}"
        snapshots = self.sandbox.list_snapshots
        start = ""
        if token_text:
            token = decode_continue(token_text)
            start = token.start
            if token.resource_version == -1:
                snapshot, rv = self._snapshot(info, scope)
            else:
                found = snapshots.get(scope, token.resource_version)
                if found is None:
                    raise expired(token)
                snapshot, rv = found, str(token.resource_version)
        else:
            snapshot, rv = self._snapshot(info, scope)
        keyed = [
            (item_key(o, namespaced_list=bool(info.namespace)), o)
            for o in snapshot
            if labels.matches((o.get("metadata") or {}).get("labels")) and fields.matches(o)
        ]
        rest = [(k, o) for k, o in keyed if k >= start]
        page = rest[:limit] if limit else rest
        meta: JSONObject = {"resourceVersion": rv}
        if limit and len(rest) > limit:
            meta["continue"] = encode_continue(Continue(int(rv), page[-1][0] + "\x00"))
            if labels.empty and fields.empty:
                meta["remainingItemCount"] = len(rest) - limit
        return [clone(o) for _, o in page], meta

    def _snapshot(self, info: RequestInfo, scope: str) -> tuple[list[JSONObject], str]:
        items, rv = self.sandbox.store.list_items(self._storage_type(info), info.namespace)
        served = [self._served(info, o) for o in items]
        self.sandbox.list_snapshots.put(scope, int(rv), served)
        return served, rv

    # -- watch --

    async def _watch(self, info: RequestInfo, *, fault_410: bool) -> None:
        sb = self.sandbox
        labels, fields = self._selectors(info)
        if info.name:
            fields = FieldSelector(
                (
                    *fields.requirements,
                    *parse_field_selector(f"metadata.name={info.name}").requirements,
                )
            )
        rv_arg = self.get_query_argument("resourceVersion", "")
        since: int | None
        if rv_arg in ("", "0"):
            since = None
        else:
            try:
                since = int(rv_arg)
            except ValueError as exc:
                raise bad_request(
                    f"invalid resourceVersion {rv_arg!r}: must be an integer"
                ) from exc
        try:
            timeout = float(
                self.get_query_argument("timeoutSeconds", "") or sb.default_watch_timeout
            )
        except ValueError as exc:
            raise bad_request("timeoutSeconds must be a number") from exc
        bookmarks = self.get_query_argument("allowWatchBookmarks", "") in ("true", "1")
        if self.get_query_argument("sendInitialEvents", "") in ("true", "1"):
            # Like a 1.30 server without the WatchList feature gate: refuse, do not ignore.
            raise invalid(
                info.rt,
                "",
                [
                    (
                        "sendInitialEvents",
                        "Forbidden: sendInitialEvents is forbidden for watch unless the WatchList "
                        "feature gate is enabled",
                    )
                ],
            )
        self.set_status(200)
        self.set_header("Content-Type", "application/json")
        if fault_410:
            expired = StatusError(410, "Expired", "too old resource version: injected fault")
            self.finish(_json_dumps({"type": "ERROR", "object": expired.to_status()}) + "\n")
            return
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[WatchEvent | None] = asyncio.Queue()

        def deliver(event: WatchEvent) -> None:
            loop.call_soon_threadsafe(q.put_nowait, event)

        try:
            initial, watcher = sb.store.watch(self._storage_type(info), since, deliver)
        except StatusError as exc:
            # kube-apiserver answers a too-old version with 200 and one ERROR event.
            self.finish(_json_dumps({"type": "ERROR", "object": exc.to_status()}) + "\n")
            return
        self._watch_queue = q
        with sb._watch_lock:
            sb._watch_queues[q] = loop
        try:
            await self._stream(
                info,
                watcher,
                initial,
                q,
                labels=labels,
                fields=fields,
                timeout=timeout,
                bookmarks=bookmarks,
            )
        finally:
            sb.store.unwatch(watcher)
            with sb._watch_lock:
                sb._watch_queues.pop(q, None)
            self._watch_queue = None
        if not self._finished:
            self.finish()

    async def _stream(
        self,
        info: RequestInfo,
        watcher: Watcher,
        initial: list[WatchEvent],
        q: asyncio.Queue[WatchEvent | None],
        *,
        labels: LabelSelector,
        fields: FieldSelector,
        timeout: float,
        bookmarks: bool,
    ) -> None:
        sb = self.sandbox
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        await self.flush()  # headers out now: clients wait for them before reading events

        def matches(obj: JSONObject | None) -> bool:
            if obj is None:
                return False
            meta = obj.get("metadata") or {}
            if info.namespace is not None and meta.get("namespace") != info.namespace:
                return False
            return labels.matches(meta.get("labels")) and fields.matches(self._served(info, obj))

        def line_for(event: WatchEvent) -> str | None:
            if event.type == "BOOKMARK":
                obj = {
                    "kind": info.rt.kind,
                    "apiVersion": info.rt.api_version(info.version),
                    **event.obj,
                }
                return _json_dumps({"type": "BOOKMARK", "object": obj})
            now, before = matches(event.obj), matches(event.prev)
            kind = event.type
            if kind == "MODIFIED":
                # An object entering or leaving the selection is ADDED/DELETED for this
                # watcher, as kube-apiserver's watch cache reports it.
                if now and not before:
                    kind = "ADDED"
                elif before and not now:
                    kind = "DELETED"
                elif not now:
                    return None
            elif not now:
                return None
            served = self._served(info, event.obj)
            table = self._table(info, [served], resource_version=None)
            return _json_dumps({"type": kind, "object": table if table is not None else served})

        pending = [line for line in map(line_for, initial) if line is not None]
        if pending:
            self.write("\n".join(pending) + "\n")
            await self.flush()
        next_bookmark = loop.time() + sb.bookmark_interval
        while True:
            now = loop.time()
            if now >= deadline:
                return
            wait = deadline - now
            if bookmarks:
                if now >= next_bookmark:
                    sb.store.bookmark(watcher)
                    next_bookmark = now + sb.bookmark_interval
                wait = min(wait, max(0.0, next_bookmark - now))
            try:
                event = await asyncio.wait_for(q.get(), timeout=wait)
            except asyncio.TimeoutError:
                continue
            if event is None:
                return
            lines = []
            while True:
                line = line_for(event)
                if line is not None:
                    lines.append(line)
                if q.empty():
                    break
                nxt = q.get_nowait()
                if nxt is None:
                    if lines:
                        self.write("\n".join(lines) + "\n")
                        await self.flush()
                    return
                event = nxt
            if lines:
                self.write("\n".join(lines) + "\n")
                await self.flush()

    # -- writes --

    def _body(self) -> JSONObject:
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type == protobuf.PROTOBUF:
            return protobuf.decode_body(self.request.body or b"")
        if content_type and content_type not in ("application/json", "*/*"):
            # protobuf.py decodes what kubectl sends; anything else is refused, not guessed.
            raise StatusError(
                415,
                "UnsupportedMediaType",
                f"the body of the request was in an unknown format ({content_type}) - "
                "accepted media types include: application/json",
            )
        try:
            body = json.loads(self.request.body or b"null")
        except ValueError as exc:
            raise bad_request(f"the request body is not valid JSON: {exc}") from exc
        if not isinstance(body, dict):
            raise bad_request("the request body must be a JSON object")
        return body

    def _dry_run(self, body: JSONObject | None = None) -> bool:
        values = self.get_query_arguments("dryRun")
        if body is not None and isinstance(body.get("dryRun"), list):
            values = values + [str(v) for v in body["dryRun"]]
        if any(value != "All" for value in values):
            # kube validates the options object of the verb: Create/Update/Patch/DeleteOptions.
            kind = {"POST": "CreateOptions", "PUT": "UpdateOptions", "PATCH": "PatchOptions"}
            listed = "[" + ", ".join(json.dumps(v) for v in values) + "]"
            raise invalid_error(
                kind.get(self.request.method or "", "DeleteOptions"),
                "meta.k8s.io",
                "",
                [not_supported("dryRun", "", ["All"]).with_value(listed)],
            )
        return bool(values)

    def _field_validation(self, obj: JSONObject) -> None:
        mode = self.get_query_argument("fieldValidation", "") or "Warn"
        if mode not in ("Strict", "Warn", "Ignore"):
            raise bad_request(f'invalid fieldValidation "{mode}": must be Ignore, Warn or Strict')
        if mode == "Ignore":
            return
        unknown = sorted(k for k in obj if k not in KNOWN_TOP_LEVEL_FIELDS)
        if not unknown:
            return
        if mode == "Strict":
            text = ", ".join(f'unknown field "{k}"' for k in unknown)
            raise bad_request(f"strict decoding error: {text}")
        for k in unknown:
            self._warn(f'unknown field "{k}"')

    def _check_type_meta(self, info: RequestInfo, body: JSONObject) -> None:
        expected = info.rt.api_version(info.version)
        if "apiVersion" in body and body["apiVersion"] != expected:
            raise bad_request(
                f"the API version in the data ({body['apiVersion']}) does not "
                f"match the expected API version ({expected})"
            )
        if "kind" in body and body["kind"] != info.rt.kind:
            raise bad_request(
                f"the kind in the data ({body['kind']}) does not match the "
                f"expected kind ({info.rt.kind})"
            )
        meta = body.get("metadata")
        if meta is not None and not isinstance(meta, dict):
            raise bad_request("metadata must be an object")
        body_ns = (meta or {}).get("namespace")
        if info.rt.namespaced and body_ns and info.namespace and body_ns != info.namespace:
            raise bad_request(
                "the namespace of the provided object does not match the "
                "namespace sent on the request"
            )

    async def _admit(
        self,
        info: RequestInfo,
        user: UserInfo,
        operation: str,
        obj: JSONObject,
        old: JSONObject | None,
        *,
        dry_run: bool,
    ) -> JSONObject:
        """Escalation check, then the admission hook; returns the (mutated) served object."""
        sb = self.sandbox
        meta = obj.get("metadata") or {}
        name = str(meta.get("name") or "")
        if info.rt.group == RBAC_GROUP and info.rt.plural in ESCALATION_CHECKED:
            refusal = await _resolve(sb.check_escalation(user, info.rt.ref, clone(obj)))
            if refusal:
                prefix = f'{info.rt.qualified} "{name}" is forbidden: '
                message = refusal if refusal.startswith(info.rt.qualified) else prefix + refusal
                raise StatusError(
                    403,
                    "Forbidden",
                    message,
                    details={"name": name, "group": info.rt.group, "kind": info.rt.plural},
                )
        if not info.rt.admitted:
            self._validate(info, obj, old)
            return obj
        if operation == "CREATE" and info.rt.storage_ref == PVCS:
            check_pvc_decodes(obj)
            self._default_storage_class(obj)
        attrs = AdmissionAttributes(
            operation=operation,
            group=info.rt.group,
            version=info.version,
            kind=info.rt.kind,
            plural=info.rt.plural,
            namespace=info.namespace or "",
            name=name,
            user=user,
            dry_run=dry_run,
            subresource=info.subresource,
        )
        try:
            result = await sb.admit(attrs, clone(obj), clone(old) if old is not None else None)
        except AdmissionRejected as exc:
            raise StatusError(exc.code, exc.reason, exc.message) from exc
        for warning in result.warnings:
            self._warn(warning)
        mutated = result.obj
        new_meta = mutated.get("metadata") or {}
        for field in ("name", "namespace", "generateName"):
            if new_meta.get(field) != meta.get(field):
                raise StatusError(
                    500,
                    "InternalError",
                    f"admission changed metadata.{field} "
                    f"from {meta.get(field)!r} to {new_meta.get(field)!r}",
                )
        self._validate(info, mutated, old)
        return mutated

    def _default_storage_class(self, pvc: JSONObject) -> None:
        """The DefaultStorageClass admission plugin: runs before the mutating webhooks."""
        if not needs_default_class(pvc):
            return
        chosen = pick_default_storage_class(self.sandbox.store.list_objects(STORAGE_CLASSES))
        if chosen is not None:
            pvc.setdefault("spec", {})["storageClassName"] = chosen

    def _validate(self, info: RequestInfo, obj: JSONObject, old: JSONObject | None) -> None:
        """Type validation after mutating admission, as kube-apiserver orders it."""
        if info.rt.storage_ref != PVCS:
            return
        check_pvc_decodes(obj)
        causes = validate_pvc(obj) if old is None else validate_pvc_update(obj, old)
        if causes:
            name = str((obj.get("metadata") or {}).get("name") or "")
            raise invalid_error(info.rt.kind, info.rt.group, name, causes)

    async def _create(self, info: RequestInfo, user: UserInfo) -> None:
        if info.subresource == "token":
            await self._token_request(info)
            return
        body = self._body()
        if info.rt.virtual:
            await self._review(info, user, body)
            return
        dry_run = self._dry_run()
        self._check_type_meta(info, body)
        body.setdefault("metadata", {})
        if info.rt.namespaced and info.namespace:
            body["metadata"]["namespace"] = info.namespace
        elif info.rt.namespaced:
            raise bad_request(
                f"{info.rt.plural} must be created in a namespace "
                f"(POST .../namespaces/<ns>/{info.rt.plural})"
            )
        body["apiVersion"] = info.rt.api_version(info.version)
        body["kind"] = info.rt.kind
        self._field_validation(body)
        name = body["metadata"].get("name")
        if name:
            validate_name(info.rt, name)
        elif not body["metadata"].get("generateName"):
            raise invalid(
                info.rt, "", [("metadata.name", "Required value: name or generateName is required")]
            )
        _validate_meta(info.rt, body)
        _refuse_resource_version(body)
        admitted = await self._admit(info, user, "CREATE", body, None, dry_run=dry_run)
        self._record_update(info, None, admitted)
        stored = self.sandbox.store.create(
            self._storage_type(info),
            info.namespace,
            to_storage(info.rt, admitted),
            dry_run=dry_run,
        )
        self._send(201, self._served(info, stored))

    def _field_manager(self, *, apply_request: bool) -> str:
        manager = self.get_query_argument("fieldManager", "")
        if len(manager) > 128:
            raise bad_request("fieldManager: Too long: may not be more than 128 bytes")
        if apply_request and not manager:
            raise invalid_error(
                "PatchOptions",
                "meta.k8s.io",
                "",
                [required("fieldManager", "is required for apply patch")],
            )
        return manager or default_manager(self.request.headers.get("User-Agent", ""))

    def _record_update(self, info: RequestInfo, old: JSONObject | None, new: JSONObject) -> None:
        record_update(
            old,
            new,
            manager=self._field_manager(apply_request=False),
            api_version=info.rt.api_version(info.version),
            now=now_rfc3339(),
        )

    async def _update(self, info: RequestInfo, user: UserInfo) -> None:
        assert info.name is not None
        body = self._body()
        dry_run = self._dry_run()
        self._check_type_meta(info, body)
        meta = body.setdefault("metadata", {})
        if meta.get("name") and meta["name"] != info.name:
            raise bad_request(
                f"the name of the object ({meta['name']}) does not match the "
                f"name on the URL ({info.name})"
            )
        meta["name"] = info.name
        if info.rt.namespaced:
            meta["namespace"] = info.namespace
        body["apiVersion"] = info.rt.api_version(info.version)
        body["kind"] = info.rt.kind
        self._field_validation(body)
        _validate_meta(info.rt, body)
        st = self._storage_type(info)
        old = self.sandbox.store.get(st, info.namespace, info.name)
        if old is None:
            raise not_found(info.rt, info.name)
        old_served = self._served(info, old)
        admitted = await self._admit(info, user, "UPDATE", body, old_served, dry_run=dry_run)
        self._record_update(info, old_served, admitted)
        stored = self.sandbox.store.update(
            st, info.namespace, info.name, to_storage(info.rt, admitted), dry_run=dry_run
        )
        self._send(200, self._served(info, stored))

    async def _patch(self, info: RequestInfo, user: UserInfo) -> None:
        assert info.name is not None
        content_type = self.request.headers.get("Content-Type", "").split(";")[0].strip()
        if content_type not in PATCH_TYPES:
            raise unsupported_media_type(content_type)
        patch = parse_patch_body(content_type, self.request.body or b"")
        dry_run = self._dry_run()
        is_apply = content_type == APPLY_PATCH
        force = self.get_query_argument("force", "").lower() == "true"
        if self.get_query_argument("force", "") and not is_apply:
            raise bad_request("force may only be set for apply patches")
        if is_apply and not isinstance(patch, dict):
            raise bad_request("an apply patch must be an object")
        if is_apply and (patch.get("metadata") or {}).get("managedFields") is not None:
            raise bad_request("metadata.managedFields must be nil in an apply configuration")
        manager = self._field_manager(apply_request=is_apply)
        st = self._storage_type(info)
        store = self.sandbox.store
        for _attempt in range(10):
            current = store.get(st, info.namespace, info.name)
            if current is None:
                if not is_apply:
                    raise not_found(info.rt, info.name)
                # Server-side apply of a missing object creates it.
                await self._create_for_apply(info, user, patch, manager=manager)
                return
            served = self._served(info, current)
            api_version = info.rt.api_version(info.version)
            if is_apply:
                self._check_type_meta(info, patch)
                patched = apply_config(
                    served, patch, manager=manager, api_version=api_version,
                    now=now_rfc3339(), force=force,
                )  # fmt: skip
            else:
                patched = apply_patch(content_type, clone(served), patch)
            self._check_type_meta(info, patched)
            meta = patched.get("metadata")
            if not isinstance(meta, dict) or meta.get("name") != info.name:
                raise bad_request("a patch may not change metadata.name")
            if info.rt.namespaced and meta.get("namespace") != info.namespace:
                raise bad_request("a patch may not change metadata.namespace")
            self._field_validation(patched)
            _validate_meta(info.rt, patched)
            current_rv = current["metadata"]["resourceVersion"]
            explicit_rv = meta.get("resourceVersion") not in (None, current_rv)
            admitted = await self._admit(info, user, "UPDATE", patched, served, dry_run=dry_run)
            if not is_apply:
                record_update(
                    served, admitted, manager=manager, api_version=api_version, now=now_rfc3339()
                )
            body = to_storage(info.rt, admitted)
            if not explicit_rv:
                body["metadata"]["resourceVersion"] = current_rv
            try:
                stored = store.update(st, info.namespace, info.name, body, dry_run=dry_run)
            except StatusError as exc:
                if exc.reason == "Conflict" and not explicit_rv:
                    continue  # someone wrote in between: re-apply the patch, as kube does
                raise
            self._send(200, self._served(info, stored))
            return
        raise StatusError(
            409,
            "Conflict",
            f"Operation cannot be fulfilled on "
            f'{info.rt.qualified} "{info.name}": too many concurrent updates',
        )

    async def _create_for_apply(
        self, info: RequestInfo, user: UserInfo, config: JSONObject, *, manager: str
    ) -> None:
        dry_run = self._dry_run()
        self._check_type_meta(info, config)
        body = apply_config(
            None, config, manager=manager, api_version=info.rt.api_version(info.version),
            now=now_rfc3339(), force=True,
        )  # fmt: skip
        body.setdefault("metadata", {})["name"] = info.name
        if info.rt.namespaced:
            body["metadata"]["namespace"] = info.namespace
        body["apiVersion"] = info.rt.api_version(info.version)
        body["kind"] = info.rt.kind
        self._field_validation(body)
        validate_name(info.rt, info.name or "")
        _validate_meta(info.rt, body)
        _refuse_resource_version(body)
        admitted = await self._admit(info, user, "CREATE", body, None, dry_run=dry_run)
        stored = self.sandbox.store.create(
            self._storage_type(info),
            info.namespace,
            to_storage(info.rt, admitted),
            dry_run=dry_run,
        )
        self._send(201, self._served(info, stored))

    def _delete_options(self) -> JSONObject:
        """DeleteOptions from the body, else from the query (as kube decodes them), validated."""
        if self.request.body:
            options = self._body()
        else:
            options = {}
            policy = self.get_query_argument("propagationPolicy", None)
            if policy is not None:
                options["propagationPolicy"] = policy
            orphan = self.get_query_argument("orphanDependents", None)
            if orphan is not None:
                options["orphanDependents"] = orphan.lower() == "true"
        causes = validate_delete_options(options)
        if causes:
            raise invalid_error("DeleteOptions", "meta.k8s.io", "", causes)
        return options

    def _delete(self, info: RequestInfo) -> None:
        assert info.name is not None
        options = self._delete_options()
        dry_run = self._dry_run(options)
        st = self._storage_type(info)
        existed = self.sandbox.store.get(st, info.namespace, info.name)
        obj = self.sandbox.store.delete(
            st,
            info.namespace,
            info.name,
            dry_run=dry_run,
            preconditions=options.get("preconditions")
            if isinstance(options.get("preconditions"), dict)
            else None,
        )
        if (
            obj["metadata"].get("deletionTimestamp")
            or existed is None
            or (info.rt.returns_deleted_object)
        ):
            # Still there (finalizers, or a namespace being emptied), or a type whose registry
            # returns the deleted object: kube answers the object.
            self._send(200, self._served(info, obj))
            return
        details: JSONObject = {
            "name": info.name,
            "kind": info.rt.plural,
            "uid": obj["metadata"].get("uid", ""),
        }
        if info.rt.group:
            details["group"] = info.rt.group
        self._send(200, build_status(status="Success", details=details))

    def _delete_collection(self, info: RequestInfo) -> None:
        options = self._delete_options()
        dry_run = self._dry_run(options)
        items, _ = self._matching(info)
        st = self._storage_type(info)
        deleted = []
        for item in items:
            meta = item["metadata"]
            try:
                deleted.append(
                    self._served(
                        info,
                        self.sandbox.store.delete(
                            st, meta.get("namespace"), meta["name"], dry_run=dry_run
                        ),
                    )
                )
            except StatusError as exc:
                if exc.code != 404:  # deleted concurrently: fine
                    raise
        self._send(
            200,
            {
                "kind": f"{info.rt.kind}List",
                "apiVersion": info.rt.api_version(info.version),
                "metadata": {"resourceVersion": self.sandbox.store.resource_version},
                "items": deleted,
            },
        )

    # -- virtual resources --

    async def _review(self, info: RequestInfo, user: UserInfo, body: JSONObject) -> None:
        self._check_type_meta(info, body)
        sb = self.sandbox
        if info.rt.plural == "tokenreviews":
            if not (body.get("spec") or {}).get("token"):
                raise invalid(info.rt, "", [("spec.token", "Required value")])
            result = await _resolve(sb.review_token(clone(body)))
        elif info.rt.plural in ("subjectaccessreviews", "selfsubjectaccessreviews"):
            spec = body.get("spec") or {}
            if not spec.get("resourceAttributes") and not spec.get("nonResourceAttributes"):
                raise invalid(
                    info.rt,
                    "",
                    [
                        (
                            "spec.resourceAttributes",
                            "Invalid value: exactly one of nonResourceAttributes or "
                            "resourceAttributes must be specified",
                        )
                    ],
                )
            if info.rt.plural == "subjectaccessreviews" and not (
                spec.get("user") or spec.get("groups")
            ):
                raise invalid(
                    info.rt,
                    "",
                    [
                        (
                            "spec.user",
                            "Invalid value: at least one of user or group must be specified",
                        )
                    ],
                )
            result = await _resolve(sb.review_access(clone(body), user))
        elif info.rt.plural == "selfsubjectrulesreviews":
            if not (body.get("spec") or {}).get("namespace"):
                raise invalid(info.rt, "", [("spec.namespace", "Required value")])
            result = await _resolve(sb.review_rules(clone(body), user))
        elif info.rt.plural == "selfsubjectreviews":
            result = await _resolve(sb.review_self(clone(body), user))
        else:  # pragma: no cover - the registry has no other virtual types
            raise server_not_found()
        out = _complete(body, result)
        out["apiVersion"] = info.rt.api_version(info.version)
        out["kind"] = info.rt.kind
        self._send(201, out)

    async def _token_request(self, info: RequestInfo) -> None:
        assert info.name is not None and info.namespace is not None
        body = self._body() if self.request.body else {}
        sa_rt = self.sandbox.registry.by_ref(ResourceRef("", "serviceaccounts"))
        if self.sandbox.store.get(sa_rt, info.namespace, info.name) is None:
            raise not_found(sa_rt, info.name)
        result = await _resolve(self.sandbox.issue_token(info.namespace, info.name, clone(body)))
        out = _complete(body, result)
        out["apiVersion"] = "authentication.k8s.io/v1"
        out["kind"] = "TokenRequest"
        out.setdefault("metadata", {}).update(
            {
                "name": info.name,
                "namespace": info.namespace,
                "creationTimestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            }
        )
        out.setdefault("spec", {}).setdefault("audiences", [])
        self._send(201, out)


def _refuse_resource_version(body: JSONObject) -> None:
    """etcd3 storage refuses a create that carries a resourceVersion, with a plain error the
    client sees as a 500: callers creating from an object they read must clear it."""
    if (body.get("metadata") or {}).get("resourceVersion"):
        raise StatusError(
            500,
            "InternalError",
            "Internal error occurred: resourceVersion should not be set on objects to be created",
        )


def _complete(request: JSONObject, result: JSONObject) -> JSONObject:
    """A hook may return the whole review (with ``status``) or just its status."""
    if "status" in result and isinstance(result["status"], dict):
        out = clone(result)
        if "spec" in request:  # (SelfSubjectReview has none)
            out.setdefault("spec", clone(request["spec"]))
    else:
        out = clone(request)
        out["status"] = clone(result)
    out.setdefault("metadata", {})
    return out


# --- assembling a sandbox with its policy parts ----------------------------------------------


@dataclass
class SandboxSetup:
    """A configured :class:`Sandbox` and the bearer tokens for its kubeconfig users."""

    sandbox: Sandbox
    tokens: dict[str, str]
    """kubeconfig user name -> token; ``admin`` first."""


SEEDS = ("empty", "kubeflow-demo")


def build_sandbox(
    *,
    flavor: str = "psa",
    seed: str = "empty",
    authorization: bool = False,
    service_map: dict[str, str] | None = None,
    watch_history: int = 10_000,
    admin_token: str | None = None,
) -> SandboxSetup:
    """Build a Sandbox wired to the policy modules (authn, RBAC, webhooks, seed).

    The Kubeflow profile controller is not in here: it is an API client
    (:mod:`vsphere_kale.playground.kubeflow`) that ``start_sandbox(kubeflow=True)`` starts
    once the server listens, the same code that runs against a real kube-apiserver.

    Authentication (tokens -> users, TokenReview, TokenRequest) is always real; RBAC only with
    ``authorization`` (else every authenticated request is allowed, like
    ``--authorization-mode=AlwaysAllow``). ``service_map`` maps ``namespace/name:port`` of a
    webhook Service to a local ``host:port``. Raises ``ValueError`` for an unknown seed.
    """
    # Imported here: the policy modules import the store's types, the server imports them.
    from vsphere_kale.playground import seed as seeds
    from vsphere_kale.sandbox import authn, rbac, webhooks

    if seed not in SEEDS:
        raise ValueError(f"unknown seed {seed!r}; choose one of {', '.join(SEEDS)}")
    sb = Sandbox(flavor=flavor, watch_history=watch_history)
    registry = authn.TokenRegistry(sb.store, admin_token=admin_token)
    sb.authenticate = registry.authenticate
    sb.review_token = registry.review_token
    sb.issue_token = registry.issue_token
    tokens = {"admin": registry.admin_token}
    authorizer: rbac.Authorizer | rbac.AllowAllAuthorizer = (
        rbac.Authorizer(sb.store) if authorization else rbac.AllowAllAuthorizer()
    )
    sb.authorize = authorizer.authorize
    sb.review_access = authorizer.review_access
    sb.check_escalation = authorizer.check_escalation
    sb.review_rules = authorizer.review_rules
    sb.review_self = authn.review_self
    sb.add_controller(StorageProtection(sb.store))
    sb.admit = webhooks.build_admitter(sb.store, service_map=service_map or {}).admit
    if service_map:
        sb.add_controller(webhooks.EndpointsForMappedServices(sb.store, service_map))
    if seed != "empty":
        seeds.apply_seed(sb.store, seed, flavor=flavor)
        for user, (token, username, groups) in seeds.USERS.items():
            registry.add_static_token(token, UserInfo(username, groups=tuple(groups)))
            tokens[user] = token
    return SandboxSetup(sb, tokens)
