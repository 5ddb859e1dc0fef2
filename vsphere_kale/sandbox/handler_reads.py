"""Reads of the sandbox API server: get, list (tables, pages), watch streams."""

from __future__ import annotations

import asyncio
import logging

from vsphere_kale.sandbox import tables
from vsphere_kale.sandbox.handler_base import (
    BaseHandler,
    RequestInfo,
    json_dumps,
)
from vsphere_kale.sandbox.paging import (
    Continue,
    decode_continue,
    encode_continue,
    expired,
    item_key,
    parse_limit,
)
from vsphere_kale.sandbox.resources import (
    StatusError,
    bad_request,
    invalid,
    not_found,
)
from vsphere_kale.sandbox.selectors import (
    FieldSelector,
    LabelSelector,
    parse_field_selector,
)
from vsphere_kale.sandbox.store import Watcher, WatchEvent, clone
from vsphere_kale.sandbox.types import (
    JSONObject,
)

# One logger for everything the API server says (operators and tests filter on its name).
log = logging.getLogger("vsphere_kale.sandbox.server")


class ReadHandler(BaseHandler):
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
            self.finish(json_dumps({"type": "ERROR", "object": expired.to_status()}) + "\n")
            return
        loop = asyncio.get_running_loop()
        q: asyncio.Queue[WatchEvent | None] = asyncio.Queue()

        def deliver(event: WatchEvent) -> None:
            loop.call_soon_threadsafe(q.put_nowait, event)

        try:
            initial, watcher = sb.store.watch(self._storage_type(info), since, deliver)
        except StatusError as exc:
            # kube-apiserver answers a too-old version with 200 and one ERROR event.
            self.finish(json_dumps({"type": "ERROR", "object": exc.to_status()}) + "\n")
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
                return json_dumps({"type": "BOOKMARK", "object": obj})
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
            return json_dumps({"type": kind, "object": table if table is not None else served})

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
