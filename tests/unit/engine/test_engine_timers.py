"""Durable timers through the engine: user sleeps, timeouts, heartbeats, closing, budget."""

from __future__ import annotations

import asyncio
from pathlib import Path

from engine_harness import COMPLETIONS, EVENTS, START_MS, TIMERS, WORKFLOWS, EngineHarness, Record, ids_on_partition

from processor import RetryPolicy, workflow


def _shape(records: list[Record]) -> list[tuple[str, bytes, str | None]]:
    return [(r.topic, r.key, r.decode()[0] if r.value is not None else None) for r in records]


def test_user_timer_fires_only_when_due(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "approve-1"
    p = h.partition_of(wid)
    out = h.start(wid, "Approval", 1.5)
    assert _shape(out) == [
        (EVENTS, h.event_key("approve-1", 1), "wf.events.v1.WorkflowStarted"),
        (EVENTS, h.event_key("approve-1", 2), "wf.events.v1.TimerStarted"),
        (TIMERS, b"approve-1@tu1", "wf.timers.v1.TimerScheduled"),
    ]
    started = out[1].event()
    assert (started["timer_seq"], started["duration_ms"], started["fire_at_ms"]) == (1, 1_500, START_MS + 1_500)
    assert out[2].decode()[1] == {
        "workflow_id": wid,
        "timer_key": "u1",
        "fire_at_ms": START_MS + 1_500,
        "kind": "user",
        "seq": 1,
    }
    assert out[2].partition == p
    assert h.pending_timers(p) == [(START_MS + 1_500, wid, "u1")]
    assert h.engine.next_due_ms() == START_MS + 1_500

    assert h.tick(1_499) == []
    assert h.engine.counters.timers_fired == 0 and len(h.events(wid)) == 2

    out = h.tick(1)
    assert _shape(out) == [
        (TIMERS, b"approve-1@tu1", None),
        (EVENTS, h.event_key("approve-1", 3), "wf.events.v1.TimerFired"),
    ]
    fired = out[1].event()
    assert (fired["timer_seq"], fired["time_ms"]) == (1, START_MS + 1_500)
    assert h.pending_timers(p) == [] and h.engine.next_due_ms() is None
    assert h.tick(10_000) == []

    h.signal(wid, "approve", "bob")
    assert h.result(wid) == "approved by bob after sleeping True"
    assert h.event_types(wid) == [
        "WorkflowStarted",
        "TimerStarted",
        "TimerFired",
        "SignalReceived",
        "WorkflowCompleted",
    ]
    h.close()


def test_closing_a_workflow_tombstones_its_remaining_timers(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "approve-2"
    p = h.partition_of(wid)
    h.start(wid, "Approval", 30.0, execution_timeout_ms=60_000)
    assert h.pending_timers(p) == [(START_MS + 30_000, wid, "u1"), (START_MS + 60_000, wid, "w0")]
    h.signal(wid, "approve", "early")  # the workflow still sleeps: nothing closes
    assert h.pending_timers(p) == [(START_MS + 30_000, wid, "u1"), (START_MS + 60_000, wid, "w0")]

    out = h.send("TerminateWorkflow", {"workflow_id": wid, "reason": "operator"}, advance_ms=3)
    assert _shape(out) == [
        (EVENTS, h.event_key("approve-2", 4), "wf.events.v1.WorkflowTerminated"),
        (TIMERS, b"approve-2@tu1", None),
        (TIMERS, b"approve-2@tw0", None),
        (COMPLETIONS, wid.encode(), "wf.completions.v1.WorkflowTerminated"),
    ]
    assert out[3].decode()[1] == {
        "workflow_id": wid,
        "workflow_type": "Approval",
        "reason": "operator",
        "close_time_ms": START_MS + 3,
        "run_id": h.run_of(wid),
    }
    assert h.pending_timers(p) == []
    assert h.tick(120_000) == [] and h.engine.counters.timers_fired == 0
    # Terminating again is a no-op.
    assert h.send("TerminateWorkflow", {"workflow_id": wid, "reason": "again"}) == []
    assert h.engine.counters.duplicates == 1
    h.close()


def test_execution_timeout_closes_the_workflow(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "slowpoke"
    h.start(wid, "Approval", 1_000.0, execution_timeout_ms=5_000)
    assert h.tick(4_999) == []
    out = h.tick(1)
    assert _shape(out) == [
        (TIMERS, b"slowpoke@tw0", None),
        (EVENTS, h.event_key("slowpoke", 3), "wf.events.v1.WorkflowTimedOut"),
        (TIMERS, b"slowpoke@tu1", None),
        (COMPLETIONS, wid.encode(), "wf.completions.v1.WorkflowTimedOut"),
    ]
    summary = h.summary(wid)
    assert summary is not None and summary.status == "timed_out" and summary.close_ms == START_MS + 5_000
    assert h.pending_timers(h.partition_of(wid)) == []
    h.close()


def test_heartbeat_pushes_the_heartbeat_deadline_out(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "beats"
    p = h.partition_of(wid)
    h.start(wid, "Timeouts", "heartbeat_ok")
    (task,) = h.new_tasks()
    assert task["heartbeat_timeout_ms"] == 600
    assert h.pending_timers(p) == []  # the clock starts with the attempt
    h.started(task)
    assert h.pending_timers(p) == [(START_MS + 600, wid, "h1")]
    out = h.send("ActivityHeartbeat", {"workflow_id": wid, "activity_seq": 1, "attempt": 1}, advance_ms=400)
    assert _shape(out) == [(TIMERS, b"beats@th1", "wf.timers.v1.TimerScheduled")]
    assert h.pending_timers(p) == [(START_MS + 1_000, wid, "h1")]
    assert h.tick(300) == []  # the old deadline passed: nothing fires
    out = h.tick(300)  # the new one
    assert [e.event()["type"] for e in out if e.topic == EVENTS] == ["ActivityAttemptFailed"]
    failure = next(e.event() for e in out if e.topic == EVENTS)["failure"]
    assert failure["type"] == "HeartbeatTimeout"
    assert failure["message"] == "activity 1 attempt 1 exceeded its heartbeat_timeout"
    # A heartbeat of the timed-out attempt is a late duplicate now.
    assert h.send("ActivityHeartbeat", {"workflow_id": wid, "activity_seq": 1, "attempt": 1}) == []
    h.close()


def test_start_to_close_timeout_with_one_attempt_fails_the_activity(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "stc"
    h.start(wid, "Timeouts", "start_to_close")
    (task,) = h.new_tasks()
    assert task["start_to_close_timeout_ms"] == 500
    h.tick(10_000)  # waiting in the queue is not running: no timeout
    assert h.event_types(wid) == ["WorkflowStarted", "ActivityScheduled"]
    h.started(task)
    h.tick(499)
    assert h.event_types(wid) == ["WorkflowStarted", "ActivityScheduled"]
    h.tick(1)
    assert h.event_types(wid) == ["WorkflowStarted", "ActivityScheduled", "ActivityFailed", "WorkflowCompleted"]
    assert h.result(wid) == "RemoteApplicationError: StartToCloseTimeout"
    # The worker's late answer is a duplicate.
    assert h.complete(task, "finished") == []
    h.close()


def test_timers_per_tick_budget(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, timers_per_tick=2)
    ids = ids_on_partition(0, 2, "a") + ids_on_partition(1, 1, "b")
    for wid in ids:
        h.start(wid, "Approval", 1.0)
    h.now_ms += 1_000
    h.engine.begin(h.now_ms)
    assert h.engine.fire_due_timers(h.now_ms) == 2
    h.engine.committed()
    h.engine.begin(h.now_ms)
    assert h.engine.fire_due_timers(h.now_ms) == 1
    h.engine.committed()
    assert sorted(e["workflow_id"] for e in h.events() if e["type"] == "TimerFired") == sorted(ids)
    h.close()


# -- timers already overdue when the processor gets to them ------------------------------------------


@workflow.defn(name="Watched")
class Watched:
    """One activity under both a start-to-close and a heartbeat timeout; two attempts at most."""

    @workflow.run
    async def run(self) -> str:
        result: str = await workflow.execute_activity(
            "slow",
            1.0,
            True,
            start_to_close_timeout=0.5,
            heartbeat_timeout=0.5,
            retry_policy=RetryPolicy(maximum_attempts=2),
        )
        return result


@workflow.defn(name="Race")
class Race:
    """A sleep under a shorter timeout; both timers overdue together once the processor is back."""

    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def proceed(self) -> None:
        self.go = True

    @workflow.run
    async def run(self) -> str:
        try:
            await asyncio.wait_for(asyncio.sleep(2), timeout=1)
            outcome = "slept"
        except TimeoutError:
            outcome = "timed out"
        await workflow.wait_condition(lambda: self.go)
        return outcome


def test_overdue_timers_of_one_activity_fail_one_attempt_only(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, [*WORKFLOWS, Watched])
    wid = "watched"
    h.start(wid, "Watched")
    (task,) = h.new_tasks()
    h.started(task)
    assert h.pending_timers(h.partition_of(wid)) == [(START_MS + 500, wid, "h1"), (START_MS + 500, wid, "s1")]
    h.tick(500)  # both deadlines of attempt 1 pass in the same tick
    events = h.events(wid)
    # Attempt 1 timed out once; attempt 2 is scheduled for retry and must still run.
    assert [e["type"] for e in events] == ["WorkflowStarted", "ActivityScheduled", "ActivityAttemptFailed"]
    assert h.summary(wid).activities == {1: [2, 2]}  # type: ignore[union-attr]
    h.close()


def test_overdue_timer_canceled_in_the_same_tick_does_not_fire(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, [*WORKFLOWS, Race])
    wid = "race"
    h.start(wid, "Race")
    h.tick(5_000)  # the processor was away: the 1 s timeout and the 2 s sleep are both overdue
    assert h.event_types(wid) == ["WorkflowStarted", "TimerStarted", "TimerStarted", "TimerFired", "TimerCanceled"]
    h.close()
