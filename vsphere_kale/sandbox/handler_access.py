"""Who asks and whether they may: authentication, impersonation, authorization, and the
verb a request is, for the sandbox API server.
"""

from __future__ import annotations

import logging
from dataclasses import replace

from vsphere_kale.sandbox.handler_base import (
    RequestInfo,
    resolve,
)
from vsphere_kale.sandbox.handler_deletes import DeleteHandler
from vsphere_kale.sandbox.impersonation import (
    ImpersonationError,
    build_impersonation_requests,
    impersonated_user,
)
from vsphere_kale.sandbox.resources import (
    StatusError,
    bad_request,
    method_not_allowed,
)
from vsphere_kale.sandbox.types import (
    ANONYMOUS,
    Attributes,
    JSONObject,
    UserInfo,
)

# One logger for everything the API server says (operators and tests filter on its name).
log = logging.getLogger("vsphere_kale.sandbox.server")


class AccessHandler(DeleteHandler):
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
        user = await resolve(self.sandbox.authenticate(token))
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
            decision = await resolve(self.sandbox.authorize(attrs))
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
        decision = await resolve(self.sandbox.authorize(attrs))
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
