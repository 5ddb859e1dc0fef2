"""Client errors into our tree, once: an ``ApiException`` or an unreachable server becomes a
:class:`~vsphere_kale.errors.KubeError` naming what was attempted; and the API's ``Warning``
headers read as texts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from kubernetes.client.exceptions import ApiException
from urllib3.exceptions import HTTPError as Urllib3HTTPError

from vsphere_kale.errors import (
    KubeConflict,
    KubeError,
    KubeForbidden,
    KubeNotFound,
    KubeUnavailable,
)

# RFC 7234 warn-value as the API server writes it: 299 - "text" (quotes and backslashes
# escaped): https://kubernetes.io/blog/2020/09/03/warnings/
_WARNING = re.compile(r'\s*\d{3}\s+\S+\s+"((?:[^"\\]|\\.)*)"')


def _status_message(exc: ApiException) -> str:
    try:
        body = json.loads(exc.body or "")
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return str(body["message"])
    except (TypeError, ValueError):
        pass
    return str(exc.reason or "no message")


def _retry_after(exc: ApiException) -> float | None:
    value = exc.headers.get("Retry-After") if exc.headers else None
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        return None


def translate(exc: ApiException, *, action: str) -> KubeError:
    """One ApiException -> our error tree, with ``action`` ("create rolebindings alice/x")."""
    status = int(exc.status or 0)
    message = f"{action}: {_status_message(exc)}"
    kwargs: dict[str, Any] = {
        "status": status,
        "reason": str(exc.reason or ""),
        "retry_after": _retry_after(exc),
    }
    if status == 404:
        return KubeNotFound(message, **kwargs)
    if status == 409:
        return KubeConflict(message, **kwargs)
    if status == 403:
        return KubeForbidden(message, **kwargs)
    if status in (0, 429) or status >= 500:
        return KubeUnavailable(message, **kwargs)
    return KubeError(message, **kwargs)


@contextmanager
def kube_errors(action: str) -> Iterator[None]:
    """Translate client errors raised inside the block, naming ``action`` in the message."""
    try:
        yield
    except ApiException as exc:
        raise translate(exc, action=action) from exc
    except (Urllib3HTTPError, OSError) as exc:
        raise KubeUnavailable(f"{action}: API server unreachable ({exc})") from exc


def parse_warnings(values: Sequence[str]) -> list[str]:
    """The texts of ``Warning`` header values (``299 - "text"``); unparsable ones verbatim."""
    texts: list[str] = []
    for value in values:
        matches = list(_WARNING.finditer(value))
        if not matches:
            texts.append(value.strip())
        for m in matches:
            texts.append(re.sub(r"\\(.)", r"\1", m.group(1)))
    return texts


def header_values(headers: Any, name: str) -> list[str]:
    if headers is None:
        return []
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return [str(v) for v in getlist(name)]
    value = headers.get(name)
    return [str(value)] if value is not None else []
