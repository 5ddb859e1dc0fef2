"""Stopping a watch over TLS is quiet on the server; a real TLS error still logs.

The playground's controllers stop their watches by shutting the stream's socket down from
another thread (:class:`vsphere_kale.kube.listing.WatchStream`). With urllib3's read-only
shutdown, OpenSSL 3 answered the end of input with a fatal ``decode_error`` alert and the
API server logged ``TLSV1_ALERT_DECODE_ERROR`` for every watch at each Ctrl-C.
"""

from __future__ import annotations

import logging
import os
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import tornado

from vsphere_kale.kube import Kube
from vsphere_kale.kube import resources as r
from vsphere_kale.sandbox.testing import RunningSandbox

Factory = Callable[..., RunningSandbox]


@pytest.fixture
def tls_sandbox(sandbox_factory: Factory) -> RunningSandbox:
    return sandbox_factory(tls=True)


@pytest.fixture
def kube(tls_sandbox: RunningSandbox) -> Iterator[Kube]:
    api = Kube(tls_sandbox.api_client())
    yield api
    api.close()


def _wait_watches(running: RunningSandbox, count: int, timeout: float = 5.0) -> None:
    """Until the server holds ``count`` open watches (it ends one when it sees the
    connection end, after logging whatever error ended it)."""
    deadline = time.monotonic() + timeout
    while running.sandbox.open_watches != count:
        assert time.monotonic() < deadline, f"open watches {running.sandbox.open_watches}"
        time.sleep(0.01)


def _tls_warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    """Warnings that tornado's code logged, by source file: jupyter_server renames tornado's
    loggers to its own ("ServerApp") for the rest of the process once a test has started one,
    so the logger's name depends on which tests ran before."""
    tornado_dir = str(Path(tornado.__file__).parent)
    return [
        rec.getMessage()
        for rec in caplog.records
        if rec.pathname.startswith(tornado_dir) and rec.levelno >= logging.WARNING
    ]


def test_stopping_a_watch_from_another_thread_logs_nothing_on_the_server(
    tls_sandbox: RunningSandbox, kube: Kube, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    # Given a watch whose stream a thread is blocked reading (as a controller's loop is)
    stream = kube.list_function(r.CONFIG_MAP)(
        watch=True, timeout_seconds=60, _preload_content=False, _request_timeout=(10, 70)
    )
    ended = threading.Event()

    def read() -> None:
        try:
            for _ in stream.stream(4096):
                pass
        except Exception:  # the cut stream ends the read: what the caller expects
            pass
        finally:
            stream.release_conn()
            ended.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    _wait_watches(tls_sandbox, 1)
    # When the watcher stops it the way the playground's controllers do
    stream.shutdown()
    assert ended.wait(5), "the blocked read did not return"
    # Then the server sees the watch end, and logs no TLS error for it
    _wait_watches(tls_sandbox, 0)
    assert _tls_warnings(caplog) == []


def test_a_real_tls_error_during_a_watch_is_still_logged(
    tls_sandbox: RunningSandbox, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    assert tls_sandbox.ca_pem is not None
    context = ssl.create_default_context(cadata=tls_sandbox.ca_pem.decode())
    with context.wrap_socket(
        socket.create_connection(("127.0.0.1", tls_sandbox.port)), server_hostname="127.0.0.1"
    ) as tls:
        # Given an open watch
        tls.sendall(
            b"GET /api/v1/configmaps?watch=true HTTP/1.1\r\nHost: sandbox\r\n"
            b"Authorization: Bearer " + tls_sandbox.admin_token.encode() + b"\r\n\r\n"
        )
        assert tls.recv(4096).startswith(b"HTTP/1.1 200")
        _wait_watches(tls_sandbox, 1)
        # When the client sends a record that is not TLS (written past the TLS layer)
        os.write(tls.fileno(), b"\x17\x03\x03\x00\x08garbage!")
        # Then the server ends the watch and says why
        _wait_watches(tls_sandbox, 0)
    warnings = _tls_warnings(caplog)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("error on read: [SSL")
