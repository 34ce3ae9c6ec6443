"""ActivityCancel on the task topic (issue 7, item 8): the attempt running here is told at once and
its next activity.heartbeat() raises ActivityCancelledError (reported as a non-retryable failure);
an attempt not started yet is skipped; the cancel record's offset settles in order."""

from __future__ import annotations

import time
from collections.abc import Callable

from worker_twins import CODEC, Sent, cancel_message, producer, task_message, turn

from processor._engine.worker import FAILED, HEARTBEAT, ActivityWorker


def settled(w: ActivityWorker, n: int = 1, timeout: float = 10) -> list[Sent]:
    """The first `n` records that settle a task (heartbeats aside)."""
    deadline = time.monotonic() + timeout
    while True:
        out = [s for s in producer(w).sent if s.name != HEARTBEAT]
        if len(out) >= n:
            return out
        assert time.monotonic() < deadline, f"only {len(out)} of {n} settling records"
        time.sleep(0.005)


def test_a_running_attempt_learns_it_is_canceled_at_its_next_heartbeat(
        make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(task_message(0, 5, "beating", 30.0))
    cancel = cancel_message(0, 6, activity_seq=6, reason="workflow 'w-1' was asked to cancel: user asked")
    w._cancel_seen(cancel)
    w._start(cancel)
    (sent,) = settled(w)
    assert sent.name == FAILED
    failure = CODEC.decode_as(sent.value or b"", FAILED)["failure"]
    assert failure["type"] == "ActivityCancelled" and failure["non_retryable"] is True
    assert "was canceled: workflow 'w-1' was asked to cancel: user asked" in failure["message"]
    turn(w)
    turn(w)
    assert w.offsets.committable() == {0: 7}, "the task and the cancel record both settled"


def test_an_attempt_canceled_before_it_started_is_not_run_but_reported(
        make_worker: Callable[..., ActivityWorker]) -> None:
    """Reported, so a run that goes on after the cancel request (cleanup) hears of it."""
    w = make_worker()
    w._cancel_seen(cancel_message(1, 9, activity_seq=3, attempt=2))
    w._start(task_message(1, 8, "beating", 30.0, activity_seq=3, attempt=2))  # still in the backlog when seen
    w._start(cancel_message(1, 9, activity_seq=3, attempt=2))
    (sent,) = settled(w)
    failure = CODEC.decode_as(sent.value or b"", FAILED)["failure"]
    assert failure["type"] == "ActivityCancelled" and "was canceled before it started" in failure["message"]
    assert w.skipped == 1
    turn(w)
    turn(w)
    assert w.offsets.committable() == {1: 10}
    w._start(task_message(1, 10, "sized", 1, activity_seq=3, attempt=3))  # a later attempt is not canceled
    assert [s.name for s in settled(w, 2)][1] == "wf.commands.v1.ActivityCompleted"


def test_a_cancel_for_another_attempt_changes_nothing(make_worker: Callable[..., ActivityWorker]) -> None:
    w = make_worker()
    w._start(task_message(0, 5, "beating", 0.3))
    w._cancel_seen(cancel_message(0, 6, activity_seq=6, attempt=2))
    (sent,) = settled(w)
    assert CODEC.decode_as(sent.value or b"", "wf.commands.v1.ActivityCompleted")["result"]["data"] == \
        b'"not canceled"'
