"""The admin-API client used by the Jupyter server extension.

The notebook pod never holds admin rights: it asks ``vsphere-kale serve`` over HTTPS with its
own service-account token, and ``serve`` decides with TokenReview + SubjectAccessReview. The
token file is re-read on every call because projected service-account tokens rotate (kubelet
rewrites the file about every hour; a cached token would start failing with 401).
"""

from __future__ import annotations

import json
import logging
import os
import ssl
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from tornado.httpclient import AsyncHTTPClient, HTTPClientError, HTTPRequest, HTTPResponse

from vsphere_kale.errors import VsphereKaleError

log = logging.getLogger(__name__)

SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"

AUDIENCE_TOKEN_FILE = "/var/run/secrets/vsphere-kale/token"
"""Where deploy/examples/poddefault-admin-token.yaml mounts a projected service-account token
with audience ``vsphere-kale``. Preferred over the pod's default token: that one is valid
against the Kubernetes API, so sending it would let a compromised service act as the
notebook; an audience-bound token is refused by the API server."""

# tornado reports timeouts and connection failures inside HTTPClientError with this code.
_TORNADO_NO_RESPONSE = 599


class AdminApiError(VsphereKaleError):
    """The admin API answered with a client error (401, 403, 404, ...): shown to the user as is.

    Not a reason to fall back: a 403 means the user lacks a permission, and hiding that behind
    a locally computed status would make "why can't I reconcile?" unanswerable.
    """

    def __init__(self, message: str, *, code: int, reason: str) -> None:
        self.code = code
        self.reason = reason
        super().__init__(message)


class AdminApiUnavailable(VsphereKaleError):
    """Unreachable, timed out, TLS failure, no token or a 5xx: the extension falls back."""


def read_token(path: str) -> str | None:
    """The current service-account token, or None when the file is absent or empty."""
    try:
        with open(path, encoding="utf-8") as handle:
            token = handle.read().strip()
    except FileNotFoundError:
        return None
    return token or None


def _error_message(response: HTTPResponse | None, *, fallback: str) -> tuple[str, str]:
    """(message, reason) from a Status-like JSON error body; ``fallback`` when there is none."""
    if response is None or not response.body:
        return fallback, ""
    try:
        body = json.loads(response.body)
    except ValueError:
        return fallback, ""
    if not isinstance(body, dict):
        return fallback, ""
    message = body.get("message")
    reason = body.get("reason")
    return (
        message if isinstance(message, str) and message else fallback,
        reason if isinstance(reason, str) else "",
    )


@dataclass(frozen=True)
class AdminApiClient:
    """Talks to ``GET /api/v1/namespaces/{ns}/status`` and ``POST .../reconcile``."""

    url: str
    """Base URL of the admin API, e.g. ``https://vsphere-kale.vsphere-kale.svc:8444``."""
    token_file: str
    """Service-account token, sent as ``Authorization: Bearer``; re-read on each call."""
    ca_file: str | None
    """CA bundle that signed the admin API's serving certificate; None: the system store."""
    timeout: float
    """Seconds for connect and for the whole request."""
    audience_token_file: str | None = AUDIENCE_TOKEN_FILE
    """Audience-bound token, used instead of ``token_file`` when present (re-read each call).
    None: always ``token_file``."""

    def _token(self) -> tuple[str | None, str]:
        """(token, the file it came from): the audience-bound one first."""
        if self.audience_token_file:
            token = read_token(self.audience_token_file)
            if token is not None:
                return token, self.audience_token_file
        return read_token(self.token_file), self.token_file

    async def fetch_status(self, namespace: str) -> dict[str, Any]:
        return await self._request("GET", f"/api/v1/namespaces/{quote(namespace)}/status")

    async def reconcile(self, namespace: str) -> dict[str, Any]:
        return await self._request("POST", f"/api/v1/namespaces/{quote(namespace)}/reconcile")

    async def recreate_pvc(self, namespace: str, name: str) -> dict[str, Any]:
        path = (
            f"/api/v1/namespaces/{quote(namespace, safe='')}/persistentvolumeclaims/"
            f"{quote(name, safe='')}/recreate"
        )
        return await self._request("POST", path)

    def _ssl_context(self) -> ssl.SSLContext | None:
        if not self.url.startswith("https:"):
            return None
        if self.ca_file and os.path.exists(self.ca_file):
            return ssl.create_default_context(cafile=self.ca_file)
        return ssl.create_default_context()

    async def _request(self, method: str, path: str) -> dict[str, Any]:
        where = f"{self.url.rstrip('/')}{path}"
        token, source = self._token()
        if token is None:
            # Without an identity every admin-API call is a 401; the local, read-only view
            # under the notebook's own credentials is more useful than that.
            raise AdminApiUnavailable(
                f"no service-account token at {source}, so the admin API cannot be "
                "asked; set c.VsphereKaleApp.token_file"
            )
        request = HTTPRequest(
            where,
            method=method,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            body=b"{}" if method == "POST" else None,
            connect_timeout=self.timeout,
            request_timeout=self.timeout,
            ssl_options=self._ssl_context(),
            follow_redirects=False,
        )
        try:
            response = await AsyncHTTPClient().fetch(request)
        except HTTPClientError as exc:
            if exc.code == _TORNADO_NO_RESPONSE:
                raise AdminApiUnavailable(
                    f"admin API {self.url} did not answer within {self.timeout:g} s"
                ) from exc
            message, reason = _error_message(
                exc.response, fallback=f"admin API answered HTTP {exc.code} for {method} {path}"
            )
            if exc.code >= 500:
                raise AdminApiUnavailable(f"admin API {self.url}: {message}") from exc
            raise AdminApiError(message, code=exc.code, reason=reason) from exc
        except ssl.SSLError as exc:
            raise AdminApiUnavailable(
                f"TLS to admin API {self.url} failed ({exc.reason or exc}); check "
                f"c.VsphereKaleApp.ca_file ({self.ca_file or 'system trust store'})"
            ) from exc
        except OSError as exc:
            raise AdminApiUnavailable(f"admin API {self.url} is unreachable ({exc})") from exc
        try:
            body = json.loads(response.body)
        except ValueError as exc:
            raise AdminApiUnavailable(f"admin API {self.url} sent a non-JSON answer") from exc
        if not isinstance(body, dict):
            raise AdminApiUnavailable(f"admin API {self.url} sent a non-object JSON answer")
        log.debug("admin API %s %s -> %s", method, path, response.code)
        return body
