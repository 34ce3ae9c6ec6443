"""workflow.side_effect (issue 11 item 5): a value computed once, recorded in history, and read
back -- not recomputed -- whenever the workflow replays."""

from __future__ import annotations

import asyncio
import time
import uuid
from typing import Any

import pytest

from processor import workflow
from processor.replayer import Replayer
from processor.testing import WorkflowEnvironment

CALLS: list[str] = []


def _stamp() -> float:
    CALLS.append("stamp")
    return time.time()  # the clock: refused in workflow code, allowed in a side effect


@workflow.defn
class Stamped:
    @workflow.run
    async def run(self) -> list[Any]:
        first = workflow.side_effect(_stamp)
        await asyncio.sleep(60)
        token = workflow.side_effect(lambda: uuid.uuid4().hex)
        await asyncio.sleep(60)
        return [first, token, workflow.side_effect(_stamp) >= first]


def test_a_side_effect_runs_once_and_replays_its_recorded_value(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DP_ALWAYS_REPLAY", "1")  # every step replays the run from its first event
    CALLS.clear()
    with WorkflowEnvironment(workflows=[Stamped]) as env:
        env.start_workflow(Stamped, id="s")
        first, token, later = env.result("s")
        history = env.history("s")
    assert CALLS == ["stamp", "stamp"], "each side effect ran once, never on the replays"
    recorded = [e for e in history if e["type"] == "SideEffectRecorded"]
    assert [e["side_effect_seq"] for e in recorded] == [1, 2, 3]
    assert isinstance(first, float) and len(token) == 32 and later is True
    assert Replayer([Stamped]).replay(history).closed, "the recorded history replays"


@workflow.defn
class Clocked:
    @workflow.run
    async def run(self) -> float:
        return time.time()


def test_the_clock_outside_a_side_effect_is_still_refused() -> None:
    with WorkflowEnvironment(workflows=[Clocked]) as env:
        env.start_workflow(Clocked, id="c")
        assert "time()" in (env.describe("c")["held"] or ""), "held, with the fix in the reason"
