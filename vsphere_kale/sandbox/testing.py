"""Run a sandbox API server in-process, for tests and the playground.

    with start_sandbox(flavor="psp", seed="kubeflow-demo", authorization=True) as running:
        core = kubernetes.client.CoreV1Api(running.api_client())
        core.list_namespace()

The server runs its own asyncio/tornado loop on a daemon thread, on a free port of
127.0.0.1; starting one takes a few milliseconds (plus ~10 ms with ``tls=True``), so each
test can have its own. pytest fixtures ``sandbox`` and ``sandbox_factory`` (tests/conftest.py)
wrap this.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, cast

import tornado.httpserver
import tornado.netutil

from vsphere_kale.kube import ApiClient, build_api_client
from vsphere_kale.sandbox.kubeconfig import build_serving_tls, write_kubeconfig
from vsphere_kale.sandbox.server import Controller, Sandbox, build_sandbox

log = logging.getLogger(__name__)

_START_TIMEOUT = 10.0
_STOP_TIMEOUT = 10.0


@dataclass(frozen=True)
class RawResponse:
    status: int
    headers: dict[str, str]
    body: Any


class RunningSandbox:
    """A sandbox API server serving on 127.0.0.1 until :meth:`stop` (or the ``with`` ends).

    Attributes: ``url`` (``http(s)://127.0.0.1:<port>``), ``sandbox`` (the in-process
    :class:`Sandbox`: ``.store``, ``.faults``, hooks, ``.close_watches()``), ``tokens``
    (kubeconfig user -> token, ``admin`` first), ``admin_token``, ``kubeconfig_path`` (admin
    context current; one context per user), ``ca_pem`` (with TLS). Methods:
    ``api_client(token=None)``, ``kubeconfig_for(token)``, ``write_kubeconfig(path, ...)``,
    ``request(method, path, ...)`` (raw HTTP through a real ApiClient), ``stop()``.
    """

    def __init__(
        self,
        sandbox: Sandbox,
        tokens: dict[str, str],
        *,
        tls: bool = False,
        address: str = "127.0.0.1",
        port: int = 0,
        kubeconfig_path: str | Path | None = None,
    ) -> None:
        self.sandbox = sandbox
        self.tokens = dict(tokens)
        self.admin_token = tokens["admin"]
        self._tmp = Path(tempfile.mkdtemp(prefix="vsphere-kale-sandbox-"))
        self._clients: list[ApiClient] = []
        self._kubeconfigs: dict[str, Path] = {}
        ssl_ctx = None
        self.ca_pem: bytes | None = None
        if tls:
            material = build_serving_tls(self._tmp / "tls")
            self.ca_pem = material.ca_pem
            ssl_ctx = material.ssl_context()
        self._sockets = tornado.netutil.bind_sockets(port, address, family=socket.AF_INET)
        self.port = int(self._sockets[0].getsockname()[1])
        self.url = f"{'https' if tls else 'http'}://{address}:{self.port}"
        sandbox.server_address = f"{address}:{self.port}"
        self.kubeconfig_path = write_kubeconfig(
            kubeconfig_path or self._tmp / "kubeconfig", self.url, self.tokens, ca_pem=self.ca_pem
        )
        self._loop = asyncio.new_event_loop()
        self._server: tornado.httpserver.HTTPServer | None = None
        self._ssl_ctx = ssl_ctx
        self._started = threading.Event()
        self._thread = threading.Thread(target=self._run, name="sandbox-apiserver", daemon=True)
        self._thread.start()
        if not self._started.wait(_START_TIMEOUT):
            raise RuntimeError("the sandbox API server did not start")
        self._stopped = False

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)

        async def listen() -> None:
            self._server = tornado.httpserver.HTTPServer(
                self.sandbox.make_app(), ssl_options=self._ssl_ctx, idle_connection_timeout=60
            )
            self._server.add_sockets(self._sockets)

        self._loop.run_until_complete(listen())
        self._started.set()
        try:
            self._loop.run_forever()
        finally:
            self._loop.run_until_complete(self._loop.shutdown_asyncgens())
            self._loop.close()

    # -- clients --

    def kubeconfig_for(self, token: str, *, user: str = "user") -> Path:
        """A kubeconfig file (in the sandbox's temp dir) authenticating with ``token``."""
        path = self._kubeconfigs.get(token)
        if path is None:
            path = self._tmp / f"kubeconfig-{len(self._kubeconfigs)}"
            self.write_kubeconfig(path, token=token, user=user)
            self._kubeconfigs[token] = path
        return path

    def api_client(self, token: str | None = None) -> ApiClient:
        """A real kubernetes ApiClient loaded from a kubeconfig (admin unless ``token``)."""
        path = self.kubeconfig_path if token is None else self.kubeconfig_for(token)
        api = build_api_client(str(path))
        self._clients.append(api)
        return api

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        query: list[tuple[str, str]] | None = None,
        content_type: str | None = None,
        token: str | None = None,
    ) -> RawResponse:
        """One raw HTTP request through a real ApiClient (auth and TLS as configured).

        For what the typed APIs cannot send (another patch content type, an unknown field,
        a path the client has no method for). Raises the client's ``ApiException`` on a non-2xx
        answer.
        """
        api = self.api_client(token)
        headers = {"Accept": "application/json"}
        if content_type:
            headers["Content-Type"] = content_type
        m, url, hdrs, data, post = api.param_serialize(
            method,
            path,
            query_params=query or [],
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = api.call_api(m, url, hdrs, data, post)
        response.read()
        result = api.response_deserialize(response, {"2XX": "object"})
        return RawResponse(int(result.status_code), dict(result.headers or {}), result.data)

    def write_kubeconfig(
        self, path: str | Path, *, token: str | None = None, user: str = "admin"
    ) -> Path:
        """Write a kubeconfig for one user (admin's token unless ``token``)."""
        return write_kubeconfig(
            path, self.url, {user: token or self.admin_token}, ca_pem=self.ca_pem
        )

    # -- lifecycle --

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        for api in self._clients:
            try:
                api.close()
            except Exception:  # a client's pool teardown must not break the server's
                log.debug("closing an ApiClient failed", exc_info=True)
        server = self._server

        async def shutdown() -> None:
            if server is not None:
                server.stop()
                self.sandbox.close_watches()
                await asyncio.wait_for(server.close_all_connections(), _STOP_TIMEOUT)

        try:
            asyncio.run_coroutine_threadsafe(shutdown(), self._loop).result(_STOP_TIMEOUT)
        except (TimeoutError, asyncio.TimeoutError):
            log.warning("sandbox connections did not close within %ss", _STOP_TIMEOUT)
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(_STOP_TIMEOUT)
            self.sandbox.close()
            shutil.rmtree(self._tmp, ignore_errors=True)

    def __enter__(self) -> RunningSandbox:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_sandbox(
    *,
    flavor: str = "psa",
    seed: str = "empty",
    authorization: bool = False,
    kubeflow: bool = False,
    tls: bool = False,
    service_map: dict[str, str] | None = None,
    watch_history: int = 10_000,
    **sandbox_options: Any,
) -> RunningSandbox:
    """Start a sandbox API server on a free 127.0.0.1 port (see :func:`server.build_sandbox`).

    Extra keyword arguments set :class:`Sandbox` attributes (``bookmark_interval=0.2``,
    ``default_watch_timeout=5``...).
    """
    setup = build_sandbox(
        flavor=flavor,
        seed=seed,
        authorization=authorization,
        service_map=service_map,
        watch_history=watch_history,
    )
    for key, value in sandbox_options.items():
        if not hasattr(setup.sandbox, key):
            raise TypeError(f"start_sandbox() got an unknown option {key!r}")
        setattr(setup.sandbox, key, value)
    running = RunningSandbox(setup.sandbox, setup.tokens, tls=tls)
    if kubeflow:
        # The profile controller is an API client (it runs on a real kube-apiserver too);
        # listed among the sandbox's controllers, so wait_idle() and stop() include it.
        from vsphere_kale.kube import Kube
        from vsphere_kale.playground.kubeflow import start_profile_controller

        try:
            controller = start_profile_controller(Kube(running.api_client()))
        except BaseException:
            running.stop()
            raise
        # Not a store listener (the Controller callable type): only wait_idle()/stop() matter.
        setup.sandbox.controllers.insert(0, cast(Controller, controller))
    return running
