"""History retention in the engine (issue 9 item 6): a closed workflow is pruned `retention_ms`
after it closed -- tombstones for every wf.events record (marked dp.pruned) and its timers, its
RocksDB state gone -- in the timer's transaction; a running workflow, or an id reused by a new
run, is never touched; a restore from the log (events, then their tombstones) drops it too."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from engine_harness import EVENTS, TIMERS, EngineHarness

from processor._engine import keys
from processor._engine.store import PartitionStore
from processor.replayer import history_from_json

RETAIN_MS = 10_000


@pytest.fixture
def h(tmp_path: Path) -> EngineHarness:
    return EngineHarness(tmp_path, retention_ms=RETAIN_MS)


def _close(h: EngineHarness, wid: str, who: str = "ann") -> None:
    h.start(wid, "Approval", 0.0)
    h.tick(1)
    h.signal(wid, "approve", who)
    assert h.summary(wid).status == "completed"  # type: ignore[union-attr]


def test_a_closed_workflow_is_pruned_after_retention_and_nothing_else(h: EngineHarness) -> None:
    _close(h, "old")
    h.start("running", "Approval", 3600.0)
    keys_of_old = [r.key for r in h.records(EVENTS) if r.value is not None and r.key.startswith(b"old@")]
    run = h.run_of("old")
    assert [t[2] for t in h.pending_timers(h.partition_of("old")) if t[1] == "old"] == ["p0"], \
        "the retention timer, set at the close, and only it"
    h.tick(RETAIN_MS - 100)
    assert h.summary("old") is not None, "not before its time"
    before = len(h.records(EVENTS))
    h.tick(200)
    tombstones = [r for r in h.records(EVENTS)[before:] if r.value is None]
    assert sorted(r.key for r in tombstones) == sorted(keys_of_old)
    assert all(r.header("dp.pruned") == "1" for r in tombstones)
    assert [r for r in h.records(TIMERS) if r.key == keys.timer_topic_key("old", "p0")][-1].value is None
    assert h.summary("old") is None and h.store(h.partition_of("old")).history("old", run) == []
    assert h.engine.counters.pruned == 1
    assert h.summary("running") is not None and h.summary("running").running  # type: ignore[union-attr]
    assert not [r for r in h.records(EVENTS) if r.value is None and r.key.startswith(b"running@")]


def test_an_id_reused_by_a_new_run_is_not_pruned_while_it_runs(h: EngineHarness) -> None:
    _close(h, "again")
    h.tick(RETAIN_MS // 2)
    h.start("again", "Approval", 3600.0)  # a new run of the id (allow_duplicate)
    new_run = h.run_of("again")
    h.tick(RETAIN_MS)  # the first run's retention timer fires: the id runs, it is kept
    assert h.run_of("again") == new_run and h.summary("again").running  # type: ignore[union-attr]
    assert not [r for r in h.records(EVENTS) if r.value is None]
    assert h.engine.counters.pruned == 0


def test_a_restore_of_the_log_drops_a_pruned_workflow(h: EngineHarness, tmp_path: Path) -> None:
    _close(h, "gone")
    h.tick(RETAIN_MS + 1)
    p = h.partition_of("gone")
    fresh = PartitionStore(tmp_path / "restored")
    h.engine.close_partition(p)
    h.engine.open_partition(p, fresh)
    for r in h.records(EVENTS):
        if r.partition == p:
            h.engine.restore_events_record(p, r.key, r.value)
    fresh.flush()
    assert fresh.summary("gone") is None and fresh.workflow_events("gone") == []


def test_retention_zero_keeps_everything(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, retention_ms=0)
    _close(h, "kept")
    h.tick(10 * 86_400_000)
    assert h.summary("kept") is not None and h.pending_timers(h.partition_of("kept")) == []


def test_a_pruned_run_is_archived_first_in_the_form_replayer_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) \
        -> None:
    archive = tmp_path / "archive"
    monkeypatch.setenv("DP_ARCHIVE_DIR", str(archive))
    h = EngineHarness(tmp_path / "h", retention_ms=RETAIN_MS)
    _close(h, "kept/for ever")
    run = h.run_of("kept/for ever")
    types = h.event_types("kept/for ever")
    h.tick(RETAIN_MS + 1)
    (path,) = (archive / "t").glob("*/*.jsonl")
    assert path.name == f"{run}.jsonl" and path.parent.name == "kept%2Ffor%20ever"
    assert [e["type"] for e in history_from_json(path.read_text())] == types
    assert json.loads(path.read_text().splitlines()[0])["type"] == "WorkflowStarted"


def test_a_restore_keeps_the_timers_of_a_run_that_reused_a_pruned_id(h: EngineHarness, tmp_path: Path) -> None:
    """The restore reads wf.events and wf.timers interleaved: here every timer record first, then
    the events -- the pruned run's tombstones must not drop the new run's timer."""
    _close(h, "again")
    h.tick(RETAIN_MS + 1)  # pruned
    h.start("again", "Approval", 3600.0)  # a new run of the id, with a user timer
    p = h.partition_of("again")
    due = h.store(p).timer_due("again", "u1")
    assert due is not None
    fresh = PartitionStore(tmp_path / "restored")
    h.engine.close_partition(p)
    h.engine.open_partition(p, fresh)
    for r in h.records(TIMERS):
        if r.partition == p:
            h.engine.restore_timer(p, r.key, r.value)
    for r in h.records(EVENTS):
        if r.partition == p:
            h.engine.restore_events_record(p, r.key, r.value)
    fresh.flush()
    summary = fresh.summary("again")
    assert summary is not None and summary.running
    assert fresh.timer_due("again", "u1") == due, "the new run's timer survived the old run's tombstones"
    assert fresh.timer_due("again", "p0") is None, "the pruned run's retention timer stays gone"


def test_a_mass_expiry_is_pruned_a_budget_per_transaction(tmp_path: Path) -> None:
    from dataclasses import replace

    h = EngineHarness(tmp_path, retention_ms=RETAIN_MS)
    h.engine.settings = replace(h.engine.settings, prunes_per_tick=3)
    for i in range(7):
        _close(h, f"w{i}")
    h.tick(RETAIN_MS + 1)
    assert h.engine.counters.pruned == 3
    h.tick(1)
    h.tick(1)
    assert h.engine.counters.pruned == 7 and all(h.summary(f"w{i}") is None for i in range(7))
