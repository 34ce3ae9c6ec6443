"""Restore equivalence: state rebuilt from wf.events / wf.timers records equals the live state,
and the rebuilt engine carries on exactly as the live one does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from engine_harness import EVENTS, TIMERS, EngineHarness, Record, default_activity, retryable


def _build_live(root: Path) -> tuple[EngineHarness, list[dict[str, Any]]]:
    """Workflows in every interesting state; returns the harness and the tasks still unanswered."""
    h = EngineHarness(root)
    h.start("three", "ThreeSteps", 1)
    h.start("wait", "Approval", 2.0)
    h.start("retry", "Retrying", 1)
    h.start("hard", "Failing", "no")
    h.start("fan", "FanOut", 3)
    h.start("timed", "Approval", 0.5, execution_timeout_ms=600_000)
    h.start("unknown", "Nope")
    tasks = {(t["workflow_id"], t["activity_seq"]): t for t in h.new_tasks()}
    h.complete(tasks[("three", 1)], 2, advance_ms=3)
    outcome, failure = default_activity(tasks[("hard", 1)])
    h.fail(tasks[("hard", 1)], failure, advance_ms=3)
    h.complete(tasks[("fan", 2)], 2, advance_ms=3)
    h.signal("wait", "approve", "carol")
    h.tick(500)  # "timed" sleeps 0.5 s: its timer fires; "wait"'s does not
    h.fail(tasks[("retry", 1)], retryable("transient"), advance_ms=3)  # retry timer due in 100 ms
    outstanding = [t for key, t in tasks.items() if key in {("fan", 1), ("fan", 3)}] + h.new_tasks()
    for task in outstanding:
        h.started(task)  # what a worker reports: their start-to-close clocks run (s-timers)
    return h, outstanding


def _restore(live: EngineHarness, root: Path, records: list[Record] | None = None) -> EngineHarness:
    restored = EngineHarness(root, now_ms=live.now_ms)
    restored.engine.begin(live.now_ms)
    for r in records if records is not None else live.sink.records:
        assert r.partition is not None or r.topic not in (EVENTS, TIMERS)
        if r.topic == EVENTS:
            restored.engine.restore_event(r.partition or 0, r.key, r.value or b"")
        elif r.topic == TIMERS:
            restored.engine.restore_timer(r.partition or 0, r.key, r.value)
    restored.engine.committed()
    return restored


IDS = ("three", "wait", "retry", "hard", "fan", "timed", "unknown")


def _assert_same_state(live: EngineHarness, restored: EngineHarness) -> None:
    for wid in IDS:
        assert restored.summary(wid) == live.summary(wid), wid
        assert restored.stored_history(wid) == live.stored_history(wid), wid
    for p in range(live.partitions):
        assert restored.pending_timers(p) == live.pending_timers(p), p
        assert restored.store(p).held_workflows() == live.store(p).held_workflows()


def _drive(h: EngineHarness, outstanding: list[dict[str, Any]]) -> None:
    for task in outstanding:
        outcome, value = default_activity(task)
        if outcome == "ok":
            h.complete(task, value, advance_ms=10)
        else:
            h.fail(task, value, advance_ms=10)
    h.signal("timed", "approve", "dave")
    h.run_activities()
    h.tick(2_000)  # "wait"'s 2 s timer and the retry timer are due
    h.run_activities()


def _shape(records: list[Record]) -> list[tuple[str, int | None, bytes, Any]]:
    return [(r.topic, r.partition, r.key, r.decode() if r.value is not None else None) for r in records]


def test_restored_state_equals_live_state_and_continues_identically(tmp_path: Path) -> None:
    live, outstanding = _build_live(tmp_path / "live")
    assert {t["workflow_id"] for t in outstanding} == {"three", "fan"}
    # Sanity: the scenario left timers of every kind that survives to this point.
    kinds = sorted({tkey[0] for p in range(live.partitions) for _, _, tkey in live.pending_timers(p)})
    assert kinds == ["r", "s", "u", "w"]
    statuses = {wid: live.summary(wid).status for wid in IDS}  # type: ignore[union-attr]
    assert statuses == {
        "three": "running",
        "wait": "running",
        "retry": "running",
        "hard": "failed",
        "fan": "running",
        "timed": "running",
        "unknown": "failed",
    }

    restored = _restore(live, tmp_path / "restored")
    _assert_same_state(live, restored)
    assert restored.engine.cache == {}

    # Restoring the same records again (a restore that re-reads from an older offset) is a no-op.
    restored.engine.begin(live.now_ms)
    for r in live.sink.records:
        if r.topic == EVENTS:
            restored.engine.restore_event(r.partition or 0, r.key, r.value or b"")
    restored.engine.committed()
    _assert_same_state(live, restored)

    # Both engines now get the same input at the same clock: same output, record for record.
    mark = len(live.sink.records)
    _drive(live, outstanding)
    _drive(restored, outstanding)
    assert _shape(restored.sink.records) == _shape(live.sink.records[mark:])
    assert restored.engine.counters.replays == 5  # three, fan, wait, retry, timed: rebuilt from history
    assert live.engine.counters.replays == 0
    results = {wid: restored.result(wid) for wid in ("three", "wait", "retry", "fan", "timed")}
    assert results == {
        "three": [2, 3, 4],
        "wait": "approved by carol after sleeping True",
        "retry": "ok after 2 attempts",
        "fan": 0 + 2 + 4,
        "timed": "approved by dave after sleeping True",
    }
    _assert_same_state(live, restored)
    assert all(restored.pending_timers(p) == [] for p in range(restored.partitions))
    live.close()
    restored.close()


def test_restore_from_a_prefix_then_the_tail(tmp_path: Path) -> None:
    """A restore in two passes (an old snapshot, then the log's tail) ends in the same state."""
    live, _ = _build_live(tmp_path / "live")
    records = live.sink.records
    half = len(records) // 2
    restored = _restore(live, tmp_path / "restored", records[:half])
    restored.engine.begin(live.now_ms)
    for r in records[max(0, half - 10) :]:  # overlapping: the tail re-reads some records
        if r.topic == EVENTS:
            restored.engine.restore_event(r.partition or 0, r.key, r.value or b"")
        elif r.topic == TIMERS:
            restored.engine.restore_timer(r.partition or 0, r.key, r.value)
    restored.engine.committed()
    _assert_same_state(live, restored)
    live.close()
    restored.close()
