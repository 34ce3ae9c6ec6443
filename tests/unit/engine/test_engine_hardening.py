"""Engine-level hardening: commands beat due timers, oversized events fail the workflow once,
workflow code that blocks is held and does not stall the rest (issue 6, defects 2 and 4)."""

from __future__ import annotations

import time
from pathlib import Path

from engine_harness import START_MS, EngineHarness, ids_on_partition

from processor._limits import MAX_RECORD_BYTES
from tests.apps.basic import Approval, ThreeSteps
from tests.apps.hardening import Blocking, Doubler, Paused

APPS = (Doubler, Blocking, Paused, ThreeSteps, Approval)


def test_result_already_in_the_batch_beats_the_timeout_that_fell_due(tmp_path: Path) -> None:
    """The processor was down past an activity's start-to-close deadline while its result waited in
    the log: on the first turn the result is applied before the due timeout fires."""
    h = EngineHarness(tmp_path, APPS)
    h.start("late-1", "Paused", 2.0, 5.0)
    (task,) = h.new_tasks()
    h.complete(task, "paused", advance_ms=8_000)  # the 5 s timeout is 3 s overdue in this transaction
    assert h.result("late-1") == "paused"
    assert "ActivityAttemptFailed" not in h.event_types("late-1")


def test_a_timer_does_not_fire_past_its_partitions_input_horizon(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, APPS)
    wid = "late-2"
    p = h.partition_of(wid)
    h.start(wid, "Paused", 2.0, 5.0)
    (task,) = h.new_tasks()
    # Input read only up to a command stamped before the deadline: the timeout must wait.
    h.transaction(advance_ms=8_000, horizons={p: START_MS + 4_000})
    assert h.event_types(wid)[-1] == "ActivityScheduled"
    h.complete(task, "paused")
    assert h.result(wid) == "paused"


def test_an_event_over_the_record_limit_fails_the_workflow_once(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, APPS)
    text = "y" * (MAX_RECORD_BYTES // 2 + 10_000)  # fits; twice it does not
    h.start("big-1", "Doubler", text)
    (task,) = h.new_tasks()
    out = h.complete(task, text)
    ((name, rec),) = h.completions("big-1")
    assert name == "wf.completions.v1.WorkflowFailed"
    assert rec["failure"]["type"] == "PayloadTooLarge"
    assert "WorkflowCompleted (seq" in rec["failure"]["message"] and "record limit" in rec["failure"]["message"]
    assert all(len(r.value or b"") <= MAX_RECORD_BYTES for r in out)
    assert h.event_types("big-1")[-1] == "WorkflowFailed"
    assert h.dlq_reasons() == []


def test_a_start_whose_input_is_over_the_limit_is_dead_lettered(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, APPS)
    h.start("big-2", "Doubler", "z" * (MAX_RECORD_BYTES + 1))
    assert h.events("big-2") == []
    (reason,) = h.dlq_reasons()
    assert "the input of workflow 'big-2'" in reason and "record limit" in reason


def test_blocking_workflow_code_is_held_and_the_rest_of_its_partition_runs(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, APPS)
    h.settings = h.engine.settings = type(h.settings)(**{**h.settings.__dict__, "activation_deadline_ms": 300})
    assert h.engine.deadline.enforced, "pytest runs tests in the main thread"
    blocked, other = ids_on_partition(0, 2, stem="blk")
    t0 = time.monotonic()
    h.start(blocked, "Blocking", 30.0)
    took = time.monotonic() - t0
    assert took < 5, f"the blocked activation took {took:.1f}s"
    assert h.event_types(blocked) == ["WorkflowStarted", "WorkflowTaskFailed"]
    reason = h.events(blocked)[-1]["reason"]
    assert "blocked the processor's event loop for more than 0.3s" in reason and "activity" in reason
    assert h.summary(blocked).held is not None
    h.start(other, "ThreeSteps", 1)
    h.run_activities()
    assert h.result(other) == [2, 3, 4]
    assert h.completions(blocked) == []


def test_a_start_with_an_unusable_task_queue_name_is_dead_lettered_once(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, APPS)
    h.start("q-1", "ThreeSteps", 1, task_queue="bad queue!")
    assert h.events("q-1") == []
    (reason,) = h.dlq_reasons()
    assert "'bad queue!' is not usable as a Kafka topic name" in reason


def test_each_retry_goes_one_task_partition_further(tmp_path: Path) -> None:
    """Issue 6 defect 7: a retry must not wait on the partition of a worker that died."""
    from engine_harness import TASKS_DEFAULT, retryable

    from processor._codec.partitioner import partition_for
    from tests.apps.basic import Retrying

    h = EngineHarness(tmp_path, (Retrying,))
    h.sink.task_partition_count = 4
    h.start("retry-1", "Retrying", 2)
    h.run_activities(lambda task: ("fail", retryable()) if task["attempt"] <= 2 else ("ok", "done"),
                     advance_ms=200)
    for _ in range(20):
        h.tick(1_000)
        h.run_activities(lambda task: ("fail", retryable()) if task["attempt"] <= 2 else ("ok", "done"))
    base = partition_for(b"retry-1", 4)
    placed = [(r.decode()[1]["attempt"], r.partition) for r in h.records(TASKS_DEFAULT)]
    assert placed == [(1, None), (2, (base + 1) % 4), (3, (base + 2) % 4)]
    assert h.result("retry-1") == "done"
