from __future__ import annotations

import logging

import pytest
from wf_harness import START_MS, Sim, assert_replays
from wf_samples import Approval, CleansUpOnCancel, Item, Sleeper, SwallowsCancel

from processor import workflow


def test_sleep_is_a_durable_timer_with_the_right_fire_time(always_replay: bool) -> None:
    sim = Sim(Sleeper, always_replay=always_replay)
    sim.advance(500)
    first = sim.start(90.5)
    assert first.commands == [
        {"type": "TimerStarted", "timer_seq": 1, "duration_ms": 90_500, "fire_at_ms": START_MS + 500 + 90_500}
    ]
    sim.advance(90_500)
    sim.fire(1)
    # now() is the time of the event being applied: the TimerFired event.
    assert sim.result() == "2023-11-14T22:14:51+00:00"  # START_MS is 22:13:20, +91 s
    assert_replays(Sleeper, sim.history)


def test_signals_and_wait_condition(always_replay: bool) -> None:
    sim = Sim(Approval, always_replay=always_replay)
    first = sim.start(3600)
    assert [c["type"] for c in first.commands] == ["TimerStarted"]  # wait_condition's timeout
    assert sim.signal("add-item", Item("sku-1", 2)).commands == []
    assert sim.signal("add-item", {"sku": "sku-2", "qty": 1}).commands == []
    done = sim.signal("approve", "alice")
    assert [c["type"] for c in done.commands] == ["TimerCanceled", "WorkflowCompleted"]
    assert sim.result() == {"approved_by": "alice", "items": ["sku-1", "sku-2"]}
    assert_replays(Approval, sim.history)


def test_wait_condition_timeout(always_replay: bool) -> None:
    sim = Sim(Approval, always_replay=always_replay)
    sim.start(10)
    sim.signal("add-item", Item("sku-1", 2))
    sim.advance(10_000)
    sim.fire(1)
    assert sim.result() == {"approved_by": None, "items": 1}


def test_signal_without_handler_is_logged_and_buffered(always_replay: bool, caplog: pytest.LogCaptureFixture) -> None:
    sim = Sim(Approval, always_replay=always_replay)
    sim.start(3600)
    with caplog.at_level(logging.WARNING, logger="processor.workflow"):
        assert sim.signal("aprove", "typo").commands == []
        sim.signal("approve", "bob")
    warnings = [r for r in caplog.records if "has no handler" in r.getMessage()]
    # Logged once: in always-replay mode the replayed step is muted.
    assert len(warnings) == 1
    assert "'aprove'" in warnings[0].getMessage() and "add-item, approve" in warnings[0].getMessage()
    assert "buffered until one is set" in warnings[0].getMessage()
    assert warnings[0].workflow_id == "wf-1"
    assert sim.result()["approved_by"] == "bob"


def test_cancel_runs_cleanup_then_closes_as_canceled(always_replay: bool) -> None:
    sim = Sim(CleansUpOnCancel, always_replay=always_replay)
    sim.start()
    canceled = sim.cancel("customer left")
    # The sleep's timer is canceled, the cleanup activity scheduled; the workflow is still open.
    assert [c["type"] for c in canceled.commands] == ["TimerCanceled", "ActivityScheduled"]
    assert not canceled.closed
    done = sim.complete(1, None)
    assert done.commands == [{"type": "WorkflowCanceled", "reason": "customer left"}]
    assert done.closed
    assert_replays(CleansUpOnCancel, sim.history)


def test_workflow_that_swallows_cancel_completes(always_replay: bool) -> None:
    sim = Sim(SwallowsCancel, always_replay=always_replay)
    sim.start()
    sim.cancel()
    assert sim.result() == "canceled, but finished anyway"


def test_input_after_close_is_ignored(always_replay: bool) -> None:
    sim = Sim(SwallowsCancel, always_replay=always_replay)
    sim.start()
    sim.cancel()
    assert sim.fire(1).commands == []
    assert sim.cancel().closed


@workflow.defn
class LateHandler:
    """Sets a handler for `note` only after a first `go` signal: notes sent before are buffered."""

    def __init__(self) -> None:
        self.notes: list[str] = []
        self.go = False

    @workflow.signal
    def start_listening(self) -> None:
        self.go = True

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: self.go)
        workflow.set_signal_handler("note", self.notes.append)
        await workflow.wait_condition(lambda: len(self.notes) >= 3)
        return self.notes


def test_signals_without_a_handler_are_delivered_in_order_once_one_is_set(always_replay: bool) -> None:
    sim = Sim(LateHandler, always_replay=always_replay)
    sim.start()
    sim.signal("note", "a")
    sim.signal("note", "b")
    sim.signal("start_listening")
    sim.signal("note", "c")
    assert sim.result() == ["a", "b", "c"]
    sim.close()
