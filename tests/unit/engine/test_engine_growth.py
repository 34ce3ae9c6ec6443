"""Growing the co-partitioned topics (issue 8) in the engine: the hand-off protocol of handoff.py
over the in-memory sink -- movers handed off with their history and timers, commands parked on
the new partition until their hand-off, stayers untouched, and restore equivalence on both sides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_harness import COMMANDS, EVENTS, TIMERS, EngineHarness, Record, partition_of

from processor._engine import keys
from processor._engine.growth import Layout, growth_problem, scale_problem


def _ids(n: int, stem: str) -> list[str]:
    return [f"{stem}-{i}" for i in range(n)]


def _movers(ids: list[str], before: int, after: int) -> list[str]:
    return [w for w in ids if partition_of(w, before) != partition_of(w, after)]


def _hand_offs(records: list[Record]) -> list[Record]:
    return [r for r in records if r.topic == COMMANDS and r.header("type") == "wf.commands.v1.WorkflowHandOff"]


def test_layout_rules() -> None:
    layout = Layout(4, 2, 1)
    assert [layout.is_old(p) for p in range(4)] == [True, True, False, False]
    assert [layout.source(q) for q in range(4)] == [None, None, 0, 1]
    assert Layout(8, 2, 1).targets(1) == [3, 5, 7]
    assert Layout(8).targets(1) == [] and not Layout(8).is_new(7)
    assert growth_problem(Layout(4), 4, 4, 4) is None
    assert growth_problem(Layout(4), 8, 8, 8) is None
    assert "not a whole multiple of 4" in (growth_problem(Layout(4), 6, 6, 6) or "")
    assert "different partition counts (commands 8, events 4, timers 4)" in (growth_problem(Layout(4), 8, 4, 4) or "")
    assert "cannot be removed" in (growth_problem(Layout(8), 4, 4, 4) or "")
    assert "still in progress" in (scale_problem(Layout(8, 4, 1), False, 8, 16) or "")
    assert "not a whole multiple of 8" in (scale_problem(Layout(8, 4, 1), True, 8, 12) or "")
    assert scale_problem(Layout(8, 4, 1), True, 8, 16) is None


def test_growth_moves_every_mover_with_its_state_and_loses_nothing(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, partitions=2)
    sleepers = _ids(12, "sleep")
    steppers = _ids(12, "steps")
    for wid in sleepers:
        h.start(wid, "Approval", 60.0)  # a 60 s timer, then waits for a signal
    for wid in steppers:
        h.start(wid, "ThreeSteps", 1)
    first_tasks = h.new_tasks()  # in flight on workers when the topics grow
    movers = _movers(sleepers + steppers, 2, 4)
    stayers = [w for w in sleepers + steppers if w not in movers]
    assert movers and stayers
    before = {w: h.stored_history(w) for w in sleepers + steppers}
    runs = {w: h.run_of(w) for w in sleepers + steppers}

    h.grow(4)
    assert h.engine.handing_off == {0, 1} and h.engine.waiting == {2, 3}
    mark = len(h.sink.records)
    # A signal for a mover goes to its new home, which has not received it yet: parked there.
    # (The old partitions hand off in the same transaction: fewer movers than its budget.)
    mover = next(w for w in movers if w in sleepers)
    out = h.signal(mover, "approve", "early")
    parked = [r for r in out if r.topic == EVENTS and r.key.startswith(b"\x00x/parked/")]
    assert len(parked) == 1 and parked[0].partition == partition_of(mover, 4)
    assert h.engine.counters.parked >= 1

    out = h.sink.records[mark:]
    sent = _hand_offs(out)
    assert sorted(r.key.decode() for r in sent) == sorted(movers)
    assert all(r.partition == partition_of(r.key.decode(), 4) for r in sent)
    done = [r for r in out if r.topic == COMMANDS and r.header("type") == "wf.commands.v1.HandOffDone"]
    assert sorted(r.partition for r in done) == [2, 3]
    assert sorted(r.key for r in out if r.topic == "t.control") == [b"handoff/1/0", b"handoff/1/1"]
    # Everything of a mover in its old partition is tombstoned, in the same transaction.
    for wid in movers:
        old = partition_of(wid, 2)
        tombstones = {r.key for r in out if r.topic == EVENTS and r.partition == old and r.value is None}
        assert {k for k in tombstones if keys.split_event_key(k) and keys.split_event_key(k)[0] == wid} == {
            keys.event_key(wid, runs[wid], seq) for seq in range(1, len(before[wid]) + 1)}
        assert h.store(old).summary(wid) is None
    assert h.engine.handing_off == set()

    h.pump(activities=False)  # the hand-offs and the dones reach the new partitions
    assert h.engine.waiting == set() and not any(h.store(p).meta_items(b"x/parked/") for p in range(4))
    for wid in movers:
        assert h.stored_history(wid) == before[wid] or wid == mover, wid
        assert h.store(partition_of(wid, 4)).summary(wid) is not None
    for wid in stayers:
        assert h.stored_history(wid) == before[wid], "a workflow that stays is untouched"
    assert [e["type"] for e in h.events(mover)][-1] == "SignalReceived", "the parked signal was applied"

    # Results of the tasks handed out before the growth reach the new homes and are applied.
    for task in first_tasks:
        h.complete(task, 2)
    h.run_activities()
    h.tick(60_000)  # the sleepers' timers fire in their new homes
    for wid in sleepers:
        if wid != mover:
            h.signal(wid, "approve", "late")
    for wid in steppers:
        assert h.result(wid) == [2, 3, 4], wid
    for wid in sleepers:
        assert h.result(wid).startswith("approved by"), wid
    completions = [r.key for r in h.records("t.completions")]
    assert sorted(completions) == sorted(w.encode() for w in sleepers + steppers), "one completion per run"
    assert h.dlq_reasons() == []
    h.close()


def _restored(h: EngineHarness, root: Path) -> EngineHarness:
    """A second engine rebuilt from what `h` wrote to events and timers, as a restore does."""
    restored = EngineHarness(root, partitions=4, now_ms=h.now_ms)
    restored.engine.adopt(h.engine.layout)
    restored.engine.begin(h.now_ms)
    for r in h.sink.records:
        if r.topic == EVENTS:
            restored.engine.restore_events_record(r.partition or 0, r.key, r.value)
        elif r.topic == TIMERS:
            restored.engine.restore_timer(r.partition or 0, r.key, r.value)
    restored.engine.committed()
    for p in range(4):
        restored.engine.partition_ready(p)
    return restored


def test_restore_after_growth_rebuilds_both_sides(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path / "live", partitions=2)
    ids = _ids(10, "r")
    for wid in ids:
        h.start(wid, "Approval", 60.0)
    h.grow(4)
    h.signal(_movers(ids, 2, 4)[0], "approve", "parked")
    h.tick()
    # Restored from the log at this point: the old side dropped its movers, the new side has
    # the parked command and not yet its hand-offs.
    restored = _restored(h, tmp_path / "restored")
    for wid in ids:
        p_old, p_new = partition_of(wid, 2), partition_of(wid, 4)
        assert restored.store(p_old).summary(wid) == (h.store(p_old).summary(wid))
        assert restored.store(p_new).meta_items(b"x/") == h.store(p_new).meta_items(b"x/")
        assert restored.pending_timers(p_old) == h.pending_timers(p_old)
    assert restored.engine.handing_off == set() and restored.engine.waiting == {2, 3}
    restored.close()
    h.close()


@pytest.mark.parametrize("parts", [1, 3])
def test_a_large_history_travels_in_parts_and_waits_until_complete(tmp_path: Path, parts: int,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from processor._engine import handoff

    h = EngineHarness(tmp_path, partitions=2)
    wid = next(w for w in _ids(50, "big") if partition_of(w, 2) != partition_of(w, 4))
    h.start(wid, "Approval", 60.0)
    for i in range(6):
        h.signal(wid, "ping", i)  # no handler: buffered, recorded
    size = sum(len(v) for v in h.stored_history(wid))
    monkeypatch.setattr(handoff, "_PART_BYTES", size // parts + 1 if parts > 1 else 10**9)
    h.grow(4)
    out = h.tick()
    sent = _hand_offs(out)
    assert len(sent) >= parts
    # Apply the parts one by one: until the last, a command for it is parked.
    for i, r in enumerate(sent):
        h.transaction([(r.partition or 0, r.key, r.value, r.headers)])
        if i < len(sent) - 1:
            out = h.signal(wid, "approve", "during")
            assert [r.key[:10] for r in out] == [b"\x00x/parked/"], "parked until the last part"
    h.pump(activities=False)
    stored = [h.engine.codec.decode_typed(v)["type"] for v in h.stored_history(wid)]
    assert stored.count("SignalReceived") == 6 + (len(sent) - 1), "none lost, none twice"
    h.close()


def _done_count(h: EngineHarness, r: Any) -> int:
    return int(h.engine.codec.decode_as(r.value or b"", "wf.commands.v1.HandOffDone")["handed_off"])


def test_the_count_of_a_hand_off_survives_a_restart_in_the_middle(tmp_path: Path) -> None:
    """HandOffDone (and the control topic's record the verb prints) counts every workflow the
    partition handed off, also those of batches committed before the process restarted."""
    h = EngineHarness(tmp_path / "live", partitions=2)
    ids = _ids(40, "rc")
    for wid in ids:
        h.start(wid, "Approval", 60.0)
    movers = _movers(ids, 2, 4)
    h.grow(4)
    h.engine.begin(h.now_ms)
    assert h.engine.hand_off_step(limit=3) == 3  # one committed batch, then the process dies
    h.engine.committed()
    restored = _restored(h, tmp_path / "restored")
    rest = restored.tick()
    assert len(_hand_offs(rest)) == len(movers) - 3
    dones = [r for r in rest if r.header("type") == "wf.commands.v1.HandOffDone"]
    assert sum(_done_count(restored, r) for r in dones) == len(movers), "the 3 of the first batch are counted"
    restored.close()
    h.close()


def test_an_aborted_hand_off_is_redone_from_the_committed_state(tmp_path: Path) -> None:
    from processor._engine.handoff import LayoutBehind

    h = EngineHarness(tmp_path, partitions=2)
    ids = _ids(40, "ab")
    for wid in ids:
        h.start(wid, "Approval", 60.0)
    movers = _movers(ids, 2, 4)
    h.grow(4)
    aborted = h.transaction((), commit=False)  # the hand-off transaction aborts (a rebalance, a crash)
    assert sorted(r.key.decode() for r in _hand_offs(aborted)) == sorted(movers)
    assert h.engine.handing_off == {0, 1}, "still to do: nothing of it was committed"
    redone = h.tick()
    assert sorted(r.key.decode() for r in _hand_offs(redone)) == sorted(movers)
    # The new partitions' Done aborts once too: it is applied when read again.
    dones = [r for r in redone if r.header("type") == "wf.commands.v1.HandOffDone"]
    assert sum(_done_count(h, r) for r in dones) == len(movers), "the aborted batch is not counted"
    for r in _hand_offs(redone):
        h.transaction([(r.partition or 0, r.key, r.value, r.headers)])
    h.transaction([(r.partition or 0, r.key, r.value, r.headers) for r in dones], commit=False)
    assert h.engine.waiting == {2, 3}
    h.transaction([(r.partition or 0, r.key, r.value, r.headers) for r in dones])
    assert h.engine.waiting == set()
    # (the sink also keeps what the aborted transaction produced)
    assert sorted({r.key for r in h.records("t.control") if r.key.startswith(b"received/")}) == \
        [b"received/1/2", b"received/1/3"]
    for wid in ids:
        h.signal(wid, "approve", "x")
    h.tick(60_000)
    assert all(h.result(w).startswith("approved by x") for w in ids)
    # A hand-off record of a growth this engine has not adopted makes it catch up first.
    (record,) = _hand_offs(redone)[:1]
    later = h.engine.codec.decode_as(record.value or b"", "wf.commands.v1.WorkflowHandOff")
    value = h.engine.codec.encode("wf.commands.v1.WorkflowHandOff", {**later, "epoch": 2})
    with pytest.raises(LayoutBehind, match="epoch 2 reached partition"):
        h.engine.handle_command(record.partition or 0, record.key, value, record.headers, 999)
    h.close()


def test_an_old_partition_that_is_behind_keeps_its_movers_until_it_has_caught_up(tmp_path: Path) -> None:
    """After a restore the old partition reads a backlog: its movers stay, their commands and
    timers are applied there in log order; once its input is read to the end they move."""
    from processor._payload import to_payloads

    h = EngineHarness(tmp_path, partitions=2)
    ids = _ids(30, "bh")
    for wid in ids:
        h.start(wid, "Approval", 2.0)
    movers = _movers(ids, 2, 4)
    mover = movers[0]
    old = partition_of(mover, 2)
    h.grow(4)
    h.engine.behind = {0, 1}  # what the loop finds at the start of the transaction
    out = h.send("SignalWorkflow", {"workflow_id": mover, "signal_name": "approve", "args": to_payloads(["log"])},
                 partition=old, advance_ms=3_000)  # the 2 s timers fall due in the backlog
    assert _hand_offs(out) == [], "nothing moves while the partition is behind"
    assert h.engine.handing_off == {0, 1}
    assert h.store(old).summary(mover) is not None and h.result(mover).startswith("approved by log"), \
        "the signal and the timer were applied where the workflow still lives"
    h.engine.behind = set()  # read to the end
    moved = h.tick()
    assert sorted(r.key.decode() for r in _hand_offs(moved)) == sorted(movers)
    assert h.engine.handing_off == set()


def test_a_timer_that_arrives_overdue_waits_for_what_was_forwarded_behind_it(tmp_path: Path) -> None:
    from processor._engine.handoff import OVERDUE_GRACE_MS

    h = EngineHarness(tmp_path, partitions=2)
    ids = _ids(30, "od")
    for wid in ids:
        h.start(wid, "Approval", 2.0)
    mover = _movers(ids, 2, 4)[0]
    h.grow(4)
    h.now_ms += 5_000  # the hand-offs are written late: the 2 s timers are overdue on arrival
    sent = _hand_offs(h.tick())
    record = next(r for r in sent if r.key.decode() == mover)
    h.transaction([(record.partition or 0, record.key, record.value, record.headers)], horizons={})
    new = partition_of(mover, 4)
    assert [(d, w) for d, w, _ in h.pending_timers(new) if w == mover] == [(h.now_ms + OVERDUE_GRACE_MS, mover)]
    assert "TimerFired" not in h.event_types(mover)
    h.tick(OVERDUE_GRACE_MS)
    assert "TimerFired" in h.event_types(mover)


def test_a_heartbeat_timeout_waits_for_the_growth_that_delays_its_heartbeats(tmp_path: Path) -> None:
    """During a growth the heartbeats of a moving workflow may sit in another partition's input
    (forwarded from its old home, by an owner that may be dead), so its heartbeat timeout is
    deferred while its partition takes part in the growth; afterwards it fires as usual."""
    from processor._engine.timers import GROWTH_HEARTBEAT_DEFER_MS

    h = EngineHarness(tmp_path, partitions=2)
    ids = _ids(12, "hb")
    for wid in ids:
        h.start(wid, "Timeouts", "heartbeat_missed")  # 0.5 s heartbeat timeout, one attempt
    for task in h.new_tasks():
        h.started(task)
    h.grow(4)
    assert h.engine.handing_off == {0, 1}
    h.engine.behind = {0, 1}  # the old partitions read a backlog: nothing moves yet
    h.tick(2_000)  # every heartbeat timeout is overdue, but the growth is under way
    assert not any("ActivityTimedOut" in h.event_types(w) or "ActivityAttemptFailed" in h.event_types(w)
                   for w in ids)
    due = {d for p in (0, 1) for d, _, k in h.pending_timers(p) if k.startswith("h")}
    assert due == {h.now_ms + GROWTH_HEARTBEAT_DEFER_MS}, "looked at again a second later"
    h.engine.behind = set()  # read to the end: the movers are handed off
    h.tick()
    h.pump(activities=False)  # the hand-offs arrive: the growth is over
    assert h.engine.handing_off == set() and h.engine.waiting == set()
    h.tick(GROWTH_HEARTBEAT_DEFER_MS + 1_500)
    assert all(h.result(w) == "RemoteApplicationError: HeartbeatTimeout" for w in ids), \
        "no heartbeat came: once the growth is over the timeout fires"
