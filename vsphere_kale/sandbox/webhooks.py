"""Mutating admission webhooks for the sandbox API server, called the way kube-apiserver does.

For every write the server hands to :meth:`WebhookDispatcher.admit`, each webhook of every
stored ``admissionregistration.k8s.io/v1`` MutatingWebhookConfiguration (configurations in
name order, webhooks in list order, one after the other) is matched and called:

- **matching** (``k8s.io/apiserver/pkg/admission/plugin/webhook/predicates``): ``rules``
  (operations, apiGroups, apiVersions, resources with ``*``, ``pods/*``, ``*/status``,
  ``*/*``; scope ``Namespaced``/``Cluster``/``*``), ``namespaceSelector`` against the
  namespace's labels from the store (cluster-scoped objects are never exempted; a Namespace
  is matched by its own labels) and ``objectSelector`` against the new or the old object.
  Writes of webhook configurations themselves are never sent to webhooks (kube's lock-out
  protection).
- **calling**: an ``admission.k8s.io/v1`` AdmissionReview (``v1beta1`` if the webhook only
  accepts that) is POSTed over HTTPS to ``clientConfig.url``, or to ``clientConfig.service``
  resolved through the sandbox's *service map* (``"namespace/name:port"`` →
  ``"127.0.0.1:12345"``). The server certificate is verified against ``caBundle`` (system
  roots without one) for the name kube-apiserver would verify: ``<name>.<namespace>.svc``
  for a service reference (connecting to the mapped address, with that name in SNI and
  ``Host``), the URL's host for ``url``. ``?timeout=<n>s`` is appended as kube does, and
  ``timeoutSeconds`` (default 10) bounds the call.
- **outcome**: ``allowed: false`` rejects with the webhook's status code (below 400 → 400)
  and ``admission webhook "<name>" denied the request: <message>``; a JSONPatch is applied;
  ``warnings`` are collected for ``Warning:`` headers. A failed call (connection, TLS,
  timeout, non-200, malformed or mismatched response) follows ``failurePolicy``: ``Fail``
  (default) answers 500 ``Internal error occurred: failed calling webhook "<name>": ...``,
  ``Ignore`` skips the webhook.
- ``dryRun`` requests skip webhooks whose ``sideEffects`` is not ``None``/``NoneOnDryRun``
  (kube refuses such requests outright; the sandbox skips them and logs it — see limits).
- ``reinvocationPolicy: IfNeeded``: a webhook is called once more if a webhook after it
  changed the object (kube's single reinvocation round).

Limits: no ValidatingWebhookConfigurations, no ``matchConditions``, ``matchPolicy`` is treated
as ``Exact`` (no conversion to an equivalent version), no client certificates towards
webhooks. :class:`EndpointsForMappedServices` gives every Service named in the service map a
ready Endpoints object, as if its pods were running, so "is the webhook's service backed?"
checks pass in the sandbox.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import ssl
import time
import uuid
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from tornado.httpclient import HTTPClientError, HTTPRequest
from tornado.simple_httpclient import HTTPTimeoutError, SimpleAsyncHTTPClient

from vsphere_kale.errors import KubeConflict, KubeError
from vsphere_kale.sandbox.rbac_rules import label_selector_matches, object_meta
from vsphere_kale.sandbox.types import (
    AdmissionAttributes,
    AdmissionRejected,
    AdmissionResult,
    JSONObject,
    ObjectEditor,
    ObjectReader,
    ResourceRef,
)
from vsphere_kale.sandbox.webhooks_review import (
    MAX_RESPONSE_BYTES,
    Webhook,
    WebhookCallError,
    apply_webhook_patch,
    build_review,
    check_response,
    denial,
    object_labels,
    rule_matches,
    webhooks_of,
)

log = logging.getLogger(__name__)

ADMISSIONREGISTRATION = "admissionregistration.k8s.io"
MUTATING_WEBHOOK_CONFIGURATIONS = ResourceRef(
    ADMISSIONREGISTRATION, "mutatingwebhookconfigurations"
)
NAMESPACES = ResourceRef("", "namespaces")
SERVICES = ResourceRef("", "services")
ENDPOINTS = ResourceRef("", "endpoints")


# --- the dispatcher -----------------------------------------------------------------------


class WebhookDispatcher:
    """The mutating admission chain over the configurations stored in ``reader``.

    ``service_map`` maps ``"namespace/name:port"`` to the local ``"host:port"`` that serves
    that Service (the port defaults to 443 when a reference names none).
    """

    def __init__(
        self, reader: ObjectReader, *, service_map: Mapping[str, str] | None = None
    ) -> None:
        self._reader = reader
        self.service_map = dict(service_map or {})

    async def admit(
        self,
        attrs: AdmissionAttributes,
        obj: JSONObject | None,
        old_obj: JSONObject | None,
    ) -> AdmissionResult:
        """Run every matching webhook; the (possibly patched) object and their warnings."""
        current: JSONObject = obj if obj is not None else (old_obj or {})
        if attrs.group == ADMISSIONREGISTRATION and attrs.plural.endswith("webhookconfigurations"):
            return AdmissionResult(current)
        hooks = webhooks_of(self._reader.list_objects(MUTATING_WEBHOOK_CONFIGURATIONS))
        if not hooks:
            return AdmissionResult(current)
        warnings: list[str] = []
        seen_changes: dict[int, int] = {}  # webhook index -> change count it has seen
        changes = 0
        for index, hook in enumerate(hooks):
            patched = await self._call_if_matching(hook, attrs, current, old_obj, warnings)
            if patched is None:
                continue
            if patched != current:
                changes += 1
                current = patched
            seen_changes[index] = changes
        # Reinvocation: once, for IfNeeded webhooks whose view of the object is outdated
        # because a webhook after them changed it.
        for index, hook in enumerate(hooks):
            if not hook.reinvoke_if_needed or seen_changes.get(index, changes) == changes:
                continue
            patched = await self._call_if_matching(hook, attrs, current, old_obj, warnings)
            if patched is not None:
                current = patched
        return AdmissionResult(current, tuple(warnings))

    async def _call_if_matching(
        self,
        hook: Webhook,
        attrs: AdmissionAttributes,
        obj: JSONObject,
        old_obj: JSONObject | None,
        warnings: list[str],
    ) -> JSONObject | None:
        """The patched object, or None when the webhook does not apply or was ignored."""
        try:
            if not self._matches(hook, attrs, obj, old_obj):
                return None
        except ValueError as exc:
            # kube validates selectors when the configuration is stored; ours are not.
            return self._failed(hook, f"invalid selector: {exc}")
        if attrs.dry_run and hook.side_effects not in ("None", "NoneOnDryRun"):
            log.info(
                "webhook %s skipped for a dry run: sideEffects is %s", hook.name, hook.side_effects
            )
            return None
        if not hook.review_version:
            return self._failed(
                hook,
                "webhook does not accept v1 or v1beta1 AdmissionReview (admissionReviewVersions)",
            )
        uid = str(uuid.uuid4())
        review = build_review(attrs, obj, old_obj, uid=uid, version=hook.review_version)
        try:
            response = await self._post(hook, review)
            answer = check_response(response, uid=uid, version=hook.review_version)
        except WebhookCallError as exc:
            return self._failed(hook, str(exc))
        for warning in answer.get("warnings") or []:
            warnings.append(str(warning))
        if not answer.get("allowed"):
            raise denial(hook.name, answer.get("status"))
        patch = answer.get("patch")
        if not patch:
            return obj
        return apply_webhook_patch(hook.name, obj, patch, answer.get("patchType"))

    def _failed(self, hook: Webhook, reason: str) -> JSONObject | None:
        message = f'failed calling webhook "{hook.name}": {reason}'
        if hook.failure_policy == "Ignore":
            log.warning("failing open (failurePolicy Ignore): %s", message)
            return None
        log.warning("failing closed: %s", message)
        raise AdmissionRejected(500, "InternalError", f"Internal error occurred: {message}")

    def _matches(
        self,
        hook: Webhook,
        attrs: AdmissionAttributes,
        obj: JSONObject,
        old_obj: JSONObject | None,
    ) -> bool:
        rules = [r for r in hook.spec.get("rules") or [] if isinstance(r, Mapping)]
        if not any(rule_matches(rule, attrs) for rule in rules):
            return False
        if not self._namespace_matches(hook, attrs, obj, old_obj):
            return False
        object_selector = hook.spec.get("objectSelector")
        if object_selector:
            new_labels = object_labels(obj) if attrs.operation != "DELETE" else None
            old_labels = object_labels(old_obj) if old_obj is not None else None
            return any(
                labels is not None and label_selector_matches(object_selector, labels)
                for labels in (new_labels, old_labels)
            )
        return True

    def _namespace_matches(
        self,
        hook: Webhook,
        attrs: AdmissionAttributes,
        obj: JSONObject,
        old_obj: JSONObject | None,
    ) -> bool:
        selector = hook.spec.get("namespaceSelector")
        if not selector:
            return True
        is_namespace = attrs.group == "" and attrs.plural == "namespaces" and not attrs.subresource
        if is_namespace:
            # A Namespace is matched by its own labels (the old ones when deleting).
            own = old_obj if attrs.operation == "DELETE" else obj
            return label_selector_matches(selector, object_labels(own))
        if not attrs.namespace:
            return True  # cluster-scoped objects are never exempted
        namespace = self._reader.get_object(NAMESPACES, None, attrs.namespace)
        if namespace is None:
            raise AdmissionRejected(404, "NotFound", f'namespaces "{attrs.namespace}" not found')
        return label_selector_matches(selector, object_labels(namespace))

    # -- transport --

    def resolve(self, client_config: Mapping[str, Any]) -> tuple[str, str, tuple[str, int] | None]:
        """(URL to post to, TLS/Host name, local address to connect to instead or None)."""
        url = client_config.get("url")
        service = client_config.get("service")
        if isinstance(url, str) and url:
            parts = urlsplit(url)
            if parts.scheme != "https":
                raise WebhookCallError(f"webhook URL {url!r} must use https")
            return url, parts.hostname or "", None
        if not isinstance(service, Mapping):
            raise WebhookCallError("clientConfig has neither url nor service")
        namespace = str(service.get("namespace") or "")
        name = str(service.get("name") or "")
        port = int(service.get("port") or 443)
        path = str(service.get("path") or "/")
        key = f"{namespace}/{name}:{port}"
        target = self.service_map.get(key)
        if target is None:
            raise WebhookCallError(
                f'service "{namespace}/{name}" port {port} is not in the sandbox service map '
                f"(known: {', '.join(sorted(self.service_map)) or 'none'})"
            )
        host, _, local_port = target.rpartition(":")
        if not host or not local_port.isdigit():
            raise WebhookCallError(f"service map entry {key!r} -> {target!r} is not host:port")
        server_name = f"{name}.{namespace}.svc"
        return f"https://{server_name}:{port}{path}", server_name, (host, int(local_port))

    async def _post(self, hook: Webhook, review: JSONObject) -> bytes:
        client_config = hook.spec.get("clientConfig") or {}
        url, server_name, connect_to = self.resolve(client_config)
        context = _ssl_context(client_config.get("caBundle"))
        timeout = hook.timeout_seconds
        separator = "&" if urlsplit(url).query else "?"
        url = f"{url}{separator}timeout={timeout}s"
        mapping: dict[Any, Any] = {}
        if connect_to is not None:
            port = urlsplit(url).port or 443
            mapping[(server_name, port)] = connect_to
        client = SimpleAsyncHTTPClient(
            force_instance=True, hostname_mapping=mapping, max_body_size=MAX_RESPONSE_BYTES
        )
        request = HTTPRequest(
            url,
            method="POST",
            body=json.dumps(review),
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            ssl_options=context,
            connect_timeout=timeout,
            request_timeout=timeout,
            follow_redirects=False,
        )
        try:
            response = await asyncio.wait_for(client.fetch(request), timeout + 1)
        except HTTPTimeoutError as exc:
            raise WebhookCallError(
                f'failed to call webhook: Post "{url}": context deadline exceeded ({exc})'
            ) from exc
        except HTTPClientError as exc:
            if exc.code == 599:  # tornado's code for a connection that broke, not an answer
                raise WebhookCallError(
                    f'failed to call webhook: Post "{url}": {exc.message or exc}'
                ) from exc
            body = exc.response.body.decode(errors="replace")[:300] if exc.response else ""
            raise WebhookCallError(
                f'failed to call webhook: Post "{url}": the server responded with status '
                f"{exc.code}: {body}"
            ) from exc
        except (OSError, ssl.SSLError, asyncio.TimeoutError) as exc:
            raise WebhookCallError(
                f'failed to call webhook: Post "{url}": {_describe(exc)}'
            ) from exc
        finally:
            client.close()
        return response.body


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return f"tls: failed to verify certificate: {exc.verify_message}"
    if isinstance(exc, asyncio.TimeoutError):
        return "context deadline exceeded"
    return str(exc) or type(exc).__name__


def _ssl_context(ca_bundle: Any) -> ssl.SSLContext:
    """Verify the webhook against ``caBundle`` (base64 PEM), or the system roots without one."""
    context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    if not ca_bundle:
        return context
    try:
        pem = base64.b64decode(str(ca_bundle), validate=True).decode("ascii")
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=pem)
    except (binascii.Error, UnicodeDecodeError, ssl.SSLError, ValueError) as exc:
        # kube accepts any bytes here and then fails every TLS handshake; so do we, with
        # a clearer reason.
        raise WebhookCallError(f"clientConfig.caBundle is not base64-encoded PEM: {exc}") from exc
    return context


def build_admitter(
    reader: ObjectReader, *, service_map: Mapping[str, str] | None = None
) -> WebhookDispatcher:
    """The admission hook as ``build_sandbox`` plugs it in (``sandbox.admit = ...admit``)."""
    return WebhookDispatcher(reader, service_map=service_map)


# --- Endpoints for mapped Services --------------------------------------------------------


class EndpointsForMappedServices:
    """A controller: Services named in the service map get a ready Endpoints object.

    In a cluster the endpoints controller lists the ready pods behind a Service. The sandbox
    runs no pods, but a mapped Service *is* served (by the local address), so its Endpoints
    show one ready address per mapped port: the mapped host and port, as if a pod there
    served it. Services not in the map get nothing, like a Service whose pods are not ready.

    Reactions happen synchronously on the store's dispatcher thread, so after
    :meth:`wait_idle` returns the Endpoints of every stored mapped Service exist.
    """

    def __init__(self, writer: ObjectEditor, service_map: Mapping[str, str]) -> None:
        self._writer = writer
        self.service_map = dict(service_map)

    def endpoints_for(self, service: Mapping[str, Any]) -> JSONObject | None:
        """The Endpoints a Service should have, or None if none of its ports is mapped."""
        meta = object_meta(service)
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        addresses: list[tuple[str, JSONObject]] = []
        for port in (service.get("spec") or {}).get("ports") or []:
            number = port.get("port")
            target = self.service_map.get(f"{namespace}/{name}:{number}")
            if target is None:
                continue
            host, _, local_port = target.rpartition(":")
            entry: JSONObject = {"port": int(local_port), "protocol": port.get("protocol", "TCP")}
            if port.get("name"):
                entry["name"] = port["name"]
            addresses.append((host, entry))
        if not addresses:
            return None
        subsets = [{"addresses": [{"ip": host}], "ports": [entry]} for host, entry in addresses]
        return {
            "apiVersion": "v1",
            "kind": "Endpoints",
            "metadata": {
                "name": name,
                "namespace": namespace,
                "labels": dict(object_labels(service)),
            },
            "subsets": subsets,
        }

    def __call__(self, event_type: str, ref: ResourceRef, obj: JSONObject) -> None:
        if ref != SERVICES:
            return
        meta = object_meta(obj)
        namespace, name = str(meta.get("namespace", "")), str(meta.get("name", ""))
        if event_type == "DELETED":
            if self.endpoints_for(obj) is not None:
                self._writer.delete_object(ENDPOINTS, namespace, name)
            return
        wanted = self.endpoints_for(obj)
        if wanted is None:
            return
        try:
            self._writer.create_object(ENDPOINTS, namespace, wanted)
            log.info("endpoints %s/%s: ready at the mapped address", namespace, name)
        except KubeConflict:
            current = self._writer.get_object(ENDPOINTS, namespace, name)
            if current is None or current.get("subsets") == wanted["subsets"]:
                return
            current["subsets"] = wanted["subsets"]
            try:
                self._writer.update_object(ENDPOINTS, namespace, current)
            except KubeError as exc:
                log.warning("endpoints %s/%s: update failed: %s", namespace, name, exc)
        except KubeError as exc:
            # The namespace is being deleted, typically; nothing to serve then.
            log.info("endpoints %s/%s: not created: %s", namespace, name, exc)

    def wait_idle(self, timeout: float = 5.0) -> bool:
        """True once every stored mapped Service has its Endpoints (polls up to ``timeout``)."""
        deadline = time.monotonic() + timeout
        while True:
            missing = [
                service
                for service in self._writer.list_objects(SERVICES)
                if self.endpoints_for(service) is not None
                and self._writer.get_object(
                    ENDPOINTS,
                    str(object_meta(service).get("namespace", "")),
                    str(object_meta(service).get("name", "")),
                )
                is None
            ]
            if not missing:
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def stop(self) -> None:
        """Nothing to stop: the controller owns no thread."""
