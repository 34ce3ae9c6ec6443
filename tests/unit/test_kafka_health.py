"""The rule every client watchdog shares (processor/_kafka/health.py): a client is wedged once it
has kept failing for the watchdog's time while Kafka answered a new client; an outage never counts."""

from __future__ import annotations

from processor._kafka.health import WedgeClock


class Kafka:
    def __init__(self) -> None:
        self.up = True
        self.probes = 0

    def __call__(self) -> bool:
        self.probes += 1
        return self.up


def test_wedged_after_the_full_time_failing_with_kafka_answering_then_the_clock_restarts() -> None:
    kafka = Kafka()
    clock = WedgeClock(20, kafka, probe_every_s=5)
    assert not clock.failing(100)
    assert not clock.failing(119.9)
    assert clock.failing(120) and clock.wedged_for == 20
    assert not clock.failing(121), "a replacement gets its own 20 s"
    assert clock.failing(140.5)


def test_an_outage_stops_the_clock_and_a_success_resets_it() -> None:
    kafka = Kafka()
    clock = WedgeClock(20, kafka, probe_every_s=5)
    clock.failing(0)
    kafka.up = False
    assert not clock.failing(15) and not clock.failing(100), "Kafka down: the client is not to blame"
    kafka.up = True
    assert not clock.failing(110), "the clock starts again when Kafka answers"
    assert not clock.failing(125)
    clock.ok()
    assert not clock.failing(131)
    assert not clock.failing(150)
    assert clock.failing(151)


def test_began_counts_a_call_that_timed_out_from_when_it_was_made() -> None:
    clock = WedgeClock(20, Kafka(), probe_every_s=5)
    assert not clock.failing(10, began=0)
    assert clock.failing(21, began=11), "failing since 0, the first call's start"


def test_kafka_is_probed_at_most_every_probe_interval() -> None:
    kafka = Kafka()
    clock = WedgeClock(20, kafka, probe_every_s=5)
    for t in range(0, 30):
        clock.failing(t / 2)
    assert kafka.probes == 3  # at 0, 5 and 10 of 0..14.5


def test_after_an_outage_the_clock_starts_when_kafka_answers_not_when_the_call_began() -> None:
    kafka = Kafka()
    kafka.up = False
    clock = WedgeClock(15, kafka, probe_every_s=5)
    assert not clock.failing(100, began=0)
    kafka.up = True
    assert not clock.failing(106, began=0), "a client that failed through the outage gets its 15 s now"
    assert not clock.failing(120, began=0)
    assert clock.failing(121, began=0)
