"""An attempt's clocks (issue 7, item 8): start-to-close and heartbeat count from the worker's
ActivityStarted, not from dispatch; the time in the queue is schedule-to-start's, which times the
activity out for good; every attempt the processor times out is told so (ActivityCancel on its
task partition), and a start of an attempt that is no longer current is told at once."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine_harness import EVENTS, START_MS, EngineHarness, Record

from processor import _payload


def _cancels(h: EngineHarness) -> list[tuple[int | None, dict[str, Any]]]:
    return [(r.partition, r.decode()[1]) for r in h.sink.records
            if r.topic.startswith("t.tasks.") and r.header("type") == "wf.tasks.v1.ActivityCancel"]


def _one_task(tmp_path: Path, wid: str, mode: str) -> tuple[EngineHarness, str, int, dict[str, Any]]:
    """A harness with one `Timeouts` workflow started in `mode`, and its first activity task."""
    h = EngineHarness(tmp_path)
    h.start(wid, "Timeouts", mode)
    (task,) = h.new_tasks()
    return h, wid, h.partition_of(wid), task


def _event_types(out: list[Record]) -> list[str]:
    return [r.event()["type"] for r in out if r.topic == EVENTS]


def test_the_queue_wait_does_not_count_against_start_to_close(tmp_path: Path) -> None:
    h, wid, p, task = _one_task(tmp_path, "queued", "queued")
    assert task["start_to_close_timeout_ms"] == 1_500 and task["schedule_to_start_timeout_ms"] is None
    assert h.pending_timers(p) == []
    assert h.tick(60_000) == []  # a minute in the queue: nothing times out
    h.started(task)
    assert h.pending_timers(p) == [(START_MS + 61_500, wid, "s1")]
    assert h.complete(task, "finished", advance_ms=1_000)
    assert h.result(wid) == "no timeout"
    assert h.pending_timers(p) == []
    h.close()


def test_a_task_nobody_starts_times_out_for_good_after_schedule_to_start(tmp_path: Path) -> None:
    h, wid, p, task = _one_task(tmp_path, "unserved", "schedule_to_start")
    assert (task["task_queue"], task["schedule_to_start_timeout_ms"]) == ("unserved", 500)
    assert h.pending_timers(p) == [(START_MS + 500, wid, "q1")]
    assert h.tick(499) == []
    out = h.tick(1)
    assert _event_types(out) == ["ActivityTimedOut", "WorkflowCompleted"]
    timed_out = next(r.event() for r in out if r.topic == EVENTS)
    assert (timed_out["timeout_type"], timed_out["attempt"]) == ("schedule_to_start", 1)
    assert h.result(wid) == "ApplicationError: ActivityTimeout"
    assert h.new_tasks() == [], "not retried"
    ((partition, cancel),) = _cancels(h)
    assert (partition, cancel["activity_seq"], cancel["attempt"]) == (None, 1, 1)
    assert cancel["reason"] == "activity 1 attempt 1 exceeded its schedule_to_start_timeout"
    h.close()


def test_a_start_stops_the_schedule_to_start_clock_and_starts_the_others(tmp_path: Path) -> None:
    h, wid, p, task = _one_task(tmp_path, "served-late", "schedule_to_start")
    h.started(task, advance_ms=400)
    assert h.pending_timers(p) == [(START_MS + 400 + 5_000, wid, "s1")]
    assert h.tick(1_000) == []  # past the schedule-to-start deadline: it started in time
    h.complete(task, "finished")
    assert h.result(wid) == "no timeout"
    h.close()


def test_a_timed_out_attempt_is_canceled_where_its_task_went_and_retried(tmp_path: Path) -> None:
    h, wid, _, first = _one_task(tmp_path, "beats", "heartbeat_ok")  # 0.6 s heartbeat timeout, default retries
    h.started(first)
    out = h.tick(600)
    assert _event_types(out) == ["ActivityAttemptFailed"]
    ((partition, cancel),) = _cancels(h)
    assert (partition, cancel["attempt"], cancel["run_id"]) == (None, 1, h.run_of(wid))
    assert cancel["reason"] == "activity 1 attempt 1 exceeded its heartbeat_timeout"
    h.tick(1_000)  # the retry timer
    (second,) = h.new_tasks()
    assert second["attempt"] == 2
    # The dead worker's partition reaches a new owner, which starts attempt 1 before it sees the
    # cancel: it is told again, with why.
    assert h.started(first) != []
    assert len(_cancels(h)) == 2
    assert _cancels(h)[1][1]["reason"] == \
        f"activity 1 attempt 1 of workflow {wid!r} is no longer current: attempt 2 is the current one"
    assert h.pending_timers(h.partition_of(wid)) == [], "the stale start set no clock"
    h.close()


def test_a_start_of_a_finished_activity_is_canceled(tmp_path: Path) -> None:
    h, wid, _, task = _one_task(tmp_path, "done", "queued")
    h.started(task)
    h.complete(task, "finished")
    h.started(task)  # redelivered after its worker died between the result and the offset commit
    ((_, cancel),) = _cancels(h)
    assert cancel["reason"].endswith("is no longer current: its workflow run is closed")
    h.start("goes-on", "ThreeSteps", 1)
    (step1,) = h.new_tasks()
    h.complete(step1, 2)
    h.started(step1)
    assert _cancels(h)[-1][1]["reason"] == \
        "activity 1 attempt 1 of workflow 'goes-on' is no longer current: the activity has finished"
    h.close()


def test_the_same_attempt_started_again_gets_its_whole_time(tmp_path: Path) -> None:
    h, wid, p, task = _one_task(tmp_path, "restarted", "queued")
    h.started(task)
    h.started(task, advance_ms=1_000)  # another worker took the task over
    assert h.pending_timers(p) == [(START_MS + 2_500, wid, "s1")]
    assert _cancels(h) == []
    h.close()


def test_a_report_held_back_by_the_worker_counts_from_the_real_start(tmp_path: Path) -> None:
    h, wid, p, task = _one_task(tmp_path, "late-report", "queued")  # start-to-close 1.5 s, one attempt
    h.started(task, advance_ms=5_000, elapsed_ms=200)
    assert h.pending_timers(p) == [(START_MS + 5_000 - 200 + 1_500, wid, "s1")]
    h.start("overran", "Timeouts", "queued")
    (late,) = h.new_tasks()
    h.started(late, elapsed_ms=1_600)  # reported after it had already run over: due at once
    assert h.pending_timers(h.partition_of("overran")) == [(h.now_ms, "overran", "s1")]
    assert _event_types(h.tick()) == ["ActivityFailed", "WorkflowCompleted"]  # the next turn fires it
    assert h.result("overran") == "RemoteApplicationError: StartToCloseTimeout"
    h.close()


def test_a_first_heartbeat_starts_the_clocks_of_a_worker_that_reports_no_start(tmp_path: Path) -> None:
    h, wid, p, task = _one_task(tmp_path, "old-worker", "heartbeat_ok")
    beat = {"workflow_id": wid, "activity_seq": 1, "attempt": 1, "run_id": task["run_id"],
            "details": _payload.to_payload(["x"])}
    h.send("ActivityHeartbeat", beat, advance_ms=5_000)
    assert h.pending_timers(p) == [(START_MS + 5_600, wid, "h1")]
    h.send("ActivityHeartbeat", beat, advance_ms=300)
    assert h.pending_timers(p) == [(START_MS + 5_900, wid, "h1")]
    h.close()


def test_a_start_for_an_unknown_workflow_is_dead_lettered(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    h.send("ActivityStarted", {"workflow_id": "nobody", "run_id": "", "activity_seq": 1, "attempt": 1,
                               "task_queue": "default", "worker": "w"})
    assert h.dlq_reasons() == ["activity start for unknown workflow 'nobody'"]
    assert _cancels(h) == []
    h.close()
