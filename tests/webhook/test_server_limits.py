"""Issue 10, finding 2: hostile clients cannot hold the HTTPS server's memory or sockets.

Real TLS on 127.0.0.1, real sockets. Small budgets come from the ``server`` settings group;
every wait polls a condition (bounded), nothing sleeps to assert.
"""

from __future__ import annotations

import http.client
import io
import logging
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

# Shared helpers live in tests/helpers (on sys.path through pytest's `pythonpath`).
from test_webhook_server import (
    SETTINGS,
    Response,
    _assert_status,
    _post_chunked,
    client_context,
    encode,
    make_certs,
    metric,
    new_server,
    request,
    review_body,
    running,
)

from vsphere_kale.settings import MiB, ServerSettings, Settings
from vsphere_kale.webhook.logs import TextFormatter
from vsphere_kale.webhook.server import MAX_BODY_BYTES, WebhookServer

MUTATE = "/mutate/persistentvolumeclaims"


def settings_with(**server: Any) -> Settings:
    return replace(SETTINGS, server=replace(ServerSettings(), **server))


@pytest.fixture(scope="module")
def cert_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture
def ca(cert_dir: Path) -> Path:
    return cert_dir / "ca.crt"


@pytest.fixture
def serve(cert_dir: Path) -> Iterator[Callable[..., WebhookServer]]:
    """Start a server with the given ``server`` budgets; stopped at teardown."""
    stack: list[Any] = []

    def start(**server: Any) -> WebhookServer:
        context = running(new_server(cert_dir, settings_with(**server)))
        started, _ = context.__enter__()
        stack.append(context)
        return started

    yield start
    for context in reversed(stack):
        context.__exit__(None, None, None)


def wait_until(what: str, check: Callable[[], bool], *, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def tls_socket(port: int, ca: Path) -> ssl.SSLSocket:
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    return client_context(ca).wrap_socket(raw, server_hostname="127.0.0.1")


def closed_by_server(sock: socket.socket) -> bool:
    """True once the server closed the connection (EOF or reset), without blocking."""
    sock.setblocking(False)
    try:
        data = sock.recv(65536)
    except (ssl.SSLWantReadError, BlockingIOError):
        return False
    except (ConnectionError, ssl.SSLError, OSError):
        return True
    finally:
        sock.setblocking(True)
    return data == b""


def start_stalled_post(port: int, ca: Path, *, declared: int, sent: int) -> ssl.SSLSocket:
    sock = tls_socket(port, ca)
    head = (
        f"POST {MUTATE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Content-Length: {declared}\r\n\r\n"
    )
    sock.sendall(head.encode() + b" " * sent)
    return sock


def review_ok(port: int, ca: Path, uid: str, *, source: str | None = None) -> bool:
    """POST one review; ``source`` picks another loopback address (another client, as the
    API server is to an attacker's pod)."""
    if source is None:
        response = request(port, ca, "POST", MUTATE, encode(review_body(uid=uid)))
    else:
        conn = http.client.HTTPSConnection(
            "127.0.0.1", port, context=client_context(ca), source_address=(source, 0), timeout=20
        )
        try:
            conn.request(
                "POST", MUTATE, encode(review_body(uid=uid)), {"Content-Type": "application/json"}
            )
            response = Response(conn.getresponse())
        finally:
            conn.close()
    return response.status == 200 and response.json()["response"]["uid"] == uid


# --- time ----------------------------------------------------------------------------------


def test_stalled_bodies_are_closed_and_others_are_served(
    serve: Callable[..., WebhookServer], ca: Path
) -> None:
    server = serve(body_timeout_seconds=0.5)
    # Given clients that declare a body and stall one byte short of it,
    stalled = [
        start_stalled_post(server.port, ca, declared=64 * 1024, sent=64 * 1024 - 1)
        for _ in range(5)
    ]
    try:
        # then reviews from others are still answered while they stall,
        assert review_ok(server.port, ca, "u-during-stall", source="127.0.0.2")
        # and the stalled connections are closed by the server once the body timeout passes.
        wait_until("stalled connections closed", lambda: all(map(closed_by_server, stalled)))
        assert review_ok(server.port, ca, "u-after-stall")
        wait_until("budget released", lambda: server.budget.body_bytes == 0)
    finally:
        for sock in stalled:
            sock.close()


def test_slowloris_headers_are_cut_off(serve: Callable[..., WebhookServer], ca: Path) -> None:
    server = serve(idle_timeout_seconds=0.5)
    # Before connecting: the server's clock starts when it accepts the connection, so a clock
    # started after the handshake could see the (correct) cut come "early".
    started = time.monotonic()
    sock = tls_socket(server.port, ca)
    try:
        sock.sendall(f"POST {MUTATE} HTTP/1.1\r\nHost: 127.0.0.1\r\n".encode())

        # Trickle one header line every 50 ms, never finishing the request, until the
        # server hangs up (the header timeout counts from the start, not per byte).
        def trickle_refused() -> bool:
            try:
                sock.sendall(b"X-Slow: 1\r\n")
            except OSError:
                return True
            return closed_by_server(sock)

        wait_until("slowloris connection closed", trickle_refused)
        assert time.monotonic() - started >= 0.5  # not before the timeout
        assert review_ok(server.port, ca, "u-after-slowloris")
    finally:
        sock.close()


def test_a_stalled_tls_handshake_is_closed(
    serve: Callable[..., WebhookServer], ca: Path
) -> None:
    server = serve(idle_timeout_seconds=0.5)
    raw = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    try:
        raw.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
        wait_until("half handshake closed", lambda: closed_by_server(raw))  # raises if not
        assert closed_by_server(raw)
        # ...and the server goes on answering complete requests.
        assert review_ok(server.port, ca, "u-after-half-handshake")
    finally:
        raw.close()


# --- connections ---------------------------------------------------------------------------


def test_connections_per_address_are_capped(serve: Callable[..., WebhookServer], ca: Path) -> None:
    server = serve(max_connections_per_address=3)
    held = [tls_socket(server.port, ca) for _ in range(3)]
    try:
        wait_until("3 connections counted", lambda: server.budget.connections == 3)
        # A fourth is closed on accept: its handshake cannot complete.
        with pytest.raises((ssl.SSLError, ConnectionError, OSError)):
            tls_socket(server.port, ca).recv(1)
        held.pop().close()
        wait_until("a slot freed", lambda: server.budget.connections < 3)
        # The freed slot serves a request, and the refusal was counted.
        refused = metric(
            server.port, ca, "vsphere_kale_webhook_refused_total", reason="connections_address"
        )
        assert refused >= 1
    finally:
        for sock in held:
            sock.close()


# --- buffered body bytes -------------------------------------------------------------------


def test_bodies_beyond_the_budget_get_503_before_they_are_read(
    serve: Callable[..., WebhookServer], ca: Path
) -> None:
    server = serve(max_body_bytes_per_address=MiB, body_timeout_seconds=30)
    # Given one client holding the address's whole body budget (declared 1 MiB, stalled),
    hog = start_stalled_post(server.port, ca, declared=MiB, sent=10)
    try:
        wait_until("budget taken", lambda: server.budget.body_bytes == MiB)
        # when another request arrives, it is refused at once with 503 and Retry-After,
        response = request(server.port, ca, "POST", MUTATE, encode(review_body(uid="u-503")))
        _assert_status(response, 503, "ServiceUnavailable", "retry")
        assert response.headers["retry-after"] == "1"
        assert response.headers["connection"] == "close"
    finally:
        hog.close()
    # and once the hog is gone, reviews are answered again.
    wait_until("budget released", lambda: server.budget.body_bytes == 0)
    assert review_ok(server.port, ca, "u-after-hog")


def test_chunked_body_over_the_limit_gets_413_not_400(
    serve: Callable[..., WebhookServer], ca: Path
) -> None:
    server = serve()
    chunk = b" " * MiB
    # Beyond 4x the limit, where tornado's own check used to answer a bare 400.
    response = _post_chunked(server.port, ca, iter([b"{", *([chunk] * 40), b"}"]))
    _assert_status(response, 413, "RequestEntityTooLarge", str(MAX_BODY_BYTES))


@pytest.mark.parametrize("length", ["-1", "+5", "1e3", "0x10"])
def test_a_content_length_that_is_not_a_number_gets_400(
    serve: Callable[..., WebhookServer], ca: Path, length: str
) -> None:
    server = serve()
    conn = http.client.HTTPSConnection("127.0.0.1", server.port, context=client_context(ca))
    try:
        conn.putrequest("POST", MUTATE)
        conn.putheader("Content-Type", "application/json")
        conn.putheader("Content-Length", length)
        conn.endheaders()
        response = Response(conn.getresponse())
    finally:
        conn.close()
    if response.status == 400 and response.body.startswith(b"{"):
        _assert_status(response, 400, "BadRequest", "is not a number of bytes")
    else:
        # tornado itself refuses some forms before any handler runs: still a 400.
        assert response.status == 400, response.body


# --- memory (a subprocess, measured from outside) ------------------------------------------


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


RSS_GROWTH_BOUND = 24 * MiB + 40 * MiB
"""The per-address body budget (all test clients share 127.0.0.1) plus interpreter and TLS
overhead. On main, 20 stalled 8 MiB bodies grew the server by ~154 MB (issue 10)."""


def test_stalled_8_mib_bodies_do_not_grow_memory_past_the_budget(
    cert_dir: Path, ca: Path, tmp_path: Path
) -> None:
    config = tmp_path / "config.yaml"
    config.write_text("storage:\n  rwxStorageClass: nfs-client\n")
    proc = subprocess.Popen(
        [sys.executable, "-m", "vsphere_kale.cli", "webhook", "--config", str(config),
         "--cert-file", str(cert_dir / "tls.crt"), "--key-file", str(cert_dir / "tls.key"),
         "--address", "127.0.0.1", "--port", "0", "--log-format", "json"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
    )  # fmt: skip
    sockets: list[ssl.SSLSocket] = []
    try:
        assert proc.stderr is not None
        port = 0
        for line in proc.stderr:
            if '"port": ' in line:
                port = int(line.split('"port": ')[1].split("}")[0].split(",")[0])
                break
        assert port, "server did not start"
        assert review_ok(port, ca, "u-warm")  # warm up: imports, first TLS handshake
        baseline = rss_bytes(proc.pid)
        # Given 20 clients that each declare 8 MiB and send all but one byte,
        for _ in range(20):
            try:
                sock = start_stalled_post(
                    port, ca, declared=MAX_BODY_BYTES, sent=MAX_BODY_BYTES - 1
                )
            except OSError:
                continue  # refused mid-upload (503 and close): what the budget is for
            sockets.append(sock)
        grown = rss_bytes(proc.pid) - baseline
        print(f"RSS baseline {baseline / MiB:.1f} MiB, +{grown / MiB:.1f} MiB under the flood")
        # then the server's resident memory stays within the stated bound,
        assert grown < RSS_GROWTH_BOUND
        # and it still answers another client (the API server is never the attacker's address).
        assert review_ok(port, ca, "u-during-flood", source="127.0.0.2")
    finally:
        for sock in sockets:
            sock.close()
        proc.kill()
        proc.wait(10)


# --- finding 3: what a review's fields can do to the text log ------------------------------


def test_review_fields_cannot_forge_text_log_lines(
    serve: Callable[..., WebhookServer], ca: Path
) -> None:
    server = serve()
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    logger = logging.getLogger("vsphere_kale.webhook.server")
    logger.addHandler(handler)
    old_level = logger.level
    logger.setLevel(logging.INFO)
    try:
        body = review_body(uid="u" * 1_000_000)
        body["request"]["namespace"] = "alice\r\n2026-12-03 10:00:00,000 ERROR forged: pwned"
        body["request"]["userInfo"]["username"] = "mallory\nINFO also forged"
        response = request(server.port, ca, "POST", MUTATE, encode(body))
        assert response.status == 200
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1, lines  # one record, one line
    assert "forged: pwned" in lines[0] and "\\r\\n2026" in lines[0]
    assert len(lines[0]) < 2048  # the 1 MB uid was cut
