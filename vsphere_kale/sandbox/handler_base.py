"""Request parsing and the handler base of the sandbox API server.

:class:`BaseHandler` holds what every request needs (answers, warnings, the served and stored
types, selectors); the handlers stack on it: reads (:mod:`.handler_reads`), writes and
virtual resources (:mod:`.handler_writes`), deletes (:mod:`.handler_deletes`), authentication
and authorization (:mod:`.handler_access`), then :class:`~vsphere_kale.sandbox.server.ApiHandler`
(dispatch and discovery).
"""

from __future__ import annotations

import asyncio
import inspect
import json
import logging
import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar, cast

import tornado.web

from vsphere_kale.sandbox.hooks import MaybeAwaitable
from vsphere_kale.sandbox.resources import (
    Registry,
    ResourceType,
    StatusError,
    bad_request,
    invalid,
    selectable_fields,
    to_served,
)
from vsphere_kale.sandbox.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
    parse_label_selector,
)
from vsphere_kale.sandbox.store import WatchEvent, clone
from vsphere_kale.sandbox.types import (
    JSONObject,
    ResourceRef,
)

if TYPE_CHECKING:
    from vsphere_kale.sandbox.server import Sandbox

PVCS = ResourceRef("", "persistentvolumeclaims")
NAMESPACES = ResourceRef("", "namespaces")
STORAGE_CLASSES = ResourceRef("storage.k8s.io", "storageclasses")

# One logger for everything the API server says (operators and tests filter on its name).
log = logging.getLogger("vsphere_kale.sandbox.server")

T = TypeVar("T")

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


async def resolve(value: MaybeAwaitable[T]) -> T:
    if inspect.isawaitable(value):
        return cast(T, await value)
    return value


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


def json_dumps(obj: Any) -> str:
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


# --- the handler ----------------------------------------------------------------------------


_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
"""Go's ``unicode.IsControl``: what kube-apiserver refuses in a warning text."""
_WARNINGS_TOTAL = 4 * 1024
"""Characters (runes) of warning text per answer before kube-apiserver truncates."""
_WARNING_TRUNCATED = 256
"""What each text is cut to once the total is exceeded."""


class BaseHandler(tornado.web.RequestHandler):
    SUPPORTED_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE", "HEAD", "OPTIONS")

    def initialize(self, sandbox: Sandbox) -> None:
        self.sandbox = sandbox
        self._watch_queue: asyncio.Queue[WatchEvent | None] | None = None
        # kube-apiserver's warning recorder, per answer: texts in order, characters written
        self._warned: list[str] = []
        self._warn_written = 0
        self._warn_truncating = False

    def compute_etag(self) -> str | None:
        return None

    # -- responses --

    def _send(self, code: int, body: Any) -> None:
        self.set_status(code)
        self.set_header("Content-Type", "application/json")
        self.finish(json_dumps(body))

    def _send_error(self, exc: StatusError) -> None:
        if exc.retry_after is not None:
            self.set_header("Retry-After", str(exc.retry_after))
        self._send(exc.code, exc.to_status())

    def _warn(self, text: str) -> None:
        """A ``Warning: 299 - "text"`` header, as kube-apiserver's warning recorder writes
        it (k8s.io/apiserver/pkg/endpoints/filters/warning.go): empty and repeated texts are
        skipped; a text that is not UTF-8 or has control characters is dropped (apimachinery
        ``net.NewWarningHeader`` refuses it); the text goes out as UTF-8 bytes, only ``"``
        and ``\\`` escaped. Past 4096 characters in all, the texts so far are written again
        cut to 256 each, and later ones too until 4096 is reached again."""
        if not text or (self._warn_truncating and self._warn_written >= _WARNINGS_TOTAL):
            return
        if text in self._warned:
            return
        self._warned.append(text)
        if self._warn_truncating:
            text = text[:_WARNING_TRUNCATED]
        if self._warn_written + len(text) <= _WARNINGS_TOTAL or self._warn_truncating:
            if self._add_warning(text):
                self._warn_written += len(text)
            return
        self._warn_truncating = True
        self._warn_written = 0
        self.clear_header("Warning")
        for each in self._warned:
            cut = each[:_WARNING_TRUNCATED]
            if self._add_warning(cut):
                self._warn_written += len(cut)

    def _add_warning(self, text: str) -> bool:
        """Add one header; False (nothing added) for a text no header may carry."""
        if _CONTROL.search(text):
            return False
        escaped = text.replace("\\", "\\\\").replace('"', '\\"')
        try:
            utf8 = f'299 - "{escaped}"'.encode()
        except UnicodeEncodeError:  # lone surrogates: not valid UTF-8
            return False
        # tornado writes header lines as latin-1: hand it the UTF-8 bytes one per character,
        # so the wire carries UTF-8, as kube-apiserver's does.
        self.add_header("Warning", utf8.decode("latin-1"))
        return True

    def on_connection_close(self) -> None:
        if self._watch_queue is not None:
            self._watch_queue.put_nowait(None)

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


def refuse_resource_version(body: JSONObject) -> None:
    """etcd3 storage refuses a create that carries a resourceVersion, with a plain error the
    client sees as a 500: callers creating from an object they read must clear it."""
    if (body.get("metadata") or {}).get("resourceVersion"):
        raise StatusError(
            500,
            "InternalError",
            "Internal error occurred: resourceVersion should not be set on objects to be created",
        )


def complete_review(request: JSONObject, result: JSONObject) -> JSONObject:
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
