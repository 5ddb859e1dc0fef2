"""``Kube``: the one client type of vsphere-kale. Raw JSON dicts in and out, errors in our tree.

Requests go through the official client's ``ApiClient`` (``param_serialize`` / ``call_api``, the
calls its generated methods make), so kubeconfig and in-cluster auth, TLS, the connection pool
and urllib3's Retry-After handling all still apply. Why not the generated ``CoreV1Api`` & co.:
their first use imports a 40,000-line module and the models it references (about 20 MB of RSS),
and every answer would be validated into models only to be turned back into dicts.

Every verb names what it did in its error ("create rolebindings alice/x: ..."), and every write
takes ``dry_run`` and can collect the API's ``Warning`` headers (admission warnings, Pod Security
Admission's dry-run label warnings) into a caller's list.
"""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from vsphere_kale.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)
from vsphere_kale.kube.discovery import Discovery
from vsphere_kale.kube.kubeconfig import KubeconfigSource, explain, load_api_client
from vsphere_kale.kube.resources import Resource

log = logging.getLogger(__name__)

Timeout = float | tuple[float, float]
"""Total seconds, or (connect, read) seconds, as urllib3 takes them."""
DEFAULT_TIMEOUT: tuple[float, float] = (10.0, 30.0)
"""(connect, read) seconds: a hung API server fails a request instead of a thread."""

Warnings = list[str]
"""A caller's list that a write appends the answer's ``Warning`` texts to (``Kube.list``
shadows the builtin inside the class)."""
PatchType = Literal["merge", "json", "strategic"]
PATCH_CONTENT_TYPES: dict[str, str] = {
    "merge": "application/merge-patch+json",
    "json": "application/json-patch+json",
    "strategic": "application/strategic-merge-patch+json",
}
APPLY_PATCH = "application/apply-patch+yaml"
"""Server-side apply; the body is JSON, which is YAML."""

# The generated methods' keyword arguments -> query parameters (what SharedInformer and
# Watch pass to a list function).
_QUERY_NAMES = {
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

# RFC 7234 warn-value as the API server writes it: 299 - "text" (quotes and backslashes
# escaped): https://kubernetes.io/blog/2020/09/03/warnings/
_WARNING = re.compile(r'\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
    except (TypeError, ValueError):
        pass
    return str(exc.reason or "no message")


def _retry_after(exc: ApiException) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def translate(exc: ApiException, *, action: str) -> KubeError:
    """One ApiException -> our error tree, with ``action`` ("create rolebindings alice/x")."""
    status = int(exc.status or 0)
    message = f"{action}: {_status_message(exc)}"
    kwargs: dict[str, Any] = {
        "status": status,
        "reason": str(exc.reason or ""),
        "retry_after": _retry_after(exc),
    }
    if status == 404:
        return KubeNotFound(message, **kwargs)
    if status == 409:
        return KubeConflict(message, **kwargs)
    if status == 403:
        return KubeForbidden(message, **kwargs)
    if status in (0, 429) or status >= 500:
        return KubeUnavailable(message, **kwargs)
    return KubeError(message, **kwargs)


@contextmanager
def kube_errors(action: str) -> Iterator[None]:
    """Translate client errors raised inside the block, naming ``action`` in the message."""
    try:
        yield
    except ApiException as exc:
        raise translate(exc, action=action) from exc
    except (Urllib3HTTPError, OSError) as exc:
        raise KubeUnavailable(f"{action}: API server unreachable ({exc})") from exc


def parse_warnings(values: Sequence[str]) -> list[str]:
    """The texts of ``Warning`` header values (``299 - "text"``); unparsable ones verbatim."""
    texts: list[str] = []
    for value in values:
        matches = list(_WARNING.finditer(value))
        if not matches:
            texts.append(value.strip())
        for m in matches:
            texts.append(re.sub(r"\\(.)", r"\1", m.group(1)))
    return texts


def _header_values(headers: Any, name: str) -> list[str]:
    if headers is None:
        return []
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return [str(v) for v in getlist(name)]
    value = headers.get(name)
    return [str(value)] if value is not None else []


class Kube:
    """The verbs vsphere-kale uses, over one ``ApiClient``.

    Thread-safe as the ApiClient is (its urllib3 pool is); the discovery cache has a lock.
    """

    def __init__(
        self,
        api_client: client.ApiClient,
        *,
        timeout: Timeout = DEFAULT_TIMEOUT,
        source: KubeconfigSource | None = None,
    ) -> None:
        self.api_client = api_client
        """For the official helpers that need one (``leaderelection``); nothing else."""
        self.timeout = timeout
        self.source = source
        """Where the server and credential came from, for 401 and unreachable messages."""
        self._discovery: Discovery | None = None
        self._discovery_lock = threading.Lock()

    @classmethod
    def from_kubeconfig(cls, kubeconfig: str | None = None, *, context: str | None = None) -> Kube:
        """From ``kubeconfig`` (or ``$KUBECONFIG``/``~/.kube/config``), or in-cluster in a pod."""
        api_client, source = load_api_client(kubeconfig, context=context)
        return cls(api_client, source=source)

    def close(self) -> None:
        self.api_client.close()

    # --- transport ---------------------------------------------------------------------------

    def _send(
        self,
        method: str,
        resource_path: str,
        *,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: Timeout | None,
    ) -> Any:
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        params = [(k, v) for k, v in (query or {}).items() if v is not None]
        request = self.api_client.param_serialize(
            method=method,
            resource_path=resource_path,
            query_params=params,
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
        action: str,
        query: Mapping[str, Any] | None = None,
        body: Any = None,
        content_type: str = "application/json",
        timeout: Timeout | None = None,
        warnings: Warnings | None = None,
    ) -> Any:
        """One request; the decoded JSON answer. Errors are translated naming ``action``.

        ``warnings``, when given, receives the texts of the answer's ``Warning`` headers, also
        when the request fails (a denial can carry warnings too).
        """
        try:
            return self._request(
                method,
                resource_path,
                action=action,
                query=query,
                body=body,
                content_type=content_type,
                timeout=timeout,
                warnings=warnings,
            )
        except KubeError as exc:
            explained = explain(
                exc, action=action, host=str(self.api_client.configuration.host), source=self.source
            )
            if explained is exc:
                raise
            raise explained from exc

    def _request(
        self,
        method: str,
        resource_path: str,
        *,
        action: str,
        query: Mapping[str, Any] | None,
        body: Any,
        content_type: str,
        timeout: Timeout | None,
        warnings: Warnings | None,
    ) -> Any:
        with kube_errors(action):
            try:
                response = self._send(
                    method,
                    resource_path,
                    query=query,
                    body=body,
                    content_type=content_type,
                    timeout=timeout or self.timeout,
                )
                response.read()
            except ApiException as exc:
                if warnings is not None:
                    warnings.extend(parse_warnings(_header_values(exc.headers, "Warning")))
                raise
            if warnings is not None:
                warnings.extend(parse_warnings(_header_values(response.headers, "Warning")))
            if not 200 <= response.status <= 299:
                raise ApiException(http_resp=response)
            return json.loads(response.data or b"null")

    def get_json(self, resource_path: str, *, action: str = "") -> dict[str, Any]:
        """GET a path that is not an object (discovery documents, ``/version``) as JSON."""
        data = self.request("GET", resource_path, action=action or f"get {resource_path}")
        return data if isinstance(data, dict) else {}

    # --- reads -------------------------------------------------------------------------------

    def get(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """One object; :class:`KubeNotFound` when it (or its namespace) does not exist."""
        return self._object(
            self.request(
                "GET",
                resource.path(namespace=namespace, name=name),
                action=f"get {resource.describe(name, namespace=namespace)}",
                timeout=timeout,
            )
        )

    def get_optional(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any] | None:
        """One object, or None when it does not exist."""
        try:
            return self.get(resource, name, namespace=namespace, timeout=timeout)
        except KubeNotFound:
            return None

    def list(
        self,
        resource: Resource,
        *,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_: str | None = None,
        resource_version: str | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """One page of a list (all namespaces when ``namespace`` is None): ``items``,
        ``metadata.continue`` for the next page when ``limit`` cut it."""
        query = {
            "labelSelector": label_selector,
            "fieldSelector": field_selector,
            "limit": limit,
            "continue": continue_,
            "resourceVersion": resource_version,
        }
        return self._object(
            self.request(
                "GET",
                resource.path(namespace=namespace),
                action=f"list {resource.describe(namespace=namespace)}",
                query=query,
                timeout=timeout,
            )
        )

    def list_function(self, resource: Resource, *, namespace: str | None = None) -> ListFunction:
        """A ``list_func`` for ``kubernetes.watch.Watch`` and ``kubernetes.informer``."""
        return ListFunction(self, resource, namespace=namespace)

    # --- writes ------------------------------------------------------------------------------

    def create(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        name: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        warnings: Warnings | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """POST ``body``; ``name`` only for a subresource kind (TokenRequest: the account)."""
        namespace = namespace if namespace is not None else self._namespace_of(resource, body)
        what = resource.describe(name or _name_of(body), namespace=namespace)
        return self._object(
            self.request(
                "POST",
                resource.path(namespace=namespace, name=name),
                action=f"create {what}",
                query=_write_query(dry_run=dry_run, field_manager=field_manager),
                body=dict(body),
                warnings=warnings,
                timeout=timeout,
            )
        )

    def update(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        namespace: str | None = None,
        dry_run: bool = False,
        field_manager: str | None = None,
        warnings: Warnings | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """PUT ``body`` (named by its metadata); a stale resourceVersion: :class:`KubeConflict`."""
        namespace = namespace if namespace is not None else self._namespace_of(resource, body)
        name = _name_of(body)
        return self._object(
            self.request(
                "PUT",
                resource.path(namespace=namespace, name=name),
                action=f"update {resource.describe(name, namespace=namespace)}",
                query=_write_query(dry_run=dry_run, field_manager=field_manager),
                body=dict(body),
                warnings=warnings,
                timeout=timeout,
            )
        )

    def patch(
        self,
        resource: Resource,
        name: str,
        patch: Mapping[str, Any] | Sequence[Mapping[str, Any]],
        *,
        namespace: str | None = None,
        patch_type: PatchType = "merge",
        dry_run: bool = False,
        field_manager: str | None = None,
        warnings: Warnings | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """PATCH: ``merge`` (RFC 7386), ``json`` (RFC 6902, a list of operations) or
        ``strategic`` (built-in kinds only)."""
        if patch_type == "json":
            if not isinstance(patch, Sequence):
                raise TypeError("a JSON patch is a list of operations")
            body: Any = [dict(op) for op in patch]
        else:
            if not isinstance(patch, Mapping):
                raise TypeError(f"a {patch_type} patch is an object")
            body = dict(patch)
        return self._object(
            self.request(
                "PATCH",
                resource.path(namespace=namespace, name=name),
                action=f"patch {resource.describe(name, namespace=namespace)}",
                query=_write_query(dry_run=dry_run, field_manager=field_manager),
                body=body,
                content_type=PATCH_CONTENT_TYPES[patch_type],
                warnings=warnings,
                timeout=timeout,
            )
        )

    def apply(
        self,
        resource: Resource,
        body: Mapping[str, Any],
        *,
        field_manager: str,
        namespace: str | None = None,
        force: bool = False,
        dry_run: bool = False,
        warnings: Warnings | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """Server-side apply ``body`` as ``field_manager``; ``force`` takes over conflicting
        fields (a 409 otherwise). Creates the object when it does not exist."""
        if not field_manager:
            raise ValueError("server-side apply needs a field manager")
        namespace = namespace if namespace is not None else self._namespace_of(resource, body)
        name = _name_of(body)
        query = _write_query(dry_run=dry_run, field_manager=field_manager)
        if force:
            query["force"] = "true"
        return self._object(
            self.request(
                "PATCH",
                resource.path(namespace=namespace, name=name),
                action=f"apply {resource.describe(name, namespace=namespace)}",
                query=query,
                body=dict(body),
                content_type=APPLY_PATCH,
                warnings=warnings,
                timeout=timeout,
            )
        )

    def delete(
        self,
        resource: Resource,
        name: str,
        *,
        namespace: str | None = None,
        propagation_policy: Literal["Foreground", "Background", "Orphan"] | None = None,
        preconditions: Mapping[str, str] | None = None,
        dry_run: bool = False,
        warnings: Warnings | None = None,
        timeout: Timeout | None = None,
    ) -> dict[str, Any]:
        """DELETE one object; ``preconditions`` (``uid``, ``resourceVersion``) make a delete of a
        replaced object a :class:`KubeConflict` instead of deleting the new one."""
        options: dict[str, Any] = {"apiVersion": "v1", "kind": "DeleteOptions"}
        if propagation_policy:
            options["propagationPolicy"] = propagation_policy
        if preconditions:
            options["preconditions"] = dict(preconditions)
        if dry_run:
            options["dryRun"] = ["All"]
        return self._object(
            self.request(
                "DELETE",
                resource.path(namespace=namespace, name=name),
                action=f"delete {resource.describe(name, namespace=namespace)}",
                query=_write_query(dry_run=dry_run, field_manager=None),
                body=options,
                warnings=warnings,
                timeout=timeout,
            )
        )

    # --- discovery ---------------------------------------------------------------------------

    def discovery(self, *, refresh: bool = False) -> Discovery:
        """What the server serves, fetched on first use and cached (``refresh`` re-reads it)."""
        with self._discovery_lock:
            if self._discovery is None or refresh:
                self._discovery = Discovery.fetch(self.get_json)
            return self._discovery

    # --- helpers -----------------------------------------------------------------------------

    @staticmethod
    def _object(data: Any) -> dict[str, Any]:
        return data if isinstance(data, dict) else {}

    @staticmethod
    def _namespace_of(resource: Resource, body: Mapping[str, Any]) -> str | None:
        if not resource.namespaced:
            return None
        namespace = (body.get("metadata") or {}).get("namespace")
        if not namespace:
            raise ValueError(f"{resource.kind} {_name_of(body)}: no namespace given")
        return str(namespace)


def _name_of(body: Mapping[str, Any]) -> str:
    return str((body.get("metadata") or {}).get("name") or "")


def _write_query(*, dry_run: bool, field_manager: str | None) -> dict[str, Any]:
    return {"dryRun": "All" if dry_run else None, "fieldManager": field_manager}


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
        unknown = set(kwargs) - set(_QUERY_NAMES)
        if unknown:
            raise TypeError(f"unsupported list arguments: {', '.join(sorted(unknown))}")
        query = {_QUERY_NAMES[k]: v for k, v in kwargs.items()}
        response = self._kube._send(
            "GET",
            self.resource_path,
            query=query,
            body=None,
            content_type="application/json",
            timeout=timeout,
        )
        if stream and 200 <= response.status <= 299:
            return response.response
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        return json.loads(response.data or b"null")
