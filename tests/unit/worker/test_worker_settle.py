"""What settles an activity attempt, and what becomes of its task offset (issue 6, defect 3):
results, failures, heartbeats and DLQ copies are made to fit the record limit where they are
made, and a settling record the broker does not take is retried, replaced or given up -- never
left holding the partition's commits. Pure rules first, then the worker over the Kafka twins."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import KafkaError
from worker_twins import DLQ, FakeMessage, consumer, producer, task_message, turn, wait_sent

from processor._codec import default_codec
from processor._engine.worker import (
    COMPLETED,
    FAILED,
    HEARTBEAT,
    MAX_DELIVERY_ATTEMPTS,
    ActivityWorker,
    Kind,
    delivery_action,
    heartbeat_value,
    refused_value,
    settle_value,
)
from processor._limits import MAX_RECORD_BYTES, PAYLOAD_TOO_LARGE, PRODUCER_MESSAGE_MAX_BYTES, dlq_value
from processor.exceptions import ApplicationError

CODEC = default_codec()
T0 = 1_700_000_000_000


def _task(**over: Any) -> dict[str, Any]:
    task = {"workflow_id": "w-1", "activity_seq": 3, "attempt": 2, "activity_type": "big", "task_queue": "default",
            "args": [], "scheduled_time_ms": T0, "start_to_close_timeout_ms": None, "heartbeat_timeout_ms": None,
            "workflow_type": "BigResult"}
    return {**task, **over}


# -- pure rules --------------------------------------------------------------------------------


def test_a_result_that_fits_completes_the_attempt() -> None:
    name, value = settle_value(CODEC, _task(), "x" * 1000, None)
    assert name == COMPLETED
    assert CODEC.decode_as(value, COMPLETED)["result"]["data"] == b'"' + b"x" * 1000 + b'"'


def test_an_oversized_result_fails_the_attempt_for_good() -> None:
    name, value = settle_value(CODEC, _task(), "x" * 2_000_000, None)
    assert name == FAILED and len(value) <= MAX_RECORD_BYTES
    rec = CODEC.decode_as(value, FAILED)
    assert (rec["workflow_id"], rec["activity_seq"], rec["attempt"]) == ("w-1", 3, 2)
    failure = rec["failure"]
    assert failure["type"] == PAYLOAD_TOO_LARGE and failure["non_retryable"] is True
    assert "the result of activity 'big' (seq 3, attempt 2) of workflow 'w-1' is 2,000," in failure["message"]
    assert "record limit" in failure["message"] and "DP_MAX_RECORD_BYTES" in failure["message"]


def test_an_unserialisable_result_fails_the_attempt() -> None:
    name, value = settle_value(CODEC, _task(), object(), None)
    assert name == FAILED
    assert CODEC.decode_as(value, FAILED)["failure"]["type"] == "PayloadError"


def test_a_huge_exception_is_cut_to_fit() -> None:
    inner = ApplicationError("m" * 900_000, type="Inner")
    try:
        raise RuntimeError("r" * 900_000) from inner
    except RuntimeError as exc:
        name, value = settle_value(CODEC, _task(), None, exc)
    assert name == FAILED and len(value) <= MAX_RECORD_BYTES
    failure = CODEC.decode_as(value, FAILED)["failure"]
    assert failure["type"] == "RuntimeError" and failure["message"].endswith("characters cut]")
    assert failure["message"].startswith("rrrr")


def test_a_result_the_broker_refuses_as_too_large_becomes_a_non_retryable_failure() -> None:
    value = refused_value(CODEC, _task(), 900_000, KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
    failure = CODEC.decode_as(value, FAILED)["failure"]
    assert failure["type"] == PAYLOAD_TOO_LARGE and failure["non_retryable"] is True
    assert "900,000 bytes" in failure["message"] and "refused by the broker" in failure["message"]
    other = CODEC.decode_as(refused_value(CODEC, _task(), 10, KafkaError(KafkaError.INVALID_RECORD)), FAILED)
    assert other["failure"]["type"] == "ResultNotDelivered" and other["failure"]["non_retryable"] is False


def test_oversized_heartbeat_details_are_dropped_not_raised(caplog: pytest.LogCaptureFixture) -> None:
    small = CODEC.decode_as(heartbeat_value(CODEC, _task(), ("50%",)), HEARTBEAT)
    assert small["details"]["data"] == b'["50%"]'
    value = heartbeat_value(CODEC, _task(), ("y" * 2_000_000,))
    assert len(value) <= MAX_RECORD_BYTES
    rec = CODEC.decode_as(value, HEARTBEAT)
    assert rec["details"] is None and rec["attempt"] == 2
    assert "heartbeat details of activity 'big'" in caplog.text and "without details" in caplog.text
    assert CODEC.decode_as(heartbeat_value(CODEC, _task(), ()), HEARTBEAT)["details"] is None


def test_the_dlq_copy_of_an_oversized_value_is_truncated_and_says_so() -> None:
    headers = [("dlq.reason", b"undecodable")]
    assert dlq_value(b"abc", headers) == (b"abc", headers)
    assert dlq_value(None, headers) == (None, headers)
    value, out = dlq_value(b"z" * (MAX_RECORD_BYTES + 5), headers)
    assert value is not None and len(value) == MAX_RECORD_BYTES
    assert out == [*headers, ("dlq.truncated", str(MAX_RECORD_BYTES + 5).encode())]


@pytest.mark.parametrize(("code", "kind", "attempts", "action"), [
    (KafkaError._FATAL, "result", 1, "stop"),
    (KafkaError._FATAL, "dlq", 1, "stop"),
    (KafkaError.MSG_SIZE_TOO_LARGE, "result", 1, "replace"),
    (KafkaError.INVALID_RECORD, "result", 1, "replace"),
    (KafkaError.MSG_SIZE_TOO_LARGE, "failure", 1, "give_up"),
    (KafkaError.TOPIC_AUTHORIZATION_FAILED, "dlq", 1, "give_up"),
    (KafkaError._MSG_TIMED_OUT, "result", 1, "retry"),
    (KafkaError._MSG_TIMED_OUT, "failure", MAX_DELIVERY_ATTEMPTS - 1, "retry"),
    (KafkaError._MSG_TIMED_OUT, "result", MAX_DELIVERY_ATTEMPTS, "give_up"),
    (KafkaError.NOT_ENOUGH_REPLICAS, "dlq", 1, "retry"),
])
def test_delivery_action(code: int, kind: Kind, attempts: int, action: str) -> None:
    assert delivery_action(code, kind, attempts) == action


# -- the worker over the twins ------------------------------------------------------------------


def test_producers_are_configured_with_the_record_limit(make_worker: Callable[..., ActivityWorker]) -> None:
    assert producer(make_worker()).config["message.max.bytes"] == PRODUCER_MESSAGE_MAX_BYTES


def test_a_2mb_result_fails_the_attempt_and_its_offset_commits(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(task_message(0, 0, "sized", 2_000_000))
    w._start(task_message(0, 1, "sized", 10))
    sent = wait_sent(w, 2)
    by_seq = {s.record()["activity_seq"]: s for s in sent}
    assert by_seq[1].name == FAILED and len(by_seq[1].value or b"") <= MAX_RECORD_BYTES
    failure = by_seq[1].record()["failure"]
    assert failure["type"] == PAYLOAD_TOO_LARGE and failure["non_retryable"] is True
    assert by_seq[2].name == COMPLETED
    turn(w)
    assert consumer(w).committed_to() == {0: 2}
    assert (w.completed, w.failed) == (1, 1)


def test_a_result_the_broker_refuses_is_replaced_by_a_failure(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    producer(w).outcomes = [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]
    w._start(task_message(1, 7, "sized", 10))
    wait_sent(w, 1)
    turn(w)
    assert consumer(w).committed_to() == {}  # nothing settled yet: the failure is on its way
    (_, replacement) = producer(w).sent
    assert replacement.name == FAILED and replacement.record()["failure"]["type"] == PAYLOAD_TOO_LARGE
    turn(w)
    assert consumer(w).committed_to() == {1: 8}


def test_a_retriable_delivery_error_produces_the_same_record_again(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    producer(w).outcomes = [KafkaError(KafkaError._MSG_TIMED_OUT)]
    w._start(task_message(0, 0, "sized", 10))
    wait_sent(w, 1)
    turn(w)
    assert len(w.settler.retries) == 1 and consumer(w).committed_to() == {}
    w.settler.retries[0].not_before = 0.0  # the backoff has passed
    turn(w)
    first, again = producer(w).sent
    assert again.value == first.value and again.name == COMPLETED
    turn(w)
    assert consumer(w).committed_to() == {0: 1}


def test_a_produce_refused_at_once_takes_the_same_path(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    producer(w).refuse = [KafkaError(KafkaError.MSG_SIZE_TOO_LARGE)]
    w._start(task_message(0, 0, "sized", 10))
    deadline = time.monotonic() + 5
    while not w.settler.undelivered:
        assert time.monotonic() < deadline
        time.sleep(0.005)
    turn(w)
    (replacement,) = producer(w).sent
    assert replacement.name == FAILED
    turn(w)
    assert consumer(w).committed_to() == {0: 1}


def test_a_failure_refused_for_good_is_given_up_loudly_and_committed(
        make_worker: Callable[..., ActivityWorker], caplog: pytest.LogCaptureFixture) -> None:
    w = make_worker()
    producer(w).outcomes = [KafkaError(KafkaError.TOPIC_AUTHORIZATION_FAILED)]
    w._start(task_message(0, 0, "nope"))  # unregistered: reported as a failure
    wait_sent(w, 1)
    turn(w)
    assert w.given_up == 1 and "GIVING UP" in caplog.text and "'nope'" in caplog.text
    turn(w)
    assert consumer(w).committed_to() == {0: 1}


def test_a_fatal_producer_error_stops_the_worker_without_committing(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    producer(w).outcomes = [KafkaError(KafkaError._FATAL)]
    w._start(task_message(0, 0, "sized", 10))
    wait_sent(w, 1)
    turn(w)
    assert w.stop_event.is_set() and w._fatal is not None
    assert consumer(w).committed_to() == {}


def test_an_undecodable_task_is_dead_lettered_and_committed(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(FakeMessage(0, 0, b"garbage"))
    (dlq,) = wait_sent(w, 1)
    assert dlq.topic == DLQ and dlq.value == b"garbage"
    assert dict(dlq.headers)["dlq.reason"].startswith(b"undecodable activity task")
    turn(w)
    assert consumer(w).committed_to() == {0: 1}


def test_the_dlq_copy_of_an_oversized_task_is_truncated(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(FakeMessage(0, 0, b"g" * (MAX_RECORD_BYTES + 100)))
    (dlq,) = wait_sent(w, 1)
    assert len(dlq.value or b"") == MAX_RECORD_BYTES
    assert dict(dlq.headers)["dlq.truncated"] == str(MAX_RECORD_BYTES + 100).encode()
    turn(w)
    assert consumer(w).committed_to() == {0: 1}
