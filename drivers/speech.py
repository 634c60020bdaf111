"""Spoken prompts through espeak-ng (Mandarin voice "cmn"), where it is installed.

Fire and forget: a new utterance cuts the previous one off, and a missing espeak-ng or sound
card only disables speech (logged once); it never blocks or stops the lane.
"""

from __future__ import annotations

import logging
import shutil
import subprocess

log = logging.getLogger(__name__)


class Speaker:
    def __init__(self, voice: str = "cmn", binary: str = "espeak-ng", extra_args: tuple[str, ...] = ()) -> None:
        self.binary = shutil.which(binary)
        self.voice = voice
        self.extra_args = extra_args
        self._proc: subprocess.Popen[bytes] | None = None
        if not self.binary:
            log.warning("event=speech_disabled reason='espeak-ng not installed (apt-get install espeak-ng)'")

    @property
    def available(self) -> bool:
        return self.binary is not None

    def say(self, text: str) -> None:
        if not self.binary:
            return
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
        try:
            self._proc = subprocess.Popen([self.binary, "-v", self.voice, *self.extra_args, text],
                                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        except OSError as e:
            log.warning("event=speech_failed error=%r", str(e))
            self.binary = None

    def close(self) -> None:
        if self._proc and self._proc.poll() is None:
            self._proc.terminate()
