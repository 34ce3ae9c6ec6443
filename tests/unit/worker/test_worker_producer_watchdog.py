"""A producer that delivers nothing while Kafka answers a new client is replaced, and what it held
goes out on the new one (CI, librdkafka 2.16 after a broker restart at load 12: the worker's
producer never connected again; every result timed out and was produced again on the same client)."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import KafkaError
from worker_twins import producer, task_message, turn, wait_sent

from processor._engine import worker as worker_module
from processor._engine.worker import ActivityWorker, delivery_action


def test_a_record_withdrawn_by_a_replacement_is_resent_without_spending_an_attempt() -> None:
    for code in (KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT):
        assert delivery_action(code, "result", attempts=5) == "resend"


def _kafka(monkeypatch: pytest.MonkeyPatch, up: bool) -> list[str]:
    calls: list[str] = []

    def probe(bootstrap: str) -> bool:
        calls.append(bootstrap)
        return up

    monkeypatch.setattr(worker_module, "kafka_answers", probe)
    return calls


def _wedged_with_one_result(make_worker: Callable[..., ActivityWorker]) -> tuple[ActivityWorker, float]:
    w = make_worker(producer_watchdog_s=15)
    producer(w).wedged = True
    w._start(task_message(0, 5, "sized", 3))
    wait_sent(w, 1)
    return w, w.settler.delivered_at


def test_a_wedged_producer_is_replaced_and_its_records_delivered_by_the_new_one(
        make_worker: Callable[..., ActivityWorker], monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _kafka(monkeypatch, up=True)
    w, t0 = _wedged_with_one_result(make_worker)
    old = producer(w)
    w._check_producer(t0 + 4)
    assert calls == [], "a few seconds without a delivery is not failing yet: nothing probed"
    w._check_producer(t0 + 19)
    assert producer(w) is old and len(calls) == 1, "failing 14 s of the 15 s watchdog"
    w._check_producer(t0 + 20.5)
    new = producer(w)
    assert new is not old
    deadline = time.monotonic() + 10
    while not new.sent and time.monotonic() < deadline:  # purge reports served on the side thread, then resent
        turn(w)
        time.sleep(0.01)
    assert old.purged == 1
    assert [s.record()["result"]["data"] for s in new.sent] == [b'"xxx"'], "the same result, on the new producer"
    turn(w)
    turn(w)
    assert w.offsets.committable() == {0: 6}, "the task offset settles once the new producer delivered"


def test_no_replacement_while_kafka_itself_is_down(make_worker: Callable[..., ActivityWorker],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _kafka(monkeypatch, up=False)
    w, t0 = _wedged_with_one_result(make_worker)
    old = producer(w)
    for dt in (19.0, 21.0, 60.0, 300.0):
        w._check_producer(t0 + dt)
    assert producer(w) is old, "an outage: the same client waits for the broker"
    assert len(calls) == 3, "probed at most every 5 s"
    _kafka(monkeypatch, up=True)
    w._check_producer(t0 + 306)
    assert producer(w) is old, "Kafka is back: the producer gets its 15 s to reconnect"
    w._check_producer(t0 + 321.5)
    assert producer(w) is not old, "Kafka answers a new client and this one has delivered nothing since"


def test_an_idle_producer_is_never_probed(make_worker: Callable[..., ActivityWorker],
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    calls = _kafka(monkeypatch, up=True)
    w = make_worker(producer_watchdog_s=15)
    old = producer(w)
    for dt in (0.0, 100.0, 10_000.0):
        w._check_producer(w.settler.delivered_at + dt)
    assert producer(w) is old and calls == []


def test_delivered_heartbeats_count_as_the_producer_working(make_worker: Callable[..., ActivityWorker],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Long activities that only heartbeat keep records pending all the time; their deliveries
    show the producer is fine (it was replaced, healthy, every 20 s)."""
    _kafka(monkeypatch, up=True)
    w = make_worker(producer_watchdog_s=15)
    old = producer(w)
    w._start(task_message(0, 5, "beating", 2.0))
    t0 = w.settler.delivered_at
    deadline = time.monotonic() + 5
    while w.settler.delivered_at == t0 and time.monotonic() < deadline:
        old.poll(0)
        time.sleep(0.01)
    assert w.settler.delivered_at > t0, "a delivered heartbeat moved the producer's last delivery"
