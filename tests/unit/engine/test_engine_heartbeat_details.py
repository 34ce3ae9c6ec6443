"""Heartbeat details reach the next attempt (issue 7, item 8): the last details of a failed or
timed-out attempt are recorded in its ActivityAttemptFailed and handed to the retry's task
(`activity.info().heartbeat_details`), also when the partition was restored in between."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine_harness import EngineHarness, retryable

from processor import _payload


def beat(h: EngineHarness, task: dict[str, Any], *details: Any) -> None:
    h.send("ActivityHeartbeat", {"workflow_id": task["workflow_id"], "activity_seq": task["activity_seq"],
                                 "attempt": task["attempt"], "run_id": task.get("run_id", ""),
                                 "details": _payload.to_payload(list(details)) if details else None})


def test_the_last_details_of_a_failed_attempt_reach_the_retry(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    h.start("r", "Retrying", 2)
    (first,) = h.new_tasks()
    assert first["attempt"] == 1 and first["heartbeat_details"] is None
    beat(h, first, "page", 3)
    beat(h, first, "page", 7)
    beat(h, first)  # a beat without details keeps the last ones
    h.fail(first, retryable("lost the connection"))
    failed = [e for e in h.events("r") if e["type"] == "ActivityAttemptFailed"][-1]
    assert _payload.from_payload(failed["last_heartbeat_details"]) == ["page", 7]
    h.reopen(h.partition_of("r"))  # the details are in history, not only in memory
    h.tick(1_000)  # the retry timer fires
    (second,) = h.new_tasks()
    assert second["attempt"] == 2 and _payload.from_payload(second["heartbeat_details"]) == ["page", 7]
    h.fail(second, retryable("again"))  # no beat this time: the progress it was handed stands
    h.tick(1_000)
    (third,) = h.new_tasks()
    assert third["attempt"] == 3 and _payload.from_payload(third["heartbeat_details"]) == ["page", 7]


def test_a_beat_of_a_stale_attempt_is_not_kept(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    h.start("r", "Retrying", 2)
    (first,) = h.new_tasks()
    h.fail(first, retryable())
    beat(h, first, "late")  # attempt 1 is over: ignored
    h.tick(1_000)
    (second,) = h.new_tasks()
    assert second["heartbeat_details"] is None
    assert h.engine._beat_details == {}


def _cancels(h: EngineHarness) -> list[tuple[int | None, dict[str, Any]]]:
    return [(r.partition, r.decode()[1]) for r in h.sink.records
            if r.topic.startswith("t.tasks.") and r.header("type") == "wf.tasks.v1.ActivityCancel"]


def test_a_cancel_request_cancels_the_running_attempt_on_its_task_partition(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    h.start("r", "Retrying", 2)
    (first,) = h.new_tasks()
    h.fail(first, retryable())
    h.tick(1_000)
    (second,) = h.new_tasks()
    task_partitions = [r.partition for r in h.sink.records
                       if r.topic.startswith("t.tasks.") and r.header("type") == "wf.tasks.v1.ActivityTask"]
    h.send("CancelWorkflow", {"workflow_id": "r", "reason": "user asked"})
    ((partition, cancel),) = _cancels(h)[:1]
    assert (cancel["activity_seq"], cancel["attempt"], cancel["run_id"]) == (1, 2, h.run_of("r"))
    assert "was asked to cancel: user asked" in cancel["reason"]
    assert partition == task_partitions[-1], "where attempt 2's task went"


def test_closing_with_an_activity_pending_cancels_it(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    h.start("t", "ThreeSteps", 1)
    h.send("TerminateWorkflow", {"workflow_id": "t", "reason": "ops"})
    ((_, cancel),) = _cancels(h)
    assert cancel["activity_seq"] == 1 and "closed (terminated)" in cancel["reason"]
    h.start("u", "ThreeSteps", 1)
    h.run_activities()  # also starts "t"'s task, which nobody took before it closed
    assert h.result("u") == [2, 3, 4]
    assert [c["workflow_id"] for _, c in _cancels(h)] == ["t", "t"], \
        "a workflow that closes with nothing pending cancels nothing"
    assert "no longer current: its workflow run is closed" in _cancels(h)[1][1]["reason"]
