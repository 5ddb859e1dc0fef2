"""Mutating admission webhooks in the sandbox API server, over real TLS.

A tiny tornado HTTPS webhook runs in the test (certificate from our own CA, made with
``cryptography`` through :mod:`vsphere_kale.install.certs`); the sandbox calls it the way
kube-apiserver would, through a ``service:`` reference resolved by the service map, or a
``url:``. Writes go through the real kubernetes client (and kubectl for ``Warning:``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ipaddress
import json
import socket
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import tornado.httpserver
import tornado.web
from kubernetes import client
from kubernetes.client.exceptions import ApiException

from vsphere_kale.install import certs
from vsphere_kale.sandbox.testing import RunningSandbox
from vsphere_kale.sandbox.types import AdmissionAttributes, ResourceRef, UserInfo
from vsphere_kale.sandbox.webhooks import EndpointsForMappedServices, denial, rule_matches

Factory = Callable[..., RunningSandbox]
SERVICE_HOST = "webhook.hooks.svc"


# --- a real HTTPS webhook -----------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add(self, path: str, review: dict[str, Any]) -> None:
        with self.lock:
            self.requests.append({"path": path, "review": review})

    def paths(self) -> list[str]:
        with self.lock:
            return [r["path"] for r in self.requests]


def _patch(ops: list[dict[str, Any]]) -> str:
    return base64.b64encode(json.dumps(ops).encode()).decode()


class HookHandler(tornado.web.RequestHandler):
    def initialize(self, recorder: Recorder) -> None:
        self.recorder = recorder

    async def post(self, kind: str) -> None:
        review = json.loads(self.request.body)
        self.recorder.add(self.request.path, review)
        request = review["request"]
        response: dict[str, Any] = {"uid": request["uid"], "allowed": True}
        if kind == "mutate":
            response["patchType"] = "JSONPatch"
            response["patch"] = _patch(
                [
                    {"op": "add", "path": "/metadata/annotations", "value": {"mutated-by": "hook"}},
                    {"op": "replace", "path": "/spec/storageClassName", "value": "nfs-client"},
                ]
            )
            response["warnings"] = ["storage class rewritten to nfs-client"]
        elif kind == "label":
            labels = (request["object"].get("metadata") or {}).get("labels") or {}
            op = "replace" if labels else "add"
            value = {**labels, "second": "yes"}
            response["patchType"] = "JSONPatch"
            response["patch"] = _patch([{"op": op, "path": "/metadata/labels", "value": value}])
        elif kind == "deny":
            response["allowed"] = False
            response["status"] = {"code": 403, "message": "no PVCs on Fridays"}
        elif kind == "slow":
            await asyncio.sleep(3)
        elif kind == "wronguid":
            response["uid"] = "something-else"
        self.set_header("Content-Type", "application/json")
        self.finish(
            {"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "response": response}
        )


class Webhook:
    """An HTTPS server on 127.0.0.1 with a certificate for ``webhook.hooks.svc`` and 127.0.0.1."""

    def __init__(self, tmp: Path) -> None:
        self.ca_pem, ca_key = certs.build_ca("test webhook CA", days=1)
        cert, key = certs.build_serving_cert(
            self.ca_pem,
            ca_key,
            dns_names=[SERVICE_HOST],
            ip_addresses=[ipaddress.ip_address("127.0.0.1")],
            days=1,
        )
        (tmp / "tls.crt").write_bytes(cert)
        (tmp / "tls.key").write_bytes(key)
        self.recorder = Recorder()
        self._sock = socket.socket()
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(16)
        self._sock.setblocking(False)
        self.port = self._sock.getsockname()[1]
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._cert = (str(tmp / "tls.crt"), str(tmp / "tls.key"))
        self._server: tornado.httpserver.HTTPServer | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def start() -> None:
            import ssl

            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self._cert)
            app = tornado.web.Application([(r"/(\w+)", HookHandler, {"recorder": self.recorder})])
            self._server = tornado.httpserver.HTTPServer(app, ssl_options=context)
            self._server.add_socket(self._sock)

        self._loop.run_until_complete(start())
        self._ready.set()
        self._loop.run_forever()

    @property
    def ca_bundle(self) -> str:
        return base64.b64encode(self.ca_pem).decode()

    def stop(self) -> None:
        async def shutdown() -> None:
            if self._server is not None:
                self._server.stop()
                await self._server.close_all_connections()

        asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()


@pytest.fixture(scope="module")
def webhook(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Webhook]:
    hook = Webhook(tmp_path_factory.mktemp("webhook"))
    yield hook
    hook.stop()


@pytest.fixture
def sandbox_with_hook(sandbox_factory: Factory, webhook: Webhook) -> RunningSandbox:
    return sandbox_factory(service_map={"hooks/webhook:443": f"127.0.0.1:{webhook.port}"})


# --- helpers ------------------------------------------------------------------------------


def _configuration(
    name: str,
    client_config: dict[str, Any],
    *,
    failure_policy: str = "Fail",
    namespace_selector: dict[str, Any] | None = None,
    object_selector: dict[str, Any] | None = None,
    timeout: int = 5,
    side_effects: str = "None",
    resources: tuple[str, ...] = ("persistentvolumeclaims",),
    reinvoke: bool = False,
) -> dict[str, Any]:
    hook: dict[str, Any] = {
        "name": f"{name}.example.com",
        "clientConfig": client_config,
        "rules": [
            {
                "operations": ["CREATE"],
                "apiGroups": [""],
                "apiVersions": ["v1"],
                "resources": list(resources),
                "scope": "Namespaced",
            }
        ],
        "failurePolicy": failure_policy,
        "sideEffects": side_effects,
        "admissionReviewVersions": ["v1"],
        "timeoutSeconds": timeout,
    }
    if namespace_selector is not None:
        hook["namespaceSelector"] = namespace_selector
    if object_selector is not None:
        hook["objectSelector"] = object_selector
    if reinvoke:
        hook["reinvocationPolicy"] = "IfNeeded"
    return {"metadata": {"name": name}, "webhooks": [hook]}


def _service(path: str, ca_bundle: str) -> dict[str, Any]:
    return {
        "service": {"namespace": "hooks", "name": "webhook", "path": path, "port": 443},
        "caBundle": ca_bundle,
    }


def _install(running: RunningSandbox, configuration: dict[str, Any]) -> None:
    api = client.AdmissionregistrationV1Api(running.api_client())
    api.create_mutating_webhook_configuration(configuration)


def _namespace(running: RunningSandbox, name: str, labels: dict[str, str] | None = None) -> None:
    client.CoreV1Api(running.api_client()).create_namespace(
        {"metadata": {"name": name, "labels": labels or {}}}
    )


def _pvc(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {
            "accessModes": ["ReadWriteMany"],
            "storageClassName": "vsan-default-storage-policy",
            "resources": {"requests": {"storage": "1Gi"}},
        },
    }


def _create_pvc(running: RunningSandbox, namespace: str, body: dict[str, Any]) -> Any:
    return client.CoreV1Api(running.api_client()).create_namespaced_persistent_volume_claim(
        namespace, body
    )


def _status(exc: ApiException) -> dict[str, Any]:
    return dict(json.loads(exc.body))


# --- tests --------------------------------------------------------------------------------


def test_service_webhook_patch_is_applied_and_warnings_returned(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    # Given a webhook behind service hooks/webhook, trusted through its caBundle
    _install(sandbox_with_hook, _configuration("mutate", _service("/mutate", webhook.ca_bundle)))
    _namespace(sandbox_with_hook, "team")
    before = len(webhook.recorder.requests)
    # When a PVC is created (raw response, to see the headers the client would log)
    api = client.CoreV1Api(sandbox_with_hook.api_client())
    raw = api.create_namespaced_persistent_volume_claim(
        "team", _pvc("data"), _preload_content=False
    )
    # Then the stored PVC carries the webhook's JSONPatch
    body = json.loads(raw.data)
    assert body["spec"]["storageClassName"] == "nfs-client"
    assert body["metadata"]["annotations"] == {"mutated-by": "hook"}
    stored = api.read_namespaced_persistent_volume_claim("data", "team")
    assert stored.spec.storage_class_name == "nfs-client"
    # And the warning reached the client as a Warning header
    assert raw.headers.get("Warning") == '299 - "storage class rewritten to nfs-client"'
    # And the webhook saw kube's AdmissionReview, sent to the service name with a timeout
    call = webhook.recorder.requests[before]
    assert call["path"] == "/mutate"
    request = call["review"]["request"]
    assert call["review"]["apiVersion"] == "admission.k8s.io/v1"
    assert request["operation"] == "CREATE"
    assert request["namespace"] == "team"
    assert request["name"] == "data"
    assert request["kind"] == {"group": "", "version": "v1", "kind": "PersistentVolumeClaim"}
    assert request["resource"] == {
        "group": "",
        "version": "v1",
        "resource": "persistentvolumeclaims",
    }
    assert request["userInfo"]["username"] == "kubernetes-admin"
    assert request["object"]["spec"]["storageClassName"] == "vsan-default-storage-policy"
    assert request["oldObject"] is None
    assert request["dryRun"] is False
    assert request["uid"]


def test_kubectl_prints_webhook_warnings(
    sandbox_factory: Factory, webhook: Webhook, tmp_path: Path
) -> None:
    running = sandbox_factory(
        tls=True, service_map={"hooks/webhook:443": f"127.0.0.1:{webhook.port}"}
    )
    _install(running, _configuration("mutate", _service("/mutate", webhook.ca_bundle)))
    _namespace(running, "team")
    manifest = tmp_path / "pvc.json"
    manifest.write_text(
        json.dumps({"apiVersion": "v1", "kind": "PersistentVolumeClaim", **_pvc("k")})
    )
    result = subprocess.run(
        [
            "kubectl",
            "--kubeconfig",
            str(running.kubeconfig_path),
            "create",
            "-n",
            "team",
            "-f",
            str(manifest),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "Warning: storage class rewritten to nfs-client" in result.stderr


def test_url_webhook(sandbox_factory: Factory, webhook: Webhook) -> None:
    running = sandbox_factory()
    url = f"https://127.0.0.1:{webhook.port}/mutate"
    _install(running, _configuration("by-url", {"url": url, "caBundle": webhook.ca_bundle}))
    _namespace(running, "team")
    assert _create_pvc(running, "team", _pvc("u")).spec.storage_class_name == "nfs-client"


@pytest.mark.parametrize("bundle", ["wrong-ca", "not-pem"])
def test_bad_ca_bundle_fails_closed(
    sandbox_with_hook: RunningSandbox, webhook: Webhook, bundle: str
) -> None:
    if bundle == "wrong-ca":
        other_ca, _ = certs.build_ca("someone else", days=1)
        bundle = base64.b64encode(other_ca).decode()
    else:
        bundle = base64.b64encode(b"not a certificate").decode()
    _install(sandbox_with_hook, _configuration("mutate", _service("/mutate", bundle)))
    _namespace(sandbox_with_hook, "team")
    with pytest.raises(ApiException) as caught:
        _create_pvc(sandbox_with_hook, "team", _pvc("x"))
    assert caught.value.status == 500
    status = _status(caught.value)
    assert status["reason"] == "InternalError"
    assert status["message"].startswith(
        'Internal error occurred: failed calling webhook "mutate.example.com": '
    )
    assert "certificate" in status["message"] or "caBundle" in status["message"]
    # Nothing was stored
    pvcs = client.CoreV1Api(sandbox_with_hook.api_client()).list_namespaced_persistent_volume_claim(
        "team"
    )
    assert pvcs.items == []


def test_bad_ca_bundle_ignored_under_failure_policy_ignore(
    sandbox_with_hook: RunningSandbox,
) -> None:
    other_ca, _ = certs.build_ca("someone else", days=1)
    bundle = base64.b64encode(other_ca).decode()
    _install(
        sandbox_with_hook,
        _configuration("mutate", _service("/mutate", bundle), failure_policy="Ignore"),
    )
    _namespace(sandbox_with_hook, "team")
    created = _create_pvc(sandbox_with_hook, "team", _pvc("x"))
    assert created.spec.storage_class_name == "vsan-default-storage-policy"


def test_unmapped_service_fails_closed(sandbox_factory: Factory, webhook: Webhook) -> None:
    running = sandbox_factory()  # no service map
    _install(running, _configuration("mutate", _service("/mutate", webhook.ca_bundle)))
    _namespace(running, "team")
    with pytest.raises(ApiException) as caught:
        _create_pvc(running, "team", _pvc("x"))
    assert caught.value.status == 500
    assert "not in the sandbox service map" in _status(caught.value)["message"]


def test_timeout_and_wrong_uid_are_call_failures(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    _install(
        sandbox_with_hook,
        _configuration("slow", _service("/slow", webhook.ca_bundle), timeout=1),
    )
    _namespace(sandbox_with_hook, "team")
    started = time.monotonic()
    with pytest.raises(ApiException) as caught:
        _create_pvc(sandbox_with_hook, "team", _pvc("x"))
    # The call was given up after the configured 1 s (the hook answers after 3 s, which would
    # have been a success): a deadline error, not before the timeout.
    assert time.monotonic() - started >= 0.9
    assert caught.value.status == 500
    assert "context deadline exceeded" in _status(caught.value)["message"]
    client.AdmissionregistrationV1Api(
        sandbox_with_hook.api_client()
    ).delete_mutating_webhook_configuration("slow")
    _install(sandbox_with_hook, _configuration("uid", _service("/wronguid", webhook.ca_bundle)))
    with pytest.raises(ApiException) as caught:
        _create_pvc(sandbox_with_hook, "team", _pvc("y"))
    assert "expected response.uid=" in _status(caught.value)["message"]


def test_denial_uses_the_webhook_status(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    _install(sandbox_with_hook, _configuration("deny", _service("/deny", webhook.ca_bundle)))
    _namespace(sandbox_with_hook, "team")
    with pytest.raises(ApiException) as caught:
        _create_pvc(sandbox_with_hook, "team", _pvc("x"))
    assert caught.value.status == 403
    assert _status(caught.value)["message"] == (
        'admission webhook "deny.example.com" denied the request: no PVCs on Fridays'
    )


def test_namespace_selector(sandbox_with_hook: RunningSandbox, webhook: Webhook) -> None:
    selector = {
        "matchExpressions": [
            {"key": "kubernetes.io/metadata.name", "operator": "NotIn", "values": ["skipped"]}
        ],
        "matchLabels": {"team": "data"},
    }
    _install(
        sandbox_with_hook,
        _configuration(
            "mutate", _service("/mutate", webhook.ca_bundle), namespace_selector=selector
        ),
    )
    _namespace(sandbox_with_hook, "chosen", {"team": "data"})
    _namespace(sandbox_with_hook, "other", {"team": "web"})
    _namespace(sandbox_with_hook, "skipped", {"team": "data"})
    calls = len(webhook.recorder.requests)
    assert (
        _create_pvc(sandbox_with_hook, "chosen", _pvc("a")).spec.storage_class_name == "nfs-client"
    )
    assert len(webhook.recorder.requests) == calls + 1
    for namespace in ("other", "skipped"):
        created = _create_pvc(sandbox_with_hook, namespace, _pvc("a"))
        assert created.spec.storage_class_name == "vsan-default-storage-policy"
    assert len(webhook.recorder.requests) == calls + 1


def test_object_selector(sandbox_with_hook: RunningSandbox, webhook: Webhook) -> None:
    selector = {"matchExpressions": [{"key": "opt-out", "operator": "DoesNotExist"}]}
    _install(
        sandbox_with_hook,
        _configuration("mutate", _service("/mutate", webhook.ca_bundle), object_selector=selector),
    )
    _namespace(sandbox_with_hook, "team")
    assert (
        _create_pvc(sandbox_with_hook, "team", _pvc("in")).spec.storage_class_name == "nfs-client"
    )
    out = _create_pvc(sandbox_with_hook, "team", _pvc("out", {"opt-out": "yes"}))
    assert out.spec.storage_class_name == "vsan-default-storage-policy"


def test_rules_limit_resources(sandbox_with_hook: RunningSandbox, webhook: Webhook) -> None:
    _install(sandbox_with_hook, _configuration("deny", _service("/deny", webhook.ca_bundle)))
    _namespace(sandbox_with_hook, "team")
    calls = len(webhook.recorder.requests)
    # A ConfigMap is not a persistentvolumeclaim: the denying webhook is not called...
    created = client.CoreV1Api(sandbox_with_hook.api_client()).create_namespaced_config_map(
        "team", {"metadata": {"name": "c"}, "data": {"a": "b"}}
    )
    assert created.metadata.name == "c"
    assert len(webhook.recorder.requests) == calls
    # ...while a claim, which its rules match, is sent to it and denied.
    with pytest.raises(ApiException) as caught:
        _create_pvc(sandbox_with_hook, "team", _pvc("x"))
    assert caught.value.status == 403
    assert len(webhook.recorder.requests) == calls + 1


def test_dry_run_skips_webhooks_with_side_effects(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    _install(
        sandbox_with_hook,
        _configuration("deny", _service("/deny", webhook.ca_bundle), side_effects="Unknown"),
    )
    _namespace(sandbox_with_hook, "team")
    api = client.CoreV1Api(sandbox_with_hook.api_client())
    api.create_namespaced_persistent_volume_claim("team", _pvc("dry"), dry_run="All")
    with pytest.raises(ApiException):
        api.create_namespaced_persistent_volume_claim("team", _pvc("wet"))


def test_dry_run_is_sent_to_side_effect_free_webhooks(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    _install(sandbox_with_hook, _configuration("mutate", _service("/mutate", webhook.ca_bundle)))
    _namespace(sandbox_with_hook, "team")
    api = client.CoreV1Api(sandbox_with_hook.api_client())
    answer = api.create_namespaced_persistent_volume_claim("team", _pvc("dry"), dry_run="All")
    assert answer.spec.storage_class_name == "nfs-client"
    assert webhook.recorder.requests[-1]["review"]["request"]["dryRun"] is True
    assert api.list_namespaced_persistent_volume_claim("team").items == []


def test_webhooks_run_in_name_order_and_reinvoke(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    # "a-label" (IfNeeded) runs before "b-mutate", which changes the object: "a-label" is
    # called a second time and sees b's change.
    _install(
        sandbox_with_hook,
        _configuration("b-mutate", _service("/mutate", webhook.ca_bundle)),
    )
    _install(
        sandbox_with_hook,
        _configuration("a-label", _service("/label", webhook.ca_bundle), reinvoke=True),
    )
    _namespace(sandbox_with_hook, "team")
    start = len(webhook.recorder.requests)
    created = _create_pvc(sandbox_with_hook, "team", _pvc("r", {"first": "yes"}))
    assert webhook.recorder.paths()[start:] == ["/label", "/mutate", "/label"]
    last = webhook.recorder.requests[-1]["review"]["request"]["object"]
    assert last["spec"]["storageClassName"] == "nfs-client"
    assert created.metadata.labels == {"first": "yes", "second": "yes"}


def test_mapped_service_gets_ready_endpoints(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    # build_sandbox registers the controller whenever there is a service map.
    sb = sandbox_with_hook.sandbox
    found = [c for c in sb.controllers if isinstance(c, EndpointsForMappedServices)]
    assert len(found) == 1
    controller = found[0]
    _namespace(sandbox_with_hook, "hooks")
    core = client.CoreV1Api(sandbox_with_hook.api_client())
    core.create_namespaced_service(
        "hooks",
        {
            "metadata": {"name": "webhook"},
            "spec": {"ports": [{"name": "https", "port": 443, "targetPort": 8443}]},
        },
    )
    core.create_namespaced_service(
        "hooks", {"metadata": {"name": "unmapped"}, "spec": {"ports": [{"port": 80}]}}
    )
    assert controller.wait_idle(5)
    endpoints = core.read_namespaced_endpoints("webhook", "hooks")
    subset = endpoints.subsets[0]
    assert [a.ip for a in subset.addresses] == ["127.0.0.1"]
    assert [(p.name, p.port) for p in subset.ports] == [("https", webhook.port)]
    with pytest.raises(ApiException) as caught:
        core.read_namespaced_endpoints("unmapped", "hooks")
    assert caught.value.status == 404
    # Deleting the Service removes its Endpoints, as the endpoints controller does.
    deleted = core.delete_namespaced_service("webhook", "hooks")
    assert deleted.metadata.name == "webhook"  # kube answers DELETE of a Service with it
    deadline = time.monotonic() + 5
    while sb.store.get_object(ResourceRef("", "endpoints"), "hooks", "webhook") is not None:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def test_webhook_configurations_are_never_sent_to_webhooks(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    everything = _configuration("deny", _service("/deny", webhook.ca_bundle))
    everything["webhooks"][0]["rules"] = [
        {
            "operations": ["*"],
            "apiGroups": ["*"],
            "apiVersions": ["*"],
            "resources": ["*"],
            "scope": "*",
        }
    ]
    _install(sandbox_with_hook, everything)
    # The lock-out protection: the configuration can still be changed and removed.
    api = client.AdmissionregistrationV1Api(sandbox_with_hook.api_client())
    api.patch_mutating_webhook_configuration("deny", {"metadata": {"labels": {"x": "y"}}})
    with pytest.raises(ApiException):
        _namespace(sandbox_with_hook, "blocked")  # namespaces are cluster-scoped: matched
    with contextlib.suppress(ApiException):
        api.delete_mutating_webhook_configuration("deny")
    _namespace(sandbox_with_hook, "free")


# --- matching and denial, pure (kube's rules.Matcher and webhookerrors.ToStatusErr) ---------


def _attrs(
    plural: str, *, namespace: str = "team", subresource: str = "", operation: str = "CREATE"
) -> AdmissionAttributes:
    return AdmissionAttributes(
        operation=operation,
        group="",
        version="v1",
        kind="X",
        plural=plural,
        namespace=namespace,
        name="n",
        user=UserInfo("u"),
        subresource=subresource,
    )


@pytest.mark.parametrize(
    ("resources", "plural", "subresource", "matches"),
    [
        (["*"], "pods", "", True),
        (["*"], "pods", "status", False),  # "*" alone never covers subresources
        (["pods/*"], "pods", "status", True),
        (["pods/*"], "pods", "", True),  # kube's matcher: "*" also matches no subresource
        (["pods/*"], "services", "status", False),
        (["*/status"], "services", "status", True),
        (["*/status"], "services", "scale", False),
        (["*/*"], "deployments", "scale", True),
        (["persistentvolumeclaims"], "persistentvolumeclaims", "", True),
        (["persistentvolumeclaims"], "persistentvolumeclaims", "status", False),
    ],
)
def test_rule_resources(resources: list[str], plural: str, subresource: str, matches: bool) -> None:
    rule = {"operations": ["*"], "apiGroups": [""], "apiVersions": ["v1"], "resources": resources}
    assert rule_matches(rule, _attrs(plural, subresource=subresource)) is matches


@pytest.mark.parametrize(
    ("scope", "plural", "namespace", "matches"),
    [
        ("Namespaced", "configmaps", "team", True),
        ("Namespaced", "persistentvolumes", "", False),
        ("Namespaced", "namespaces", "team", False),  # a Namespace is cluster-scoped
        ("Cluster", "namespaces", "team", True),
        ("Cluster", "configmaps", "team", False),
        ("*", "configmaps", "team", True),
    ],
)
def test_rule_scope(scope: str, plural: str, namespace: str, matches: bool) -> None:
    rule = {
        "operations": ["CREATE"],
        "apiGroups": ["*"],
        "apiVersions": ["*"],
        "resources": ["*"],
        "scope": scope,
    }
    assert rule_matches(rule, _attrs(plural, namespace=namespace)) is matches


def test_rule_operations_and_versions() -> None:
    rule = {"operations": ["UPDATE"], "apiGroups": [""], "apiVersions": ["v1"], "resources": ["*"]}
    assert not rule_matches(rule, _attrs("configmaps"))
    assert rule_matches(rule, _attrs("configmaps", operation="UPDATE"))
    rule = {"operations": ["*"], "apiGroups": [""], "apiVersions": ["v2"], "resources": ["*"]}
    assert not rule_matches(rule, _attrs("configmaps"))


@pytest.mark.parametrize(
    ("status", "code", "message"),
    [
        ({"code": 403, "message": "no"}, 403, 'admission webhook "w" denied the request: no'),
        ({"code": 200, "message": "no"}, 400, 'admission webhook "w" denied the request: no'),
        ({"reason": "Because"}, 400, 'admission webhook "w" denied the request: Because'),
        (None, 400, 'admission webhook "w" denied the request without explanation'),
    ],
)
def test_denial(status: dict[str, Any] | None, code: int, message: str) -> None:
    rejected = denial("w", status)
    assert (rejected.code, rejected.message) == (code, message)


def test_default_storage_class_is_set_before_webhooks_see_the_claim(
    sandbox_with_hook: RunningSandbox, webhook: Webhook
) -> None:
    # Given: a default StorageClass and a webhook on claims
    client.StorageV1Api(sandbox_with_hook.api_client()).create_storage_class(
        {
            "metadata": {
                "name": "vsan-default",
                "annotations": {"storageclass.kubernetes.io/is-default-class": "true"},
            },
            "provisioner": "csi.vsphere.vmware.com",
        }
    )
    _install(sandbox_with_hook, _configuration("mutate", _service("/mutate", webhook.ca_bundle)))
    _namespace(sandbox_with_hook, "team")
    before = len(webhook.recorder.requests)
    body = _pvc("classless")
    del body["spec"]["storageClassName"]
    # When: a claim without storageClassName is created
    _create_pvc(sandbox_with_hook, "team", body)
    # Then: the webhook was handed the default class, as kube-apiserver's
    # DefaultStorageClass plugin (earlier in the chain than webhooks) sets it
    request = webhook.recorder.requests[before]["review"]["request"]
    assert request["object"]["spec"]["storageClassName"] == "vsan-default"
