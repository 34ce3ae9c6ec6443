"""Whole workflows through the Engine: events, keys, tasks, completions, stored history."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine_harness import COMPLETIONS, EVENTS, START_MS, TASKS_DEFAULT, EngineHarness, without_random

from processor import _payload


def test_three_steps_runs_to_completion(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "order-1"
    p = h.partition_of(wid)
    h.start(wid, "ThreeSteps", 10)

    (task,) = h.new_tasks()
    assert task["workflow_id"] == wid and task["activity_seq"] == 1 and task["attempt"] == 1
    assert task["activity_type"] == "step" and task["workflow_type"] == "ThreeSteps"
    assert _payload.from_payloads(task["args"]) == ["a", 10]
    assert task["start_to_close_timeout_ms"] == 60_000 and task["scheduled_time_ms"] == START_MS

    answered: list[dict[str, Any]] = [task]
    h.complete(task, 11, advance_ms=5)
    for expected_args in (["b", 11], ["c", 12]):
        (task,) = h.new_tasks()
        assert _payload.from_payloads(task["args"]) == expected_args
        answered.append(task)
        h.complete(task, expected_args[1] + 1, advance_ms=5)
    assert h.new_tasks() == []
    assert [t["activity_seq"] for t in answered] == [1, 2, 3]
    task_records = h.records(TASKS_DEFAULT)
    assert len(task_records) == 3 and {r.key for r in task_records} == {wid.encode()}

    # Completion record.
    (completion,) = h.records(COMPLETIONS)
    name, rec = completion.decode()
    assert name == "wf.completions.v1.WorkflowCompleted"
    assert completion.key == wid.encode() and completion.header("type") == name
    assert _payload.from_payload(rec["result"]) == [11, 12, 13]
    assert rec["workflow_type"] == "ThreeSteps" and rec["close_time_ms"] == START_MS + 15

    # Events: exact sequence, keys <id>@<run>@<seq 12 digits>, contiguous seqs, explicit partition.
    event_records = h.records(EVENTS)
    events = [r.event() for r in event_records]
    assert [e["type"] for e in events] == [
        "WorkflowStarted",
        "ActivityScheduled",
        "ActivityCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "ActivityScheduled",
        "ActivityCompleted",
        "WorkflowCompleted",
    ]
    assert [e["seq"] for e in events] == list(range(1, 9))
    run = events[0]["run_id"]
    assert len(run) == 32 and rec["run_id"] == run == h.summary(wid).run_id  # type: ignore[union-attr]
    assert [r.key for r in event_records] == [f"{wid}@{run}@{s:012d}".encode() for s in range(1, 9)]
    assert {r.partition for r in event_records} == {p}
    assert all(r.header("type") == "wf.events.v1." + e["type"] for r, e in zip(event_records, events, strict=True))
    assert [e["activity_seq"] for e in events if e["type"] == "ActivityScheduled"] == [1, 2, 3]
    assert [e["time_ms"] for e in events] == [
        START_MS,
        START_MS,
        START_MS + 5,
        START_MS + 5,
        START_MS + 10,
        START_MS + 10,
        START_MS + 15,
        START_MS + 15,
    ]

    # The stored history is byte for byte what was produced; the summary is closed.
    assert h.stored_history(wid) == [r.value for r in event_records]
    summary = h.summary(wid)
    assert summary is not None
    assert (summary.status, summary.last_seq, summary.activities, summary.max_activity_seq) == ("completed", 8, {}, 3)
    assert summary.close_ms == START_MS + 15 and summary.start_ms == START_MS and summary.held is None
    # Each activity had a start-to-close timer; all were tombstoned, none remain.
    assert h.pending_timers(p) == []
    assert h.engine.counters.events == 8 and h.engine.counters.dlq == 0
    h.close()


def test_unknown_workflow_type_fails_with_registered_types(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    h.start("u-1", "NoSuchWorkflow", 1, execution_timeout_ms=60_000)
    events = h.events("u-1")
    assert [e["type"] for e in events] == ["WorkflowStarted", "WorkflowFailed"]
    assert events[0]["workflow_type"] == "NoSuchWorkflow"
    failure = events[1]["failure"]
    assert failure["type"] == "UnknownWorkflowType" and failure["non_retryable"] is True
    assert failure["message"] == (
        "workflow type 'NoSuchWorkflow' is not registered with this processor "
        "(registered: Approval, Cart, Child, Failing, FanOut, Looper, Parent, Retrying, ThreeSteps, Timeouts)"
    )
    ((name, rec),) = h.completions("u-1")
    assert name == "wf.completions.v1.WorkflowFailed"
    assert rec["failure"] == failure and rec["workflow_type"] == "NoSuchWorkflow"
    assert h.new_tasks() == []
    summary = h.summary("u-1")
    assert summary is not None and summary.status == "failed" and summary.last_seq == 2
    # The execution-timeout timer the start set was removed when the workflow closed.
    assert h.pending_timers(h.partition_of("u-1")) == []
    # Refused again, with the same reason, by a start that may reuse the id: a second run.
    h.start("u-1", "NoSuchWorkflow", 1)
    assert len(h.events("u-1")) == 4 and h.event_types("u-1")[2:] == ["WorkflowStarted", "WorkflowFailed"]
    h.close()


def _strip_seed(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [without_random(e) for e in events]


def _run_both(
    root: Path,
    always_replay: bool,
    cache_size: int = 100,
) -> tuple[EngineHarness, list[dict[str, Any]], list[Any]]:
    h = EngineHarness(root, always_replay=always_replay, cache_size=cache_size)
    h.start("three", "ThreeSteps", 1)
    h.start("fan", "FanOut", 4)
    h.run_activities()
    completions = [
        (n, r["workflow_id"], _payload.from_payload(r["result"]), r["close_time_ms"]) for n, r in h.completions()
    ]
    return h, _strip_seed(h.events()), completions


def test_always_replay_matches_cached_run(tmp_path: Path) -> None:
    cached, cached_events, cached_done = _run_both(tmp_path / "cached", False)
    replay, replay_events, replay_done = _run_both(tmp_path / "replay", True)
    assert cached_done == replay_done
    assert sorted((c[1], c[2]) for c in replay_done) == [("fan", 12), ("three", [2, 3, 4])]
    assert replay_events == cached_events
    fan = [e["type"] for e in replay_events if e["workflow_id"] == "fan"]
    assert fan == ["WorkflowStarted"] + ["ActivityScheduled"] * 4 + ["ActivityCompleted"] * 4 + ["WorkflowCompleted"]
    # The replaying engine really replayed (once per activation after the first), the cached one never did.
    assert cached.engine.counters.replays == 0
    assert replay.engine.counters.replays == 3 + 4
    assert all(v.instance is None for v in replay.engine.cache.values())
    cached.close()
    replay.close()


def test_tiny_cache_matches_cached_run(tmp_path: Path) -> None:
    cached, cached_events, cached_done = _run_both(tmp_path / "cached", False)
    small, small_events, small_done = _run_both(tmp_path / "small", False, cache_size=1)
    assert small.engine.counters.replays > 0  # the two workflows evicted each other
    assert (small_events, small_done) == (cached_events, cached_done)
    cached.close()
    small.close()
