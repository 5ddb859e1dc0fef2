"""The webhook server over real TLS, with certificates from the real ``vsphere-kale certs``.

The server runs in-process on its own event loop thread (or as the real console script for
SIGTERM and logging); clients verify the server against ``ca.crt`` like the API server does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import http.client
import json
import logging
import os
import re
import select
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any, TypeVar

import jsonpatch
import pytest
from admission_helpers import encode, marshal_pvc, review_body
from click.testing import CliRunner
from tls_helpers import served_certificate_expiry

from vsphere_kale.cli import main
from vsphere_kale.install import certs
from vsphere_kale.settings import Settings, load_settings
from vsphere_kale.webhook.server import MAX_BODY_BYTES, WebhookServer

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "deploy" / "examples"
T = TypeVar("T")

SETTINGS = load_settings(None, environ={}, rwx_storage_class="nfs-client")


# --- helpers -------------------------------------------------------------------------------


def make_certs(out_dir: Path, *, force: bool = False) -> Path:
    """Run the real ``vsphere-kale certs`` (for 127.0.0.1) into ``out_dir``."""
    args = ["certs", "--service", "vsphere-kale", "--namespace", "vsphere-kale"]
    args += ["--out-dir", str(out_dir), "--extra-san", "127.0.0.1", "--extra-san", "localhost"]
    result = CliRunner().invoke(main, [*args, *(["--force"] if force else [])])
    assert result.exit_code == 0, result.output
    return out_dir


class LoopThread:
    """An asyncio loop on a daemon thread, the way a server runs beside the test code."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = 15.0) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def call(self, fn: Callable[[], T], timeout: float = 15.0) -> T:
        async def wrapper() -> T:
            return fn()

        return self.run(wrapper(), timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)
        self.loop.close()


@contextlib.contextmanager
def running(server: WebhookServer) -> Iterator[tuple[WebhookServer, LoopThread]]:
    thread = LoopThread()
    try:
        thread.run(server.start())
        yield server, thread
        thread.run(server.stop(drain_timeout=2.0))
    finally:
        thread.close()


def new_server(cert_dir: Path, settings: Settings = SETTINGS, **kwargs: Any) -> WebhookServer:
    return WebhookServer(
        settings,
        cert_file=cert_dir / "tls.crt",
        key_file=cert_dir / "tls.key",
        address="127.0.0.1",
        port=0,
        **kwargs,
    )


def client_context(
    ca_file: Path, *, client_cert: tuple[Path, Path] | None = None
) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=str(ca_file))  # verifies chain and hostname
    if client_cert is not None:
        context.load_cert_chain(str(client_cert[0]), str(client_cert[1]))
    return context


class Response:
    def __init__(self, raw: http.client.HTTPResponse) -> None:
        self.status = raw.status
        self.headers = {k.lower(): v for k, v in raw.getheaders()}
        self.body = raw.read()

    def json(self) -> Any:
        return json.loads(self.body)


def request(
    port: int,
    ca_file: Path,
    method: str,
    path: str,
    body: bytes | None = None,
    *,
    content_type: str | None = "application/json",
    client_cert: tuple[Path, Path] | None = None,
    host: str = "127.0.0.1",
) -> Response:
    conn = http.client.HTTPSConnection(
        host, port, context=client_context(ca_file, client_cert=client_cert), timeout=20
    )
    try:
        headers = {"Content-Type": content_type} if content_type else {}
        conn.request(method, path, body=body, headers=headers)
        return Response(conn.getresponse())
    finally:
        conn.close()


def apply_patch(obj: dict[str, Any], response: dict[str, Any]) -> dict[str, Any]:
    assert response["patchType"] == "JSONPatch"
    ops = json.loads(base64.b64decode(response["patch"]))
    patched: dict[str, Any] = jsonpatch.apply_patch(obj, ops)
    return patched


def metric(port: int, ca_file: Path, name: str, **labels: str) -> float:
    """One sample from /metrics (0 when the series does not exist yet)."""
    text = request(port, ca_file, "GET", "/metrics", content_type=None).body.decode()
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        if line.startswith("#"):
            continue
        series, _, value = line.rpartition(" ")
        sample, _, label_text = series.partition("{")
        got = ",".join(sorted(label_text.rstrip("}").split(","))) if label_text else ""
        if sample == name and got == want:
            return float(value)
    return 0.0


# --- fixtures ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def webhook(cert_dir: Path) -> Iterator[WebhookServer]:
    with running(new_server(cert_dir)) as (server, _):
        yield server


@pytest.fixture
def ca(cert_dir: Path) -> Path:
    return cert_dir / "ca.crt"


# --- the mutate route ----------------------------------------------------------------------


@pytest.mark.parametrize("api_version", ["admission.k8s.io/v1", "admission.k8s.io/v1beta1"])
@pytest.mark.parametrize("path", ["/mutate/persistentvolumeclaims", "/pvc/mutate"])
def test_kale_marshal_pvc_is_moved_to_the_rwx_class(
    webhook: WebhookServer, ca: Path, api_version: str, path: str
) -> None:
    pvc = marshal_pvc()
    response = request(
        webhook.port, ca, "POST", path, encode(review_body(pvc, api_version=api_version, uid="u-1"))
    )

    assert response.status == 200
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-content-type-options"] == "nosniff"
    review = response.json()
    assert review["apiVersion"] == api_version
    assert review["kind"] == "AdmissionReview"
    assert review["response"]["uid"] == "u-1"
    assert review["response"]["allowed"] is True
    stored = apply_patch(pvc, review["response"])
    assert stored["spec"]["storageClassName"] == "nfs-client"
    assert stored["metadata"]["annotations"]["vsphere-kale.io/original-storage-class"] == (
        "vsan-default-storage-policy"
    )
    assert any("nfs-client" in w for w in review["response"]["warnings"])


def test_hostname_is_verified_against_the_service_names(webhook: WebhookServer, ca: Path) -> None:
    # The certificate has 127.0.0.1 and localhost; a name it lacks must fail verification.
    assert request(webhook.port, ca, "GET", "/healthz", host="localhost").status == 200
    context = client_context(ca)
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=10) as raw,
        pytest.raises(ssl.SSLCertVerificationError),
    ):
        context.wrap_socket(raw, server_hostname="not-in-the-cert.example")


def _unchanged_cases() -> list[tuple[str, dict[str, Any], str]]:
    rwo = marshal_pvc()
    rwo["spec"]["accessModes"] = ["ReadWriteOnce"]
    opted_out = marshal_pvc()
    opted_out["metadata"]["annotations"]["vsphere-kale.io/rewrite-storage-class"] = "false"
    already = marshal_pvc()
    already["spec"]["storageClassName"] = "nfs-client"
    system = marshal_pvc()
    system["metadata"]["namespace"] = "kube-system"
    return [
        ("CREATE", rwo, "ReadWriteOnce claim"),
        ("CREATE", opted_out, "opted out"),
        ("CREATE", already, "already on nfs-client"),
        ("CREATE", system, "excluded namespace"),
        ("UPDATE", marshal_pvc(), "UPDATE (class is immutable)"),
    ]


@pytest.mark.parametrize(
    ("operation", "pvc", "why"), _unchanged_cases(), ids=[c[2] for c in _unchanged_cases()]
)
def test_claims_that_must_stay_are_allowed_without_a_patch(
    webhook: WebhookServer, ca: Path, operation: str, pvc: dict[str, Any], why: str
) -> None:
    body = review_body(pvc, operation=operation, uid="u-unchanged")
    response = request(webhook.port, ca, "POST", "/mutate/persistentvolumeclaims", encode(body))
    assert response.status == 200, why
    answer = response.json()["response"]
    assert answer["uid"] == "u-unchanged"
    assert answer["allowed"] is True
    assert "patch" not in answer, why
    assert "patchType" not in answer, why


def test_content_type_with_charset_is_accepted(webhook: WebhookServer, ca: Path) -> None:
    response = request(
        webhook.port,
        ca,
        "POST",
        "/pvc/mutate",
        encode(review_body()),
        content_type="Application/JSON; charset=utf-8",
    )
    assert response.status == 200


def _assert_status(response: Response, code: int, reason: str, fragment: str) -> None:
    assert response.status == code, response.body
    status = response.json()
    assert status["kind"] == "Status"
    assert status["status"] == "Failure"
    assert status["code"] == code
    assert status["reason"] == reason
    assert fragment in status["message"]


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b'{"apiVersion": ', "not valid JSON"),
        (b"\xff\xfe\x00garbage", "not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "not valid JSON"),
        (b"[1, 2, 3]", "AdmissionReview must be an object"),
        (b'"just a string"', "AdmissionReview must be an object"),
        (
            encode({"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview"}),
            "no request",
        ),
        (
            encode(
                {
                    "apiVersion": "admission.k8s.io/v1",
                    "kind": "AdmissionReview",
                    "request": {"kind": {"group": "", "version": "v1", "kind": "X"}},
                }
            ),
            "request.uid",
        ),
        (encode({**review_body(), "apiVersion": "admission.k8s.io/v2"}), "apiVersion"),
    ],
    ids=[
        "truncated",
        "not-utf8",
        "deeply-nested",
        "array",
        "string",
        "no-request",
        "no-uid",
        "unknown-version",
    ],
)
def test_malformed_reviews_get_400_with_a_status_body(
    webhook: WebhookServer, ca: Path, body: bytes, fragment: str
) -> None:
    before = metric(webhook.port, ca, "vsphere_kale_webhook_requests_total", result="bad_request")
    response = request(webhook.port, ca, "POST", "/mutate/persistentvolumeclaims", body)
    _assert_status(response, 400, "BadRequest", fragment)
    after = metric(webhook.port, ca, "vsphere_kale_webhook_requests_total", result="bad_request")
    assert after == before + 1


def test_wrong_content_type_gets_415(webhook: WebhookServer, ca: Path) -> None:
    for content_type in ("text/plain", "application/yaml", None):
        response = request(
            webhook.port,
            ca,
            "POST",
            "/mutate/persistentvolumeclaims",
            encode(review_body()),
            content_type=content_type,
        )
        _assert_status(response, 415, "UnsupportedMediaType", "application/json")


def test_oversized_body_gets_413_and_the_server_keeps_serving(
    webhook: WebhookServer, ca: Path
) -> None:
    body = review_body()
    body["request"]["object"]["metadata"]["annotations"]["padding"] = "x" * (MAX_BODY_BYTES + 1)
    response = request(webhook.port, ca, "POST", "/mutate/persistentvolumeclaims", encode(body))
    _assert_status(response, 413, "RequestEntityTooLarge", str(MAX_BODY_BYTES))
    # Just under the limit is read and answered.
    body["request"]["object"]["metadata"]["annotations"]["padding"] = "x" * (MAX_BODY_BYTES - 4096)
    response = request(webhook.port, ca, "POST", "/mutate/persistentvolumeclaims", encode(body))
    assert response.status == 200
    assert response.json()["response"]["allowed"] is True


def _post_chunked(port: int, ca_file: Path, chunks: Iterator[bytes]) -> Response:
    conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(ca_file))
    try:
        conn.request(
            "POST",
            "/mutate/persistentvolumeclaims",
            body=chunks,
            headers={"Content-Type": "application/json"},
            encode_chunked=True,
        )
        return Response(conn.getresponse())
    finally:
        conn.close()


def test_chunked_review_without_length_is_answered(webhook: WebhookServer, ca: Path) -> None:
    body = encode(review_body(uid="u-chunked"))
    response = _post_chunked(webhook.port, ca, iter([body[:200], body[200:700], body[700:]]))
    assert response.status == 200
    answer = response.json()["response"]
    assert answer["uid"] == "u-chunked"
    assert apply_patch(marshal_pvc(), answer)["spec"]["storageClassName"] == "nfs-client"


def test_oversized_chunked_body_gets_413(webhook: WebhookServer, ca: Path) -> None:
    chunk = b" " * (1 << 20)
    response = _post_chunked(webhook.port, ca, iter([b"{", *([chunk] * 9), b"}"]))
    _assert_status(response, 413, "RequestEntityTooLarge", str(MAX_BODY_BYTES))


def test_huge_declared_length_is_refused_before_reading(webhook: WebhookServer, ca: Path) -> None:
    conn = http.client.HTTPSConnection("127.0.0.1", webhook.port, context=client_context(ca))
    try:
        conn.putrequest("POST", "/mutate/persistentvolumeclaims")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(1 << 30))
        conn.endheaders()
        response = Response(conn.getresponse())
    finally:
        conn.close()
    _assert_status(response, 413, "RequestEntityTooLarge", "exceeds")
    assert response.headers["connection"] == "close"


def test_get_on_the_mutate_route_is_405(webhook: WebhookServer, ca: Path) -> None:
    response = request(webhook.port, ca, "GET", "/mutate/persistentvolumeclaims", content_type=None)
    _assert_status(response, 405, "MethodNotAllowed", "GET is not allowed")
    assert response.headers["allow"] == "POST"


def test_unknown_path_is_404_json(webhook: WebhookServer, ca: Path) -> None:
    response = request(webhook.port, ca, "POST", "/mutate/pods", encode(review_body()))
    _assert_status(response, 404, "NotFound", "/mutate/pods")


def test_internal_error_fails_open_and_logs(
    cert_dir: Path, ca: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Given settings the policy cannot use (a bug of ours, not the client's)
    broken = replace(SETTINGS, storage=None)  # type: ignore[arg-type]
    with running(new_server(cert_dir, settings=broken)) as (server, _):
        # When a valid review arrives
        with caplog.at_level(logging.ERROR, logger="vsphere_kale.webhook.server"):
            response = request(
                server.port, ca, "POST", "/pvc/mutate", encode(review_body(uid="u-oops"))
            )
        # Then it is allowed unchanged, counted as an error, and logged at ERROR
        assert response.status == 200
        assert response.json() == {
            "apiVersion": "admission.k8s.io/v1",
            "kind": "AdmissionReview",
            "response": {"uid": "u-oops", "allowed": True},
        }
        assert metric(server.port, ca, "vsphere_kale_webhook_requests_total", result="error") == 1
        assert any(
            r.levelno == logging.ERROR and "allowing it unchanged" in r.getMessage()
            for r in caplog.records
        )


def test_concurrent_reviews_are_all_answered_correctly(webhook: WebhookServer, ca: Path) -> None:
    count = 50
    barrier = threading.Barrier(count, timeout=20)

    def one(index: int) -> tuple[str, str]:
        pvc = marshal_pvc()
        pvc["metadata"]["name"] = f"wf-{index}-kale-marshal-pvc"
        pvc["spec"]["storageClassName"] = f"class-{index}"
        context = client_context(ca)
        conn = http.client.HTTPSConnection("127.0.0.1", webhook.port, context=context, timeout=30)
        try:
            conn.connect()
            barrier.wait()  # all 50 connections are open; send together
            conn.request(
                "POST",
                "/mutate/persistentvolumeclaims",
                body=encode(review_body(pvc, uid=f"uid-{index}")),
                headers={"Content-Type": "application/json"},
            )
            response = Response(conn.getresponse())
        finally:
            conn.close()
        assert response.status == 200
        answer = response.json()["response"]
        stored = apply_patch(pvc, answer)
        original = stored["metadata"]["annotations"]["vsphere-kale.io/original-storage-class"]
        return answer["uid"], original

    with ThreadPoolExecutor(max_workers=count) as pool:
        results = list(pool.map(one, range(count)))
    assert results == [(f"uid-{i}", f"class-{i}") for i in range(count)]


# --- health, readiness, metrics ------------------------------------------------------------


def test_healthz_and_readyz(webhook: WebhookServer, ca: Path) -> None:
    for path in ("/healthz", "/readyz"):
        response = request(webhook.port, ca, "GET", path, content_type=None)
        assert (response.status, response.body) == (200, b"ok\n")


def test_readyz_reports_every_reason(cert_dir: Path, ca: Path) -> None:
    unconfigured = load_settings(None, environ={})
    checks = [lambda: "informer cache not synced", lambda: None, lambda: 1 / 0]  # type: ignore[operator]
    with running(new_server(cert_dir, settings=unconfigured, ready_checks=checks)) as (
        server,
        _,
    ):
        response = request(server.port, ca, "GET", "/readyz", content_type=None)
        assert response.status == 503
        text = response.body.decode()
        assert "storage.rwxStorageClass is not set" in text
        assert "informer cache not synced" in text
        assert "division by zero" in text
        # liveness does not depend on readiness
        assert request(server.port, ca, "GET", "/healthz", content_type=None).status == 200


def test_metrics_count_rewrites_and_results(webhook: WebhookServer, ca: Path) -> None:
    port = webhook.port
    names = {
        "rewritten": ("vsphere_kale_webhook_requests_total", {"result": "rewritten"}),
        "unchanged": ("vsphere_kale_webhook_requests_total", {"result": "unchanged"}),
        "pair": (
            "vsphere_kale_webhook_rewrites_total",
            {"from_class": "vsan-default-storage-policy", "to_class": "nfs-client"},
        ),
        "default": (
            "vsphere_kale_webhook_rewrites_total",
            {"from_class": "(default)", "to_class": "nfs-client"},
        ),
        "not-rwx": ("vsphere_kale_webhook_decisions_total", {"reason": "not-requested-mode"}),
        "latency": ("vsphere_kale_webhook_request_duration_seconds_count", {}),
    }
    before = {key: metric(port, ca, name, **labels) for key, (name, labels) in names.items()}

    no_class = marshal_pvc()
    del no_class["spec"]["storageClassName"]
    rwo = marshal_pvc()
    rwo["spec"]["accessModes"] = ["ReadWriteOnce"]
    for pvc in (marshal_pvc(), marshal_pvc(), no_class, rwo):
        assert request(port, ca, "POST", "/pvc/mutate", encode(review_body(pvc))).status == 200

    after = {key: metric(port, ca, name, **labels) for key, (name, labels) in names.items()}
    delta = {key: after[key] - before[key] for key in names}
    assert delta == {
        "rewritten": 3,
        "unchanged": 1,
        "pair": 2,
        "default": 1,
        "not-rwx": 1,
        "latency": 4,
    }
    text = request(port, ca, "GET", "/metrics", content_type=None).body.decode()
    assert "# TYPE vsphere_kale_webhook_request_duration_seconds histogram" in text
    expiry = metric(port, ca, "vsphere_kale_webhook_certificate_expiry_timestamp_seconds")
    assert expiry == pytest.approx(served_certificate_expiry(webhook.port).timestamp())


# --- certificate rotation ------------------------------------------------------------------


def _handshake_ok(port: int, ca_file: Path) -> bool:
    try:
        return request(port, ca_file, "GET", "/healthz", content_type=None).status == 200
    except ssl.SSLCertVerificationError:
        return False


def _wait_for(condition: Callable[[], bool], timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


def test_rotated_certificate_is_used_by_new_connections(tmp_path: Path) -> None:
    live = make_certs(tmp_path / "live")
    old_ca = tmp_path / "old-ca.crt"
    old_ca.write_bytes((live / "ca.crt").read_bytes())
    server = new_server(live, reload_interval=0.1)
    with running(server) as (server, _):
        port = server.port
        assert _handshake_ok(port, old_ca)

        # Given a request in flight on a connection made with the old certificate
        body = encode(review_body(uid="u-inflight"))
        inflight = http.client.HTTPSConnection(
            "127.0.0.1", port, context=client_context(old_ca), timeout=20
        )
        inflight.putrequest("POST", "/mutate/persistentvolumeclaims")
        inflight.putheader("Content-Type", "application/json")
        inflight.putheader("Content-Length", str(len(body)))
        inflight.endheaders()
        inflight.send(body[:100])

        # When a new pair from a different CA replaces the files (like `certs --force`)
        make_certs(live, force=True)
        new_ca = live / "ca.crt"
        assert new_ca.read_bytes() != old_ca.read_bytes()

        # Then new connections get the new certificate, after the reload interval
        assert _wait_for(lambda: _handshake_ok(port, new_ca))
        assert not _handshake_ok(port, old_ca)
        # ... and the in-flight request still completes on its old connection
        inflight.send(body[100:])
        answer = Response(inflight.getresponse()).json()["response"]
        inflight.close()
        assert answer["uid"] == "u-inflight"
        assert answer["patchType"] == "JSONPatch"
        reloads = metric(
            port, new_ca, "vsphere_kale_webhook_certificate_reloads_total", result="success"
        )
        assert reloads >= 1


def test_broken_or_mismatched_files_keep_the_old_certificate(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    live = make_certs(tmp_path / "live")
    ca_file = tmp_path / "ca.crt"
    ca_file.write_bytes((live / "ca.crt").read_bytes())
    other = certs.build_cert_bundle("vsphere-kale", "vsphere-kale", extra_sans=["127.0.0.1"])
    server = new_server(live, reload_interval=0.1)
    with (
        running(server) as (server, thread),
        caplog.at_level(logging.ERROR, logger="vsphere_kale.webhook.server"),
    ):
        port = server.port
        failures = 0.0
        for cert_bytes, key_bytes in [
            (other.tls_cert[: len(other.tls_cert) // 2], None),  # half-written certificate
            (other.tls_cert, None),  # new certificate, old key: mismatched
            (b"", b""),  # truncated to nothing
        ]:
            (live / "tls.crt").write_bytes(cert_bytes)
            if key_bytes is not None:
                (live / "tls.key").write_bytes(key_bytes)
            # Two reload ticks make an ERROR (the first one waits for the writer to finish).
            assert _wait_for(
                lambda f=failures: (
                    metric(  # type: ignore[misc]
                        port,
                        ca_file,
                        "vsphere_kale_webhook_certificate_reloads_total",
                        result="failure",
                    )
                    > f
                )
            )
            failures += 1
            assert _handshake_ok(port, ca_file)  # still the old certificate
            assert request(port, ca_file, "GET", "/readyz", content_type=None).status == 200
        assert any("keeping the current serving certificate" in r.message for r in caplog.records)

        # A complete new pair is then picked up.
        certs.write_cert_files(live, other, force=True)
        new_ca = live / "ca.crt"
        assert _wait_for(lambda: _handshake_ok(port, new_ca))
        assert thread.call(lambda: server.check_certificate_files()) is False  # nothing new


# --- client certificates -------------------------------------------------------------------


def test_client_certificate_is_required_with_a_client_ca(tmp_path: Path) -> None:
    live = make_certs(tmp_path / "live")
    client_ca_cert, client_ca_key = certs.build_ca("apiserver-client-ca", days=1)
    (tmp_path / "client-ca.crt").write_bytes(client_ca_cert)
    good = certs.build_client_cert(client_ca_cert, client_ca_key, common_name="apiserver", days=1)
    stranger_ca = certs.build_ca("stranger", days=1)
    bad = certs.build_client_cert(*stranger_ca, common_name="apiserver", days=1)
    for name, (cert_pem, key_pem) in {"good": good, "bad": bad}.items():
        (tmp_path / f"{name}.crt").write_bytes(cert_pem)
        (tmp_path / f"{name}.key").write_bytes(key_pem)
    good_pair = (tmp_path / "good.crt", tmp_path / "good.key")
    body = encode(review_body())

    def check(port: int, ca: Path) -> None:
        # Without a client certificate, or with one from another CA: the TLS handshake fails
        # (in TLS 1.3 the client learns it at its first read).
        for client_cert in (None, (tmp_path / "bad.crt", tmp_path / "bad.key")):
            with pytest.raises(OSError):
                request(port, ca, "POST", "/pvc/mutate", body, client_cert=client_cert)
        # With one signed by the client CA: served.
        response = request(port, ca, "POST", "/pvc/mutate", body, client_cert=good_pair)
        assert response.status == 200

    server = new_server(live, client_ca_file=tmp_path / "client-ca.crt", reload_interval=0.1)
    with running(server) as (server, _):
        old_ca = tmp_path / "old-ca.crt"
        old_ca.write_bytes((live / "ca.crt").read_bytes())
        check(server.port, old_ca)

        # Client verification survives a serving-certificate rotation.
        make_certs(live, force=True)

        def rotated() -> bool:
            try:
                request(server.port, live / "ca.crt", "GET", "/healthz", client_cert=good_pair)
            except ssl.SSLCertVerificationError:
                return False
            return True

        assert _wait_for(rotated)
        check(server.port, live / "ca.crt")


def test_tls_is_at_least_1_2(webhook: WebhookServer, ca: Path) -> None:
    context = client_context(ca)
    with (
        socket.create_connection(("127.0.0.1", webhook.port), timeout=10) as raw,
        context.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
    ):
        assert tls.version() in ("TLSv1.2", "TLSv1.3")
        assert tls.selected_alpn_protocol() in (None, "http/1.1")


# --- the console script --------------------------------------------------------------------


class Process:
    """``vsphere-kale webhook`` as a child process, reading its (JSON) log lines."""

    def __init__(self, *args: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "vsphere_kale.cli", "webhook", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            # Its own process group, so kill() also reaches ``--workers`` children when the
            # parent is killed before it could stop them (a failed test leaked both once).
            start_new_session=True,
        )
        self.lines: list[str] = []

    def wait_for_line(self, pattern: str, timeout: float = 60.0) -> re.Match[str]:
        """A bound for a machine busy with other suites, not a speed claim."""
        assert self.proc.stderr is not None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready, _, _ = select.select([self.proc.stderr], [], [], 0.1)
            if ready:
                line = self.proc.stderr.readline()
                if not line and self.proc.poll() is not None:
                    break
                self.lines.append(line)
                if match := re.search(pattern, line):
                    return match
        raise AssertionError(f"no line matching {pattern!r} in {self.lines}")

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):  # the whole group is gone already
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)


def test_sigterm_drains_in_flight_requests_and_exits_0(cert_dir: Path, ca: Path) -> None:
    proc = Process(
        "--cert-file", str(cert_dir / "tls.crt"), "--key-file", str(cert_dir / "tls.key"),
        "--address", "127.0.0.1", "--port", "0", "--rwx-storage-class", "nfs-client",
        "--log-format", "json",
    )  # fmt: skip
    try:
        match = proc.wait_for_line(r'"port": (\d+)')
        port = int(match.group(1))
        body = encode(review_body(uid="u-drain"))

        # Given a request whose body is still arriving
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=client_context(ca))
        conn.putrequest("POST", "/mutate/persistentvolumeclaims")
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", str(len(body)))
        # The server answers "100 Continue" once it has read the headers (tornado writes it
        # after its delegate took the request), so the request is in flight from here on.
        conn.putheader("Expect", "100-continue")
        conn.endheaders()
        continue_line = b"HTTP/1.1 100 (Continue)\r\n\r\n"
        got = b""
        while len(got) < len(continue_line):
            chunk = conn.sock.recv(len(continue_line) - len(got))
            assert chunk, "the server closed the connection before reading the headers"
            got += chunk
        assert got == continue_line
        conn.send(body[:50])

        # When the kubelet sends SIGTERM
        proc.proc.send_signal(signal.SIGTERM)
        proc.wait_for_line("draining")
        # Then new connections are refused ...
        with pytest.raises(OSError):
            request(port, ca, "GET", "/healthz", content_type=None)
        # ... the in-flight request completes ...
        conn.send(body[50:])
        response = Response(conn.getresponse())
        conn.close()
        assert response.status == 200
        assert response.json()["response"]["uid"] == "u-drain"
        assert response.headers["connection"] == "close"  # don't reuse a draining server
        # ... and the process exits 0.
        assert proc.proc.wait(15) == 0
        assert proc.proc.stderr is not None
        proc.lines += proc.proc.stderr.readlines()
    finally:
        proc.kill()
    records = [json.loads(line) for line in proc.lines if line.strip()]
    assert {"ts", "level", "logger", "message"} <= set(records[0])
    rewrite = next(r for r in records if r["message"].startswith("rewrote storage class"))
    assert rewrite["level"] == "INFO"
    assert rewrite["namespace"] == "alice"
    assert rewrite["pvc"] == "wf-1-kale-marshal-pvc"
    assert rewrite["uid"] == "u-drain"
    assert rewrite["from_class"] == "vsan-default-storage-policy"
    assert rewrite["to_class"] == "nfs-client"
    assert rewrite["user"] == "system:serviceaccount:kubeflow:pipeline-runner"
    # Nothing about objects at INFO but that one line: no object dumps in the log.
    assert not any("kale-marshal-volume" in line for line in proc.lines)


def _run_cli(*args: str) -> tuple[int, str]:
    """The click command in-process (fast; the console script itself is run above)."""
    result = CliRunner().invoke(main, list(args), env={"VSPHERE_KALE_CONFIG": ""})
    return result.exit_code, result.stderr


@pytest.mark.parametrize(
    ("cert", "key", "storage_class", "fragment"),
    [
        ("/nonexistent/tls.crt", None, "nfs-client", "--cert-file: cannot read /nonexistent/"),
        (None, "/nonexistent/tls.key", "nfs-client", "--key-file: cannot read /nonexistent/"),
        (None, None, None, "storage.rwxStorageClass: required"),
        (None, None, "Not_A_Class", "--rwx-storage-class"),
    ],
    ids=["missing-cert", "missing-key", "no-class", "bad-class"],
)
def test_webhook_cli_errors_are_one_sentence_and_exit_2(
    cert_dir: Path, cert: str | None, key: str | None, storage_class: str | None, fragment: str
) -> None:
    args = ["webhook", "--port", "0"]
    args += ["--cert-file", cert or str(cert_dir / "tls.crt")]
    args += ["--key-file", key or str(cert_dir / "tls.key")]
    if storage_class is not None:
        args += ["--rwx-storage-class", storage_class]
    code, stderr = _run_cli(*args)
    assert code == 2, stderr
    assert fragment in stderr
    assert "Traceback" not in stderr
    assert len(stderr.strip().splitlines()) == 1


def test_garbage_certificate_is_refused_at_start(cert_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "tls.crt").write_text("-----BEGIN CERTIFICATE-----\nnot base64\n")
    code, stderr = _run_cli(
        "webhook", "--cert-file", str(tmp_path / "tls.crt"), "--key-file",
        str(cert_dir / "tls.key"), "--rwx-storage-class", "nfs-client",
    )  # fmt: skip
    assert code == 2
    assert f"--cert-file: {tmp_path / 'tls.crt'} holds no valid PEM certificate" in stderr
    assert "Traceback" not in stderr


def test_mismatched_key_is_refused_at_start(cert_dir: Path, tmp_path: Path) -> None:
    other = certs.build_cert_bundle("x", "y")
    (tmp_path / "other.key").write_bytes(other.tls_key)
    code, stderr = _run_cli(
        "webhook", "--cert-file", str(cert_dir / "tls.crt"), "--key-file",
        str(tmp_path / "other.key"), "--rwx-storage-class", "nfs-client",
    )  # fmt: skip
    assert code == 2
    assert "--key-file" in stderr
    assert "does not belong to the certificate" in stderr
    assert "Traceback" not in stderr


def test_without_the_webhook_route_reviews_are_404_and_probes_stay(
    cert_dir: Path, ca: Path
) -> None:
    """``serve --no-webhook`` (install --admission policy): kube-apiserver rewrites claims
    itself, so a review sent here by a stale configuration is a clear 404, and readiness does
    not depend on the RWX class the webhook would need."""
    unconfigured = load_settings(None, environ={})
    with running(new_server(cert_dir, settings=unconfigured, mutate=False)) as (server, _):
        for path in ("/mutate/persistentvolumeclaims", "/pvc/mutate"):
            response = request(server.port, ca, "POST", path, encode(review_body()))
            _assert_status(response, 404, "NotFound", path)
        for path in ("/healthz", "/readyz"):
            response = request(server.port, ca, "GET", path, content_type=None)
            assert (response.status, response.body) == (200, b"ok\n")
