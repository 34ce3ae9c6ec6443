"""Child workflows in the runtime (issue 7): the commands a parent records, how results and
failures reach it, the golden history, and the nondeterminism cases."""

from __future__ import annotations

from pathlib import Path

import pytest
from wf_harness import Sim, assert_replays, replay

from processor import _payload, workflow
from processor._failure import failure_from_exception
from processor._runtime._history import WorkflowCodeError
from processor.exceptions import ApplicationError, ChildWorkflowError, ConfigError, NondeterminismError, ProcessorError
from processor.replayer import Replayer, history_from_json, history_to_json

GOLDEN = Path(__file__).parent / "golden" / "child_workflow.jsonl"


@workflow.defn
class Kid:
    @workflow.run
    async def run(self, n: int) -> int:
        return n


@workflow.defn
class Other:
    @workflow.run
    async def run(self, n: int) -> int:
        return n


@workflow.defn(name="Family")
class Family:
    @workflow.run
    async def run(self) -> list[object]:
        first = workflow.start_child_workflow(Kid.run, 1, id="kid-1")
        first.signal("hello", "there")
        out: list[object] = [await first.result()]
        try:
            out.append(await workflow.execute_child_workflow(Kid, 2, id="kid-2", parent_close_policy="abandon"))
        except ChildWorkflowError as exc:
            out.append(f"{exc.status}/{exc.workflow_id}/{exc.__cause__}")
        return out


@workflow.defn(name="Family")
class FamilyWithOtherChild:
    @workflow.run
    async def run(self) -> list[object]:
        return [await workflow.execute_child_workflow(Other.run, 1, id="kid-1")]


def child_done(sim: Sim, seq: int, child: str, result: object = None, failure: object = None,
               status: str = "completed") -> None:
    sim.feed("ChildWorkflowCompleted", child_seq=seq, child_workflow_id=child,
             result=_payload.to_payload(result) if failure is None else None, failure=failure,
             child_run_id="r" * 32, status=status)


def run_family() -> Sim:
    sim = Sim(Family)
    sim.start()
    child_done(sim, 1, "kid-1", 1)
    child_done(sim, 2, "kid-2", failure=failure_from_exception(ApplicationError("no thanks")), status="failed")
    return sim


def test_a_parent_records_its_children_and_gets_results_and_failures() -> None:
    sim = run_family()
    started = sim.commands("ChildWorkflowStarted")
    assert [(c["child_seq"], c["child_workflow_id"], c["workflow_type"], c["parent_close_policy"])
            for c in started] == [(1, "kid-1", "Kid", "terminate"), (2, "kid-2", "Kid", "abandon")]
    assert started[0]["task_queue"] == "default" and started[0]["args"][0]["data"] == b"1"
    (signaled,) = sim.commands("ChildWorkflowSignaled")
    assert (signaled["child_seq"], signaled["signal_name"]) == (1, "hello")
    assert sim.result() == [1, "failed/kid-2/no thanks"]
    assert_replays(Family, sim.history)
    sim.close()


def test_child_workflow_golden_history() -> None:
    sim = run_family()
    assert history_to_json(sim.history) == GOLDEN.read_text(), "the runtime changed what child workflows record"
    result = Replayer(workflows=[Family]).replay(history_from_json(GOLDEN.read_text()))
    assert result.closed and result.commands_pending == []
    sim.close()


def test_starting_another_child_type_on_replay_is_a_nondeterminism() -> None:
    sim = run_family()
    completion = replay(FamilyWithOtherChild, sim.history)
    assert isinstance(completion.error, NondeterminismError)
    assert "ChildWorkflowStarted(child_seq=1, workflow_type='Other')" in str(completion.error)
    sim.close()


@pytest.mark.parametrize("bad", [{"id": ""}, {"id": "a\x00b"}, {"id": "x", "parent_close_policy": "keep"},
                                 {"id": "x", "task_queue": "bad queue!"}])
def test_bad_child_arguments_hold_the_workflow_with_the_fix(bad: dict[str, str]) -> None:
    """A wrong call is a bug in workflow code: the workflow is held (a fix resumes it), not failed."""
    @workflow.defn(name="BadParent")
    class BadParent:
        @workflow.run
        async def run(self) -> None:
            workflow.start_child_workflow(Kid.run, 1, **bad)

    sim = Sim(BadParent)
    with pytest.raises(WorkflowCodeError, match="raised ConfigError: ") as held:
        sim.start()
    assert isinstance(held.value.__cause__, ConfigError)
    assert sim.commands("WorkflowFailed") == []
    sim.close()


@workflow.defn(name="Picky")
class Picky:
    @workflow.run
    async def run(self) -> str:
        try:
            await workflow.execute_child_workflow(Kid.run, 1, id="kid-1")
        except ProcessorError as exc:
            return f"unreadable: {type(exc).__name__}"
        return "read"


def test_a_child_result_the_parent_cannot_read_fails_the_await_not_the_task() -> None:
    sim = Sim(Picky)
    sim.start()
    sim.feed("ChildWorkflowCompleted", child_seq=1, child_workflow_id="kid-1",
             result={"encoding": "json/plain", "data": b"not json"}, failure=None, child_run_id="", status="completed")
    assert sim.result() == "unreadable: PayloadError"
    sim.close()
