"""Impersonation headers, as kube-apiserver's ``WithImpersonation`` filter reads them.

``Impersonate-User``, ``Impersonate-Group`` (repeatable), ``Impersonate-Uid`` and
``Impersonate-Extra-<key>`` each become one request to check with verb ``impersonate``:
on ``users`` (or ``serviceaccounts`` in the namespace, when the user is
``system:serviceaccount:<ns>:<name>``), ``groups``, ``uids`` and ``userextras/<key>`` (those two
in group ``authentication.k8s.io``). Only when every check passes is the request served as the
impersonated user, with ``system:authenticated`` added as kube does
(https://kubernetes.io/docs/reference/access-authn-authz/authentication/#user-impersonation).

Pure: the server turns each :class:`ImpersonationRequest` into an authorization check.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable
from dataclasses import dataclass

from vsphere_kale.sandbox.types import UserInfo

USER_HEADER = "impersonate-user"
GROUP_HEADER = "impersonate-group"
UID_HEADER = "impersonate-uid"
EXTRA_PREFIX = "impersonate-extra-"

AUTHENTICATED = "system:authenticated"
UNAUTHENTICATED = "system:unauthenticated"
ANONYMOUS_USER = "system:anonymous"
_SA_PREFIX = "system:serviceaccount:"


@dataclass(frozen=True)
class ImpersonationRequest:
    """One thing the requester asks to act as; checked as ``impersonate`` on ``resource``."""

    resource: str  # users | serviceaccounts | groups | uids | userextras
    name: str
    namespace: str = ""
    subresource: str = ""  # the extra's key, for userextras

    @property
    def api_group(self) -> str:
        return "authentication.k8s.io" if self.resource in ("uids", "userextras") else ""


class ImpersonationError(ValueError):
    """Headers that cannot be honoured (groups, uid or extras without a user): kube answers
    400 BadRequest with this message."""


def split_service_account(username: str) -> tuple[str, str] | None:
    """``(namespace, name)`` of ``system:serviceaccount:<ns>:<name>``, else None."""
    if not username.startswith(_SA_PREFIX):
        return None
    parts = username[len(_SA_PREFIX) :].split(":")
    if len(parts) != 2 or not parts[0] or not parts[1]:
        return None
    return parts[0], parts[1]


def build_impersonation_requests(
    headers: Iterable[tuple[str, str]],
) -> list[ImpersonationRequest]:
    """The checks the headers ask for, in kube's order: user, groups, extras, uid.

    ``headers`` are (name, value) pairs, repeated names kept. Raises
    :class:`ImpersonationError` when groups, extras or a uid come without a user, with kube's
    message (kube-apiserver answers that with 500 InternalError).
    """
    pairs = [(name.lower(), value) for name, value in headers]
    user = next((v for n, v in pairs if n == USER_HEADER and v), "")
    requests: list[ImpersonationRequest] = []
    if user:
        sa = split_service_account(user)
        if sa is not None:
            requests.append(ImpersonationRequest("serviceaccounts", sa[1], namespace=sa[0]))
        else:
            requests.append(ImpersonationRequest("users", user))
    others: list[ImpersonationRequest] = []
    others += [ImpersonationRequest("groups", v) for n, v in pairs if n == GROUP_HEADER]
    for name, value in pairs:
        if name.startswith(EXTRA_PREFIX):
            # Keys are percent-encoded in header names (RFC 7230 token limits).
            key = urllib.parse.unquote(name[len(EXTRA_PREFIX) :])
            others.append(ImpersonationRequest("userextras", value, subresource=key))
    uid = next((v for n, v in pairs if n == UID_HEADER and v), "")
    if uid:
        others.append(ImpersonationRequest("uids", uid))
    if others and not user:
        raise ImpersonationError(
            f"requested {_go_user_info(others)} without impersonating a user name"
        )
    return requests + others


def _go_strings(values: list[str]) -> str:
    if not values:
        return "[]string(nil)"
    return "[]string{" + ", ".join(f'"{v}"' for v in values) + "}"


def _go_user_info(requests: list[ImpersonationRequest]) -> str:
    """The requested user as Go prints ``%#v`` of a user.DefaultInfo (kube's message)."""
    groups = [r.name for r in requests if r.resource == "groups"]
    uid = next((r.name for r in requests if r.resource == "uids"), "")
    extra: dict[str, list[str]] = {}
    for r in requests:
        if r.resource == "userextras":
            extra.setdefault(r.subresource, []).append(r.name)
    extra_text = (
        "map[string][]string{"
        + ", ".join(f'"{k}":{_go_strings(v)}' for k, v in sorted(extra.items()))
        + "}"
        if extra
        else "map[string][]string(nil)"
    )
    return (
        f'&user.DefaultInfo{{Name:"", UID:"{uid}", Groups:{_go_strings(groups)}, '
        f"Extra:{extra_text}}}"
    )


def impersonated_user(requests: list[ImpersonationRequest]) -> UserInfo | None:
    """The user the (already authorized) requests describe; None when nothing is impersonated."""
    if not requests:
        return None
    username = ""
    uid = ""
    groups: list[str] = []
    extra: dict[str, list[str]] = {}
    groups_given = any(r.resource == "groups" for r in requests)
    for r in requests:
        if r.resource == "serviceaccounts":
            username = f"{_SA_PREFIX}{r.namespace}:{r.name}"
            if not groups_given:
                # A service account's groups are a fixed mapping, added when none are asked.
                groups += ["system:serviceaccounts", f"system:serviceaccounts:{r.namespace}"]
        elif r.resource == "users":
            username = r.name
        elif r.resource == "groups":
            groups.append(r.name)
        elif r.resource == "userextras":
            extra.setdefault(r.subresource, []).append(r.name)
        elif r.resource == "uids":
            uid = r.name
    if username != ANONYMOUS_USER:
        if not any(g in (AUTHENTICATED, UNAUTHENTICATED) for g in groups):
            groups.append(AUTHENTICATED)
    elif UNAUTHENTICATED not in groups:
        groups.append(UNAUTHENTICATED)
    return UserInfo(
        username,
        uid=uid,
        groups=tuple(groups),
        extra={k: tuple(v) for k, v in extra.items()},
    )
