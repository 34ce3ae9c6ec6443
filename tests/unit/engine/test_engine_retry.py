"""Activity retries through the engine, and the retry policy arithmetic (retry.py)."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_harness import CODEC, EVENTS, TASKS_DEFAULT, TIMERS, WORKFLOWS, EngineHarness, non_retryable, retryable

from processor import RetryPolicy, workflow
from processor._engine.retry import DEFAULT_POLICY, next_retry_delay_ms


def _summary(r: Any) -> tuple[str, bytes, str | None]:
    return r.topic, r.key, (r.decode()[0] if r.value is not None else None)


def test_retryable_failure_sets_retry_timer_and_redispatches(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "retry-1"
    p = h.partition_of(wid)
    h.start(wid, "Retrying", 1)
    (t1,) = h.new_tasks()
    t0 = h.now_ms

    out = h.fail(t1, retryable("transient"))
    assert [_summary(r) for r in out] == [
        (EVENTS, h.event_key(wid, 3), "wf.events.v1.ActivityAttemptFailed"),
        (TIMERS, f"{wid}@tr1".encode(), "wf.timers.v1.TimerScheduled"),
    ]
    event = out[0].event()
    assert (event["activity_seq"], event["attempt"], event["next_attempt"], event["retry_at_ms"]) == (1, 1, 2, t0 + 100)
    assert event["failure"] == retryable("transient")
    timer = out[1].decode()[1]
    assert timer == {"workflow_id": wid, "timer_key": "r1", "fire_at_ms": t0 + 100, "kind": "activity_retry", "seq": 1}
    assert out[1].partition == p and out[0].partition == p
    summary = h.summary(wid)
    assert summary is not None and summary.activities == {1: [2, 2]}
    assert h.pending_timers(p) == [(t0 + 100, wid, "r1")]

    # Not yet due: nothing happens.
    assert h.tick(99) == []
    assert h.new_tasks() == []
    # Due: the timer is tombstoned and attempt 2 dispatched.
    out = h.tick(1)
    assert [_summary(r) for r in out] == [
        (TIMERS, f"{wid}@tr1".encode(), None),
        (TASKS_DEFAULT, wid.encode(), "wf.tasks.v1.ActivityTask"),
    ]
    (t2,) = h.new_tasks()
    assert (t2["activity_seq"], t2["attempt"], t2["scheduled_time_ms"]) == (1, 2, t0 + 100)
    assert h.pending_timers(p) == [] and h.engine.counters.timers_fired == 1

    # The late result of attempt 1 is ignored; attempt 2 completes the workflow.
    assert h.complete(t1, "late") == []
    h.complete(t2, "ok after 2 attempts")
    assert h.result(wid) == "ok after 2 attempts"
    assert h.event_types(wid) == [
        "WorkflowStarted",
        "ActivityScheduled",
        "ActivityAttemptFailed",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    h.close()


def test_default_policy_backoff_and_start_to_close_timer_per_attempt(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "three"
    p = h.partition_of(wid)
    h.start(wid, "ThreeSteps", 1)
    (t1,) = h.new_tasks()
    t0 = h.now_ms
    assert h.pending_timers(p) == []  # the clock starts with the attempt
    h.started(t1)
    assert h.pending_timers(p) == [(t0 + 60_000, wid, "s1")]
    out = h.fail(t1, retryable(), advance_ms=7)
    assert [(r.topic, r.key, r.value is None) for r in out] == [
        (EVENTS, h.event_key("three", 3), False),
        (TIMERS, b"three@ts1", True),
        (TIMERS, b"three@tr1", False),
    ]
    assert out[0].event()["retry_at_ms"] == t0 + 7 + 1_000  # the default policy's initial interval
    assert h.pending_timers(p) == [(t0 + 1_007, wid, "r1")]
    h.tick(1_000)
    (t2,) = h.new_tasks()
    assert t2["attempt"] == 2
    h.started(t2, advance_ms=4_000)  # it waited 4 s in the queue: that is not the attempt's time
    assert h.pending_timers(p) == [(t0 + 5_007 + 60_000, wid, "s1")]
    out = h.fail(t2, retryable())
    assert out[0].event()["retry_at_ms"] == h.now_ms + 2_000
    h.close()


def test_exhausted_attempts_fail_the_workflow(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "exhaust"
    h.start(wid, "Retrying", 100)
    for attempt in range(1, 6):
        (task,) = h.new_tasks()
        assert task["attempt"] == attempt
        h.fail(task, retryable(f"fail {attempt}"))
        h.tick(10_000)
    assert h.new_tasks() == []
    events = h.events(wid)
    assert [e["type"] for e in events] == ["WorkflowStarted", "ActivityScheduled"] + ["ActivityAttemptFailed"] * 4 + [
        "ActivityFailed",
        "WorkflowFailed",
    ]
    assert [e["retry_at_ms"] - e["time_ms"] for e in events if e["type"] == "ActivityAttemptFailed"] == [
        100,
        200,
        400,
        800,
    ]
    assert events[-2]["attempt"] == 5 and events[-2]["failure"]["message"] == "fail 5"
    ((name, rec),) = h.completions(wid)
    assert name == "wf.completions.v1.WorkflowFailed"
    assert rec["failure"]["type"] == "ActivityError"
    assert rec["failure"]["message"] == "activity flaky (activity_seq 1) failed: fail 5"
    h.close()


def test_non_retryable_failure_fails_the_activity_and_the_workflow(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "hard"
    h.start(wid, "Failing", "rejected by test")
    h.run_activities()  # fail_hard raises a non-retryable ApplicationError(type="Rejected")
    events = h.events(wid)
    assert [e["type"] for e in events] == ["WorkflowStarted", "ActivityScheduled", "ActivityFailed", "WorkflowFailed"]
    assert events[2]["failure"]["type"] == "Rejected" and events[2]["failure"]["non_retryable"] is True
    ((name, rec),) = h.completions(wid)
    assert name == "wf.completions.v1.WorkflowFailed"
    assert rec["failure"]["message"] == "activity fail_hard (activity_seq 1) failed: rejected by test"
    assert rec["failure"]["cause"]["type"] == "Rejected"
    assert h.records(TIMERS) == []
    summary = h.summary(wid)
    assert summary is not None and summary.status == "failed" and summary.activities == {}

    # Same through a retryable activity: non_retryable=True wins over the policy.
    h.start("r", "Retrying", 3)
    (task,) = h.new_tasks()
    h.fail(task, non_retryable("stop"))
    assert h.event_types("r")[-2:] == ["ActivityFailed", "WorkflowFailed"]
    assert CODEC.decode(h.records(EVENTS)[-1].value or b"")[0] == "wf.events.v1.WorkflowFailed"
    h.close()


@workflow.defn(name="Persistent")
class Persistent:
    """Retries forever with a steep backoff capped at one minute."""

    @workflow.run
    async def run(self) -> str:
        policy = RetryPolicy(
            initial_interval=timedelta(seconds=1), backoff_coefficient=1_000.0, maximum_interval=timedelta(minutes=1)
        )
        result: str = await workflow.execute_activity(
            "slow", 1.0, False, start_to_close_timeout=1.0, retry_policy=policy
        )
        return result


def test_capped_backoff_keeps_retrying_forever(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, [*WORKFLOWS, Persistent])
    wid = "persistent"
    h.start(wid, "Persistent")
    for attempt in range(1, 106):
        (task,) = h.new_tasks()
        assert task["attempt"] == attempt
        h.started(task)
        out = h.tick(1_000)  # the start-to-close timeout passes: the attempt times out
        (event,) = [r.event() for r in out if r.topic == EVENTS]
        assert event["type"] == "ActivityAttemptFailed"
        assert event["retry_at_ms"] - h.now_ms == min(1_000 * 1_000 ** (attempt - 1), 60_000)
        h.tick(60_000)  # the retry timer dispatches the next attempt
    h.close()


# -- retry.next_retry_delay_ms ------------------------------------------------------------------------


def _policy(**kw: Any) -> dict[str, Any]:
    return {**DEFAULT_POLICY, **kw}


def test_default_policy_doubles_from_one_second_and_caps_at_100s() -> None:
    delays = [next_retry_delay_ms(None, attempt, retryable()) for attempt in range(1, 11)]
    assert delays == [1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 64_000, 100_000, 100_000, 100_000]
    assert next_retry_delay_ms(None, 1_024, retryable()) == 100_000  # unlimited attempts, still capped


def test_unlimited_attempts_never_overflow() -> None:
    assert next_retry_delay_ms(None, 1_025, retryable()) == 100_000
    policy = _policy(backoff_coefficient=1_000.0, maximum_interval_ms=60_000)
    assert next_retry_delay_ms(policy, 104, retryable()) == 60_000


def test_custom_backoff_growth_and_cap() -> None:
    policy = _policy(initial_interval_ms=100, backoff_coefficient=3.0, maximum_interval_ms=1_000)
    assert [next_retry_delay_ms(policy, a, retryable()) for a in range(1, 6)] == [100, 300, 900, 1_000, 1_000]
    constant = _policy(initial_interval_ms=250, backoff_coefficient=1.0)
    assert [next_retry_delay_ms(constant, a, retryable()) for a in (1, 5, 50)] == [250, 250, 250]
    # maximum_interval_ms 0 means "100 x the initial interval".
    uncapped = _policy(initial_interval_ms=10, maximum_interval_ms=0)
    assert [next_retry_delay_ms(uncapped, a, retryable()) for a in (1, 7, 8, 20)] == [10, 640, 1_000, 1_000]


@pytest.mark.parametrize(("maximum", "last_retried"), [(1, 0), (2, 1), (5, 4)])
def test_maximum_attempts(maximum: int, last_retried: int) -> None:
    policy = _policy(maximum_attempts=maximum)
    for attempt in range(1, maximum + 2):
        delay = next_retry_delay_ms(policy, attempt, retryable())
        assert (delay is not None) == (attempt <= last_retried), attempt


def test_non_retryable_flag_and_error_types() -> None:
    assert next_retry_delay_ms(None, 1, non_retryable()) is None
    policy = _policy(non_retryable_error_types=["ValueError", "Rejected"])
    assert next_retry_delay_ms(policy, 1, retryable(type_="ValueError")) is None
    assert next_retry_delay_ms(policy, 1, retryable(type_="Rejected")) is None
    assert next_retry_delay_ms(policy, 1, retryable(type_="KeyError")) == 1_000
    # The non-retryable checks come before the attempt budget.
    assert next_retry_delay_ms(_policy(maximum_attempts=0), 1, non_retryable()) is None
