from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wf_harness import Sim, replay
from wf_samples import Charge, Checkout, Order, charge, ship

from processor import _payload, workflow
from processor._runtime import WorkflowInstance, WorkflowTaskError
from processor.exceptions import NondeterminismError


def checkout_history() -> list[dict[str, Any]]:
    sim = Sim(Checkout)
    sim.start(Order("o-1", 250))
    sim.complete(1, Charge("o-1", 250))
    sim.complete(2, "TRK-9")
    sim.complete(3, None)
    return sim.history


@workflow.defn(name="Checkout")
class CheckoutRefundsInstead:
    @workflow.run
    async def run(self, order: Order) -> str:
        paid = await workflow.execute_activity(charge, order)
        await workflow.execute_activity("refund", paid.order_id)  # was: ship
        return "refunded"


@workflow.defn(name="Checkout")
class CheckoutSchedulesTwoAtOnce:
    @workflow.run
    async def run(self, order: Order) -> str:
        await asyncio.gather(workflow.execute_activity(charge, order), workflow.execute_activity("audit", order))
        return "extra"


@workflow.defn(name="Checkout")
class CheckoutWaitsForeverInstead:
    @workflow.run
    async def run(self, order: Order) -> str:
        await workflow.execute_activity(charge, order)
        await workflow.wait_condition(lambda: False)  # was: ship
        return "never"


def nondeterminism(cls: type, history: list[dict[str, Any]]) -> NondeterminismError:
    completion = replay(cls, history)
    assert completion.commands == []
    assert isinstance(completion.error, NondeterminismError), completion.error
    return completion.error


def test_different_activity_type_at_the_same_seq() -> None:
    err = nondeterminism(CheckoutRefundsInstead, checkout_history())
    assert (err.workflow_id, err.seq) == ("wf-1", 4)
    assert err.expected == "ActivityScheduled(activity_seq=2, activity_type='refund')"
    assert err.recorded == "ActivityScheduled(activity_seq=2, activity_type='ship')"
    assert "'wf-1'" in str(err) and "seq 4" in str(err) and "refund" in str(err) and "'ship'" in str(err)


def test_extra_command_before_the_next_input_event() -> None:
    err = nondeterminism(CheckoutSchedulesTwoAtOnce, checkout_history())
    assert err.seq == 3
    assert err.expected == "ActivityScheduled(activity_seq=2, activity_type='audit')"
    assert err.recorded == "ActivityCompleted(activity_seq=1)"


def test_recorded_command_the_code_no_longer_emits() -> None:
    err = nondeterminism(CheckoutWaitsForeverInstead, checkout_history())
    assert err.seq == 4
    assert err.expected == "no command at this point"
    assert err.recorded == "ActivityScheduled(activity_seq=2, activity_type='ship')"


def test_instance_stays_failed_after_a_nondeterminism() -> None:
    history = checkout_history()
    instance = WorkflowInstance(workflow.WorkflowDefinition.of(CheckoutRefundsInstead), "wf-1")
    first = instance.activate(history[:4])
    assert isinstance(first.error, NondeterminismError)
    again = instance.activate(history[4:])
    assert again.error is first.error and again.commands == []
    instance.close()


def started() -> dict[str, Any]:
    return {
        "workflow_id": "wf-1",
        "seq": 1,
        "time_ms": 1000,
        "type": "WorkflowStarted",
        "workflow_type": "Checkout",
        "args": _payload.to_payloads([Order("o-1", 1)]),
        "task_queue": "q",
        "execution_timeout_ms": None,
        "random_seed": 1,
        "request_id": None,
    }


def event(seq: int, type_: str | None = None, **fields: Any) -> dict[str, Any]:
    # type_ may also come in `fields` (a command from a Completion, spread in as-is).
    return {"workflow_id": "wf-1", "seq": seq, "time_ms": 1000 + seq, **({"type": type_} if type_ else {}), **fields}


def test_task_failed_means_the_step_commands_are_new() -> None:
    # The step of seq 1 failed (its commands were never recorded): replay treats them as new.
    completion = replay(Checkout, [started(), event(2, "WorkflowTaskFailed", reason="bug")])
    assert completion.error is None
    assert [(c["type"], c["activity_seq"], c["task_queue"]) for c in completion.commands] == [
        ("ActivityScheduled", 1, "q")
    ]


def test_task_failed_then_recorded_commands_and_more_inputs_replay() -> None:
    scheduled = replay(Checkout, [started()]).commands[0]
    history = [
        started(),
        event(2, "WorkflowTaskFailed", reason="bug"),
        event(3, "WorkflowTaskFailed", reason="still a bug"),
        event(4, **scheduled),
        event(5, "ActivityCompleted", activity_seq=1, attempt=1, result=_payload.to_payload(Charge("o-1", 1))),
    ]
    completion = replay(Checkout, history)
    assert completion.error is None
    assert [(c["type"], c["activity_type"]) for c in completion.commands] == [("ActivityScheduled", "ship")]


def test_without_task_failed_unrecorded_commands_are_nondeterminism() -> None:
    history = [
        started(),
        event(2, "ActivityCompleted", activity_seq=1, attempt=1, result=_payload.to_payload(Charge("o-1", 1))),
    ]
    err = replay(Checkout, history).error
    assert isinstance(err, NondeterminismError) and err.seq == 2


def test_engine_events_are_skipped_and_terminate_closes() -> None:
    scheduled = replay(Checkout, [started()]).commands[0]
    failure = {"type": "X", "message": "m", "stack_trace": "", "non_retryable": False, "cause": None}
    history = [
        started(),
        event(2, **scheduled),
        event(3, "ActivityAttemptFailed", activity_seq=1, attempt=1, failure=failure, next_attempt=2, retry_at_ms=9),
        event(4, "WorkflowTerminated", reason="ops"),
        event(5, "ActivityCompleted", activity_seq=1, attempt=2, result=_payload.to_payload(Charge("o-1", 1))),
    ]
    completion = replay(Checkout, history)
    assert completion.error is None and completion.commands == [] and completion.closed


@pytest.mark.parametrize(
    ("history", "message"),
    [
        ([{**started(), "workflow_type": "Other"}], "definition of 'Checkout'"),
        ([started(), event(2, "Mystery")], "event type 'Mystery'"),
        # (WorkflowTaskFailed first, so that the step's unrecorded command is not the error.)
        ([started(), event(2, "WorkflowTaskFailed"), event(3, "TimerFired", timer_seq=1)], "never started timer 1"),
        ([started(), event(2, "WorkflowTaskFailed"), started()], "a second WorkflowStarted"),
        ([{k: v for k, v in started().items() if k != "random_seed"}], "KeyError"),
    ],
)
def test_engine_level_problems_fail_the_task_and_activate_does_not_raise(
    history: list[dict[str, Any]], message: str
) -> None:
    completion = replay(Checkout, history)
    assert isinstance(completion.error, WorkflowTaskError)
    assert message in str(completion.error) and "'wf-1'" in str(completion.error)
    assert completion.commands == []


def test_replay_of_an_unrelated_definition_name_is_not_confused_with_ship() -> None:
    # Sanity: the activity type a function schedules under is its defn name.
    assert replay(Checkout, [started()]).commands[0]["activity_type"] == "charge"
    assert ship.__name__ == "ship"
