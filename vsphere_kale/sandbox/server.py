"""The sandbox API server: tornado handlers over :class:`~vsphere_kale.sandbox.store.Store`.

One catch-all handler parses kube-apiserver's URL layout (``/api/v1/...``,
``/apis/<group>/<version>/...``, ``/watch/`` paths), then runs the request pipeline of
kube-apiserver in its order: authenticate -> authorize -> (injected faults) -> decode ->
validate -> escalation check (RBAC objects) -> admission (mutating webhooks) -> store.

Policy lives behind the hooks of :class:`Sandbox` (see ``sandbox/types.py``): the defaults
let everyone in as ``admin`` (``system:masters``) and admit everything, so the server works
on its own; ``testing.start_sandbox`` and the CLI plug in the RBAC, authentication, webhook
and Kubeflow modules.

The handler is a stack, one module per concern: :mod:`.handler_base` (parsing, answers),
:mod:`.handler_reads`, :mod:`.handler_writes`, :mod:`.handler_deletes`, :mod:`.handler_access`;
the policy hooks and their defaults are in :mod:`.hooks`.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import urllib.parse
from asyncio import Future
from dataclasses import dataclass, replace
from typing import Any, cast

import tornado.web
from tornado.iostream import StreamClosedError

from vsphere_kale.errors import KubeError
from vsphere_kale.sandbox import openapi
from vsphere_kale.sandbox.faults import FaultInjector
from vsphere_kale.sandbox.handler_access import AccessHandler
from vsphere_kale.sandbox.handler_base import (
    NAMESPACES,
    parse_resource_path,
)
from vsphere_kale.sandbox.hooks import (
    ADMIN,
    AccessReviewer,
    Admitter,
    Authenticator,
    Authorizer,
    Controller,
    EscalationCheck,
    TokenIssuer,
    TokenReviewer,
    admit_unchanged,
    allow_all,
    allow_everyone_as_admin,
    issue_random_token,
    no_escalation_check,
    review_access_allowed,
    review_rules_everything,
    review_self_as_is,
    review_token_as_admin,
)
from vsphere_kale.sandbox.paging import (
    ListSnapshots,
)
from vsphere_kale.sandbox.protection import StorageProtection
from vsphere_kale.sandbox.resources import (
    Registry,
    StatusError,
    method_not_allowed,
    server_not_found,
)
from vsphere_kale.sandbox.store import Store, WatchEvent
from vsphere_kale.sandbox.types import (
    Attributes,
    JSONObject,
    UserInfo,
)

__all__ = ["ADMIN", "SEEDS", "ApiHandler", "Controller", "Sandbox", "SandboxSetup", "build_sandbox"]

log = logging.getLogger(__name__)


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


class ApiHandler(AccessHandler):
    def finish(self, chunk: str | bytes | dict[str, Any] | None = None) -> Future[None]:
        # Log before the answer leaves, so a client holding the answer can rely on the log
        # record existing (tests count requests from it).
        if not self._finished:
            _log_request(self)
        return super().finish(chunk)

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
