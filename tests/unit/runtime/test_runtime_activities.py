from __future__ import annotations

import random
from datetime import timedelta

import pytest
from wf_harness import Sim, assert_replays
from wf_samples import (
    CatchesActivityError,
    Charge,
    Checkout,
    FanOut,
    LetsActivityErrorEscape,
    Order,
    RacesActivityAgainstTimeout,
)

from processor import _payload, workflow
from processor.exceptions import ApplicationError


def run_checkout(always_replay: bool) -> Sim:
    sim = Sim(Checkout, always_replay=always_replay)
    sim.start(Order("o-1", 250))
    sim.advance(40)
    sim.complete(1, Charge("o-1", 250, ["card"]))
    sim.advance(15)
    sim.complete(2, "TRK-9")
    sim.complete(3, None)
    return sim


def test_checkout_schedules_each_activity_after_the_previous_result(always_replay: bool) -> None:
    sim = run_checkout(always_replay)
    assert [(e["seq"], e["type"]) for e in sim.history] == [
        (1, "WorkflowStarted"),
        (2, "ActivityScheduled"),
        (3, "ActivityCompleted"),
        (4, "ActivityScheduled"),
        (5, "ActivityCompleted"),
        (6, "ActivityScheduled"),
        (7, "ActivityCompleted"),
        (8, "WorkflowCompleted"),
    ]
    charge, ship, notify = sim.scheduled()
    assert (charge["activity_seq"], charge["activity_type"], charge["task_queue"]) == (1, "charge", "default")
    assert _payload.from_payloads(charge["args"]) == [{"id": "o-1", "amount": 250}]
    assert charge["start_to_close_timeout_ms"] == 10_000 and charge["retry_policy"] is None
    assert (ship["activity_seq"], ship["activity_type"], ship["start_to_close_timeout_ms"]) == (2, "ship", 5000)
    assert ship["retry_policy"] == {
        "initial_interval_ms": 1000,
        "backoff_coefficient": 2.0,
        "maximum_interval_ms": 100_000,
        "maximum_attempts": 3,
        "non_retryable_error_types": [],
    }
    assert (notify["activity_type"], notify["task_queue"]) == ("notify", "emails")
    assert sim.result() == {"order": "o-1", "tracking": "TRK-9", "charged": 250}
    assert sim.last.closed


def test_checkout_history_replays_identically() -> None:
    sim = run_checkout(always_replay=False)
    assert_replays(Checkout, sim.history)
    assert sim.history == run_checkout(always_replay=True).history


def test_gather_of_ten_activities_completing_in_shuffled_order(always_replay: bool) -> None:
    sim = Sim(FanOut, always_replay=always_replay)
    first = sim.start(10)
    # All ten are scheduled in one step, in call order, seqs 1..10.
    assert [(c["activity_seq"], _payload.from_payloads(c["args"])) for c in first.commands] == [
        (i + 1, [i]) for i in range(10)
    ]
    order = list(range(1, 11))
    random.Random(7).shuffle(order)
    for seq in order:
        sim.advance(3)
        completion = sim.complete(seq, (seq - 1) ** 2)
        assert completion.closed == (seq == order[-1])
    assert sim.result() == [i * i for i in range(10)]
    assert_replays(FanOut, sim.history)


def test_activity_failure_is_an_activity_error_the_workflow_can_catch(always_replay: bool) -> None:
    sim = Sim(CatchesActivityError, always_replay=always_replay)
    sim.start()
    sim.fail(1, ApplicationError("warehouse closed", type="ShippingError", non_retryable=True), attempt=2)
    assert sim.result() == "ship#1 attempt 2: ShippingError: warehouse closed"
    assert_replays(CatchesActivityError, sim.history)


def test_uncaught_activity_error_fails_the_workflow_with_the_cause_chain(always_replay: bool) -> None:
    sim = Sim(LetsActivityErrorEscape, always_replay=always_replay)
    sim.start()
    try:
        try:
            raise ConnectionError("socket reset")
        except ConnectionError as root:
            raise ApplicationError("carrier API down", type="CarrierError") from root
    except ApplicationError as err:
        failure_cause = err
    completion = sim.fail(1, failure_cause)
    assert completion.closed
    failed = sim.closing()
    assert failed["type"] == "WorkflowFailed"
    failure = failed["failure"]
    assert failure["type"] == "ActivityError" and "ship" in failure["message"]
    assert failure["cause"]["type"] == "CarrierError"
    assert failure["cause"]["message"] == "carrier API down"
    assert failure["cause"]["cause"]["type"] == "ConnectionError"
    assert failure["cause"]["cause"]["message"] == "socket reset"
    assert failure["cause"]["cause"]["cause"] is None
    # The workflow's own traceback, then the activity's, carried through history.
    assert "wf_samples.py" in failure["stack_trace"]
    assert "test_runtime_activities.py" in failure["cause"]["stack_trace"]


def test_activity_timed_out_raises_activity_error_with_a_timeout_cause(always_replay: bool) -> None:
    sim = Sim(CatchesActivityError, always_replay=always_replay)
    sim.start()
    sim.feed("ActivityTimedOut", activity_seq=1, attempt=1, timeout_type="start_to_close")
    assert sim.result() == "ship#1 attempt 1: ActivityTimeout: activity ship timed out (start_to_close)"


@pytest.mark.parametrize("finish", ["activity", "timeout"])
def test_wait_for_around_an_activity_uses_a_durable_timer(finish: str, always_replay: bool) -> None:
    sim = Sim(RacesActivityAgainstTimeout, always_replay=always_replay)
    first = sim.start(30)
    kinds = [c["type"] for c in first.commands]
    assert sorted(kinds) == ["ActivityScheduled", "TimerStarted"]
    timer = sim.commands("TimerStarted")[0]
    assert (timer["timer_seq"], timer["duration_ms"], timer["fire_at_ms"]) == (1, 30_000, sim.now_ms + 30_000)
    sim.advance(1000)
    if finish == "activity":
        done = sim.complete(1, "TRK-1")
        # The timer is no longer needed: canceled in the same step as the completion.
        assert [c["type"] for c in done.commands] == ["TimerCanceled", "WorkflowCompleted"]
        assert done.commands[0]["timer_seq"] == 1
        assert sim.result() == "TRK-1"
    else:
        done = sim.fire(1)
        assert [c["type"] for c in done.commands] == ["WorkflowCompleted"]
        assert sim.result() == "timed out"
        # The activity's late result has no one to go to, and is no error.
        late = sim.instance.activate([])
        assert late.error is None
    assert_replays(RacesActivityAgainstTimeout, sim.history)


@workflow.defn(name="AllTimeouts")
class AllTimeouts:
    @workflow.run
    async def run(self) -> str:
        result: str = await workflow.execute_activity(
            "work", start_to_close_timeout=1, schedule_to_close_timeout=timedelta(minutes=2),
            heartbeat_timeout=0.25, schedule_to_start_timeout=timedelta(seconds=30))
        return result


def test_every_timeout_is_recorded_in_the_scheduled_event(always_replay: bool) -> None:
    sim = Sim(AllTimeouts, always_replay=always_replay)
    sim.start()
    (work,) = sim.scheduled()
    assert (work["start_to_close_timeout_ms"], work["schedule_to_close_timeout_ms"], work["heartbeat_timeout_ms"],
            work["schedule_to_start_timeout_ms"]) == (1_000, 120_000, 250, 30_000)
    sim.feed("ActivityTimedOut", activity_seq=1, attempt=1, timeout_type="schedule_to_start")
    closing = sim.closing()
    assert closing["type"] == "WorkflowFailed"
    cause = closing["failure"]["cause"]
    assert (cause["type"], cause["message"]) == ("ActivityTimeout", "activity work timed out (schedule_to_start)")
