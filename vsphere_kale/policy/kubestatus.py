"""The one builder of Kubernetes ``Status`` bodies (meta/v1 Status).

Every server of ours answers errors the way kube-apiserver does, so kubectl, the Python client
and the widget read them alike: the embedded sandbox (every error, and delete's Success), the
webhook, the admin API and the Jupyter extension all build their bodies here. PURE: a dict out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Literal

DETAIL_ORDER = ("name", "group", "kind", "uid", "causes", "retryAfterSeconds")
"""The field order Go serialises ``StatusDetails`` in (empty strings omitted)."""


def build_status(
    *,
    code: int = 0,
    reason: str = "",
    message: str = "",
    status: Literal["Failure", "Success"] = "Failure",
    details: Mapping[str, Any] | None = None,
    retry_after: int | None = None,
    list_continue: str = "",
) -> dict[str, Any]:
    """A ``Status`` with kube's key order (kind, apiVersion, metadata, status, message, reason,
    details, code) and, like Go's ``omitempty``, no empty message, reason, details or code.

    ``retry_after`` becomes ``details.retryAfterSeconds`` (the client reads it from there too);
    ``list_continue`` is ``metadata.continue`` of a 410 for a stale continue token.
    """
    body: dict[str, Any] = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {"continue": list_continue} if list_continue else {},
        "status": status,
    }
    if message:
        body["message"] = message
    if reason:
        body["reason"] = reason
    if details is not None or retry_after is not None:
        given = dict(details or {})
        if retry_after is not None:
            given["retryAfterSeconds"] = retry_after
        ordered: dict[str, Any] = {}
        for key in DETAIL_ORDER:
            value = given.pop(key, None)
            if value not in (None, ""):
                ordered[key] = value
        ordered.update(given)
        body["details"] = ordered
    if code:
        body["code"] = code
    return body
