"""One-way passage: pair the codes and the temperature of one person, in either order.

Pure state machine with the caller's monotonic clock. A passage starts with the first input
(a code, even a QR that is no credential, or a finished measurement) and ends as soon as it
has everything the checkpoint needs, as soon as a credential alone refuses the person, or when
the pairing window runs out (then the missing part is the reason: NO_CODE, TEMP_UNAVAILABLE,
RESIDENCE_MISSING). After a decision the same code, and any measurement, are ignored for the
cooldown so one person is one record.

One person, one record (docs/credentials.md section 5): all codes of one frame are fed together
(`on_codes`), so a red health code shown beside a residence code decides once with both; and
after a decision (early, when a credential alone refused the person, or complete), codes other
than a new health code that arrive within the cooldown (after a DENY: at least the pairing
window) belong to the decided passage and open nothing: the residence code a person shows out of
habit after the gate already decided, or the wrist a refused person still holds out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from scanner import policy
from scanner.models import Decision, Measurement
from scanner.policy import CheckpointRules


@dataclass(frozen=True)
class Outcome:
    decision: Decision
    verifications: tuple[Any, ...]
    measurement: Measurement | None
    started_mono: float
    decided_mono: float
    last_input_mono: float
    timed_out: bool


@dataclass
class _Open:
    started: float
    deadline: float
    last_input: float
    verifications: list[Any] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    measurement: Measurement | None = None


class Passage:
    def __init__(self, rules: CheckpointRules, window_s: float = 10.0, cooldown_s: float = 3.0) -> None:
        self.rules = rules
        self.window_s = window_s
        self.cooldown_s = cooldown_s
        self._open: _Open | None = None
        self._recent: dict[str, float] = {}  # code key -> decided at
        self._last_decision: float | None = None
        self._absorb_until = 0.0
        self.absorbed = 0  # codes taken into the passage just decided (for the log and tests)

    @property
    def active(self) -> bool:
        return self._open is not None

    def _start(self, t: float) -> _Open:
        if self._open is None:
            self._open = _Open(started=t, deadline=t + self.window_s, last_input=t)
        return self._open

    def _in_cooldown(self, t: float) -> bool:
        """Inputs that are not a new health code still belong to the decided passage: for the
        cooldown after any decision, and after a DENY for the pairing window too (at least):
        a refused person lingers, shows the residence code after switching apps, holds out a
        wrist; none of that may open a second passage that staff could then pass."""
        return self._last_decision is not None and t < self._absorb_until

    def on_code(self, t: float, key: str, verification: Any) -> tuple[Outcome | None, bool]:
        """Feed one newly seen code: `on_codes` with one item."""
        outcome, accepted = self.on_codes(t, [(key, verification)])
        return outcome, bool(accepted)

    def on_codes(self, t: float, items: list[tuple[str, Any]]) -> tuple[Outcome | None, list[str]]:
        """Feed the newly seen codes of one frame together. `key` identifies a payload (a hash,
        never the text). Returns (outcome if the passage ended, keys accepted). A repeat within
        the cooldown, or a code absorbed into the passage just decided, is not accepted:
        the caller neither signals nor records it."""
        self._recent = {k: d for k, d in self._recent.items() if t - d < self.cooldown_s}
        accepted: list[str] = []
        for key, v in items:
            if key in self._recent or (self._open and key in self._open.keys):
                continue
            if self._open is None and self._belongs_to_last(t, v):
                self._recent[key] = t
                self.absorbed += 1
                continue
            p = self._start(t)
            p.keys.add(key)
            p.verifications.append(v)
            p.last_input = t
            accepted.append(key)
        if not accepted:
            return None, accepted
        return self._maybe_finish(t), accepted

    def _belongs_to_last(self, t: float, v: Any) -> bool:
        """Within the cooldown after a decision only a new health code starts a new passage: the
        residence code (or a payment code) that the same person shows next does not."""
        if not self._in_cooldown(t):
            return False
        return not (policy.is_credential(v) and v.kind in ("health", "dcc", None))

    def on_measurement(self, t: float, m: Measurement) -> tuple[Outcome | None, bool]:
        if self._in_cooldown(t) and self._open is None:
            return None, False  # the person just decided is still at the sensor
        p = self._start(t)
        if p.measurement is not None and p.measurement.status.value == "OK":
            return None, False  # keep the first good reading of this passage
        p.measurement = m
        p.last_input = t
        return self._maybe_finish(t), True

    def tick(self, t: float) -> Outcome | None:
        if self._open is not None and t >= self._open.deadline:
            return self._finish(t, timed_out=True)
        return None

    def needs(self) -> list[str]:
        """What the open passage still waits for: prompts for the kiosk."""
        p = self._open
        if p is None:
            return []
        creds = [v for v in p.verifications if policy.is_credential(v)]
        out = []
        if not any(v.kind in ("health", None) for v in creds):
            out.append("SHOW_CODE")
        if self.rules.requires_residence and not any(v.kind == "residence" for v in creds):
            out.append("SHOW_RESIDENCE")
        if p.measurement is None:
            out.append("HOLD_WRIST")
        return out

    def _maybe_finish(self, t: float) -> Outcome | None:
        p = self._open
        assert p is not None
        creds = [v for v in p.verifications if policy.is_credential(v)]
        if creds and policy.early_deny(creds, self.rules):
            return self._finish(t, timed_out=False, early=True)
        if not self.needs():
            return self._finish(t, timed_out=False)
        return None

    def _finish(self, t: float, *, timed_out: bool, early: bool = False) -> Outcome:
        p = self._open
        assert p is not None
        self._open = None
        decision = policy.decide(p.verifications, p.measurement, self.rules, early=early)
        self._last_decision = t
        hold = max(self.cooldown_s, self.window_s) if decision.verdict.value == "DENY" else self.cooldown_s
        self._absorb_until = t + hold
        for k in p.keys:
            self._recent[k] = t
        return Outcome(decision, tuple(p.verifications), p.measurement, p.started, t,
                       p.last_input, timed_out)
