"""A producer that delivers nothing while Kafka answers a new client is replaced, and what it held
goes out on the new one (CI, librdkafka 2.16 after a broker restart at load 12: the worker's
producer never connected again; every result timed out and was produced again on the same client)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from worker_twins import producer, task_message, turn, wait_sent

from processor._engine import worker as worker_module
from processor._engine.worker import ActivityWorker, delivery_action, producer_wedged
from processor.exceptions import KafkaUnavailableError


def test_the_wedge_rule_needs_pending_records_and_the_full_silence() -> None:
    assert not producer_wedged(0, 1_000.0, 30.0), "nothing to deliver is idle, not wedged"
    assert not producer_wedged(5, 29.9, 30.0)
    assert producer_wedged(1, 30.0, 30.0)


def test_a_record_withdrawn_by_a_replacement_is_resent_without_spending_an_attempt() -> None:
    from confluent_kafka import KafkaError
    for code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
        assert delivery_action(code, "result", attempts=5) == "resend"


def _reachable(calls: list[str], up: bool) -> Callable[..., set[str]]:
    def probe(bootstrap: str, timeout: float = 5.0) -> set[str]:
        calls.append(bootstrap)
        if not up:
            raise KafkaUnavailableError(f"cannot reach Kafka at {bootstrap}")
        return set()
    return probe


def test_a_wedged_producer_is_replaced_and_its_records_delivered_by_the_new_one(
        make_worker: Callable[..., ActivityWorker], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(worker_module, "require_reachable", _reachable(calls, up=True))
    w = make_worker(producer_watchdog_s=30)
    old = producer(w)
    old.wedged = True
    w._start(task_message(0, 5, "sized", 3))
    wait_sent(w, 1)
    t0 = w._delivered_at
    w._check_producer(t0 + 29)
    assert producer(w) is old and calls == [], "within the watchdog nothing is probed or replaced"
    w._check_producer(t0 + 30.5)
    new = producer(w)
    assert new is not old and calls == ["unused:9092"]
    deadline = time.monotonic() + 10
    while not new.sent and time.monotonic() < deadline:  # purge reports served on the side thread, then resent
        turn(w)
        time.sleep(0.01)
    assert old.purged == 1
    assert [s.record()["result"]["data"] for s in new.sent] == [b'"xxx"'], "the same result, on the new producer"
    turn(w)
    turn(w)
    assert w.offsets.committable() == {0: 6}, "the task offset settles once the new producer delivered"


def test_no_replacement_while_kafka_itself_is_down_and_a_look_again_every_10_s(
        make_worker: Callable[..., ActivityWorker], monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(worker_module, "require_reachable", _reachable(calls, up=False))
    w = make_worker(producer_watchdog_s=30)
    old = producer(w)
    old.wedged = True
    w._start(task_message(0, 5, "sized", 3))
    wait_sent(w, 1)
    t0 = w._delivered_at
    w._check_producer(t0 + 31)
    w._check_producer(t0 + 35)
    assert producer(w) is old and len(calls) == 1, "an outage: the same client waits for the broker"
    w._check_producer(t0 + 41.5)
    assert producer(w) is old and len(calls) == 2
    monkeypatch.setattr(worker_module, "require_reachable", _reachable(calls, up=True))
    w._check_producer(t0 + 52)
    assert producer(w) is not old, "Kafka answers a new client: now the old one is wedged"


def test_an_idle_producer_is_never_probed(make_worker: Callable[..., ActivityWorker],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    monkeypatch.setattr(worker_module, "require_reachable", _reachable(calls, up=True))
    w = make_worker(producer_watchdog_s=30)
    old = producer(w)
    for dt in (0.0, 100.0, 10_000.0):
        w._check_producer(w._delivered_at + dt)
    assert producer(w) is old and calls == []
