"""Update handlers in the runtime (issue 7, item 5): the validator runs read-only and changes
nothing; an accepted update (WorkflowUpdateAccepted) runs its handler as workflow code and emits
WorkflowUpdateCompleted with the result or the failure; replay matches it; golden history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from wf_harness import Sim, assert_replays, replay

from processor import _payload, workflow
from processor._runtime._history import WorkflowCodeError
from processor.exceptions import ConfigError, NondeterminismError, UpdateRejectedError
from processor.replayer import Replayer, history_from_json, history_to_json
from tests.apps.basic import Cart

GOLDEN = Path(__file__).parent / "golden"


def accept(sim: Sim, update_id: str, name: str, *args: object) -> None:
    sim.feed("WorkflowUpdateAccepted", update_id=update_id, update_name=name, args=_payload.to_payloads(args),
             reply_partition=0)


def done(sim: Sim, update_id: str) -> dict[str, object]:
    (cmd,) = [c for c in sim.commands("WorkflowUpdateCompleted") if c["update_id"] == update_id]
    return cmd


def run_cart() -> Sim:
    sim = Sim(Cart)
    sim.start()
    accept(sim, "u1", "add_item", "apple")
    accept(sim, "u2", "add_priced", "melon")
    sim.complete(1, 42)
    accept(sim, "u3", "refuse", "no more")
    sim.signal("checkout")
    return sim


def test_updates_emit_their_results_and_failures() -> None:
    sim = run_cart()
    assert _payload.from_payload(done(sim, "u1")["result"]) == 1
    assert _payload.from_payload(done(sim, "u2")["result"]) == 42
    failed = done(sim, "u3")
    assert failed["result"] is None and failed["failure"]["type"] == "Refused"  # type: ignore[index]
    assert sim.result() == ["apple", "melon@42"], "a failed update does not fail the workflow"
    assert_replays(Cart, sim.history)
    sim.close()


def without_stack_traces(history: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Stack traces hold the checkout's absolute paths: blanked, so the golden file is the same anywhere."""
    return [{**e, "failure": {**e["failure"], "stack_trace": ""}} if e.get("failure") else e for e in history]


def test_update_golden_history() -> None:
    sim = run_cart()
    path = GOLDEN / "update.jsonl"
    assert history_to_json(without_stack_traces(sim.history)) == path.read_text(), \
        "the runtime changed what updates record"
    result = Replayer(workflows=[Cart]).replay(history_from_json(path.read_text()))
    assert result.closed and result.commands_pending == []
    sim.close()


def test_the_validator_rejects_and_changes_nothing() -> None:
    sim = Sim(Cart)
    sim.start()
    sim.instance.validate_update("add_item", _payload.to_payloads(["apple"]))
    with pytest.raises(UpdateRejectedError, match="raised ValueError: sku must not be empty"):
        sim.instance.validate_update("add_item", _payload.to_payloads([""]))
    with pytest.raises(UpdateRejectedError, match="has no update 'nope'"):
        sim.instance.validate_update("nope", [])
    with pytest.raises(UpdateRejectedError, match="the arguments do not fit its handler Cart.add_item: too many"):
        sim.instance.validate_update("add_item", _payload.to_payloads(["apple", "pear"]))
    accept(sim, "u1", "add_item", "apple")
    assert sim.instance.query("contents", []) == _payload.to_payload(["apple"])
    sim.close()


@workflow.defn(name="SneakyValidator")
class SneakyValidator:
    @workflow.update
    def go(self) -> None:
        return None

    @go.validator  # type: ignore[attr-defined]
    def check(self) -> None:
        workflow.start_child_workflow("Kid", id="k")  # a validator may not decide anything

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


def test_a_validator_that_tries_to_change_the_workflow_rejects_and_records_nothing() -> None:
    sim = Sim(SneakyValidator)
    sim.start()
    with pytest.raises(UpdateRejectedError, match="tried to change the workflow"):
        sim.instance.validate_update("go", [])
    accept(sim, "u1", "go")
    assert [c["type"] for c in sim.history[1:]] == ["WorkflowUpdateAccepted", "WorkflowUpdateCompleted"]
    sim.close()


def test_a_changed_update_result_point_is_a_nondeterminism() -> None:
    sim = run_cart()
    # History where u1's completion came with another update id: the code completes u1 -> mismatch.
    changed = [dict(e) for e in sim.history]
    index = next(i for i, e in enumerate(changed) if e["type"] == "WorkflowUpdateCompleted")
    changed[index]["update_id"] = "other"
    assert isinstance(replay(Cart, changed).error, NondeterminismError)
    sim.close()


@workflow.defn(name="CartV0")
class BuggyUpdate:
    @workflow.update
    def add(self, n: int) -> int:
        return 10 // n

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


def test_a_bug_in_an_update_handler_holds_the_workflow() -> None:
    sim = Sim(BuggyUpdate)
    sim.start()
    with pytest.raises(WorkflowCodeError, match="update handler 'add' raised ZeroDivisionError"):
        accept(sim, "u1", "add", 0)
    sim.close()


def test_validator_decorator_checks_its_method() -> None:
    with pytest.raises(ConfigError, match="must be a plain `def` method"):
        @workflow.defn(name="AsyncValidator")
        class AsyncValidator:
            @workflow.update
            def go(self) -> None:
                return None

            @go.validator  # type: ignore[attr-defined]
            async def check(self) -> None:
                return None

            @workflow.run
            async def run(self) -> None:
                return None


@workflow.defn(name="Lottery")
class Lottery:
    def __init__(self) -> None:
        self.draws: list[str] = []

    @workflow.update
    def draw(self) -> str:
        self.draws.append(str(workflow.uuid4()))
        return self.draws[-1]

    @draw.validator  # type: ignore[attr-defined]
    def check(self) -> None:
        workflow.random().random()  # a validator that reads randomness must not move the stream

    @workflow.query
    def peek(self) -> float:
        return workflow.random().random()

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: len(self.draws) >= 2)
        return self.draws


def test_validators_and_queries_leave_the_random_stream_where_it_was() -> None:
    sim = Sim(Lottery)
    sim.start()
    for n in range(2):
        sim.instance.validate_update("draw", [])
        sim.instance.query("peek", [])
        accept(sim, f"u{n}", "draw")
    assert_replays(Lottery, sim.history)  # the live results are what a replay computes
    sim.close()


@workflow.defn(name="Hoarder")
class Hoarder:
    @workflow.update
    def dump(self, n: int) -> str:
        return "x" * n

    @workflow.run
    async def run(self) -> None:
        await workflow.wait_condition(lambda: False)


def test_an_oversized_update_result_fails_the_update_not_the_workflow() -> None:
    sim = Sim(Hoarder)
    sim.start()
    accept(sim, "big", "dump", 2_000_000)
    failure = done(sim, "big")["failure"]
    assert failure["type"] == "PayloadTooLarge" and "the result of update 'dump'" in failure["message"]  # type: ignore[index]
    assert sim.commands("WorkflowFailed") == []
    accept(sim, "small", "dump", 3)
    assert _payload.from_payload(done(sim, "small")["result"]) == "xxx"
    sim.close()
