"""Text the verdicts, the reconciler and the rotation share: RFC 3339 times and sentences."""

from __future__ import annotations

import datetime as dt


def parse_time(value: object) -> dt.datetime | None:
    """RFC 3339 as the API writes it (``2026-11-25T19:40:00Z``, maybe with fractions), in UTC
    when it names no zone; None for anything else (absent, empty, not a time)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=dt.timezone.utc)


def format_time(when: dt.datetime) -> str:
    """``2026-11-25T19:40:00Z``: how the API (and our annotations) write a time."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def sentence(text: str, *, capitalize: bool = True) -> str:
    """``text`` as a sentence: stripped, ending in a full stop (unless it ends in ! or ?), and
    with a capital first letter unless ``capitalize`` is false (the health verdicts keep
    the planner's lower-case object names such as ``rolebinding x``)."""
    text = text.strip()
    if not text:
        return text
    if capitalize:
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


SERVICE_ACCOUNT_PREFIX = "system:serviceaccount:"


def describe_user(username: str) -> str:
    """``service account NS/NAME`` for a service account's username, else ``user NAME``:
    a hint must not tell a person to grant "the service account" their own missing right."""
    if username.startswith(SERVICE_ACCOUNT_PREFIX):
        namespace, _, name = username[len(SERVICE_ACCOUNT_PREFIX) :].partition(":")
        return f"service account {namespace}/{name}"
    return f"user {username}" if username else "the caller"


def forbidden_user(message: str) -> str:
    """The username in an API server 403 (``User "alice" cannot ...``), or ``""``."""
    marker = 'User "'
    start = message.find(marker)
    if start < 0:
        return ""
    end = message.find('"', start + len(marker))
    return message[start + len(marker) : end] if end > 0 else ""
