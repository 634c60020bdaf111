"""Structured logs for the journal: one line per event, `key=value` pairs in the message
become JSON fields with format=json. Never a raw QR payload, a name or an ID (CODES.md 7)."""

from __future__ import annotations

import json
import logging
import re
import sys
import time

_PAIR = re.compile(r"(\w+)=('(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"|\S+)")


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        msg = record.getMessage()
        out: dict[str, object] = {"ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
                                  + f".{int(record.msecs):03d}Z",
                                  "level": record.levelname.lower(), "logger": record.name}
        pairs = _PAIR.findall(msg)
        if pairs and msg.startswith(pairs[0][0] + "="):
            for k, v in pairs:
                out[k] = v.strip("'\"")
        else:
            out["msg"] = msg
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info).splitlines()[-1]
        return json.dumps(out, ensure_ascii=False)


def setup_logging(level: str = "info", fmt: str = "text", stream: object = None) -> None:
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
