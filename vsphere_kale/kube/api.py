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
import threading
from collections.abc import Mapping, Sequence
from typing import Any, Literal

from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.errors import KubeError, KubeNotFound
from vsphere_kale.kube.discovery import Discovery
from vsphere_kale.kube.kubeconfig import (
    IN_CLUSTER_TOKEN,
    KubeconfigSource,
    build_api_client,
    explain,
    load_api_client,
)
from vsphere_kale.kube.listing import ListFunction
from vsphere_kale.kube.resources import Resource
from vsphere_kale.kube.translate import header_values, kube_errors, parse_warnings, translate

__all__ = [
    "APPLY_PATCH",
    "DEFAULT_TIMEOUT",
    "IN_CLUSTER_TOKEN",
    "PATCH_CONTENT_TYPES",
    "Kube",
    "ListFunction",
    "PatchType",
    "Timeout",
    "Warnings",
    "build_api_client",
    "kube_errors",
    "parse_warnings",
    "translate",
]

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
            # 401 and unreachable servers: say which credential and which server, from where.
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
                    warnings.extend(parse_warnings(header_values(exc.headers, "Warning")))
                raise
            if warnings is not None:
                warnings.extend(parse_warnings(header_values(response.headers, "Warning")))
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
        return self._write(
            "POST",
            "create",
            resource,
            namespace=namespace,
            name=name,
            described=name or _name_of(body),
            body=dict(body),
            query=_write_query(dry_run=dry_run, field_manager=field_manager),
            warnings=warnings,
            timeout=timeout,
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
        return self._write(
            "PUT",
            "update",
            resource,
            namespace=namespace,
            name=_name_of(body),
            body=dict(body),
            query=_write_query(dry_run=dry_run, field_manager=field_manager),
            warnings=warnings,
            timeout=timeout,
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
        return self._write(
            "PATCH",
            "patch",
            resource,
            namespace=namespace,
            name=name,
            body=body,
            query=_write_query(dry_run=dry_run, field_manager=field_manager),
            content_type=PATCH_CONTENT_TYPES[patch_type],
            warnings=warnings,
            timeout=timeout,
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
        query = _write_query(dry_run=dry_run, field_manager=field_manager)
        if force:
            query["force"] = "true"
        return self._write(
            "PATCH",
            "apply",
            resource,
            namespace=namespace,
            name=_name_of(body),
            body=dict(body),
            query=query,
            content_type=APPLY_PATCH,
            warnings=warnings,
            timeout=timeout,
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

    def _write(
        self,
        method: str,
        verb: str,
        resource: Resource,
        *,
        namespace: str | None,
        name: str | None,
        body: Any,
        query: dict[str, Any],
        described: str | None = None,
        content_type: str = "application/json",
        warnings: Warnings | None,
        timeout: Timeout | None,
    ) -> dict[str, Any]:
        """The one write request: the object's path, an action naming it, the JSON answer."""
        shown = described if described is not None else name or ""
        what = resource.describe(shown, namespace=namespace)
        return self._object(
            self.request(
                method,
                resource.path(namespace=namespace, name=name),
                action=f"{verb} {what}",
                query=query,
                body=body,
                warnings=warnings,
                content_type=content_type,
                timeout=timeout,
            )
        )

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
