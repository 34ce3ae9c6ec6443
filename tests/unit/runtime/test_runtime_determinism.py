from __future__ import annotations

import asyncio
import gc
import logging
import warnings
from typing import Any

import pytest
from wf_harness import START_MS, Sim, assert_replays
from wf_samples import Deterministic, Order, cleanup

from processor import workflow
from processor._runtime._history import WorkflowCodeError
from processor.exceptions import ConfigError


def run_deterministic(always_replay: bool, seed: int = 42) -> tuple[Sim, list[Any]]:
    sim = Sim(Deterministic, always_replay=always_replay)
    sim.start(seed=seed)
    sim.advance(2500)
    sim.complete(1, 9)
    return sim, sim.result()


def test_now_random_uuid_come_from_history(always_replay: bool) -> None:
    _, values = run_deterministic(always_replay)
    now, now_s, loop_time, number, uuid_text, workflow_id, start, in_workflow, later, fraction, uuid2 = values
    assert now == "2023-11-14T22:13:20+00:00" == start
    assert now_s == loop_time == START_MS / 1000
    assert later == "2023-11-14T22:13:22.500000+00:00"
    assert (workflow_id, in_workflow) == ("wf-1", True)
    assert uuid_text[14] == "4" and uuid_text != uuid2
    assert isinstance(number, int) and isinstance(fraction, float)


def test_same_values_live_and_on_replay_and_seed_matters() -> None:
    sim, live = run_deterministic(always_replay=False)
    _, rebuilt = run_deterministic(always_replay=True)
    assert live == rebuilt
    _, other_seed = run_deterministic(always_replay=False, seed=43)
    assert other_seed[3:5] != live[3:5]
    assert_replays(Deterministic, sim.history)


def test_logger_is_muted_while_replaying(always_replay: bool, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="processor.workflow"):
        run_deterministic(always_replay)
    messages = [(r.getMessage(), r.workflow_id, r.workflow_type) for r in caplog.records]
    assert messages == [
        ("before the activity", "wf-1", "Deterministic"),
        ("after the activity", "wf-1", "Deterministic"),
    ]


@pytest.mark.parametrize(
    "call",
    [workflow.now, workflow.time, workflow.random, workflow.uuid4, workflow.info],
)
def test_workflow_calls_outside_a_workflow_say_so(call: Any) -> None:
    with pytest.raises(ConfigError, match="outside workflow code"):
        call()
    assert workflow.in_workflow() is False


def test_execute_activity_outside_a_workflow_says_so() -> None:
    with pytest.raises(ConfigError, match=r"workflow.execute_activity\(\) was called outside workflow code"):
        asyncio.run(workflow.execute_activity(cleanup, "x"))


def test_workflow_calls_inside_another_asyncio_loop_are_still_outside() -> None:
    async def main() -> bool:
        return workflow.in_workflow()

    assert asyncio.run(main()) is False


@workflow.defn
class UsesThreads:
    @workflow.run
    async def run(self) -> None:
        await asyncio.get_running_loop().run_in_executor(None, print)


def test_io_loop_operations_hold_the_workflow_with_a_clear_message() -> None:
    sim = Sim(UsesThreads)
    with pytest.raises(WorkflowCodeError,
                       match=r"raised ConfigError: event loop operation run_in_executor\(\) is not allowed"):
        sim.start()


@workflow.defn
class ReturnsASet:
    @workflow.run
    async def run(self) -> set[int]:
        return {1}


def test_unencodable_result_holds_the_workflow() -> None:
    sim = Sim(ReturnsASet)
    with pytest.raises(WorkflowCodeError, match="raised PayloadError: .*set"):
        sim.start()


finally_ran: list[str] = []


@workflow.defn
class HasFinally:
    @workflow.run
    async def run(self, order: Order) -> None:
        try:
            await asyncio.gather(workflow.execute_activity(cleanup, "a"), asyncio.sleep(60))
        finally:
            finally_ran.append("finally")
            # A workflow call while being discarded must decide nothing (and not blow up close()).
            await workflow.execute_activity(cleanup, "from finally")


def test_close_discards_coroutines_now_and_quietly(caplog: pytest.LogCaptureFixture) -> None:
    finally_ran.clear()
    sim = Sim(HasFinally)
    sim.start(Order("o", 1))
    assert len(sim.history) == 3  # started, activity, timer
    with warnings.catch_warnings(), caplog.at_level(logging.DEBUG):
        warnings.simplefilter("error")
        sim.close()
        assert finally_ran == ["finally"]
        gc.collect()
    assert caplog.records == []
    after = sim.instance.activate([{"type": "TimerFired", "timer_seq": 1, "seq": 4, "time_ms": 1}])
    assert after.error is not None and "after close()" in str(after.error)
    assert finally_ran == ["finally"]


def test_running_loop_is_restored_after_activation() -> None:
    async def main() -> None:
        outer = asyncio.get_running_loop()
        sim = Sim(Deterministic)
        sim.start()
        assert asyncio.get_running_loop() is outer
        sim.close()

    asyncio.run(main())


def test_runtime_imports_no_io_libraries() -> None:
    import subprocess
    import sys

    code = (
        "import sys, processor._runtime, processor.replayer;"
        "bad = [m for m in ('confluent_kafka', 'rocksdict', 'fastavro', 'avro') if m in sys.modules];"
        "print(bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
