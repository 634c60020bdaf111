"""GpioIndicators on gpiozero's MockFactory: pin levels, state order, cancellation, errors.

Timing is never asserted strictly (CI machines stall): tests wait generously and then check
the ORDER of pin states, or sample states() where exactness is the point.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest
from gpiozero import LED
from gpiozero.pins.mock import MockFactory
from waiting import wait_until

from drivers.base import Blink, IndicatorError, Indicators, Pattern
from drivers.indicators import GpioIndicators, mock_pin_factory, validate_pattern

GREEN, RED, BUZZER, RELAY = 17, 27, 22, 23
FAST = Blink(on_s=0.02, off_s=0.02)
REVIEW = Pattern("review", green=FAST, red=Blink(inverted_of="green"))


@pytest.fixture
def factory() -> Iterator[MockFactory]:
    pins = mock_pin_factory()
    yield pins
    pins.reset()  # drop pins and reservations: MockFactory state must not leak between tests


@pytest.fixture
def lights(factory: MockFactory) -> Iterator[GpioIndicators]:
    with GpioIndicators(GREEN, RED, BUZZER, RELAY, pin_factory=factory) as ind:
        yield ind




def levels(factory: MockFactory, pin: int) -> list[bool]:
    return [s.state for s in factory.pin(pin).states]


def alternating(states: list[bool]) -> bool:
    return all(a != b for a, b in zip(states, states[1:], strict=False))


def test_satisfies_the_protocol_and_starts_dark(lights: GpioIndicators,
                                                factory: MockFactory) -> None:
    assert isinstance(lights, Indicators)
    assert lights.states() == {"green": False, "red": False, "buzzer": False, "relay": False}
    assert [factory.pin(p).state for p in (GREEN, RED, BUZZER, RELAY)] == [False] * 4


def test_steady_patterns_set_pins_at_once(lights: GpioIndicators, factory: MockFactory) -> None:
    lights.show(Pattern("pass", green=Blink()))
    assert factory.pin(GREEN).state is True and factory.pin(RED).state is False
    lights.show(Pattern("deny", red=Blink()))
    assert factory.pin(GREEN).state is False and factory.pin(RED).state is True
    assert lights.states() == {"green": False, "red": True, "buzzer": False, "relay": False}


def test_blinking_alternates_states(lights: GpioIndicators, factory: MockFactory) -> None:
    lights.show(Pattern("ready", green=FAST))
    assert wait_until(lambda: len(factory.pin(GREEN).states) >= 7)
    lights.off()
    states = levels(factory, GREEN)
    factory.pin(GREEN).assert_states([False, True, False, True, False, True])
    assert alternating(states) and states[-1] is False


def test_blink_with_n_stops_by_itself(lights: GpioIndicators, factory: MockFactory) -> None:
    lights.show(Pattern("count", red=Blink(0.01, 0.01, n=3)))
    assert wait_until(lambda: len(factory.pin(RED).states) == 7)
    time.sleep(0.1)
    assert levels(factory, RED) == [False, True, False, True, False, True, False]


def test_review_red_is_the_exact_negation_of_green(lights: GpioIndicators,
                                                   factory: MockFactory) -> None:
    lights.show(REVIEW)
    samples = []
    deadline = time.monotonic() + 0.3
    while time.monotonic() < deadline:
        samples.append(lights.states())
        time.sleep(0.003)
    assert all(s["green"] != s["red"] for s in samples)
    assert {s["green"] for s in samples} == {True, False}  # it really alternated
    lights.show(Pattern("idle"))
    green, red = levels(factory, GREEN), levels(factory, RED)
    assert alternating(green) and alternating(red) and len(red) >= 4
    assert green[:3] == [False, True, False] and red[:3] == [False, True, False]
    assert factory.pin(GREEN).state is False and factory.pin(RED).state is False


def test_follower_of_a_steady_or_absent_leader(lights: GpioIndicators,
                                               factory: MockFactory) -> None:
    lights.show(Pattern("g", green=Blink(), red=Blink(inverted_of="green")))
    assert (factory.pin(GREEN).state, factory.pin(RED).state) == (True, False)
    lights.show(Pattern("r", red=Blink(inverted_of="green")))
    assert (factory.pin(GREEN).state, factory.pin(RED).state) == (False, True)
    lights.show(Pattern("swap", green=Blink(inverted_of="red"), red=Blink()))
    assert (factory.pin(GREEN).state, factory.pin(RED).state) == (False, True)


def test_buzzer_gets_a_finite_count(lights: GpioIndicators, factory: MockFactory) -> None:
    lights.show(Pattern("deny", red=Blink(), buzzer=Blink(0.01, 0.01, n=2)))
    assert wait_until(lambda: len(factory.pin(BUZZER).states) == 5)
    time.sleep(0.1)
    assert levels(factory, BUZZER) == [False, True, False, True, False]
    assert lights.states()["buzzer"] is False and lights.states()["red"] is True


@pytest.mark.parametrize("bad", [Blink(), Blink(0.1, 0.1), Blink(0.1, 0.1, n=None),
                                 Blink(inverted_of="green"), Blink(0.1, 0.1, n=0)])
def test_endless_or_odd_buzzer_is_rejected_and_old_pattern_kept(
        lights: GpioIndicators, factory: MockFactory, bad: Blink) -> None:
    lights.show(Pattern("pass", green=Blink()))
    with pytest.raises(ValueError, match="buzzer"):
        lights.show(Pattern("bad", buzzer=bad))
    assert factory.pin(GREEN).state is True and factory.pin(BUZZER).state is False


@pytest.mark.parametrize("pattern", [
    Pattern("self", red=Blink(inverted_of="red")),
    Pattern("both", green=Blink(inverted_of="red"), red=Blink(inverted_of="green")),
    Pattern("unknown", red=Blink(inverted_of="amber")),
    Pattern("zero on", green=Blink(0, 0.5)),
    Pattern("relay", relay_s=0),
])
def test_invalid_patterns(pattern: Pattern) -> None:
    with pytest.raises(ValueError):
        validate_pattern(pattern)


def test_relay_pulses_once(lights: GpioIndicators, factory: MockFactory) -> None:
    lights.show(Pattern("pass", green=Blink(), relay_s=0.05))
    assert wait_until(lambda: factory.pin(RELAY).state is True)
    assert wait_until(lambda: len(factory.pin(RELAY).states) == 3)
    time.sleep(0.1)
    assert levels(factory, RELAY) == [False, True, False]
    assert factory.pin(GREEN).state is True


def test_new_pattern_cancels_blinking_and_relay(lights: GpioIndicators,
                                                factory: MockFactory) -> None:
    lights.show(Pattern("pass", green=FAST, relay_s=5.0))
    assert wait_until(lambda: factory.pin(RELAY).state is True)
    lights.show(Pattern("deny", red=Blink()))
    assert factory.pin(RELAY).state is False and factory.pin(GREEN).state is False
    count = len(factory.pin(GREEN).states)
    time.sleep(0.1)
    assert len(factory.pin(GREEN).states) == count  # the blink thread is gone


def test_off_stops_everything(lights: GpioIndicators, factory: MockFactory) -> None:
    lights.show(Pattern("busy", green=FAST, red=Blink(inverted_of="green"),
                        buzzer=Blink(0.5, 0.1, n=3), relay_s=5.0))
    time.sleep(0.05)
    lights.off()
    assert lights.states() == {"green": False, "red": False, "buzzer": False, "relay": False}
    counts = [len(factory.pin(p).states) for p in (GREEN, RED, BUZZER, RELAY)]
    time.sleep(0.1)
    assert [len(factory.pin(p).states) for p in (GREEN, RED, BUZZER, RELAY)] == counts


def test_active_low_outputs(factory: MockFactory) -> None:
    with GpioIndicators(GREEN, RED, BUZZER, RELAY, active_high=False, relay_active_high=False,
                        pin_factory=factory) as ind:
        assert factory.pin(GREEN).state is True and factory.pin(RELAY).state is True  # idle
        ind.show(Pattern("pass", green=Blink(), relay_s=5.0))
        assert factory.pin(GREEN).state is False
        assert wait_until(lambda: factory.pin(RELAY).state is False)
        assert factory.pin(BUZZER).state is False  # buzzer stays active-high
        assert ind.states()["green"] is True and ind.states()["relay"] is True


def test_close_releases_pins_and_is_idempotent(factory: MockFactory) -> None:
    first = GpioIndicators(GREEN, RED, BUZZER, RELAY, pin_factory=factory)
    first.show(REVIEW)
    first.close()
    first.close()
    assert first.states() == dict.fromkeys(("green", "red", "buzzer", "relay"), False)
    with pytest.raises(IndicatorError, match="closed"):
        first.show(REVIEW)
    with GpioIndicators(GREEN, RED, BUZZER, RELAY, pin_factory=factory) as second:
        second.show(Pattern("pass", green=Blink()))
        assert factory.pin(GREEN).state is True


def test_without_relay(factory: MockFactory) -> None:
    with GpioIndicators(GREEN, RED, BUZZER, pin_factory=factory) as ind:
        ind.show(Pattern("pass", green=Blink(), relay_s=1.0))
        assert ind.states() == {"green": True, "red": False, "buzzer": False, "relay": False}


def test_pin_in_use_names_the_pin_and_the_fix(factory: MockFactory) -> None:
    other = LED(RED, pin_factory=factory)
    with pytest.raises(IndicatorError) as err:
        GpioIndicators(GREEN, RED, BUZZER, pin_factory=factory)
    assert "GPIO27 is already in use" in str(err.value) and "[indicators]" in str(err.value)
    other.close()
    # the green LED claimed before the failure was released again
    with GpioIndicators(GREEN, RED, BUZZER, pin_factory=factory):
        pass


def test_same_pin_twice_and_invalid_pin(factory: MockFactory) -> None:
    with pytest.raises(IndicatorError, match="GPIO17"):
        GpioIndicators(GREEN, GREEN, BUZZER, pin_factory=factory)
    with pytest.raises(IndicatorError, match="BCM") as err:
        GpioIndicators(GREEN, RED, 99, pin_factory=factory)
    assert "buzzer_pin" in str(err.value)
