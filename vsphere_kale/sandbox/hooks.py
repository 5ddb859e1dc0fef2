"""The sandbox's pluggable policy hooks: their types and the permissive defaults.

The defaults let everyone in as ``admin`` (``system:masters``) and admit everything, so the
server works on its own; ``build_sandbox`` plugs in the RBAC, authentication and webhook modules.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta, timezone
from typing import TypeVar, Union

from vsphere_kale.sandbox.types import (
    AdmissionAttributes,
    AdmissionResult,
    Attributes,
    Decision,
    JSONObject,
    ResourceRef,
    UserInfo,
)

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
