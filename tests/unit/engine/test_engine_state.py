"""state.fold: the one derivation of a workflow summary from its history events."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from processor._engine.state import Summary, fold


def _ev(seq: int, etype: str, **fields: Any) -> dict[str, Any]:
    return {"workflow_id": "w", "seq": seq, "time_ms": 1_000 + seq, "type": etype, **fields}


FAILURE = {"type": "E", "message": "m", "stack_trace": "", "non_retryable": False, "cause": None}

HISTORY = [
    _ev(1, "WorkflowStarted", workflow_type="T", task_queue="q", args=[]),
    _ev(2, "ActivityScheduled", activity_seq=1, activity_type="a", task_queue="q", args=[]),
    _ev(3, "ActivityScheduled", activity_seq=2, activity_type="a", task_queue="q", args=[]),
    _ev(4, "ActivityAttemptFailed", activity_seq=1, attempt=1, failure=FAILURE, next_attempt=2, retry_at_ms=9),
    _ev(5, "ActivityCompleted", activity_seq=2, attempt=1, result={}),
    _ev(6, "WorkflowTaskFailed", reason="nondeterministic"),
    _ev(7, "SignalReceived", signal_name="s", args=[]),
    _ev(8, "WorkflowCancelRequested", reason="stop"),
]


def _fold_all(events: list[dict[str, Any]]) -> Summary:
    summary = None
    for event in events:
        summary = fold(summary, copy.deepcopy(event))
    assert summary is not None
    return summary


@pytest.mark.parametrize("first", ["ActivityScheduled", "SignalReceived", "WorkflowCompleted", "WorkflowTaskFailed"])
def test_history_must_start_with_workflow_started(first: str) -> None:
    with pytest.raises(ValueError, match=f"history of 'w' starts with {first}, not WorkflowStarted"):
        fold(None, _ev(1, first))


def test_fold_builds_the_summary() -> None:
    s = _fold_all(HISTORY)
    assert (s.workflow_id, s.workflow_type, s.task_queue, s.start_ms) == ("w", "T", "q", 1_001)
    assert s.status == "running" and s.running and s.last_seq == 8
    assert s.activities == {1: [2, 2]}  # activity 1 on attempt 2, scheduled at seq 2; activity 2 done
    assert s.max_activity_seq == 2
    assert s.held == "nondeterministic"  # an input event does not release a hold
    assert s.cancel_requested is True
    assert Summary.from_bytes(s.to_bytes()) == s  # int activity keys survive JSON


def test_command_event_releases_a_hold_and_closing_clears_everything() -> None:
    s = _fold_all([*HISTORY, _ev(9, "TimerStarted", timer_seq=1, duration_ms=5, fire_at_ms=10)])
    assert s.held is None and s.last_seq == 9
    s = _fold_all([*HISTORY, _ev(9, "WorkflowTerminated", reason="x")])  # an engine event closes too
    assert (s.status, s.close_ms, s.activities, s.held, s.running) == ("terminated", 1_009, {}, None, False)
    assert s.max_activity_seq == 2  # kept: a late result for a seq never scheduled is still told apart


@pytest.mark.parametrize(
    ("closing", "status"),
    [
        ("WorkflowCompleted", "completed"),
        ("WorkflowFailed", "failed"),
        ("WorkflowCanceled", "canceled"),
        ("WorkflowTimedOut", "timed_out"),
    ],
)
def test_closing_statuses(closing: str, status: str) -> None:
    assert _fold_all([HISTORY[0], _ev(2, closing)]).status == status


@pytest.mark.parametrize("replayed", range(len(HISTORY)))
def test_fold_is_idempotent_for_seq_at_or_below_last_seq(replayed: int) -> None:
    s = _fold_all(HISTORY)
    before = s.to_bytes()
    again = fold(s, copy.deepcopy(HISTORY[replayed]))
    assert again is s and again.to_bytes() == before


def test_replaying_a_whole_prefix_changes_nothing() -> None:
    s = _fold_all([*HISTORY, _ev(9, "WorkflowCompleted", result={})])
    before = s.to_bytes()
    for event in HISTORY:  # e.g. ActivityScheduled seq 2 must not re-open activity 1
        s = fold(s, copy.deepcopy(event))
    assert s.to_bytes() == before and s.activities == {} and s.status == "completed"


def test_unknown_activity_results_do_not_break_the_fold() -> None:
    s = _fold_all(
        [
            HISTORY[0],
            _ev(2, "ActivityAttemptFailed", activity_seq=7, attempt=1, failure=FAILURE, next_attempt=2, retry_at_ms=0),
            _ev(3, "ActivityCompleted", activity_seq=7),
        ]
    )
    assert s.activities == {} and s.last_seq == 3
