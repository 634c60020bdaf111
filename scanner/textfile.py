"""Text files a person saved by hand (the config, a calibration CSV, a PIN or token file):
UTF-8, with or without a byte-order mark.

Why: Windows Notepad and many Chinese editors save UTF-8 with a leading BOM (EF BB BF), which
TOML and CSV readers take as part of the first line ("line 1: syntax error" on a line that
looks right); Excel and older editors on a Chinese Windows save GBK/GB18030, and Notepad's
"Unicode" is UTF-16. The BOM is accepted and dropped (Unicode 15.0 section 23.8: U+FEFF at the
start of a stream is a signature, not content); any other encoding is refused with the line of
the first byte that is not UTF-8 and the fix "save it as UTF-8".
"""

from __future__ import annotations

import codecs
from pathlib import Path

from scanner.errors import ScannerError

SAVE_AS_UTF8 = "save it as UTF-8 / 请另存为 UTF-8 编码 (Notepad: Save As, Encoding: UTF-8)"


class NotUtf8Error(ScannerError, ValueError):
    """The bytes are not UTF-8 text. `line` (1-based) is where the first bad byte is, 0 when the
    whole file is another encoding (UTF-16); `problem` is the one-line text without the file
    name, for callers that put `line N:` or the file name in front."""

    def __init__(self, line: int, problem: str) -> None:
        self.line = line
        self.problem = problem
        super().__init__(f"line {line}: {problem}" if line else problem)


def _utf16_without_bom(raw: bytes) -> bool:
    """UTF-16 saved without a BOM: mostly-ASCII text then has a NUL in every other byte (odd
    positions for little-endian, even for big-endian) and none in the others."""
    if b"\x00" not in raw or len(raw) < 4:
        return False
    even, odd = raw[0::2], raw[1::2]
    return any(a.count(0) == 0 and b.count(0) * 2 >= len(b) for a, b in ((even, odd), (odd, even)))


def decode_text(raw: bytes) -> str:
    """`raw` as text: UTF-8 with an optional leading BOM (dropped). NotUtf8Error for UTF-16
    (a UTF-16 BOM, or none and NULs in every other byte) and for any byte sequence that is not
    UTF-8, naming GBK when the bytes decode as GB18030. Line endings are left as they are (CRLF stays CRLF)."""
    if raw.startswith(codecs.BOM_UTF8):
        raw = raw[len(codecs.BOM_UTF8):]
    elif raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)) or _utf16_without_bom(raw):
        raise NotUtf8Error(0, f"saved as UTF-16 (Notepad calls it \"Unicode\"), not UTF-8; fix: {SAVE_AS_UTF8}")
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        line = raw.count(b"\n", 0, e.start) + 1
        guess = ""
        try:
            raw.decode("gb18030")
            guess = ", probably GBK (the Chinese Windows encoding)"
        except UnicodeDecodeError:
            pass
        raise NotUtf8Error(line, f"not UTF-8 text (byte 0x{raw[e.start]:02X}{guess}); fix: {SAVE_AS_UTF8}") from None


def read_text(path: str | Path) -> str:
    """The file's text as `decode_text` gives it. OSError and NotUtf8Error propagate."""
    return decode_text(Path(path).read_bytes())
