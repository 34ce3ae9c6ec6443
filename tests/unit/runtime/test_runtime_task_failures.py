"""What workflow code raising does (issue 7, item 9; Temporal's rule): ApplicationError -- and an
ActivityError or ChildWorkflowError it lets through -- fails the workflow; any other exception is
a bug that holds it (the task fails) with the reason and the user's line, until a fix is
deployed; `@workflow.defn(failure_exception_types=...)` makes more types fail it."""

from __future__ import annotations

from datetime import timedelta

import pytest
from wf_harness import Sim

from processor import workflow
from processor._runtime._history import WorkflowCodeError
from processor.exceptions import ApplicationError, ConfigError


class OrderInvalid(ValueError):
    pass


@workflow.defn(name="Buggy")
class Buggy:
    @workflow.run
    async def run(self, kind: str) -> str:
        if kind == "key":
            return {"a": 1}["b"]  # type: ignore[return-value]
        if kind == "app":
            raise ApplicationError("order rejected", type="Rejected", non_retryable=True)
        if kind == "activity":
            return await workflow.execute_activity("charge", 1)
        return "ok"


def test_a_plain_exception_holds_the_workflow_with_the_line_and_the_fix() -> None:
    sim = Sim(Buggy)
    with pytest.raises(WorkflowCodeError) as held:
        sim.start("key")
    message = str(held.value)
    assert "workflow 'wf-1' (Buggy): its @workflow.run method raised KeyError: 'b' (history seq 1, at " in message
    assert "test_runtime_task_failures.py:27 in run)" in message, "the user's own line, not the runtime's"
    assert "held until a fix is deployed" in message and "raise ApplicationError" in message
    assert "failure_exception_types" in message
    assert isinstance(held.value.__cause__, KeyError)
    assert sim.commands("WorkflowFailed") == []
    sim.close()


def test_application_error_fails_the_workflow() -> None:
    sim = Sim(Buggy)
    sim.start("app")
    failure = sim.closing()["failure"]
    assert (failure["type"], failure["message"]) == ("Rejected", "order rejected")
    sim.close()


def test_an_activity_error_let_through_fails_the_workflow() -> None:
    sim = Sim(Buggy)
    sim.start("activity")
    sim.fail(1, ApplicationError("card declined", type="Declined", non_retryable=True))
    failure = sim.closing()["failure"]
    assert failure["type"] == "ActivityError"
    sim.close()


@workflow.defn(name="Strict", failure_exception_types=[ValueError])
class Strict:
    @workflow.run
    async def run(self, bad: bool) -> str:
        if bad:
            raise OrderInvalid("quantity must be positive")
        raise KeyError("not listed")


def test_listed_types_and_their_subclasses_fail_the_workflow_others_still_hold() -> None:
    sim = Sim(Strict)
    sim.start(True)
    failure = sim.closing()["failure"]
    assert (failure["type"], failure["message"]) == ("OrderInvalid", "quantity must be positive")
    sim.close()
    sim = Sim(Strict)
    with pytest.raises(WorkflowCodeError, match="raised KeyError"):
        sim.start(False)
    sim.close()


@workflow.defn(name="BadSignal")
class BadSignal:
    def __init__(self) -> None:
        self.done = False

    @workflow.signal
    def poke(self, n: int) -> None:
        self.done = 10 // n > 0

    @workflow.run
    async def run(self) -> bool:
        await workflow.wait_condition(lambda: self.done)
        return self.done


def test_a_raising_signal_handler_holds_the_workflow() -> None:
    sim = Sim(BadSignal)
    sim.start()
    with pytest.raises(WorkflowCodeError, match="signal handler 'poke' raised ZeroDivisionError"):
        sim.signal("poke", 0)
    sim.close()


@pytest.mark.parametrize(("kwargs", "fix"), [
    ({"failure_exception_types": ValueError}, "takes a list of exception classes"),
    ({"failure_exception_types": [int]}, "is not an Exception subclass"),
    ({"activation_deadline": 0}, "must be a positive number of seconds"),
    ({"activation_deadline": "5s"}, "must be a positive number of seconds"),
])
def test_bad_defn_options_say_what_to_write(kwargs: dict[str, object], fix: str) -> None:
    with pytest.raises(ConfigError, match=fix):
        workflow.defn(**kwargs)  # type: ignore[call-overload]


def test_defn_options_reach_the_definition() -> None:
    @workflow.defn(activation_deadline=timedelta(seconds=7), failure_exception_types=[ValueError, KeyError])
    class Tuned:
        @workflow.run
        async def run(self) -> None:
            return None

    d = workflow.WorkflowDefinition.of(Tuned)
    assert d.activation_deadline_s == 7.0 and d.failure_exception_types == (ValueError, KeyError)
