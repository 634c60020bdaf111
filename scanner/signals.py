"""Lane states -> what the LEDs, buzzer and relay do.

Distinct by colour *and* by rhythm *and* by sound, so staff tell them apart in sunlight and
in traffic noise without reading a screen: PASS is steady green with one short beep, DENY
steady red with a long alarm, REVIEW alternating red/green with two beeps, FAULT slow red
blinking with three short beeps, READY a slow green heartbeat. The buzzer always has a finite
count: a stuck buzzer at a village gate at night is its own incident.
"""

from __future__ import annotations

from drivers.base import Blink, Pattern
from scanner.models import Verdict

READY = Pattern("READY", green=Blink(0.1, 1.9))
PASS = Pattern("PASS", green=Blink(), buzzer=Blink(0.15, 0.0, n=1))
DENY = Pattern("DENY", red=Blink(), buzzer=Blink(1.5, 0.0, n=1))
REVIEW = Pattern("REVIEW", green=Blink(0.3, 0.3), red=Blink(inverted_of="green"),
                 buzzer=Blink(0.15, 0.15, n=2))
FAULT = Pattern("FAULT", red=Blink(0.5, 0.5), buzzer=Blink(0.1, 0.1, n=3))
HINT = Pattern("HINT", red=Blink(0.1, 0.1, n=2))  # "this is not a health code": no alarm

PATTERNS = {p.name: p for p in (READY, PASS, DENY, REVIEW, FAULT, HINT)}


def for_verdict(verdict: Verdict, relay_s: float | None = None) -> Pattern:
    """The pattern for a decision; PASS also pulses the gate relay when one is fitted."""
    if verdict is Verdict.PASS:
        return Pattern(PASS.name, PASS.green, PASS.red, PASS.buzzer, relay_s=relay_s)
    return {Verdict.DENY: DENY, Verdict.REVIEW: REVIEW}[verdict]
