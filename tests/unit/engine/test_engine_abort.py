"""An aborted transaction leaves nothing behind; re-running it gives the same events."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine_harness import EVENTS, START_MS, EngineHarness, Record, without_random, without_run

from processor._engine.state import Summary
from processor._engine.store import PartitionStore


def _on_disk(h: EngineHarness, wid: str) -> tuple[Summary | None, int, list[tuple[int, str, str]]]:
    """What a fresh PartitionStore on the partition's path sees: summary, history length, timers."""
    p = h.partition_of(wid)
    h.engine.close_partition(p)
    fresh = PartitionStore(h.store_path(p))
    try:
        summary = fresh.summary(wid)
        run = summary.run_id if summary is not None else ""
        return summary, len(fresh.history(wid, run)), fresh.due_timers(2**63 - 1, 100)
    finally:
        fresh.close()
        h.engine.open_partition(p, PartitionStore(h.store_path(p)))


def _events(records: list[Record]) -> list[dict[str, Any]]:
    return [without_random(r.event()) for r in records if r.topic == EVENTS]


def test_aborted_start_reaches_nothing_and_reruns_identically(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "abort-start"
    aborted = h.start(wid, "ThreeSteps", 1, commit=False)
    # No timer yet: the task's start-to-close clock starts when a worker reports the start.
    assert [r.topic for r in aborted] == [EVENTS, EVENTS, "t.tasks.default"]
    assert h.summary(wid) is None and wid not in h.engine.cache
    assert _on_disk(h, wid) == (None, 0, [])

    again = h.start(wid, "ThreeSteps", 1)
    assert _events(again) == _events(aborted)
    # The redone start is a new run (a new run id in keys and records); everything else is the same.
    assert [(r.topic, without_run(r.key) or r.key) for r in again] == [(r.topic, without_run(r.key) or r.key)
                                                                       for r in aborted]
    assert h.engine.counters.duplicates == 0  # the aborted start did not count as the first one
    summary, n_history, timers = _on_disk(h, wid)
    assert summary is not None and summary.last_seq == 2 and n_history == 2
    assert timers == []
    (task,) = h.new_tasks()[-1:]
    h.started(task, commit=False)
    assert _on_disk(h, wid)[2] == [], "an aborted start report sets no timer"
    h.started(task)
    assert _on_disk(h, wid)[2] == [(START_MS + 60_000, wid, "s1")]
    h.close()


def test_aborted_activity_result_restarts_from_committed_state(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "abort-mid"
    h.start(wid, "ThreeSteps", 1)
    (t1,) = h.new_tasks()
    h.started(t1)
    aborted = h.complete(t1, 2, commit=False, advance_ms=5)
    assert [e["type"] for e in _events(aborted)] == ["ActivityCompleted", "ActivityScheduled"]
    assert [e["seq"] for e in _events(aborted)] == [3, 4]
    # The instance the batch advanced is gone; the summary is the committed one.
    assert wid not in h.engine.cache
    summary = h.summary(wid)
    assert summary is not None and summary.last_seq == 2 and summary.activities == {1: [1, 2]}
    disk, n_history, timers = _on_disk(h, wid)
    assert disk is not None and disk.last_seq == 2 and n_history == 2
    assert timers == [(START_MS + 60_000, wid, "s1")]

    h.new_tasks()  # the aborted transaction's task never reached a worker
    h.now_ms -= 5  # the loop re-reads the same command at the same clock in this test
    again = h.complete(t1, 2, advance_ms=5)
    assert _events(again) == _events(aborted)
    assert [r.key for r in again if r.topic == EVENTS] == [h.event_key(wid, 3), h.event_key(wid, 4)]
    assert h.engine.counters.replays == 1  # rebuilt from history after the abort
    h.run_activities()
    assert h.result(wid) == [2, 3, 4]
    seqs = [e["seq"] for e in h.events(wid)]
    # Produced = aborted (3, 4) + committed run 1..8; the committed run alone is contiguous.
    assert seqs == [1, 2, 3, 4, 3, 4, 5, 6, 7, 8]
    assert len(h.stored_history(wid)) == 8
    h.close()


def test_aborted_timer_fire_fires_again(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path)
    wid = "abort-timer"
    p = h.partition_of(wid)
    h.start(wid, "Approval", 1.0)
    h.now_ms += 1_000
    first = h.transaction((), commit=False)
    assert [e["type"] for e in _events(first)] == ["TimerFired"]
    assert h.pending_timers(p) == [(START_MS + 1_000, wid, "u1")]
    summary = h.summary(wid)
    assert summary is not None and summary.last_seq == 2
    second = h.tick()
    assert _events(second) == _events(first)
    assert h.pending_timers(p) == []
    h.close()
