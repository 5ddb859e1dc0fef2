"""``ListFunction``: the ``list_func`` ``kubernetes.watch.Watch`` and ``SharedInformer`` take,
over :class:`~vsphere_kale.kube.api.Kube`'s raw requests."""

from __future__ import annotations

import json
import socket
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from vsphere_kale.kube.resources import Resource

if TYPE_CHECKING:
    from vsphere_kale.kube.api import Kube

# The generated methods' keyword arguments -> query parameters (what SharedInformer and
# Watch pass to a list function).
QUERY_NAMES = {
    "label_selector": "labelSelector",
    "field_selector": "fieldSelector",
    "resource_version": "resourceVersion",
    "resource_version_match": "resourceVersionMatch",
    "timeout_seconds": "timeoutSeconds",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "watch": "watch",
    "limit": "limit",
    "_continue": "continue",
}


class ListFunction:
    """``list_func(**kwargs)`` in the generated methods' style, for ``SharedInformer`` and
    ``Watch``: a list answers decoded JSON; ``watch=True`` with ``_preload_content=False``
    answers the raw streaming urllib3 response, as the generated methods do. Errors are the
    client's ``ApiException``, as the library's retry logic expects."""

    def __init__(self, kube: Kube, resource: Resource, *, namespace: str | None = None) -> None:
        self._kube = kube
        self.resource = resource
        self.namespace = namespace
        self.resource_path = resource.path(namespace=namespace)
        self.__name__ = f"list_{resource.plural}"
        # ``Watch`` reads the return type with pydoc.getdoc(), which ignores a class docstring
        # for an instance: "object" makes it hand events' objects over as plain dicts.
        self.__doc__ = ":rtype: object"

    def __call__(self, **kwargs: Any) -> Any:
        timeout = kwargs.pop("_request_timeout", self._kube.timeout)
        stream = kwargs.pop("_preload_content", True) is False and bool(kwargs.get("watch"))
        unknown = set(kwargs) - set(QUERY_NAMES)
        if unknown:
            raise TypeError(f"unsupported list arguments: {', '.join(sorted(unknown))}")
        query = {QUERY_NAMES[k]: v for k, v in kwargs.items()}
        response = self._kube._send(
            "GET",
            self.resource_path,
            query=query,
            body=None,
            content_type="application/json",
            timeout=timeout,
        )
        if stream and 200 <= response.status <= 299:
            return WatchStream(response.response)
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(response.data or b"null")


class WatchStream:
    """A streaming watch response (urllib3's ``HTTPResponse``, every attribute passed
    through) whose :meth:`shutdown` ends the connection quietly.

    A watcher stops by shutting the socket down from another thread, which unblocks the
    reading one at once. urllib3's own ``shutdown()`` shuts only the read side; over TLS,
    OpenSSL 3 then takes the end of input for a truncated stream and sends the server a
    fatal ``decode_error`` alert (its handling of an EOF without close_notify), which the
    server logs as a TLS error: three of them each time the playground stopped. Shutting
    both directions down sends the server a plain end of stream instead, as
    ``kubernetes.watch.Watch.stop()`` does.
    """

    def __init__(self, response: Any) -> None:
        self._response = response

    def __getattr__(self, name: str) -> Any:
        return getattr(self._response, name)

    def __iter__(self) -> Any:
        return iter(self._response)

    def shutdown(self) -> None:
        connection = self._response.connection
        sock = getattr(connection, "sock", None) if connection is not None else None
        if sock is None:  # released or never connected: urllib3 says which
            self._response.shutdown()
            return
        sock.shutdown(socket.SHUT_RDWR)
