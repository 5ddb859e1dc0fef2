"""Issue 10, finding 3: a log record is one line of bounded size whatever the input."""

from __future__ import annotations

import json
import logging

import pytest

from vsphere_kale.errors import ConfigError
from vsphere_kale.settings import settings_from_mapping
from vsphere_kale.webhook.logs import (
    MAX_FIELD_CHARS,
    MAX_MESSAGE_CHARS,
    JsonFormatter,
    TextFormatter,
    escape_controls,
)


def record(msg: str, *args: object, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("vsphere_kale.webhook.server", logging.INFO, "", 0, msg, args, None)
    rec.__dict__.update(extra)
    return rec


@pytest.mark.parametrize(
    ("raw", "escaped"),
    [
        ("alice\r\n2026-12-03 INFO forged", "alice\\r\\n2026-12-03 INFO forged"),
        ("a\x1b[31mred", "a\\x1b[31mred"),
        ("a\x00b\x7fc\x85d", "a\\x00b\\x7fc\\x85d"),
        ("line\u2028sep\u2029", "line\\u2028sep\\u2029"),
        ("tab\there", "tab\\there"),
        ("plain é ü", "plain é ü"),
    ],
)
def test_escape_controls(raw: str, escaped: str) -> None:
    assert escape_controls(raw) == escaped


def test_text_lines_cannot_be_forged() -> None:
    line = TextFormatter().format(
        record("rewrote PVC %s/%s (user %s)", "alice\nFAKE ERROR", "x", "bob\r\nadmin")
    )
    assert "\n" not in line and "\r" not in line
    assert "alice\\nFAKE ERROR" in line and "bob\\r\\nadmin" in line


def test_a_megabyte_uid_is_cut() -> None:
    uid = "u" * 1_000_000
    text = TextFormatter().format(record("review uid %s, status %d", uid, 200))
    assert len(text) < MAX_FIELD_CHARS + 200
    assert f"...(+{1_000_000 - MAX_FIELD_CHARS} chars)" in text and "status 200" in text
    entry = json.loads(JsonFormatter().format(record("uid %s", uid, uid=uid)))
    assert len(entry["message"]) < MAX_FIELD_CHARS + 100
    assert len(entry["uid"]) < MAX_FIELD_CHARS + 100


def test_a_long_message_is_cut_too() -> None:
    text = TextFormatter().format(record("x" * (MAX_MESSAGE_CHARS * 3)))
    assert len(text) < MAX_MESSAGE_CHARS + 200


def test_json_lines_are_single_lines() -> None:
    line = JsonFormatter().format(record("ns %s", "a\nb", user="c\r\nd"))
    assert "\n" not in line and "\r" not in line
    assert json.loads(line)["user"] == "c\r\nd"


@pytest.mark.parametrize(
    ("data", "key"),
    [
        ({"storage": {"rwxStorageClass": "nfs-client\n"}}, "storage.rwxStorageClass"),
        ({"podSecurity": {"extraNamespaces": ["kubeflow\n"]}}, "podSecurity.extraNamespaces[0]"),
        ({"podSecurity": {"roleBindingName": "rb\n"}}, "podSecurity.roleBindingName"),
        ({"namespace": "vsphere-kale\n"}, "namespace"),
    ],
)
def test_names_with_a_trailing_newline_are_refused(data: object, key: str) -> None:
    with pytest.raises(ConfigError) as info:
        settings_from_mapping(data)
    assert str(info.value).startswith(key + ":")
