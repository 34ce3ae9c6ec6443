"""continue_as_new and patched/deprecate_patch in the runtime (issue 7): what they record, how they
replay, and the nondeterminism cases. Golden histories pin the records (golden/*.jsonl)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from wf_harness import Sim, assert_replays, replay

from processor import workflow
from processor._runtime._history import WorkflowCodeError
from processor.exceptions import NondeterminismError
from processor.replayer import Replayer, history_from_json, history_to_json

GOLDEN = Path(__file__).parent / "golden"


@workflow.defn
class Counter:
    """Counts signals; every `every` signals it continues as new, carrying the count."""

    def __init__(self) -> None:
        self.pending = 0

    @workflow.signal
    def bump(self) -> None:
        self.pending += 1

    @workflow.run
    async def run(self, count: int, every: int, stop_at: int) -> int:
        while count < stop_at:
            await workflow.wait_condition(lambda: self.pending > 0)
            self.pending -= 1
            count += 1
            if count % every == 0 and count < stop_at:
                workflow.continue_as_new(count, every, stop_at)
        return count


@workflow.defn(name="Shipper")
class ShipperV1:
    @workflow.run
    async def run(self, order: str) -> str:
        await asyncio.sleep(60)
        return await workflow.execute_activity("ship_by_post", order, start_to_close_timeout=10)


@workflow.defn(name="Shipper")
class ShipperV2:
    """v2: new runs ship by courier. The branch is decided before the sleep, so a run that slept
    through the deploy decides on replay -- no marker in its first step: the old path."""

    @workflow.run
    async def run(self, order: str) -> str:
        courier = workflow.patched("courier")
        await asyncio.sleep(60)
        name = "ship_by_courier" if courier else "ship_by_post"
        return await workflow.execute_activity(name, order, start_to_close_timeout=10)


@workflow.defn(name="Shipper")
class ShipperV3:
    """v3: only the courier path is left; the patch is deprecated."""

    @workflow.run
    async def run(self, order: str) -> str:
        workflow.deprecate_patch("courier")
        await asyncio.sleep(60)
        return await workflow.execute_activity("ship_by_courier", order, start_to_close_timeout=10)


@workflow.defn(name="Shipper")
class ShipperV4:
    """v4: the deprecate_patch call is gone too."""

    @workflow.run
    async def run(self, order: str) -> str:
        await asyncio.sleep(60)
        return await workflow.execute_activity("ship_by_courier", order, start_to_close_timeout=10)


def strip(events: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    return [(e["type"], e.get("activity_type") or e.get("patch_id") or "") for e in events]


# ---- continue-as-new ---------------------------------------------------------------------------

@pytest.mark.parametrize("always_replay", [False, True])
def test_continue_as_new_closes_the_run_with_the_next_runs_input(always_replay: bool) -> None:
    sim = Sim(Counter, always_replay=always_replay)
    sim.start(0, 3, 10)
    sim.signal("bump")
    sim.signal("bump")
    assert not sim.last.closed
    sim.signal("bump")
    assert sim.last.closed
    (can,) = sim.commands("WorkflowContinuedAsNew")
    assert can["workflow_type"] == "Counter" and can["task_queue"] == "default"
    assert can["execution_timeout_ms"] is None and "new_run_id" not in can, "the engine picks the run id"
    assert [a["data"] for a in can["args"]] == [b"3", b"3", b"10"]
    assert sim.history[-1]["type"] == "WorkflowContinuedAsNew"
    # Input after the close is not applied: the next run gets it.
    sim.signal("bump")
    assert sim.history[-1]["type"] == "SignalReceived" and len(sim.commands("WorkflowContinuedAsNew")) == 1
    assert_replays(Counter, sim.history[:-1])
    sim.close()


def test_continue_as_new_golden_history() -> None:
    sim = Sim(Counter)
    sim.start(0, 2, 10)
    sim.signal("bump")
    sim.signal("bump")
    path = GOLDEN / "continue_as_new.jsonl"
    assert history_to_json(sim.history) == path.read_text(), "the runtime changed what continue_as_new records"
    result = Replayer(workflows=[Counter]).replay(history_from_json(path.read_text()))
    assert result.closed and result.commands_pending == []
    sim.close()


def test_continue_as_new_is_matched_on_replay() -> None:
    sim = Sim(Counter)
    sim.start(0, 1, 5)
    sim.signal("bump")
    history = sim.history
    # The same history where the run completed instead: the code continues as new -> nondeterminism.
    changed = [*history[:-1], {**history[-1], "type": "WorkflowCompleted",
                               "result": {"encoding": "json/plain", "data": b"1"}}]
    for key in ("new_run_id", "workflow_type", "args", "task_queue", "execution_timeout_ms"):
        changed[-1].pop(key, None)
    completion = replay(Counter, changed)
    assert isinstance(completion.error, NondeterminismError)
    assert "WorkflowContinuedAsNew" in str(completion.error) and "WorkflowCompleted" in str(completion.error)
    sim.close()


@workflow.defn
class ContinuesFromASignal:
    @workflow.signal
    def restart(self, n: int) -> None:
        workflow.continue_as_new(n)

    @workflow.run
    async def run(self, n: int) -> int:
        await workflow.wait_condition(lambda: False)
        return n


def test_continue_as_new_from_a_signal_handler() -> None:
    sim = Sim(ContinuesFromASignal)
    sim.start(1)
    sim.signal("restart", 7)
    (can,) = sim.commands("WorkflowContinuedAsNew")
    assert can["args"][0]["data"] == b"7" and sim.last.closed
    sim.close()


@workflow.defn
class SwallowsContinue:
    @workflow.run
    async def run(self) -> str:
        try:
            workflow.continue_as_new()
        except Exception:  # noqa: BLE001 - what careless code does: it must not catch continue_as_new
            return "swallowed"
        return "unreachable"


def test_except_exception_does_not_swallow_continue_as_new() -> None:
    sim = Sim(SwallowsContinue)
    sim.start()
    assert [e["type"] for e in sim.history] == ["WorkflowStarted", "WorkflowContinuedAsNew"]
    sim.close()


# ---- patching ----------------------------------------------------------------------------------

def _v1_run_asleep() -> list[dict[str, Any]]:
    sim = Sim(ShipperV1)
    sim.start("o-1")
    history = list(sim.history)  # started, timer started: it sleeps while v2 is deployed
    sim.close()
    return history


def test_a_new_run_takes_the_patch_and_records_the_marker() -> None:
    sim = Sim(ShipperV2)
    sim.start("o-2")
    assert strip(sim.history) == [("WorkflowStarted", ""), ("PatchMarker", "courier"), ("TimerStarted", "")]
    assert sim.commands("PatchMarker")[0]["deprecated"] is False
    sim.fire(1)
    assert sim.scheduled()[0]["activity_type"] == "ship_by_courier"
    assert_replays(ShipperV2, sim.history)
    sim.close()


@pytest.mark.parametrize("always_replay", [False, True])
def test_a_run_started_before_the_patch_keeps_the_old_path(always_replay: bool) -> None:
    history = _v1_run_asleep()
    # v2 is deployed: the processor replays the sleeping run, then the timer fires.
    sim = Sim(ShipperV2, always_replay=always_replay)
    sim.history = history
    completion = sim.instance.activate(history)
    assert completion.error is None and completion.commands == [], "the old run replays with no new command"
    sim.fire(1)
    assert [e["activity_type"] for e in sim.scheduled()] == ["ship_by_post"]
    assert sim.commands("PatchMarker") == []
    sim.close()
    full = replay(ShipperV2, sim.history)  # (re-running its first step as new would take the patch)
    assert full.error is None and full.commands == []


def test_patched_is_decided_once_per_run() -> None:
    @workflow.defn(name="AsksTwice")
    class AsksTwice:
        @workflow.run
        async def run(self) -> list[bool]:
            first = workflow.patched("p")
            await asyncio.sleep(1)
            return [first, workflow.patched("p")]

    sim = Sim(AsksTwice)
    sim.start()
    sim.fire(1)
    assert sim.result() == [True, True] and len(sim.commands("PatchMarker")) == 1
    sim.close()


def test_deprecated_and_removed_patches_still_replay_runs_with_the_marker() -> None:
    sim = Sim(ShipperV2)
    sim.start("o-3")
    sim.fire(1)
    with_marker = sim.history
    sim.close()
    for later in (ShipperV3, ShipperV4):
        completion = replay(later, with_marker)
        assert completion.error is None and completion.commands == [], later.__name__
    fresh = Sim(ShipperV3)
    fresh.start("o-4")
    assert strip(fresh.history)[1] == ("PatchMarker", "courier")
    assert fresh.commands("PatchMarker")[0]["deprecated"] is True
    fresh.close()


def test_removing_a_patch_too_early_is_a_nondeterminism_for_old_runs() -> None:
    # v4 (courier only) replaying a run that took the old path: the recorded activity differs.
    sim = Sim(ShipperV1)
    sim.start("o-5")
    sim.fire(1)
    completion = replay(ShipperV4, sim.history)
    assert isinstance(completion.error, NondeterminismError)
    assert "ship_by_courier" in str(completion.error) and "ship_by_post" in str(completion.error)
    sim.close()


def test_patch_golden_histories() -> None:
    new = Sim(ShipperV2)
    new.start("o-2")
    new.fire(1)
    new.complete(1, "sent")
    path = GOLDEN / "patched.jsonl"
    assert history_to_json(new.history) == path.read_text(), "the runtime changed what patched() records"
    for code in (ShipperV2, ShipperV3, ShipperV4):
        result = Replayer(workflows=[code]).replay(history_from_json(path.read_text()))
        assert result.closed and result.commands_pending == [], code.__name__
    new.close()


def test_patch_ids_must_be_strings() -> None:
    @workflow.defn(name="BadPatch")
    class BadPatch:
        @workflow.run
        async def run(self) -> bool:
            return workflow.patched("")

    sim = Sim(BadPatch)
    with pytest.raises(WorkflowCodeError, match=r"workflow.patched\(\) needs a non-empty string patch id"):
        sim.start()
    sim.close()
