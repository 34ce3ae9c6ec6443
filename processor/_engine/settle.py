"""What an activity worker sends for a task, and what it does when a send fails: pure rules.

Kept apart from the worker's mechanism (worker.py: consuming, running, committing) so the rules
are unit-tested as plain functions: which record settles a task offset (made to fit the record
limit where it is made), when an attempt is already stale, and what an undelivered record becomes.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any, Literal

from confluent_kafka import KafkaError

from processor._codec.codec import Codec
from processor._failure import Failure, failure_from_exception
from processor._limits import (
    MAX_RECORD_BYTES,
    PAYLOAD_TOO_LARGE,
    clip,
    too_large,
)
from processor._payload import to_payload
from processor.exceptions import ApplicationError

log = logging.getLogger("processor.worker")

TASK = "wf.tasks.v1.ActivityTask"
COMPLETED = "wf.commands.v1.ActivityCompleted"
FAILED = "wf.commands.v1.ActivityFailed"
HEARTBEAT = "wf.commands.v1.ActivityHeartbeat"
STARTED = "wf.commands.v1.ActivityStarted"
HEARTBEAT_EVERY_S = 1.0
# A record whose delivery failed with a retriable error is produced again this many times in all
# (each try already spans librdkafka's own retries, up to message.timeout.ms), then given up.
MAX_DELIVERY_ATTEMPTS = 5
# librdkafka codes after which producing the same record again cannot succeed.
_TOO_LARGE = {KafkaError.MSG_SIZE_TOO_LARGE, KafkaError.RECORD_LIST_TOO_LARGE, KafkaError.INVALID_MSG_SIZE}
_PERMANENT = _TOO_LARGE | {KafkaError.TOPIC_AUTHORIZATION_FAILED, KafkaError.CLUSTER_AUTHORIZATION_FAILED,
                           KafkaError.INVALID_RECORD, KafkaError._INVALID_ARG, KafkaError._BAD_MSG}  # noqa: SLF001
# Withdrawn by the worker itself when it replaced a wedged producer (ActivityWorker._check_producer).
_PURGED = {KafkaError._PURGE_QUEUE, KafkaError._PURGE_INFLIGHT}  # noqa: SLF001 - librdkafka's code names
_DLQ_REASON_CHARS = 4_000  # dlq.reason is a header: it must leave the value its room in the record


def _env_ms(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


# -- pure rules (unit-tested without Kafka) ------------------------------------------------------


def stale_attempt(task: Mapping[str, Any], now_ms: int, clock_skew_ms: int) -> str | None:
    """Which timeout the processor has already fired (or fires at once) for this attempt, or None
    if the attempt may still be live and must run.

    Of an attempt's clocks only schedule-to-start runs from dispatch (`scheduled_time_ms`, the
    processor's clock); start-to-close and heartbeat start with the attempt (ActivityStarted).
    So a task taken from the backlog or the topic after `scheduled + schedule_to_start_timeout`
    belongs to an activity the processor has timed out for good: running it here only makes a
    result the processor ignores.

    `clock_skew_ms` widens the deadline, never narrows it: a worker clock that runs ahead of the
    processors' by up to the margin must not skip a live attempt. A clock that runs behind only
    skips less.
    """
    timeout = task.get("schedule_to_start_timeout_ms")
    if timeout and now_ms > int(task["scheduled_time_ms"]) + int(timeout) + clock_skew_ms:
        return "schedule_to_start_timeout"
    return None


def reports_start(task: Mapping[str, Any]) -> bool:
    """Whether the processor needs to hear that this attempt starts (ActivityStarted): only a
    timeout that counts from the start, or one that the start stops, makes it wait for that."""
    return bool(task.get("start_to_close_timeout_ms") or task.get("heartbeat_timeout_ms")
                or task.get("schedule_to_start_timeout_ms"))


# A start report is held back this long at most (see start_report_delay_s).
START_REPORT_DELAY_S = _env_ms("DP_WORKER_START_REPORT_DELAY_MS", 200) / 1000


def start_report_delay_s(task: Mapping[str, Any], most_s: float = START_REPORT_DELAY_S) -> float:
    """How long a worker may hold back an attempt's ActivityStarted: an attempt that ends sooner
    needs none (its result implies the start), which spares short activities a command each. The
    report says how long the attempt has run, so the processor's clocks lose nothing; a quarter
    of the shortest timeout at most, so a hung attempt is still timed out in time. None held
    back with a schedule-to-start timeout: the start is what stops that clock."""
    if task.get("schedule_to_start_timeout_ms"):
        return 0.0
    timeouts = [int(t) for t in (task.get("start_to_close_timeout_ms"), task.get("heartbeat_timeout_ms")) if t]
    return min([most_s, *(t / 4_000 for t in timeouts)])


def started_value(codec: Codec, task: Mapping[str, Any], worker: str, elapsed_ms: int = 0) -> bytes:
    """ActivityStarted for the attempt `task`, from `worker`, `elapsed_ms` after it started."""
    return codec.encode(STARTED, {**_base(task), "task_queue": task["task_queue"], "worker": worker,
                                  "elapsed_ms": max(0, elapsed_ms)})


def _what(task: Mapping[str, Any]) -> str:
    return (f"activity {task['activity_type']!r} (seq {task['activity_seq']}, attempt {task['attempt']}) "
            f"of workflow {task['workflow_id']!r}")


def _base(task: Mapping[str, Any]) -> dict[str, Any]:
    return {"workflow_id": task["workflow_id"], "activity_seq": task["activity_seq"], "attempt": task["attempt"],
            "run_id": task.get("run_id", "")}


def _clip_failure(failure: Failure, max_chars: int, depth: int) -> Failure:
    cause = failure.get("cause")
    return {"type": clip(failure["type"], 200), "message": clip(failure["message"], max_chars),
            "stack_trace": clip(failure["stack_trace"], max_chars), "non_retryable": failure["non_retryable"],
            "cause": _clip_failure(cause, max_chars, depth - 1) if cause is not None and depth > 1 else None}


def failure_value(codec: Codec, task: Mapping[str, Any], failure: Failure) -> bytes:
    """ActivityFailed for `failure`, cut to fit the record limit: a huge exception message,
    traceback or cause chain must not make the failure itself undeliverable."""
    value = codec.encode(FAILED, {**_base(task), "failure": failure})
    max_chars, depth = 100_000, 20
    while len(value) > MAX_RECORD_BYTES:
        value = codec.encode(FAILED, {**_base(task), "failure": _clip_failure(failure, max_chars, depth)})
        max_chars, depth = max_chars // 4, max(1, depth // 2)
    return value


def settle_value(codec: Codec, task: Mapping[str, Any], result: Any,
                 exc: BaseException | None) -> tuple[str, bytes]:
    """The record that settles an attempt: ActivityCompleted, or ActivityFailed when the activity
    raised, its result cannot be serialised, or its result would not fit in a record. The last is
    non-retryable (type PayloadTooLarge): another attempt would compute the same result."""
    if exc is None:
        try:
            payload = to_payload(result)
        except Exception as conv:  # noqa: BLE001 - an unserialisable result fails the attempt
            exc = conv
        else:
            value = codec.encode(COMPLETED, {**_base(task), "result": payload})
            if len(value) <= MAX_RECORD_BYTES:
                return COMPLETED, value
            message = too_large(f"the result of {_what(task)}", len(value))
            log.error("%s; reporting the attempt as failed", message)
            exc = ApplicationError(message, type=PAYLOAD_TOO_LARGE, non_retryable=True)
    return FAILED, failure_value(codec, task, failure_from_exception(exc))


def refused_value(codec: Codec, task: Mapping[str, Any], size: int, err: KafkaError) -> bytes:
    """The ActivityFailed that replaces a result the broker refused for good. Too large for the
    broker (its limit is below ours) is non-retryable like our own size check; anything else may
    be a broker-side condition, so the retry policy decides."""
    what = f"the result of {_what(task)} ({size:,} bytes encoded)"
    if err.code() in _TOO_LARGE:
        exc = ApplicationError(f"{what} was refused by the broker as too large ({err}): set DP_MAX_RECORD_BYTES "
                               "below the broker's / topic's max.message.bytes, or pass large data by reference",
                               type=PAYLOAD_TOO_LARGE, non_retryable=True)
    else:
        exc = ApplicationError(f"{what} was refused by the broker: {err}", type="ResultNotDelivered")
    return failure_value(codec, task, failure_from_exception(exc))


def heartbeat_value(codec: Codec, task: Mapping[str, Any], details: tuple[Any, ...]) -> bytes:
    """ActivityHeartbeat; details that would not fit are dropped (with a log line), the beat is
    still sent: it is what keeps the heartbeat timeout from firing, the details are extra."""
    rec = {**_base(task), "details": to_payload(list(details)) if details else None}
    value = codec.encode(HEARTBEAT, rec)
    if len(value) > MAX_RECORD_BYTES:
        log.warning("%s; heartbeat sent without details", too_large(f"the heartbeat details of {_what(task)}",
                                                                     len(value)))
        value = codec.encode(HEARTBEAT, {**rec, "details": None})
    return value


Kind = Literal["result", "failure", "dlq"]
Action = Literal["stop", "replace", "retry", "resend", "give_up"]


def delivery_action(code: int, kind: Kind, attempts: int) -> Action:
    """What to do when the record that settles a task offset was not delivered.

    - stop: the idempotent producer hit a fatal error and is unusable. The offset stays
      uncommitted and the worker stops, so its supervisor restarts it with a new producer and the
      task runs again: at least once, as for a crash.
    - replace: the broker refused the result record itself (too large for its limit, or invalid):
      report ActivityFailed instead, which is small and says why. The workflow hears of it now
      instead of at its timeout (or never, with no timeout).
    - retry: a retriable error (timeout, broker unavailable): produce the same record again, up to
      MAX_DELIVERY_ATTEMPTS in all. A duplicate delivery is harmless, the processor ignores it.
    - resend: the worker withdrew the record from a producer it replaced: produce it again on the
      new one now. Not an attempt: the record never had its chance.
    - give_up: a failure or DLQ record refused for good, or retries exhausted: log loudly and mark
      the offset finished without a delivered record. This is the one place at-least-once is
      given up, for that one attempt, on purpose: re-running the task after a restart would make
      the same refused record, while the partition's committed offset could not pass it -- every
      later task of the partition would run again after any restart (issue 6: 30 re-runs). The
      attempt is not lost to the workflow: its start-to-close or heartbeat timer re-dispatches it,
      maybe to a healthy worker; an activity with neither timeout waits for an operator, whom the
      error log tells which workflow and activity.
    """
    if code == KafkaError._FATAL:  # noqa: SLF001 - librdkafka's code name
        return "stop"
    if code in _PURGED:
        return "resend"
    if code in _PERMANENT:
        return "replace" if kind == "result" else "give_up"
    return "retry" if attempts < MAX_DELIVERY_ATTEMPTS else "give_up"
