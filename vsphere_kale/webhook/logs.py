"""Log formats for the server processes: ``json`` (the Deployment's) and ``text``.

Everything a log line carries from a request is attacker-controlled: an AdmissionReview's
``request.namespace``, ``userInfo.username`` and ``uid``, a URL path. Two defences, in both
formats (issue 10, finding 3):

* **No forged lines.** In ``text``, control characters (CR, LF, ESC, the C1 range, DEL,
  Unicode line and paragraph separators) are escaped as ``\\n``, ``\\x1b``, ``\\u2028``, so one
  record is one line whatever the input. ``json`` escapes them by construction.
* **No huge lines.** Every string argument and ``extra`` field is cut to
  :data:`MAX_FIELD_CHARS` (a 1 MB uid once wrote a 1 MB INFO line), and a whole message to
  :data:`MAX_MESSAGE_CHARS`, with a note of how much was cut.

Tracebacks (``exc_info``) keep their newlines in ``text``: they come from our code, are
indented under their record, and escaping them would make them unreadable.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import time
from typing import Any

from vsphere_kale.errors import ConfigError

MAX_FIELD_CHARS = 256
"""Longest string argument or extra field kept (names are at most 253 characters)."""

MAX_MESSAGE_CHARS = 4096
"""Longest message kept once formatted."""

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}

_RECORD_ATTRS = frozenset(logging.LogRecord("", 0, "", 0, "", None, None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


def _escape_char(match: re.Match[str]) -> str:
    char = match.group()
    named = _NAMED.get(char)
    if named is not None:
        return named
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def escape_controls(text: str) -> str:
    """``text`` on one line: control characters as visible escapes."""
    return _CONTROL.sub(_escape_char, text)


def truncate(text: str, limit: int = MAX_FIELD_CHARS) -> str:
    if len(text) <= limit:
        return text
    return f"{text[:limit]}...(+{len(text) - limit} chars)"


def _clean_arg(value: object) -> object:
    # Only strings (and objects whose str() we would log) can carry input; numbers stay
    # numbers so %d and %.2f keep working.
    if isinstance(value, str):
        return truncate(value)
    if isinstance(value, int | float) or value is None:
        return value
    return truncate(str(value))


def _message(record: logging.LogRecord) -> str:
    """The record's message with every argument cut to size, then the whole cut to size."""
    args = record.args
    if isinstance(args, tuple) and args:
        record.args = tuple(_clean_arg(a) for a in args)
    try:
        return truncate(record.getMessage(), MAX_MESSAGE_CHARS)
    finally:
        record.args = args


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, plus the record's ``extra``."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
            .isoformat(timespec="milliseconds")
            .replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": _message(record),
        }
        for key, value in record.__dict__.items():
            if key not in _RECORD_ATTRS and not key.startswith("_"):
                entry[key] = truncate(value) if isinstance(value, str) else value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        # json escapes every C0 control character (so CR/LF cannot split the line); non-ASCII
        # text stays readable.
        return json.dumps(entry, default=lambda v: truncate(str(v)), ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """:data:`TEXT_FORMAT`, one line per record (controls escaped, fields cut), with the date
    part of the timestamp cached per second (``localtime`` + ``strftime`` were a third of the
    cost of a rewrite's log line)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)
        self._second = -1
        self._prefix = ""

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        second = int(record.created)
        if second != self._second:
            self._prefix = time.strftime("%Y-%m-%d %H:%M:%S", self.converter(record.created))
            self._second = second
        return f"{self._prefix},{int(record.msecs):03d}"

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(_message(record))
        return super().formatMessage(record)


def reduce_logging_overhead() -> None:
    """Skip per-record work nobody reads in a one-thread server: the caller's file and line,
    thread and process names (the "Optimization" section of the logging HOWTO). Halves the
    cost of a log call."""
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def configure_logging(log_format: str, *, level: int = logging.INFO) -> None:
    """Process-wide logging for a server process (``text`` or ``json`` lines on stderr).

    Not part of :class:`~vsphere_kale.webhook.server.WebhookServer`: logging is global to the
    process, and tests run several servers in one process.
    """
    if log_format not in ("text", "json"):
        raise ConfigError("--log-format", f"{log_format!r} is not one of: text, json")
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if log_format == "json" else TextFormatter())
    logging.basicConfig(level=level, handlers=[handler], force=True)
    reduce_logging_overhead()
    # tornado's access log would add a line per request; our handlers log what matters.
    logging.getLogger("tornado.access").setLevel(logging.WARNING)
