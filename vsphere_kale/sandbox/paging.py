"""``limit`` / ``continue`` pagination of lists, as kube-apiserver's etcd3 storage pages them.

A first page with ``limit`` takes a snapshot of the whole list at the current
resourceVersion; the continue token (kube's format: base64url of
``{"v":"meta.k8s.io/v1","rv":<rv>,"start":"<key>\\u0000"}``) names that snapshot and the key
to start after, so later pages are consistent with the first, as reading etcd at a revision
is. Snapshots live in a bounded cache; one that has been dropped (evicted, or
:meth:`ListSnapshots.compact` -- what an etcd compaction does to old revisions) makes the token
stale: 410 Expired with kube's message and an "inconsistent continue" token (rv -1) that
continues from the same key at the latest state.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
from collections import OrderedDict
from dataclasses import dataclass

from vsphere_kale.sandbox.resources import StatusError
from vsphere_kale.sandbox.types import JSONObject

TOKEN_VERSION = "meta.k8s.io/v1"
INCONSISTENT_CONTINUE = (
    "The provided continue parameter is too old to display a consistent list result. You can "
    "start a new list without the continue parameter, or use the continue token in this "
    "response to retrieve the remainder of the results. Continuing with the provided token "
    "results in an inconsistent list - objects that were created, modified, or deleted between "
    "the time the first chunk was returned and now may show up in the list."
)


@dataclass(frozen=True)
class Continue:
    resource_version: int  # -1: continue at the latest state (after a stale token)
    start: str  # list key to start at (the last key returned, plus "\0")


def encode_continue(token: Continue) -> str:
    raw = json.dumps(
        {"v": TOKEN_VERSION, "rv": token.resource_version, "start": token.start},
        separators=(",", ":"),
    )
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_continue(text: str) -> Continue:
    """The token's content; 400 BadRequest (kube's wording) when it is not one of ours."""

    def bad(why: str) -> StatusError:
        return StatusError(
            400, "BadRequest", f"invalid continue token: continue key is not valid: {why}"
        )

    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        data = json.loads(raw)
    except (binascii.Error, ValueError) as exc:
        raise bad(str(exc)) from exc
    if not isinstance(data, dict) or data.get("v") != TOKEN_VERSION:
        raise bad(f"server does not recognize this encoded version {data!r:.40}")
    rv = data.get("rv")
    start = data.get("start")
    if not isinstance(rv, int) or rv == 0 or rv < -1:
        raise bad("incorrect encoded start resourceVersion (version meta.k8s.io/v1)")
    if not isinstance(start, str) or not start or start.startswith("/") or ".." in start:
        raise bad("encoded start key is not valid")
    return Continue(rv, start)


def parse_limit(text: str | None) -> int:
    """``limit`` as kube decodes it: absent or <= 0 means everything."""
    if not text:
        return 0
    try:
        return max(0, int(text))
    except ValueError as exc:
        raise StatusError(400, "BadRequest", f'limit: Invalid value: "{text}"') from exc


def item_key(obj: JSONObject, *, namespaced_list: bool) -> str:
    """The object's key below the list's prefix: ``<ns>/<name>`` across namespaces, else name."""
    meta = obj.get("metadata") or {}
    name = str(meta.get("name") or "")
    namespace = str(meta.get("namespace") or "")
    return name if namespaced_list or not namespace else f"{namespace}/{name}"


class ListSnapshots:
    """A bounded cache of list snapshots: (list scope, resourceVersion) -> sorted items."""

    def __init__(self, capacity: int = 64) -> None:
        self.capacity = capacity
        self._lock = threading.Lock()
        self._snapshots: OrderedDict[tuple[str, int], list[JSONObject]] = OrderedDict()

    def put(self, scope: str, resource_version: int, items: list[JSONObject]) -> None:
        with self._lock:
            self._snapshots[(scope, resource_version)] = items
            self._snapshots.move_to_end((scope, resource_version))
            while len(self._snapshots) > self.capacity:
                self._snapshots.popitem(last=False)

    def get(self, scope: str, resource_version: int) -> list[JSONObject] | None:
        with self._lock:
            return self._snapshots.get((scope, resource_version))

    def compact(self) -> None:
        """Drop every snapshot: outstanding continue tokens become stale (410)."""
        with self._lock:
            self._snapshots.clear()


def expired(token: Continue) -> StatusError:
    """410 for a stale token, carrying the inconsistent-continue token in its list metadata."""
    error = StatusError(410, "Expired", INCONSISTENT_CONTINUE)
    error.list_continue = encode_continue(Continue(-1, token.start))
    return error
