"""Thin HTTP edge of the Jupyter extension: decode, call the service, map errors to codes.

Routes (under the server's ``base_url``, e.g. ``/notebook/alice/nb/`` on Kubeflow):

- ``GET  vsphere-kale/api/status``    -> NamespaceStatus JSON (admin API, else local read-only);
  with ``?kernel=<id>`` or ``?path=<notebook>`` also that notebook's ``kale`` section
- ``POST vsphere-kale/api/reconcile`` -> ReconcileResult JSON (admin API only)
- ``POST vsphere-kale/api/persistentvolumeclaims/{name}/recreate`` -> the recreation's result
  (admin API only: the service checks the caller's permission and refuses unsafe claims)

POST keeps Jupyter's XSRF protection: a browser page from another origin must not be able to
make the admin API repair things with the notebook's identity. Requests authenticated with a
token (``Authorization: token ...``) are exempt, as everywhere in Jupyter.
"""

from __future__ import annotations

import json
from http import HTTPStatus
from typing import Any, NoReturn

from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web

from vsphere_kale.errors import (
    ConfigError,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
    VsphereKaleError,
)
from vsphere_kale.jupyter.admin_client import AdminApiError, AdminApiUnavailable
from vsphere_kale.jupyter.kale_status import (
    NotebookRequestError,
    decide_notebook_query,
    fetch_status_with_kale,
)
from vsphere_kale.jupyter.service import HealthService
from vsphere_kale.policy.kubestatus import build_status

SERVICE_KEY = "vsphere_kale_health"
"""Key of the :class:`HealthService` in ``web_app.settings``."""

AUTH_RESOURCE = "vsphere_kale"
"""Resource name Jupyter authorizers see (``read`` for GET, ``write`` for POST)."""

_XSRF_HINT = (
    "POST needs Jupyter's XSRF pair: the _xsrf cookie (set by GET vsphere-kale/api/status) "
    "and the same value in the X-XSRFToken header"
)

# Status.reason values, as Kubernetes spells them, so the widget and kubectl users read alike.
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    500: "InternalError",
    502: "BadGateway",
    503: "ServiceUnavailable",
    504: "Timeout",
}


def http_error(exc: VsphereKaleError) -> web.HTTPError:
    """The one place domain errors become HTTP codes."""
    code: int
    reason = ""
    if isinstance(exc, AdminApiError):
        # 401/403/404 from the admin API are the answer, passed through unchanged.
        code, reason = exc.code, exc.reason
    elif isinstance(exc, NotebookRequestError):
        code = exc.code
    elif isinstance(exc, AdminApiUnavailable | KubeUnavailable | ConfigError):
        # ConfigError: the extension is not set up for this pod; nothing the request can fix.
        code = 503
    elif isinstance(exc, KubeForbidden):
        code = 403
    elif isinstance(exc, KubeNotFound):
        code = 404
    elif isinstance(exc, KubeError):
        # status 0: no answer at all (kubeconfig unusable); else the API answered oddly.
        code = 503 if exc.status == 0 else 502
    else:
        code = 500
    return web.HTTPError(code, "%s", str(exc), reason=reason or _REASONS.get(code))


class _HealthHandler(APIHandler):
    auth_resource = AUTH_RESOURCE

    @property
    def health(self) -> HealthService:
        service: HealthService = self.settings[SERVICE_KEY]
        return service

    def fail(self, exc: VsphereKaleError) -> NoReturn:
        raise http_error(exc) from exc

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        """Every error as a Kubernetes-style Status object, with a sentence, never a traceback."""
        try:
            message = HTTPStatus(status_code).phrase
        except ValueError:
            message = f"HTTP {status_code}"
        reason = _REASONS.get(status_code, "Failure")
        exc_info = kwargs.get("exc_info")
        exc = exc_info[1] if exc_info else None
        if isinstance(exc, web.HTTPError):
            if exc.log_message:
                message = exc.log_message % exc.args if exc.args else exc.log_message
            reason = exc.reason or reason
            if status_code == 403 and "_xsrf" in message:
                message = _XSRF_HINT
        elif exc is not None:
            message = "internal error in the vsphere-kale extension; see the Jupyter server log"
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(build_status(code=status_code, reason=reason, message=message)))


class StatusHandler(_HealthHandler):
    @web.authenticated
    @authorized
    async def get(self) -> None:
        # Touching xsrf_token sets the _xsrf cookie: the widget reads it from this response
        # and echoes it in X-XSRFToken on its next POST.
        _ = self.xsrf_token
        try:
            # ?kernel=<id> or ?path=<notebook>: the notebook's Kale volumes too (kale_status).
            query = decide_notebook_query(
                self.get_query_argument("kernel", None), self.get_query_argument("path", None)
            )
            status = await fetch_status_with_kale(
                self.health,
                query,
                contents_manager=self.contents_manager,
                session_manager=self.session_manager,
            )
        except VsphereKaleError as exc:
            self.fail(exc)
        self.finish(json.dumps(status))


class ReconcileHandler(_HealthHandler):
    @web.authenticated
    @authorized
    async def post(self) -> None:
        try:
            result = await self.health.reconcile()
        except VsphereKaleError as exc:
            self.fail(exc)
        self.finish(json.dumps(result))


class RecreateHandler(_HealthHandler):
    @web.authenticated
    @authorized
    async def post(self, name: str) -> None:
        try:
            result = await self.health.recreate_pvc(name)
        except VsphereKaleError as exc:
            self.fail(exc)
        self.finish(json.dumps(result))


# A DNS-1123 subdomain (what a PVC name is); anything else never reaches the service.
_PVC_NAME = r"([a-z0-9](?:[-a-z0-9.]{0,251}[a-z0-9])?)"


def setup_handlers(web_app: web.Application) -> None:
    """The route table, joined to the server's ``base_url``."""
    base_url = web_app.settings["base_url"]
    routes: list[tuple[str, type[_HealthHandler]]] = [
        (url_path_join(base_url, "vsphere-kale/api/status"), StatusHandler),
        (url_path_join(base_url, "vsphere-kale/api/reconcile"), ReconcileHandler),
        (
            url_path_join(
                base_url, f"vsphere-kale/api/persistentvolumeclaims/{_PVC_NAME}/recreate"
            ),
            RecreateHandler,
        ),
    ]
    web_app.add_handlers(".*$", routes)
