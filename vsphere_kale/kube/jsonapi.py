"""Plain-JSON requests through the official client's ``ApiClient`` (auth, TLS, pool, retries).

Why not the generated ``CoreV1Api`` & co. for the reconciler: the first use of
``CoreV1Api`` imports its 40,000-line module and the models it references, about 20 MB of
RSS, and every response is then validated into pydantic models the reconciler would only
turn back into dicts. Here requests go through the same ``ApiClient.param_serialize`` /
``call_api`` the generated methods use (so kubeconfig, in-cluster tokens, TLS and urllib3's
own Retry-After handling for idempotent requests all still apply) and answers stay JSON.
Errors are the client's ``ApiException``, exactly as the generated methods raise them.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from kubernetes import client
from kubernetes.client.exceptions import ApiException

Timeout = tuple[float, float]
DEFAULT_TIMEOUT: Timeout = (10.0, 30.0)
MERGE_PATCH = "application/merge-patch+json"

# The generated methods' keyword arguments -> query parameters (what SharedInformer and
# Watch pass to a list function).
_QUERY_NAMES = {
    "label_selector": "labelSelector",
    "field_selector": "fieldSelector",
    "resource_version": "resourceVersion",
    "timeout_seconds": "timeoutSeconds",
    "allow_watch_bookmarks": "allowWatchBookmarks",
    "watch": "watch",
    "limit": "limit",
}


def path(*segments: str) -> str:
    """``/api/v1/namespaces/alice``: each segment percent-encoded."""
    return "/" + "/".join(quote(s, safe="") for s in segments)


class JsonApi:
    def __init__(self, api_client: client.ApiClient) -> None:
        self.api_client = api_client

    def _call(
        self,
        method: str,
        resource_path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Timeout | None = DEFAULT_TIMEOUT,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        request = self.api_client.param_serialize(
            method=method,
            resource_path=resource_path,
            query_params=[(k, v) for k, v in (query or {}).items() if v is not None],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        return self.api_client.call_api(*request, _request_timeout=timeout)

    def request(
        self,
        method: str,
        resource_path: str,
        *,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Timeout | None = DEFAULT_TIMEOUT,
    ) -> Any:
        """One request; the decoded JSON answer. Raises ``ApiException`` for non-2xx."""
        response = self._call(
            method,
            resource_path,
            query=query,
            body=body,
            content_type=content_type,
            timeout=timeout,
        )
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(response.data or b"null")

    def get(self, resource_path: str, **query: Any) -> Any:
        return self.request("GET", resource_path, query=query)

    def list_function(self, resource_path: str) -> ListFunction:
        return ListFunction(self, resource_path)


class ListFunction:
    """``list_func(**kwargs)`` in the generated methods' style, for ``SharedInformer`` and
    ``Watch``: a list answers decoded JSON; ``watch=True`` with ``_preload_content=False``
    answers the raw streaming urllib3 response, as the generated methods do."""

    def __init__(self, api: JsonApi, resource_path: str) -> None:
        self._api = api
        self.resource_path = resource_path

    def __call__(self, **kwargs: Any) -> Any:
        timeout = kwargs.pop("_request_timeout", DEFAULT_TIMEOUT)
        stream = kwargs.pop("_preload_content", True) is False and bool(kwargs.get("watch"))
        query = {_QUERY_NAMES[k]: v for k, v in kwargs.items() if k in _QUERY_NAMES}
        unknown = set(kwargs) - set(_QUERY_NAMES)
        if unknown:
            raise TypeError(f"unsupported list arguments: {', '.join(sorted(unknown))}")
        if not stream:
            return self._api.request("GET", self.resource_path, query=query, timeout=timeout)
        response = self._api._call("GET", self.resource_path, query=query, timeout=timeout)
        if not 200 <= response.status <= 299:
            response.read()
            raise ApiException(http_resp=response)
        return response.response
