"""Held workflows: a code change that no longer replays the history holds the workflow (one
WorkflowTaskFailed, input still recorded, nothing advanced); the original code resumes it."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import pytest
from engine_harness import EVENTS, TIMERS, EngineHarness

from processor import workflow


@workflow.defn(name="Gate")
class GateV1:
    """Sleeps, waits to be opened, then runs one activity."""

    def __init__(self) -> None:
        self.who: str | None = None

    @workflow.signal
    def open(self, who: str) -> None:
        if self.who is None:
            self.who = who

    @workflow.run
    async def run(self, pause_s: float) -> str:
        await asyncio.sleep(pause_s)
        await workflow.wait_condition(lambda: self.who is not None)
        result = await workflow.execute_activity("step", "gate", 1)
        return f"{self.who}:{result}"


@workflow.defn(name="Gate")
class GateV2:
    """A careless deploy: an activity inserted before the sleep (nondeterministic at seq 2)."""

    def __init__(self) -> None:
        self.who: str | None = None

    @workflow.signal
    def open(self, who: str) -> None:
        if self.who is None:
            self.who = who

    @workflow.run
    async def run(self, pause_s: float) -> str:
        await workflow.execute_activity("async_step", 1)
        await asyncio.sleep(pause_s)
        await workflow.wait_condition(lambda: self.who is not None)
        result = await workflow.execute_activity("step", "gate", 1)
        return f"{self.who}:{result}"


WID = "gate-1"


def _started_with_v1(root: Path, *, fire_timer: bool) -> int:
    """Start the workflow under V1 (optionally past its timer); returns the clock."""
    h = EngineHarness(root, [GateV1])
    h.start(WID, "Gate", 1.0)
    if fire_timer:
        h.tick(1_000)
    now = h.now_ms
    h.close()
    return now


@pytest.mark.parametrize("resume", ["resume_held", "next_command"])
def test_held_by_changed_code_then_resumed_by_original(tmp_path: Path, resume: str) -> None:
    now = _started_with_v1(tmp_path, fire_timer=False)  # history: WorkflowStarted, TimerStarted

    # Changed code: the first command for the workflow replays its history and fails.
    bad = EngineHarness(tmp_path, [GateV2], now_ms=now)
    p = bad.partition_of(WID)
    out = bad.signal(WID, "open", "bob")
    events = [r.event() for r in out if r.topic == EVENTS]
    assert [e["type"] for e in events] == ["WorkflowTaskFailed", "SignalReceived"]
    assert [e["seq"] for e in events] == [3, 4]
    assert events[0]["reason"].startswith(
        "workflow 'gate-1' is nondeterministic at history seq 2: the code now emits ActivityScheduled(activity_seq=1, "
        "activity_type='async_step'), but history recorded TimerStarted(timer_seq=1)."
    )
    assert [r.topic for r in out] == [EVENTS, EVENTS]  # no task, no timer: nothing advanced
    summary = bad.summary(WID)
    assert summary is not None and summary.status == "running" and summary.held == events[0]["reason"]
    assert bad.store(p).held_workflows() == [WID]

    # Later input is still recorded (here the sleep's timer), and the hold is not re-recorded.
    out = bad.tick(1_000)
    assert [r.event()["type"] for r in out if r.topic == EVENTS] == ["TimerFired"]
    bad.reopen(p)
    assert bad.transaction(resume=[p]) == []  # reassignment: replays, still fails, appends nothing
    assert bad.event_types(WID) == ["WorkflowTaskFailed", "SignalReceived", "TimerFired"]
    assert bad.store(p).held_workflows() == [WID]
    assert bad.new_tasks() == []
    bad.close()

    # The original code again: the command the workflow owes (the activity) is recorded now.
    good = EngineHarness(tmp_path, [GateV1], now_ms=bad.now_ms)
    if resume == "resume_held":
        out = good.transaction(resume=[p])
        assert [r.event()["type"] for r in out if r.topic == EVENTS] == ["WorkflowTaskRecovered", "ActivityScheduled"]
    else:
        out = good.signal(WID, "open", "zed")
        assert [r.event()["type"] for r in out if r.topic == EVENTS] == [
            "WorkflowTaskRecovered", "ActivityScheduled", "SignalReceived"]
    assert [r.event()["seq"] for r in out[:2]] == [6, 7]
    summary = good.summary(WID)
    assert summary is not None and summary.held is None
    assert good.store(p).held_workflows() == []
    (task,) = good.new_tasks()
    assert (task["activity_type"], task["attempt"]) == ("step", 1)
    good.complete(task, 2)
    assert good.result(WID) == "bob:2"
    summary = good.summary(WID)
    assert summary is not None and summary.status == "completed"
    assert len(good.stored_history(WID)) == summary.last_seq
    good.close()


def test_two_signals_while_held_still_resume(tmp_path: Path) -> None:
    now = _started_with_v1(tmp_path, fire_timer=True)  # WorkflowStarted, TimerStarted, TimerFired
    bad = EngineHarness(tmp_path, [GateV2], now_ms=now)
    p = bad.partition_of(WID)
    bad.signal(WID, "open", "bob")
    bad.signal(WID, "open", "eve")
    assert bad.event_types(WID) == ["WorkflowTaskFailed", "SignalReceived", "SignalReceived"]
    bad.close()

    good = EngineHarness(tmp_path, [GateV1], now_ms=bad.now_ms)
    out = good.transaction(resume=[p])
    assert [r.event()["type"] for r in out if r.topic == EVENTS] == ["WorkflowTaskRecovered", "ActivityScheduled"]
    summary = good.summary(WID)
    assert summary is not None and summary.held is None
    good.run_activities()
    assert good.result(WID) == "bob:2"
    good.close()


def test_timer_fired_while_held_is_recorded_and_replayed(tmp_path: Path) -> None:
    now = _started_with_v1(tmp_path, fire_timer=False)
    bad = EngineHarness(tmp_path, [GateV2], now_ms=now)
    p = bad.partition_of(WID)
    out = bad.tick(1_000)
    assert [(r.topic, r.event()["type"] if r.topic == EVENTS else r.value) for r in out] == [
        (TIMERS, None),
        (EVENTS, "WorkflowTaskFailed"),
        (EVENTS, "TimerFired"),
    ]
    bad.close()

    good = EngineHarness(tmp_path, [GateV1], now_ms=bad.now_ms)
    out = good.transaction(resume=[p])  # replays fine; it owes no command: the hold is released
    assert [r.event()["type"] for r in out if r.topic == EVENTS] == ["WorkflowTaskRecovered"]
    good.signal(WID, "open", "amy")
    good.run_activities()
    assert good.result(WID) == "amy:2"
    assert good.event_types(WID) == [
        "WorkflowTaskRecovered", "SignalReceived", "ActivityScheduled", "ActivityCompleted", "WorkflowCompleted"]
    good.close()


def test_resumed_workflow_that_owes_nothing_is_no_longer_held(tmp_path: Path) -> None:
    now = _started_with_v1(tmp_path, fire_timer=False)
    bad = EngineHarness(tmp_path, [GateV2], now_ms=now)
    p = bad.partition_of(WID)
    bad.tick(1_000)
    bad.close()

    good = EngineHarness(tmp_path, [GateV1], now_ms=bad.now_ms)
    good.transaction(resume=[p])
    assert WID in good.engine.cache and good.engine.cache[WID].instance is not None  # it did replay
    summary = good.summary(WID)
    assert summary is not None and summary.held is None
    assert good.store(p).held_workflows() == []
    good.close()


@workflow.defn(name="Ship")
class ShipV1:
    """A bug: the label is read from a key the input does not have."""

    @workflow.run
    async def run(self, order: dict[str, str]) -> str:
        await asyncio.sleep(1.0)
        return order["label"]


@workflow.defn(name="Ship")
class ShipV2:
    """The hotfix."""

    @workflow.run
    async def run(self, order: dict[str, str]) -> str:
        await asyncio.sleep(1.0)
        return order.get("label", "no label")


def test_a_plain_exception_holds_the_workflow_and_a_hotfix_resumes_it(tmp_path: Path) -> None:
    bad = EngineHarness(tmp_path, [ShipV1])
    bad.start("ship-1", "Ship", {"id": "o-1"})
    bad.tick(1_000)
    assert bad.event_types("ship-1") == ["WorkflowStarted", "TimerStarted", "TimerFired", "WorkflowTaskFailed"]
    reason = bad.events("ship-1")[-1]["reason"]
    assert "raised KeyError: 'label'" in reason and "test_engine_held.py" in reason
    summary = bad.summary("ship-1")
    assert summary is not None and summary.status == "running" and summary.held == reason
    assert bad.completions("ship-1") == [], "held, not failed: no completion record"
    p = bad.partition_of("ship-1")
    bad.close()

    good = EngineHarness(tmp_path, [ShipV2], now_ms=bad.now_ms)
    out = good.transaction(resume=[p])
    assert [r.event()["type"] for r in out if r.topic == EVENTS] == ["WorkflowTaskRecovered", "WorkflowCompleted"]
    assert good.result("ship-1") == "no label"
    good.close()


@workflow.defn(name="Patient", activation_deadline=5)
class Patient:
    @workflow.run
    async def run(self, block_s: float) -> str:
        threading.Event().wait(block_s)  # blocking workflow code (time.sleep itself is refused)
        return "done"


@workflow.defn(name="Impatient", activation_deadline=0.2)
class Impatient:
    @workflow.run
    async def run(self, block_s: float) -> str:
        threading.Event().wait(block_s)  # blocking workflow code (time.sleep itself is refused)
        return "done"


def test_the_activation_deadline_is_set_per_workflow(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, [Patient, Impatient])
    h.settings = h.engine.settings = type(h.settings)(**{**h.settings.__dict__, "activation_deadline_ms": 400})
    assert h.engine.deadline.enforced, "pytest runs tests in the main thread"
    h.start("patient", "Patient", 0.6)
    assert h.result("patient") == "done", "0.6 s is within its own 5 s, though over the processor's 0.4 s"
    h.start("impatient", "Impatient", 0.3)
    assert h.event_types("impatient")[-1] == "WorkflowTaskFailed"
    assert "for more than 0.2s" in h.events("impatient")[-1]["reason"]
    h.close()
