"""Informers (``kubernetes.informer.SharedInformer``) that cache plain dicts, over a :class:`Kube`.

The library's informer lists, then watches from the list's resourceVersion, relists on 410
Gone and once per resync period, and calls handlers with the cached object. We reuse it whole
and add what it lacks: objects stay dicts (no pydantic models: see :class:`RawList`), a
``synced`` flag, a bounded stop, and one log line instead of a traceback per ended watch.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from types import SimpleNamespace
from typing import Any

from kubernetes import informer as _informer
from kubernetes.client.exceptions import ApiException
from kubernetes.informer import SharedInformer
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from vsphere_kale.kube.api import Kube, translate
from vsphere_kale.kube.resources import Resource

log = logging.getLogger(__name__)

ADDED: str = _informer.ADDED
MODIFIED: str = _informer.MODIFIED
DELETED: str = _informer.DELETED

__all__ = ["ADDED", "DELETED", "MODIFIED", "Informer", "RawList", "quiet_dropped_watches"]

WATCH_TIMEOUT_SECONDS = 300
"""Server-side watch timeout: a silently dead connection is noticed within this long."""
LIST_TIMEOUT = (10.0, 120.0)
WATCH_BACKOFF = (0.5, 60.0)
"""First and longest wait before reopening a watch the API server refused (seconds)."""


class _WatchDropFilter(logging.Filter):
    """Turns the informer's ERROR traceback for a dropped watch connection into one INFO line.

    ``SharedInformer`` logs every connection-level end of a watch with ``logger.exception``
    and then resumes from its last resourceVersion. Connections end routinely (API server
    restarts, load-balancer idle timeouts, our own shutdown), so a traceback each time would
    drown real errors.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, Urllib3HTTPError | OSError) and "watch loop" in str(record.msg):
            self._rewrite(record, logging.INFO, "watch connection ended (%s); resuming", exc)
        elif isinstance(exc, ApiException) and "initial list" in str(record.msg):
            # e.g. 403 when RBAC lacks list on a resource: one line that says which, not a
            # traceback every 5 s.
            text = str(translate(exc, action="informer list"))
            self._rewrite(record, logging.WARNING, "%s; retrying in 5 s", text)
        return True

    @staticmethod
    def _rewrite(record: logging.LogRecord, level: int, msg: str, arg: object) -> None:
        record.msg = msg
        record.args = (type(arg).__name__ if isinstance(arg, BaseException) else arg,)
        record.exc_info = None
        record.exc_text = None
        record.levelno = level
        record.levelname = logging.getLevelName(level)


def quiet_dropped_watches() -> None:
    informer_log = logging.getLogger("kubernetes.informer.informer")
    if not any(isinstance(f, _WatchDropFilter) for f in informer_log.filters):
        informer_log.addFilter(_WatchDropFilter())


class RawList:
    """List-and-watch function for ``SharedInformer`` that keeps objects as plain dicts.

    For a list it asks for the raw response and returns an object with ``items`` (dicts) and
    ``metadata.resource_version``, the shape the informer reads. For a watch it returns the
    raw stream; ``Watch`` decodes events according to the function's ``:rtype:`` docstring
    line, and ``object`` makes it keep dicts while still tracking each event's
    resourceVersion (with no return type at all it would stop tracking and resume every
    reconnect from the initial list's version).

    The informer opens its first watch only after its initial list filled the cache and
    fired ADDED for every object, so the first watch call marks the cache ``synced``.
    """

    def __init__(
        self,
        fetch: Callable[..., Any],
        *,
        what: str,
        wait: Callable[[float], object] | None = None,
    ) -> None:
        self._fetch = fetch
        self.what = what
        self.stopping = threading.Event()
        self._wait = wait or self.stopping.wait
        self.watch_failures = 0
        """Watches refused in a row. ``SharedInformer`` reopens a refused watch at once, so a
        persistent refusal (a 403: RBAC without ``watch``) would be a busy loop against the
        API server; each refusal doubles the wait before the next attempt instead."""
        # Watch reads the return type with pydoc.getdoc(), which ignores a class docstring
        # for an instance: give the instance its own.
        self.__doc__ = ":rtype: object"
        self.synced = threading.Event()
        self.lists = 0

    def __call__(self, **kwargs: Any) -> Any:
        if kwargs.get("watch"):
            self.synced.set()
            kwargs.setdefault("timeout_seconds", WATCH_TIMEOUT_SECONDS)
            kwargs.setdefault("allow_watch_bookmarks", True)
            kwargs.setdefault(
                "_request_timeout", (LIST_TIMEOUT[0], float(kwargs["timeout_seconds"]) + 30)
            )
            return self._watch(**kwargs)
        self.lists += 1
        kwargs.pop("_preload_content", None)
        data = self._fetch(_request_timeout=LIST_TIMEOUT, **kwargs)
        meta = data.get("metadata") or {}
        return SimpleNamespace(
            items=data.get("items") or [],
            metadata=SimpleNamespace(resource_version=meta.get("resourceVersion")),
        )

    def _watch(self, **kwargs: Any) -> Any:
        if self.watch_failures:
            first, longest = WATCH_BACKOFF
            self._wait(min(longest, first * 2 ** (self.watch_failures - 1)))
        try:
            stream = self._fetch(**kwargs)
        except ApiException as exc:
            if exc.status == 410:
                raise  # too old a resourceVersion: the informer relists, nothing is refused
            self.watch_failures += 1
            if self.watch_failures == 1:
                text = translate(exc, action=f"informer watch {self.what}")
                log.warning("%s; retrying with backoff (up to %.0f s)", text, WATCH_BACKOFF[1])
            raise
        if self.watch_failures:
            log.info("watch %s open again after %d refusals", self.what, self.watch_failures)
            self.watch_failures = 0
        return stream


Handler = Callable[[Any], None]


class Informer:
    """One ``SharedInformer`` of ``resource`` (all namespaces), caching dicts.

    ``handlers`` maps ``ADDED``/``MODIFIED``/``DELETED`` to a callable taking the object.
    """

    def __init__(
        self,
        kube: Kube,
        resource: Resource,
        *,
        name: str,
        resync_seconds: float,
        handlers: dict[str, Handler],
        label_selector: str | None = None,
        field_selector: str | None = None,
        backoff_wait: Callable[[float], object] | None = None,
    ) -> None:
        self.name = name
        self.lister = RawList(kube.list_function(resource), what=name, wait=backoff_wait)
        self._informer = SharedInformer(
            self.lister,
            resync_period=int(resync_seconds),
            label_selector=label_selector,
            field_selector=field_selector,
        )
        for event, handler in handlers.items():
            self._informer.add_event_handler(event, handler)

    @property
    def synced(self) -> bool:
        return self.lister.synced.is_set()

    def start(self) -> None:
        self._informer.start()

    def get(self, key: str) -> dict[str, Any] | None:
        """A cached object by ``name`` or ``namespace/name``."""
        obj: dict[str, Any] | None = self._informer.cache.get_by_key(key)
        return obj

    def cached_keys(self) -> list[str]:
        return list(self._informer.cache.list_keys())

    def stop(self, timeout: float) -> None:
        # SharedInformer.stop() joins its thread without a bound; Watch.stop() shuts the
        # socket so it returns at once, but keep our shutdown bounded regardless.
        self.lister.stopping.set()  # a backoff wait ends at once
        stopper = threading.Thread(
            target=self._informer.stop, name=f"stop-{self.name}", daemon=True
        )
        stopper.start()
        stopper.join(timeout)
        if stopper.is_alive():
            log.warning("informer %s did not stop within %.1fs", self.name, timeout)
