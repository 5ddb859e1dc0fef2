"""Client errors into our tree, once: an ``ApiException`` or an unreachable server becomes a
:class:`~vsphere_kale.errors.KubeError` naming what was attempted; and the API's ``Warning``
headers read as texts.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from email.errors import HeaderParseError
from email.header import decode_header, make_header
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

# C0, DEL and C1 controls (Go's unicode.IsControl, what kube-apiserver refuses in a warning),
# plus the bidirectional embedding/override/isolate marks, which make a log line read
# differently from what it says.
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")


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


def decode_header_value(value: str) -> str:
    """A header value as the text its bytes spell in UTF-8.

    http.client decodes header bytes as latin-1 (RFC 7230's historical default), but
    kube-apiserver writes warning texts as UTF-8 bytes, unescaped apart from ``"`` and ``\\``
    (k8s.io/apimachinery ``net.NewWarningHeader``): re-encoding gives those bytes back.
    Bytes that are not UTF-8 become U+FFFD. A value with characters beyond latin-1 did not
    come from http.client's decoding and is already text.
    """
    try:
        raw = value.encode("latin-1")
    except UnicodeEncodeError:
        return value
    return raw.decode("utf-8", errors="replace")


def _decode_encoded_words(text: str) -> str:
    # RFC 2616 servers encoded warn-text as RFC 2047 encoded-words; client-go's
    # ParseWarningHeader tolerates them, and so do we.
    if "=?" not in text:
        return text
    try:
        return str(make_header(decode_header(text)))
    except (HeaderParseError, LookupError, UnicodeDecodeError, ValueError):
        return text


def _printable(text: str) -> str:
    """Control characters as U+FFFD: these texts are logged and shown (a forged log line or
    a terminal escape must not get through)."""
    return _CONTROL.sub("\ufffd", text)


def parse_warnings(values: Sequence[str]) -> list[str]:
    """The texts of ``Warning`` header values (``299 - "text"``), decoded as UTF-8 and free
    of control characters; an unparsable value is kept whole (the same way)."""
    texts: list[str] = []
    for value in values:
        value = decode_header_value(value)
        matches = list(_WARNING.finditer(value))
        if not matches:
            texts.append(_printable(value.strip()))
        for m in matches:
            text = _decode_encoded_words(re.sub(r"\\(.)", r"\1", m.group(1)))
            texts.append(_printable(text))
    return texts


def header_values(headers: Any, name: str) -> list[str]:
    if headers is None:
        return []
    getlist = getattr(headers, "getlist", None)
    if getlist is not None:
        return [str(v) for v in getlist(name)]
    value = headers.get(name)
    return [str(value)] if value is not None else []
