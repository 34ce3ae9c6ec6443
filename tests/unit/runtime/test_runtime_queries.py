"""Query handlers in the runtime (issue 7): they read the instance's state and change nothing --
a handler that tries to schedule work, sleep or start a task fails the query, not the workflow."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from wf_harness import Sim, replay

from processor import _payload, workflow
from processor.exceptions import ConfigError, QueryFailedError


@workflow.defn
class Cart:
    def __init__(self) -> None:
        self.items: list[str] = []

    @workflow.signal
    def add(self, item: str) -> None:
        self.items.append(item)

    @workflow.query
    def contents(self) -> list[str]:
        return list(self.items)

    @workflow.query(name="has")
    def contains(self, item: str) -> bool:
        return item in self.items

    @workflow.query
    def schedules(self) -> Any:
        return workflow.execute_activity("charge", start_to_close_timeout=5)  # returns a coroutine

    @workflow.query
    def spawns(self) -> None:
        asyncio.get_running_loop().create_task(asyncio.sleep(1))

    @workflow.query
    def sleeps(self) -> None:
        asyncio.get_running_loop().call_later(1, print)

    @workflow.query
    def breaks(self) -> None:
        raise ValueError("no such thing")

    @workflow.query
    def reads_the_clock(self) -> float:
        import time

        return time.time()

    @workflow.query
    def now(self) -> str:
        return workflow.now().isoformat()

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: "checkout" in self.items)
        return self.items


def ask(sim: Sim, name: str, *args: Any) -> Any:
    return _payload.from_payload(sim.instance.query(name, _payload.to_payloads(args)))


def test_a_query_reads_the_current_state_and_records_nothing() -> None:
    sim = Sim(Cart)
    sim.start()
    sim.signal("add", "apple")
    before = list(sim.history)
    assert ask(sim, "contents") == ["apple"]
    assert ask(sim, "has", "apple") is True and ask(sim, "has", "pear") is False
    assert ask(sim, "now") == "2023-11-14T22:13:20+00:00", "history time of the last event applied"
    assert sim.history == before
    sim.signal("add", "checkout")
    assert sim.result() == ["apple", "checkout"]
    sim.close()


@pytest.mark.parametrize(("name", "why"), [
    ("schedules", "returned an awaitable: a query cannot wait"),
    ("spawns", "tried to start work (a task or timer)"),
    ("sleeps", "tried to change the workflow (TimerStarted"),
    ("breaks", "query handler 'breaks' raised ValueError: no such thing"),
    ("reads_the_clock", "time.time() inside workflow 'Cart' is nondeterministic"),
    ("missing", "workflow type 'Cart' has no query 'missing' (queries: breaks, contents, has, now, "
                "reads_the_clock, schedules, sleeps, spawns)"),
])
def test_a_query_that_would_change_the_workflow_or_fails_is_refused(name: str, why: str) -> None:
    sim = Sim(Cart)
    sim.start()
    sim.signal("add", "apple")
    before = list(sim.history)
    with pytest.raises(QueryFailedError) as info:
        ask(sim, name)
    assert why in str(info.value)
    # The workflow is untouched and goes on exactly as before.
    assert ask(sim, "contents") == ["apple"] and sim.history == before
    sim.signal("add", "checkout")
    assert sim.result() == ["apple", "checkout"]
    completion = replay(Cart, sim.history)
    assert completion.error is None and completion.commands == []
    sim.close()


def test_a_replayed_instance_answers_like_the_live_one() -> None:
    sim = Sim(Cart, always_replay=True)
    sim.start()
    sim.signal("add", "pear")
    assert ask(sim, "contents") == ["pear"]
    sim.close()


def test_query_handlers_must_be_plain_methods() -> None:
    with pytest.raises(ConfigError, match="must be a plain `def` method"):
        class AsyncQuery:
            @workflow.query
            async def q(self) -> int:
                return 1
    with pytest.raises(ConfigError, match="two handlers for query 'x'"):
        @workflow.defn
        class Twice:
            @workflow.query(name="x")
            def a(self) -> int:
                return 1

            @workflow.query(name="x")
            def b(self) -> int:
                return 2

            @workflow.run
            async def run(self) -> None:
                return None


@workflow.defn
class Schemer:
    def __init__(self) -> None:
        self.go = False

    @workflow.signal
    def start(self) -> None:
        self.go = True

    @workflow.query
    def sneaky(self) -> None:
        workflow.start_child_workflow("Kid", id="kid")  # allocates child_seq 1 before it is refused

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.go)
        return await workflow.execute_child_workflow("Kid", id="kid-real")


def test_a_refused_query_leaves_no_trace_in_the_sequence_counters() -> None:
    sim = Sim(Schemer)
    sim.start()
    with pytest.raises(QueryFailedError, match="tried to change the workflow"):
        ask(sim, "sneaky")
    sim.signal("start")
    (started,) = sim.commands("ChildWorkflowStarted")
    assert started["child_seq"] == 1, "the query's allocation was put back"
    completion = replay(Schemer, sim.history)
    assert completion.error is None and completion.commands == []
    sim.close()
