"""Structured logs for the journal: one line per event, `key=value` pairs in the message
become JSON fields with format=json. Never a raw QR payload, a name or an ID (docs/credentials.md section 7).

Every value passed as a logging argument is escaped here, in one place, for both formats
(`escape`): a value that is printable and has no space, quote, `=` or backslash is written as
it is; any other is written in double quotes with JSON string escapes (RFC 8259 section 7), so
no value can start a new line or forge a `key=` (a staff id "x\\nevent=forged" stays one value).
"""

from __future__ import annotations

import json
import logging
import numbers
import re
import sys
import time
from collections.abc import Mapping
from typing import Any

_PAIR = re.compile(r"(\w+)=(\"(?:[^\"\\]|\\.)*\"|'(?:[^'\\]|\\.)*'|\S+)")
_NEEDS_QUOTES = re.compile(r"[\s\"'=\\]")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


def escape(value: object) -> str:
    """`value` as one log value: as it is when safe, else "quoted" with JSON escapes."""
    s = str(value)
    if s and s.isprintable() and not _NEEDS_QUOTES.search(s):
        return s
    quoted = json.dumps(s, ensure_ascii=False)
    if quoted.isprintable():
        return quoted
    return "".join(c if c.isprintable() else json.dumps(c)[1:-1] for c in quoted)


class _Value(str):
    """An escaped value that %r prints as it is (not in a second pair of quotes)."""

    def __repr__(self) -> str:
        return str(self)


def _arg(a: Any) -> Any:
    if a is None or isinstance(a, (bool, numbers.Number)):
        return a
    return _Value(escape(a))


def message(record: logging.LogRecord) -> str:
    """The record's message with every argument escaped; a control character the template
    itself carries is escaped too, so the message is always one line."""
    args = record.args
    msg = str(record.msg)
    if args:
        safe: Any = ({k: _arg(v) for k, v in args.items()} if isinstance(args, Mapping)
                     else tuple(_arg(a) for a in args))
        try:
            msg = msg % safe
        except (TypeError, ValueError, KeyError):
            msg = record.getMessage()
    return _CONTROL.sub(lambda m: json.dumps(m.group())[1:-1], msg)


def _value(v: str) -> str:
    if v.startswith('"'):
        try:
            return str(json.loads(v))
        except ValueError:
            pass
    return v.strip("'\"")


class TextFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        safe = logging.makeLogRecord(record.__dict__)
        safe.msg, safe.args = message(record), None
        return super().format(safe)


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = message(record)
        out: dict[str, object] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                                  + f".{int(record.msecs):03d}Z",
                                  "level": record.levelname.lower(), "logger": record.name}
        pairs = _PAIR.findall(msg)
        if pairs and msg.startswith(pairs[0][0] + "="):
            for k, v in pairs:
                if k not in ("ts", "level", "logger"):
                    out[k] = _value(v)
        else:
            out["msg"] = msg
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        line = json.dumps(out, ensure_ascii=False)  # escapes C0 controls; these it leaves raw:
        return _CONTROL.sub(lambda m: json.dumps(m.group())[1:-1], line)


def setup_logging(level: str = "info", fmt: str = "text", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
