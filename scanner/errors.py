"""One exception root for the scanner. Leaves also subclass the builtin they resemble, so a
caller can catch `ValueError` without knowing our names (the gpiozero `exc.py` style)."""

from __future__ import annotations


class ScannerError(Exception):
    """Root of every error the scanner raises on purpose. str(e) is a one-line message that
    names the fix; the CLI prints it and exits non-zero, never a traceback."""


class ConfigError(ScannerError, ValueError):
    """The config file is invalid. `problems` holds every problem, one line each."""

    def __init__(self, problems: list[str], path: str | None = None) -> None:
        self.problems = list(problems)
        self.path = path
        head = f"{path}: " if path else ""
        super().__init__(head + "; ".join(self.problems))


class CredentialError(ScannerError, ValueError):
    """A credential tool (keygen, issue, trust list) was given something it cannot use."""


class TrustDataError(ScannerError, ValueError):
    """A trust list / status list / policy bundle is missing, unsigned, tampered or rolled back."""


class StoreError(ScannerError, OSError):
    """The outbox database cannot be opened or written (unwritable directory, full disk)."""
