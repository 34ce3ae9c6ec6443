"""Attempts the processor has already timed out are skipped, and a revoke or a graceful stop
commits what finished (issue 6, defect 7: a killed worker's activities ran 7 times each)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
from confluent_kafka import TopicPartition
from worker_twins import RELEASE, TASKS, consumer, producer, task_message, turn, wait_sent

from processor._engine.worker import COMPLETED, HEARTBEAT, ActivityWorker, _Offsets, stale_attempt

T0 = 1_700_000_000_000


def _task(**over: Any) -> dict[str, Any]:
    task = {"workflow_id": "w-1", "activity_seq": 3, "attempt": 2, "activity_type": "big", "task_queue": "default",
            "args": [], "scheduled_time_ms": T0, "start_to_close_timeout_ms": None, "heartbeat_timeout_ms": None,
            "workflow_type": "BigResult"}
    return {**task, **over}


# -- the staleness rule --------------------------------------------------------------------------


def test_an_attempt_without_timeouts_is_never_stale() -> None:
    assert stale_attempt(_task(), T0 + 10 * 86_400_000, 1_000) is None


@pytest.mark.parametrize(("field", "reason"), [("heartbeat_timeout_ms", "heartbeat_timeout"),
                                               ("start_to_close_timeout_ms", "start_to_close_timeout")])
def test_stale_once_the_processor_timer_is_due_plus_the_skew_margin(field: str, reason: str) -> None:
    task = _task(**{field: 2_000})
    assert stale_attempt(task, T0, 1_000) is None
    assert stale_attempt(task, T0 + 2_000, 1_000) is None  # the timer is due only now
    # A worker clock up to 1 s ahead of the processor's must not skip a live attempt: the margin
    # pushes the deadline out, it never pulls it in.
    assert stale_attempt(task, T0 + 3_000, 1_000) is None
    assert stale_attempt(task, T0 + 3_001, 1_000) == reason
    assert stale_attempt(task, T0 + 2_001, 0) == reason


def test_the_earlier_deadline_decides() -> None:
    task = _task(heartbeat_timeout_ms=2_000, start_to_close_timeout_ms=10_000)
    assert stale_attempt(task, T0 + 2_500, 0) == "heartbeat_timeout"
    task = _task(heartbeat_timeout_ms=20_000, start_to_close_timeout_ms=10_000)
    assert stale_attempt(task, T0 + 10_500, 0) == "start_to_close_timeout"
    assert stale_attempt(_task(heartbeat_timeout_ms=0, start_to_close_timeout_ms=0), T0 + 10**9, 0) is None


def test_the_killed_worker_scenario_runs_only_the_live_attempt() -> None:
    """13 in flight on a killed worker, 10 s activities, 2 s heartbeat timeout: the new owner gets
    the partition ~6 s later and finds attempts 1 (t=0) and 2 (t=3 s) there; only 3 (t=7 s) runs."""
    attempts = {1: T0, 2: T0 + 3_000, 3: T0 + 7_000}
    now = T0 + 7_200
    live = [n for n, at in attempts.items()
            if stale_attempt(_task(attempt=n, scheduled_time_ms=at, heartbeat_timeout_ms=2_000,
                                   start_to_close_timeout_ms=30_000), now, 1_000) is None]
    assert live == [3]


# -- the worker over the twins ------------------------------------------------------------------


def test_a_stale_attempt_is_skipped_and_committed_without_running(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker(clock_skew_ms=1_000)
    old = int(time.time() * 1000) - 10_000
    w._start(task_message(0, 0, "gated", "stale-hb", scheduled_time_ms=old, heartbeat_timeout_ms=2_000))
    w._start(task_message(0, 1, "gated", "stale-sc", scheduled_time_ms=old, start_to_close_timeout_ms=5_000))
    assert w.skipped == 2 and w._running == 0 and producer(w).sent == []
    turn(w)
    assert consumer(w).committed_to() == {0: 2}


def test_a_task_with_a_heartbeat_timeout_beats_at_start(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(task_message(0, 0, "sized", 1, heartbeat_timeout_ms=2_000))
    sent = wait_sent(w, 2)
    assert sent[0].name == HEARTBEAT and sent[0].record()["details"] is None
    assert sent[1].name == COMPLETED


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
    o = _Offsets()
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
