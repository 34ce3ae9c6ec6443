"""Attempts the processor has already timed out are skipped, and a revoke or a graceful stop
commits what finished (issue 6, defect 7: a killed worker's activities ran 7 times each)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from worker_twins import RELEASE, TASKS, cancel_message, consumer, producer, task_message, turn, wait_sent

from processor._engine.settle import FAILED, HEARTBEAT, STARTED, reports_start, start_report_delay_s
from processor._engine.worker import COMPLETED, ActivityWorker, stale_attempt
from processor._engine.worker_settle import Offsets

T0 = 1_700_000_000_000


def _task(**over: Any) -> dict[str, Any]:
    task = {"workflow_id": "w-1", "activity_seq": 3, "attempt": 2, "activity_type": "big", "task_queue": "default",
            "args": [], "scheduled_time_ms": T0, "start_to_close_timeout_ms": None, "heartbeat_timeout_ms": None,
            "workflow_type": "BigResult"}
    return {**task, **over}


# -- the staleness rule --------------------------------------------------------------------------


def test_an_attempt_without_timeouts_is_never_stale() -> None:
    assert stale_attempt(_task(), T0 + 10 * 86_400_000, 1_000) is None


def test_stale_once_schedule_to_start_is_due_plus_the_skew_margin() -> None:
    task = _task(schedule_to_start_timeout_ms=2_000)
    assert stale_attempt(task, T0, 1_000) is None
    assert stale_attempt(task, T0 + 2_000, 1_000) is None  # the timer is due only now
    # A worker clock up to 1 s ahead of the processor's must not skip a live attempt: the margin
    # pushes the deadline out, it never pulls it in.
    assert stale_attempt(task, T0 + 3_000, 1_000) is None
    assert stale_attempt(task, T0 + 3_001, 1_000) == "schedule_to_start_timeout"
    assert stale_attempt(task, T0 + 2_001, 0) == "schedule_to_start_timeout"


def test_time_in_the_queue_never_makes_start_to_close_or_heartbeat_stale() -> None:
    # Those clocks start with the attempt (ActivityStarted): a task that waited long is still due to run.
    task = _task(heartbeat_timeout_ms=2_000, start_to_close_timeout_ms=10_000)
    assert stale_attempt(task, T0 + 86_400_000, 0) is None


def test_only_timeouts_that_count_from_the_start_need_a_start_report() -> None:
    assert not reports_start(_task())
    assert not reports_start(_task(schedule_to_close_timeout_ms=5_000))
    for field in ("start_to_close_timeout_ms", "heartbeat_timeout_ms", "schedule_to_start_timeout_ms"):
        assert reports_start(_task(**{field: 1_000})), field


# -- the worker over the twins ------------------------------------------------------------------


def test_a_start_report_is_held_back_a_quarter_of_the_shortest_timeout_at_most() -> None:
    assert start_report_delay_s(_task(start_to_close_timeout_ms=60_000), 0.2) == 0.2
    assert start_report_delay_s(_task(start_to_close_timeout_ms=60_000, heartbeat_timeout_ms=400), 0.2) == 0.1
    # schedule-to-start's clock stops only with the report: it goes at once.
    assert start_report_delay_s(_task(start_to_close_timeout_ms=60_000, schedule_to_start_timeout_ms=9_000)) == 0


def test_a_stale_attempt_is_skipped_and_committed_without_running(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker(clock_skew_ms=1_000)
    old = int(time.time() * 1000) - 10_000
    w._start(task_message(0, 0, "gated", "stale", scheduled_time_ms=old, schedule_to_start_timeout_ms=5_000))
    w._start(task_message(0, 1, "sized", 1, scheduled_time_ms=old, start_to_close_timeout_ms=5_000))
    assert w.skipped == 1
    # A long wait in the queue is not a start-to-close timeout: it runs (and ends before its start
    # report is due, so none is sent).
    assert [s.name for s in wait_sent(w, 1)] == [COMPLETED]
    turn(w)
    assert consumer(w).committed_to() == {0: 2}


def test_a_start_is_reported_before_the_result_unless_the_attempt_ends_first(
        make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(task_message(0, 0, "sized", 1, schedule_to_start_timeout_ms=60_000, run_id="r-1"))
    sent = wait_sent(w, 2)
    assert [s.name for s in sent] == [STARTED, COMPLETED]
    started = sent[0].record()
    assert (started["workflow_id"], started["run_id"], started["activity_seq"], started["attempt"],
            started["task_queue"], started["elapsed_ms"]) == ("w-1", "r-1", 1, 1, "default", 0)
    assert started["worker"] == w.identity and started["worker"]
    w._start(task_message(0, 1, "sized", 1, start_to_close_timeout_ms=60_000))  # ends before its report is due
    w._start(task_message(0, 2, "sized", 1))  # no timeout counts from the start: nothing to report
    assert [s.name for s in wait_sent(w, 4)] == [STARTED, COMPLETED, COMPLETED, COMPLETED]
    time.sleep(0.3)
    w._report_due_starts(time.monotonic())
    assert len(producer(w).sent) == 4 and w._starts == {}


def test_a_long_attempt_reports_how_long_it_has_run(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(task_message(0, 0, "gated", "long", start_to_close_timeout_ms=60_000))
    w._report_due_starts(time.monotonic())
    assert producer(w).sent == [], "not due yet"
    time.sleep(0.25)
    w._report_due_starts(time.monotonic())
    (started,) = producer(w).sent
    assert started.name == STARTED and 200 <= started.record()["elapsed_ms"] < 2_000
    RELEASE.set()
    assert [s.name for s in wait_sent(w, 2)] == [STARTED, COMPLETED]


def test_the_start_goes_out_before_the_first_heartbeat(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(task_message(0, 0, "beating", 0.05, heartbeat_timeout_ms=30_000))
    sent = wait_sent(w, 3)
    assert [s.name for s in sent][:2] == [STARTED, HEARTBEAT]
    assert sent[-1].name == COMPLETED


def test_a_task_fetched_with_its_cancel_never_runs(make_worker: Callable[..., ActivityWorker]) -> None:
    """A new owner of a dead worker's partition finds the timed-out attempt's task and, later in
    the partition, the ActivityCancel the processor wrote when it timed the attempt out."""
    w = make_worker()
    w._take([task_message(0, 0, "gated", "timed out"), task_message(0, 1, "sized", 1),
             cancel_message(0, 2, activity_seq=1, reason="attempt 1 exceeded its heartbeat_timeout")])
    sent = wait_sent(w, 2)
    assert sorted(s.name for s in sent) == [COMPLETED, FAILED]
    failed = next(s.record() for s in sent if s.name == FAILED)
    assert failed["activity_seq"] == 1 and failed["failure"]["type"] == "ActivityCancelled"
    assert "canceled before it started" in failed["failure"]["message"]
    assert w._running == 0, "the canceled attempt's activity (gated: it would block) never ran"


def test_a_revoke_settles_and_commits_the_partitions_running_tasks(
        make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker(revoke_grace_s=5.0)
    w._start(task_message(0, 0, "gated", "a"))
    w._start(task_message(1, 0, "gated", "b"))
    w.backlog.append(task_message(0, 1, "gated", "queued"))
    threading.Timer(0.2, RELEASE.set).start()
    w._on_revoke(w.consumer, [TopicPartition(TASKS, 0)])
    # Committed synchronously before the partition moved; its backlog was dropped, not started.
    offsets, asynchronous = consumer(w).commits[-1]
    assert offsets[0] == 1 and asynchronous is False
    assert list(w.backlog) == [] and 0 not in w._assigned and 1 in w._assigned


def test_a_late_finish_of_a_revoked_partition_does_not_move_the_new_assignments_commit() -> None:
    o = Offsets()
    o.start(0, 10)
    o.drop(0)  # revoked while offset 10 ran; later assigned back from the committed offset 5
    o.start(0, 5)
    o.finish(0, 10)  # the old run finishes late
    o.finish(0, 5)
    assert o.committable() == {0: 6}  # not 11: offsets 6..10 were never started in this assignment


def test_close_waits_for_running_activities_and_commits_before_leaving(
        make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker(shutdown_grace_s=5.0)
    w._start(task_message(0, 0, "gated", "a"))
    w._start(task_message(0, 1, "gated", "b"))
    threading.Timer(0.2, RELEASE.set).start()
    w.close()
    assert len(producer(w).sent) == 2
    assert consumer(w).commits[-1] == ({0: 2}, False) and consumer(w).closed


def test_close_after_the_grace_leaves_unfinished_tasks_uncommitted(
        make_worker: Callable[..., ActivityWorker], caplog: pytest.LogCaptureFixture) -> None:
    w = make_worker(shutdown_grace_s=0.1)
    w._start(task_message(0, 0, "sized", 1))
    wait_sent(w, 1)
    w._start(task_message(0, 1, "gated", "never released"))
    w.close()
    assert consumer(w).committed_to() == {0: 1}
    assert "run again on the next owner" in caplog.text


def test_an_attempt_gets_the_previous_attempts_heartbeat_details(make_worker: Callable[..., ActivityWorker]) -> None:
    from processor import _payload

    w = make_worker()
    w._start(task_message(0, 3, "resumes", attempt=2, heartbeat_details=_payload.to_payload(["page", 7])))
    w._start(task_message(0, 4, "resumes"))  # attempt 1: nothing to resume from
    sent = wait_sent(w, 2)
    results = sorted(_payload.from_payload(s.record()["result"]) for s in sent)
    assert results == [[], ["page", 7]]
