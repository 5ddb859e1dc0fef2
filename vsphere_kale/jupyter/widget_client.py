"""How the notebook widget reaches its own Jupyter server's vsphere-kale endpoints.

The kernel is a separate process from the Jupyter server, so the widget talks HTTP to it:

1. ``NB_PREFIX`` set (Kubeflow notebook pods): ``http://127.0.0.1:8888${NB_PREFIX}/``, no token;
   Kubeflow runs Jupyter without a token behind its own authenticating proxy.
2. Else the server that launched this kernel: ``list_running_servers()`` entry whose ``pid``
   is ``$JPY_PARENT_PID`` (jupyter_client sets it for every kernel), with its URL and token.
3. Else, if exactly one server runs for this user, that one.

POST needs Jupyter's XSRF pair when the request is not token-authenticated (Kubeflow): the
``_xsrf`` cookie from a previous GET, echoed in the ``X-XSRFToken`` header.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from http.cookiejar import CookieJar
from typing import Any

from vsphere_kale.errors import VsphereKaleError

log = logging.getLogger(__name__)

KUBEFLOW_PORT = 8888
STATUS_PATH = "vsphere-kale/api/status"
RECONCILE_PATH = "vsphere-kale/api/reconcile"
RECREATE_PATH = "vsphere-kale/api/persistentvolumeclaims/{name}/recreate"


class WidgetClientError(VsphereKaleError):
    """The Jupyter server could not be found, reached, or answered with an error."""

    def __init__(self, message: str, *, code: int = 0) -> None:
        self.code = code
        super().__init__(message)


@dataclass(frozen=True)
class ServerRef:
    """Where the Jupyter server is and how to authenticate to it."""

    base_url: str
    """Ends with ``/``; includes the server's base_url (``NB_PREFIX`` on Kubeflow)."""
    token: str = ""
    """Jupyter token; empty when the server runs without one (Kubeflow)."""


def decide_server(environ: Mapping[str, str], servers: Iterable[Mapping[str, Any]]) -> ServerRef:
    """Pick the Jupyter server for this kernel (pure: tests hand in environ and servers)."""
    prefix = environ.get("NB_PREFIX", "").strip()
    if prefix:
        return ServerRef(f"http://127.0.0.1:{KUBEFLOW_PORT}/{prefix.strip('/')}/")
    running = [s for s in servers if isinstance(s.get("url"), str)]
    parent = environ.get("JPY_PARENT_PID", "")
    matches = [s for s in running if parent and str(s.get("pid")) == parent]
    if not matches and len(running) == 1:
        matches = running
    if not matches:
        if not running:
            raise WidgetClientError(
                "no running Jupyter server found for this kernel; open the notebook from "
                "JupyterLab, or pass HealthPanel(url=..., token=...)"
            )
        raise WidgetClientError(
            f"{len(running)} Jupyter servers run and none launched this kernel "
            f"(JPY_PARENT_PID={parent or 'unset'}); pass HealthPanel(url=..., token=...)"
        )
    chosen = matches[0]
    url = str(chosen["url"])
    return ServerRef(url if url.endswith("/") else url + "/", str(chosen.get("token") or ""))


def find_server() -> ServerRef:
    """:func:`decide_server` on this process's environment and the running servers."""
    # Imported here: the jupyter_server import is slow and only discovery needs it.
    from jupyter_server.serverapp import list_running_servers

    return decide_server(os.environ, list_running_servers())


def _error_sentence(exc: urllib.error.HTTPError, *, what: str) -> str:
    try:
        body = json.loads(exc.read())
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str) and body["message"]:
        return str(body["message"])
    return f"{what} failed: HTTP {exc.code} {exc.reason}"


class JupyterHealthClient:
    """Blocking HTTP client for the extension's endpoints (the kernel has no spare loop)."""

    def __init__(
        self, server: ServerRef, *, timeout: float = 30.0, query: Mapping[str, str] | None = None
    ) -> None:
        self.server = server
        self.timeout = timeout
        self.query = dict(query or {})
        """Sent with every status read: ``kernel``/``path`` adds the notebook's Kale volumes."""
        self._cookies = CookieJar()
        self._opener = urllib.request.build_opener(
            urllib.request.HTTPCookieProcessor(self._cookies)
        )

    def _xsrf_cookie(self) -> str | None:
        return next((c.value for c in self._cookies if c.name == "_xsrf" and c.value), None)

    def _send(self, method: str, path: str, *, what: str = "") -> dict[str, Any]:
        url = self.server.base_url + path
        headers = {"Accept": "application/json"}
        if self.server.token:
            headers["Authorization"] = f"token {self.server.token}"
        data = None
        if method == "POST":
            data = b"{}"
            headers["Content-Type"] = "application/json"
            xsrf = self._xsrf_cookie()
            if xsrf:
                headers["X-XSRFToken"] = xsrf
        request = urllib.request.Request(url, data=data, headers=headers, method=method)
        what = what or ("reading the status" if method == "GET" else "reconcile")
        try:
            with self._opener.open(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise WidgetClientError(
                    f"the Jupyter server at {self.server.base_url} has no vsphere-kale "
                    "endpoints; enable the extension (jupyter server extension enable "
                    "vsphere_kale.jupyter) and restart it",
                    code=404,
                ) from exc
            raise WidgetClientError(_error_sentence(exc, what=what), code=exc.code) from exc
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise WidgetClientError(
                f"cannot reach the Jupyter server at {self.server.base_url} ({reason})"
            ) from exc
        try:
            body = json.loads(raw)
        except ValueError as exc:
            raise WidgetClientError(f"{what}: the Jupyter server sent a non-JSON answer") from exc
        if not isinstance(body, dict):
            raise WidgetClientError(f"{what}: the Jupyter server sent a non-object answer")
        return body

    def fetch_status(self) -> dict[str, Any]:
        query = urllib.parse.urlencode(self.query)
        return self._send("GET", f"{STATUS_PATH}?{query}" if query else STATUS_PATH)

    def reconcile(self) -> dict[str, Any]:
        if self._xsrf_cookie() is None:
            # The status GET is what sets the _xsrf cookie; without it a cookie-authenticated
            # (Kubeflow) server refuses the POST with 403.
            self._send("GET", STATUS_PATH)
        return self._send("POST", RECONCILE_PATH)

    def recreate_pvc(self, name: str) -> dict[str, Any]:
        """Recreate the stuck claim ``name`` of the notebook's namespace on the RWX class."""
        if self._xsrf_cookie() is None:
            self._send("GET", STATUS_PATH)
        path = RECREATE_PATH.format(name=urllib.parse.quote(name, safe=""))
        return self._send("POST", path, what=f"recreating {name}")
