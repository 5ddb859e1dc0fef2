"""The HTTPS edge: tornado server for the admission webhook, health, readiness and metrics.

The server's parts: :mod:`~vsphere_kale.webhook.mutate` (the review handlers),
:mod:`~vsphere_kale.webhook.handlers` (probes, metrics, errors as ``Status``),
:mod:`~vsphere_kale.webhook.connections` (connection and body budgets, requests in flight
for draining), :mod:`~vsphere_kale.webhook.tls` (certificate loading). This module puts them
together and owns the lifecycle: start, certificate reload, drain and stop.

The handlers only decode, call :func:`vsphere_kale.webhook.admission.review`, and map errors to HTTP
codes (kopf's ``_kits/webhooks.py`` split). ``serve`` builds on :class:`WebhookServer` with
more routes (``extra_handlers``), readiness checks (``ready_checks``) and collectors on
:attr:`WebhookServer.registry`.

TLS details that matter in a cluster:

* The serving certificate comes from a Secret volume. The kubelet updates it by swapping a
  symlink (``..data``), so the files are re-checked every second (resolved path, inode,
  mtime, size) and a complete, matching pair is loaded into a *new* ``SSLContext``. New
  connections pick it up through the ``sni_callback`` (called for every ClientHello, with or
  without SNI), which is Python's documented way to switch a connection's context. Open
  connections and in-flight requests are untouched. A broken or mismatched pair never
  replaces a working one: the old certificate stays and an ERROR is logged.
* TLS 1.2 is the minimum. With ``client_ca_file`` every connection must present a client
  certificate signed by that CA (``CERT_REQUIRED``); note that kubelet HTTPS probes present
  none, so use ``tcpSocket`` probes with client verification on.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import ssl
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tornado.httpserver
import tornado.ioloop
import tornado.netutil
import tornado.routing
import tornado.web

from vsphere_kale.errors import ConfigError
from vsphere_kale.settings import Settings
from vsphere_kale.webhook.connections import LimitedHTTPServer, RequestTracker
from vsphere_kale.webhook.handlers import (
    HealthHandler,
    MetricsHandler,
    NotFoundHandler,
    ReadyHandler,
    log_request,
)
from vsphere_kale.webhook.limits import Budget
from vsphere_kale.webhook.logs import TEXT_FORMAT as TEXT_FORMAT
from vsphere_kale.webhook.logs import JsonFormatter as JsonFormatter
from vsphere_kale.webhook.logs import TextFormatter as TextFormatter
from vsphere_kale.webhook.logs import configure_logging as configure_logging
from vsphere_kale.webhook.logs import reduce_logging_overhead as reduce_logging_overhead
from vsphere_kale.webhook.metrics import WebhookMetrics
from vsphere_kale.webhook.mutate import MAX_BODY_BYTES as MAX_BODY_BYTES
from vsphere_kale.webhook.mutate import MUTATE_PATHS as MUTATE_PATHS
from vsphere_kale.webhook.mutate import MutateHandler, StreamedBodies, StreamingMutateHandler
from vsphere_kale.webhook.tls import TlsMaterial, build_tls_context, file_signature

log = logging.getLogger(__name__)

ReadyCheck = Callable[[], "str | None"]

# --- server --------------------------------------------------------------------------------


class WebhookServer:
    """The HTTPS server: webhook routes, ``/healthz``, ``/readyz``, ``/metrics``.

    Construct it (loads and checks the certificate: a bad file raises ConfigError naming the
    flag), ``await start()`` on a running event loop, ``await stop()`` to drain and close.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        cert_file: str | os.PathLike[str],
        key_file: str | os.PathLike[str],
        address: str = "0.0.0.0",
        port: int = 8443,
        client_ca_file: str | os.PathLike[str] | None = None,
        extra_handlers: Sequence[tuple[Any, ...]] = (),
        ready_checks: Sequence[ReadyCheck] = (),
        app_settings: Mapping[str, Any] | None = None,
        reload_interval: float = 1.0,
        mutate: bool = True,
        reuse_port: bool = False,
    ) -> None:
        self.settings = settings
        self.limits = settings.server
        self.budget = Budget(self.limits)
        self.metrics = WebhookMetrics()
        self.registry = self.metrics.registry
        self.draining = False
        self._address = address
        self._requested_port = port
        self._ready_checks = tuple(ready_checks)
        self.mutate = mutate
        self._reuse_port = reuse_port
        """SO_REUSEPORT: several processes listen on one port and the kernel spreads new
        connections over them (``webhook --workers N``)."""
        """False with ``serve --no-webhook`` (install --admission policy): no review route."""
        self._reload_interval = reload_interval
        self._cert_file = Path(cert_file)
        self._key_file = Path(key_file)
        self._client_ca_file = Path(client_ca_file) if client_ca_file is not None else None
        self._watched = [self._cert_file, self._key_file]
        if self._client_ca_file is not None:
            self._watched.append(self._client_ca_file)
        self._loaded_signature = file_signature(self._watched)
        self._suspect_signature: tuple[object, ...] | None = None
        self._reported_signature: tuple[object, ...] | None = None
        self._tls = self._load_tls()
        # Connections are created from this first context; its sni_callback hands each new
        # handshake to whatever context is current, so reloads need no new listener.
        self._listen_context = self._tls.context
        self._listen_context.sni_callback = self._select_context
        self._set_tls(self._tls)

        route_args = {"webhook": self}
        mutate_paths = "|".join(re.escape(path) for path in MUTATE_PATHS)
        routes: list[Any] = []
        if mutate:  # else a review path answers 404 like any unknown path
            routes += [
                tornado.routing.Rule(
                    StreamedBodies(f"(?:{mutate_paths})"), StreamingMutateHandler, route_args
                ),
                (f"(?:{mutate_paths})", MutateHandler, route_args),
            ]
        routes += [
            ("/healthz", HealthHandler, route_args),
            ("/readyz", ReadyHandler, route_args),
            ("/metrics", MetricsHandler, route_args),
        ]
        routes += list(extra_handlers)
        self.application = tornado.web.Application(
            routes,
            default_handler_class=NotFoundHandler,
            default_handler_args=route_args,
            log_function=log_request,
            compress_response=False,
            serve_traceback=False,
            **dict(app_settings or {}),
        )
        self._tracker = RequestTracker(self.application, self)
        self._http: tornado.httpserver.HTTPServer | None = None
        self._reloader: tornado.ioloop.PeriodicCallback | None = None
        self._port: int | None = None

    # -- TLS --

    def _load_tls(self) -> TlsMaterial:
        return build_tls_context(
            self._cert_file, self._key_file, client_ca_file=self._client_ca_file
        )

    def _set_tls(self, material: TlsMaterial) -> None:
        self._tls = material
        self.metrics.cert_expiry.set(material.expires.timestamp())

    def _select_context(
        self, connection: ssl.SSLSocket | ssl.SSLObject, server_name: str | None, _: Any
    ) -> None:
        current = self._tls.context
        if connection.context is not current:
            connection.context = current

    def check_certificate_files(self) -> bool:
        """Reload the certificate if its files changed; True when a new one was loaded.

        Runs every ``reload_interval`` seconds on the event loop; public so that tests and
        ``serve`` can trigger it. A pair that fails to load is retried once on the next tick
        before an ERROR is logged, because writers that replace the two files one after the
        other (``vsphere-kale certs --force``) briefly leave a new certificate with an old key.
        """
        signature = file_signature(self._watched)
        if signature in (self._loaded_signature, self._reported_signature):
            return False
        try:
            material = self._load_tls()
        except ConfigError as exc:
            if signature != self._suspect_signature:
                self._suspect_signature = signature
                log.debug("certificate files changed but do not load yet: %s", exc)
                return False
            self._reported_signature = signature
            self.metrics.cert_reloads.labels("failure").inc()
            log.error(
                "keeping the current serving certificate (%s, expires %s): the new files "
                "do not load: %s",
                self._tls.subject,
                self._tls.expires.isoformat(),
                exc,
            )
            return False
        self._loaded_signature = signature
        self._suspect_signature = self._reported_signature = None
        self._set_tls(material)
        self.metrics.cert_reloads.labels("success").inc()
        log.info(
            "loaded a new serving certificate for %s (expires %s)",
            material.subject,
            material.expires.isoformat(),
        )
        return True

    def _reload_tick(self) -> None:
        self.check_certificate_files()

    # -- lifecycle --

    @property
    def port(self) -> int:
        """The bound port (the real one when 0 was asked for); only valid after start()."""
        if self._port is None:
            raise RuntimeError("the server is not started")
        return self._port

    async def start(self) -> None:
        """Bind and serve on the running event loop. OSError when the port is taken."""
        http = LimitedHTTPServer(
            self._tracker,
            ssl_options=self._listen_context,
            # Larger bodies are routed to the streaming handler, which raises the limit.
            max_body_size=MAX_BODY_BYTES,
            # A body timeout costs each review a gen.with_timeout (~15% more Python calls,
            # measured), but without one a client that stalls a byte short of its declared
            # length holds the buffered body for ever (issue 10, finding 2).
            body_timeout=self.limits.body_timeout_seconds,
            # Also tornado's header timeout: a slowloris header trickle and a stalled TLS
            # handshake end after it too.
            idle_connection_timeout=self.limits.idle_timeout_seconds,
            decompress_request=False,
        )
        http.webhook = self
        self._http = http
        sockets = tornado.netutil.bind_sockets(
            self._requested_port, address=self._address, reuse_port=self._reuse_port
        )
        self._http.add_sockets(sockets)
        self._port = sockets[0].getsockname()[1]
        self._reloader = tornado.ioloop.PeriodicCallback(
            self._reload_tick, self._reload_interval * 1000.0
        )
        self._reloader.start()
        log.info(
            "serving HTTPS on %s:%d (certificate %s, expires %s%s)",
            self._address,
            self._port,
            self._tls.subject,
            self._tls.expires.isoformat(),
            ", client certificates required" if self._client_ca_file else "",
            extra={"address": self._address, "port": self._port},
        )

    async def stop(self, drain_timeout: float = 10.0) -> None:
        """Stop accepting, let in-flight requests finish (up to ``drain_timeout`` s), close."""
        self.draining = True
        if self._reloader is not None:
            self._reloader.stop()
        if self._http is None:
            return
        self._http.stop()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + drain_timeout
        while self.in_flight > 0 and loop.time() < deadline:
            await asyncio.sleep(0.01)
        if (left := self.in_flight) > 0:
            log.warning("closing with %d requests still in flight", left)
        try:
            await asyncio.wait_for(self._http.close_all_connections(), timeout=5.0)
        except asyncio.TimeoutError:
            log.warning("some connections did not close within 5 s")
        self._http = None
        log.info("stopped serving on port %s", self._port)

    @property
    def in_flight(self) -> int:
        """Requests whose headers arrived and whose response is not finished yet."""
        return self._tracker.in_flight()

    # -- readiness --

    def readiness_problems(self) -> list[str]:
        """Why the server should not get traffic; empty when ready."""
        problems: list[str] = []
        if self.draining:
            problems.append("shutting down")
        if self.mutate and self.settings.storage.rwx_storage_class is None:
            problems.append(
                "storage.rwxStorageClass is not set: every review would be answered unchanged"
            )
        for check in self._ready_checks:
            try:
                problem = check()
            except Exception as exc:  # a broken check means "not ready", never a 500
                problem = f"{getattr(check, '__name__', 'check')} failed: {exc}"
            if problem:
                problems.append(problem)
        return problems
