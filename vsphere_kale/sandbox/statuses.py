"""The metav1.Status errors the sandbox API server answers (importable from
:mod:`vsphere_kale.sandbox.resources` as well)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from vsphere_kale.policy.kubestatus import build_status
from vsphere_kale.sandbox.types import JSONObject

if TYPE_CHECKING:
    # Annotations only: resources re-exports these modules' names.
    from vsphere_kale.sandbox.resources import ResourceType


# --- metav1.Status errors -------------------------------------------------------------------


class StatusError(Exception):
    """A request failed; the server answers ``code`` with a metav1.Status body."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        *,
        details: JSONObject | None = None,
        retry_after: int | None = None,
    ) -> None:
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details
        self.retry_after = retry_after
        self.list_continue = ""  # metadata.continue of a 410 for a stale continue token
        super().__init__(message)

    def to_status(self) -> JSONObject:
        """The metav1.Status body (:func:`vsphere_kale.policy.kubestatus.build_status`)."""
        return build_status(
            code=self.code,
            reason=self.reason,
            message=self.message,
            details=self.details,
            retry_after=self.retry_after,
            list_continue=self.list_continue,
        )


def _details(rt: ResourceType, name: str) -> JSONObject:
    details: JSONObject = {"name": name, "kind": rt.plural}
    if rt.group:
        details["group"] = rt.group
    return details


def not_found(rt: ResourceType, name: str) -> StatusError:
    return StatusError(
        404, "NotFound", f'{rt.qualified} "{name}" not found', details=_details(rt, name)
    )


def namespace_not_found(name: str) -> StatusError:
    return StatusError(
        404,
        "NotFound",
        f'namespaces "{name}" not found',
        details={"name": name, "kind": "namespaces"},
    )


def already_exists(rt: ResourceType, name: str) -> StatusError:
    return StatusError(
        409, "AlreadyExists", f'{rt.qualified} "{name}" already exists', details=_details(rt, name)
    )


def conflict(rt: ResourceType, name: str, why: str | None = None) -> StatusError:
    why = why or (
        "the object has been modified; please apply your changes to the latest version "
        "and try again"
    )
    return StatusError(
        409,
        "Conflict",
        f'Operation cannot be fulfilled on {rt.qualified} "{name}": {why}',
        details=_details(rt, name),
    )


def forbidden(rt: ResourceType, name: str, why: str) -> StatusError:
    return StatusError(
        403, "Forbidden", f'{rt.qualified} "{name}" is forbidden: {why}', details=_details(rt, name)
    )


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str]]) -> StatusError:
    """422 Invalid; ``causes`` are (field, message) pairs as in field.ErrorList."""
    text = ", ".join(f"{fld}: {msg}" for fld, msg in causes)
    if len(causes) > 1:
        text = f"[{text}]"
    details: JSONObject = {
        "name": name,
        "kind": rt.kind,
        "causes": [
            {"reason": "FieldValueInvalid", "message": msg, "field": fld} for fld, msg in causes
        ],
    }
    if rt.group:
        details["group"] = rt.group
    qualified_kind = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    return StatusError(
        422, "Invalid", f'{qualified_kind} "{name}" is invalid: {text}', details=details
    )


def bad_request(message: str) -> StatusError:
    return StatusError(400, "BadRequest", message)


def server_not_found() -> StatusError:
    return StatusError(
        404, "NotFound", "the server could not find the requested resource", details={}
    )


def method_not_allowed(message: str = "") -> StatusError:
    return StatusError(
        405,
        "MethodNotAllowed",
        message or "the server does not allow this method on the requested resource",
    )
