"""Log lines (scanner/logs.py): every logged value is escaped in one place, so no value can start
a new line or forge a `key=` in either format (issue 11.8)."""

from __future__ import annotations

import io
import json
import logging

import pytest

from scanner.logs import escape, setup_logging

FORGED = "x\nevent=forged verdict=PASS"


def emit(fmt: str, msg: str, *args: object) -> list[str]:
    """The lines the daemon's handler (setup_logging) writes for one record."""
    out = io.StringIO()
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    setup_logging("info", fmt, out)
    handler = root.handlers[0]
    root.handlers[:], root.level = saved  # leave pytest's handlers as they were
    logger = logging.getLogger("scanner.test_logs")
    logger.addHandler(handler)
    logger.propagate = False
    logger.setLevel(logging.INFO)
    try:
        logger.info(msg, *args)
    finally:
        logger.removeHandler(handler)
    return out.getvalue().splitlines()


@pytest.mark.parametrize("value", [FORGED, 'S1" verdict="PASS', "a=b", "tab\there", "\u2028event=forged",
                                   "\x00\x1b[31m", "", "back\\slash"])
def test_escape_keeps_a_value_one_token(value: str) -> None:
    out = escape(value)
    assert "\n" not in out and "\r" not in out and out.isprintable()
    if out.startswith('"'):
        assert json.loads(out) == value  # JSON string escapes, reversible
    else:
        assert out == value and " " not in out and "=" not in out


def test_safe_values_stay_as_they_are() -> None:
    assert [escape(v) for v in ("S042", "张三-07", "127.0.0.1", "3.5", "a:b/c")] == \
        ["S042", "张三-07", "127.0.0.1", "3.5", "a:b/c"]


def test_text_format_cannot_be_forged() -> None:
    lines = emit("text", "event=staff_override_request verdict=%s staff=%s ok=%s", "DENY", FORGED, True)
    assert len(lines) == 1
    assert 'staff="x\\nevent=forged verdict=PASS" ok=True' in lines[0] and " verdict=DENY " in lines[0]


def test_json_format_cannot_be_forged() -> None:
    lines = emit("json", "event=staff_override_request verdict=%s staff=%s ok=%s", "DENY", FORGED, True)
    assert len(lines) == 1
    rec = json.loads(lines[0])
    assert rec["event"] == "staff_override_request" and rec["verdict"] == "DENY" and rec["staff"] == FORGED


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_repr_numbers_and_mappings(fmt: str) -> None:
    lines = emit(fmt, "event=e err=%r n=%d t=%.1f", "disk full\nevent=forged", 3, 36.55)
    assert len(lines) == 1 and "\nevent" not in lines[0]
    if fmt == "json":
        rec = json.loads(lines[0])
        assert rec["err"] == "disk full\nevent=forged" and rec["n"] == "3" and rec["t"] == "36.5"
    out = emit(fmt, "event=e a=%(a)s", {"a": FORGED})
    assert len(out) == 1 and "event=forged verdict" not in out[0].replace('"x\\nevent=forged verdict=PASS"', "")


def test_a_control_character_in_the_template_itself_is_escaped() -> None:
    lines = emit("text", "event=e note=two\nlines")
    assert len(lines) == 1 and lines[0].endswith("note=two\\nlines")
