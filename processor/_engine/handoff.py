"""Handing workflows off to their new home after the co-partitioned topics grew. Part of the
Engine (engine.py inherits it); the layout and its rules are growth.py, the loop adopts a new
layout between transactions (loop.py, `_check_layout`).

THE HAND-OFF PROTOCOL. After the layout grows from P to kP (epoch e), for each workflow x whose
home changes from old partition p to new partition q = murmur2(x) % kP:

  Step 1 (owner of p, one transaction per batch of movers, beside its normal work): produce
         `WorkflowHandOff(x)` -- every event of every run, the current run last, and the pending
         timers -- to commands[q] (in parts if large), tombstone x's records in events[p] and
         timers[p], and drop x from p's state. A command or a due timer for x that reaches p
         before x's turn hands x off at once; commands for x that reach p afterwards (producers
         with the old count) are forwarded to q behind its hand-off.
  Step 2 (owner of p, once no mover is left): produce `HandOffDone(e, p)` to every new partition
         p + P, p + 2P, ..., and `handoff/e/p` to the control topic; record `sent/e` in p.
  Step 3 (owner of q, until it applies HandOffDone(e, q % P)): a `WorkflowHandOff` installs x
         -- its events written to events[q] as they are, its timers to timers[q] -- and then
         applies the commands parked for x. A command for a workflow q does not hold yet (a
         mover whose hand-off has not arrived, or a new id) is parked: written to events[q]
         under a NUL-prefixed key, in the transaction that consumes it.
  Step 4 (owner of q, on HandOffDone): apply every command still parked, in arrival order,
         record `received/e` in q and `received/e/q` in the control topic. From now on q is an
         ordinary partition; once every new partition has done this the growth is settled and
         the next one may start.

An aborted transaction undoes its hand-off progress in memory too (Engine.aborted recomputes it
from the committed state). A hand-off record of an epoch this processor has not adopted yet
(another processor noticed the growth first) raises LayoutBehind: the loop aborts, adopts the
control topic's layout, and reads the record again.

Every step is one transaction of the partition's owner, so each happens exactly once across
crashes: a restore of p sees x's records and then their tombstones (and drops x), a restore of q
sees the installed events, the parked commands and the markers. State kept per partition (meta
keys, mirrored in events under NUL + key): `x/sent/<e>`, `x/received/<e>`, `x/arriving/<id>`
(a hand-off in parts, not complete yet), `x/parked/<offset>` (type NUL command bytes),
`x/moved/<e>` (workflows handed off so far, until step 2).
Workflows of p that stay are never paused; only the new partitions wait, for their one source.
"""

from __future__ import annotations

import logging
import os
import time
from typing import Any

from processor._engine import keys
from processor._engine.core import CMD, EngineParts
from processor._engine.growth import Layout, home
from processor._engine.state import fold
from processor._kafka.control import handoff_key, handoff_value, received_key

log = logging.getLogger("processor.engine")

HAND_OFF = CMD + "WorkflowHandOff"
DONE = CMD + "HandOffDone"
_PART_BYTES = 600_000  # event bytes per WorkflowHandOff part (the record limit is ~1 MB)
# Movers handed off per transaction (the rest of the transaction is the partition's normal work).
MOVERS_PER_TRANSACTION = int(os.environ.get("DP_HANDOFF_BATCH") or 50)
_SENT, _RECEIVED, _ARRIVING, _PARKED = b"x/sent/", b"x/received/", b"x/arriving/", b"x/parked/"
OVERDUE_GRACE_MS = 1_000  # a timer that arrives overdue with its workflow fires this much later
_MOVED = b"x/moved/"  # + epoch: how many workflows the partition has handed off so far
META_KEY_PREFIX = b"\x00"  # wf.events keys of the hand-off state: NUL + meta key (ids never hold NUL)


class LayoutBehind(Exception):  # noqa: N818 - engine control flow, caught by the loop
    """A hand-off record of a growth this processor has not adopted yet."""


class HandOffs(EngineParts):
    """WorkflowHandOff / HandOffDone, parking, and the old partitions' side of a growth."""

    # -- roles -----------------------------------------------------------------------------------

    def partition_ready(self, partition: int) -> None:
        """A partition is restored (or the layout changed): what it still has to do for the last growth."""
        layout, store = self.layout, self.stores[partition]
        self.handing_off.discard(partition)
        self.waiting.discard(partition)
        if layout.is_old(partition) and store.meta_get(_SENT + b"%d" % layout.epoch) is None:
            self.handing_off.add(partition)
            self._scan_after.pop(partition, None)
        if layout.is_new(partition) and store.meta_get(_RECEIVED + b"%d" % layout.epoch) is None:
            self.waiting.add(partition)

    def adopt(self, layout: Layout) -> None:
        """The layout grew (between transactions): route by it, and start the hand-offs."""
        log.info("layout: %d partitions (was %d, epoch %d)", layout.partitions, self.partitions, layout.epoch)
        self.layout = layout
        self.partitions = layout.partitions
        self.outbox.partitions = layout.partitions
        for p in list(self.stores):
            self.partition_ready(p)

    def _meta(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.stores[partition].put_meta(key, value)
        self.sink.produce(self.topics.events, partition, META_KEY_PREFIX + key, value)

    # -- the old partition (steps 1 and 2) ---------------------------------------------------------

    def hand_off_step(self, limit: int = MOVERS_PER_TRANSACTION, deadline: float | None = None) -> int:
        """Hand off up to `limit` movers of the partitions still handing off (fewer once
        `time.perf_counter()` passes `deadline`: the transaction's budget); finish those with
        none left (step 2). Returns how many were handed off."""
        if deadline is not None and time.perf_counter() > deadline:
            return 0
        moved = 0
        for p in sorted(self.handing_off - self.behind):
            store = self.stores.get(p)
            if store is None:
                continue
            batch: list[str] = []
            for wid in store.workflow_ids(self._scan_after.get(p)):
                if home(wid, self.partitions) != p:
                    batch.append(wid)
                    if len(batch) + moved >= limit:
                        break
            for wid in batch:
                self._hand_off(p, wid)
            moved += len(batch)
            if batch:
                self._scan_after[p] = batch[-1]
            if moved >= limit:
                return moved
            self._finish_hand_off(p)
        return moved

    def _finish_hand_off(self, p: int) -> None:
        epoch = self.layout.epoch
        count = self._moved(p)
        self._meta(p, _MOVED + b"%d" % epoch, None)
        done = self.codec.encode(DONE, {"workflow_id": "", "epoch": epoch, "from_partition": p, "handed_off": count})
        for q in self.layout.targets(p):
            self.sink.produce(self.topics.commands, q, f"handoff/{epoch}/{p}".encode(), done,
                              self.codec.headers(DONE))
        self.sink.produce(self.topics.control, 0, handoff_key(epoch, p), handoff_value(count))
        self._meta(p, _SENT + b"%d" % epoch, b"1")
        self.handing_off.discard(p)
        self._scan_after.pop(p, None)
        log.info("partition %d handed off %d workflow(s) for growth epoch %d", p, count, epoch)

    def _hand_off(self, p: int, wid: str) -> None:
        """Step 1 for one workflow: its whole state to its new home, tombstones here."""
        store = self.stores[p]
        summary = store.summary(wid)
        if summary is None:
            return
        q = home(wid, self.partitions)
        events = store.workflow_events(wid)
        # Earlier runs first, the current run last: whoever reads events[q] in order (restore)
        # ends on the current run, as in the old partition.
        events.sort(key=lambda e: (e[0] == summary.run_id, e[0], e[1]))
        timers: list[dict[str, Any]] = [{"timer_key": t, "fire_at_ms": due} for t in store.timer_keys(wid)
                                        if (due := store.timer_due(wid, t)) is not None]
        part, size = 1, 0
        chunk: list[dict[str, Any]] = []
        for run, seq, value in events:
            if chunk and size + len(value) > _PART_BYTES:
                self._produce_part(q, wid, p, part, False, chunk, [])
                part, chunk, size = part + 1, [], 0
            chunk.append({"run_id": run, "seq": seq, "value": value})
            size += len(value) + 64
        self._produce_part(q, wid, p, part, True, chunk, timers)
        for run, seq, _ in events:
            self.sink.produce(self.topics.events, p, keys.event_key(wid, run, seq), None)
        for t in timers:
            self.sink.produce(self.topics.timers, p, keys.timer_topic_key(wid, str(t["timer_key"])), None)
        store.drop_workflow(wid)
        self._evict(wid)
        for gone in [k for k in self._beat_details if k[0] == wid]:
            del self._beat_details[gone]
        self._meta(p, _MOVED + b"%d" % self.layout.epoch, b"%d" % (self._moved(p) + 1))
        self.counters.handed_off += 1

    def _moved(self, p: int) -> int:
        """Workflows partition p handed off so far in this growth: kept with its state, so a
        restart or an aborted batch does not change the count HandOffDone reports."""
        raw = self.stores[p].meta_get(_MOVED + b"%d" % self.layout.epoch)
        return int(raw) if raw is not None else 0

    def _produce_part(self, q: int, wid: str, p: int, part: int, last: bool, events: list[dict[str, Any]],
                      timers: list[dict[str, Any]]) -> None:
        rec = {"workflow_id": wid, "epoch": self.layout.epoch, "from_partition": p, "part": part, "last": last,
               "events": events, "timers": timers}
        self.sink.produce(self.topics.commands, q, wid.encode(), self.codec.encode(HAND_OFF, rec),
                          self.codec.headers(HAND_OFF))

    def keeps(self, partition: int, wid: str) -> bool:
        """Whether a command or timer for `wid`, which moves but still lives on `partition`, is
        applied here: while the partition's input is behind (a restore, a backlog), its movers
        stay and its commands and timers are applied in log order under its input horizon. A
        workflow handed off then would carry timers that fell due during the backlog to a new
        home that fires them at once, ahead of the results and heartbeats still in this log."""
        return partition in self.behind and self.stores[partition].summary(wid) is not None

    def moved_away(self, partition: int, wid: str) -> bool:
        """A command or timer for `wid` reached `partition`, which is not its home: if the
        workflow is still here (its hand-off has not come yet), hand it off now. True if it did."""
        if partition in self.handing_off and partition not in self.behind \
                and self.stores[partition].summary(wid) is not None:
            self._hand_off(partition, wid)
            return True
        return False

    # -- the new partition (steps 3 and 4) -----------------------------------------------------------

    def parks(self, partition: int, wid: str) -> bool:
        """Whether a command for `wid` on the waiting `partition` must wait for its hand-off."""
        store = self.stores[partition]
        return store.summary(wid) is None or store.meta_get(_ARRIVING + wid.encode()) is not None

    def park(self, partition: int, name: str, value: bytes, offset: int) -> None:
        self._meta(partition, _PARKED + keys.pack_u64(offset), name.encode() + b"\x00" + value)
        self.counters.parked += 1

    def _on_hand_off(self, partition: int, rec: dict[str, Any]) -> str | None:
        wid = rec["workflow_id"]
        store = self.stores[partition]
        arriving = _ARRIVING + wid.encode()
        if store.summary(wid) is not None and store.meta_get(arriving) is None:
            self.counters.duplicates += 1
            return None  # installed already
        summary = store.summary(wid)
        for e in rec["events"]:
            run, seq, value = e["run_id"], e["seq"], e["value"]
            self.sink.produce(self.topics.events, partition, keys.event_key(wid, run, seq), value)
            store.add_event(wid, run, seq, value)
            if summary is not None and run != summary.run_id:
                summary = None  # the next run begins (with its WorkflowStarted)
            summary = fold(summary, self.codec.decode_typed(value))
        if summary is not None:
            store.put_summary(summary)
        if not rec["last"]:
            if store.meta_get(arriving) is None:
                self._meta(partition, arriving, b"1")
            return None
        if store.meta_get(arriving) is not None:
            self._meta(partition, arriving, None)
        for t in rec["timers"]:
            # One that fell due on the way waits a moment: the commands forwarded behind the
            # hand-off (a heartbeat, a result) were in the old log before it fell due.
            due = t["fire_at_ms"] if t["fire_at_ms"] > self.now_ms else self.now_ms + OVERDUE_GRACE_MS
            self._set_timer(partition, wid, t["timer_key"], due)
        self._evict(wid)
        self._unpark(partition, wid)
        return None

    def _on_hand_off_done(self, partition: int, rec: dict[str, Any]) -> None:
        epoch = rec["epoch"]
        if partition not in self.waiting or epoch != self.layout.epoch:
            self.counters.duplicates += 1
            return
        self.waiting.discard(partition)  # first: what is unparked now is applied, not parked again
        self._unpark(partition, None)
        self._meta(partition, _RECEIVED + b"%d" % epoch, b"1")
        # A growth is settled only once every new partition has applied its Done, so the next
        # one never finds a partition still waiting for this one.
        self.sink.produce(self.topics.control, 0, received_key(epoch, partition), b"1")
        log.info("partition %d received its hand-offs from partition %d (%d workflow(s)) for growth epoch %d",
                 partition, rec["from_partition"], rec["handed_off"], epoch)

    def _unpark(self, partition: int, wid: str | None) -> None:
        """Apply the commands parked for `wid` (None: all), in arrival order."""
        for key, raw in self.stores[partition].meta_items(_PARKED):
            name, _, value = raw.partition(b"\x00")
            rec = self.codec.decode_as(value, name.decode())
            if wid is not None and rec["workflow_id"] != wid:
                continue
            self._meta(partition, key, None)
            self.apply_decoded(partition, rec["workflow_id"].encode(), value, self.codec.headers(name.decode()),
                               keys.unpack_u64(key[len(_PARKED):]), name.decode(), rec)

    # -- restore -----------------------------------------------------------------------------------

    def restore_meta(self, partition: int, key: bytes, value: bytes | None) -> None:
        """A NUL-keyed wf.events record: hand-off state."""
        self.stores[partition].put_meta(key[len(META_KEY_PREFIX):], value)

    def restore_tombstone(self, partition: int, key: bytes) -> None:
        """A tombstone in wf.events: hand-off state removed, or a workflow handed off (all its
        records are tombstoned together, in one transaction)."""
        if key.startswith(META_KEY_PREFIX):
            self.restore_meta(partition, key, None)
            return
        parsed = keys.split_event_key(key)
        if parsed is not None:  # timers: from wf.timers alone (its own tombstones), see drop_workflow
            self.stores[partition].drop_workflow(parsed[0], timers=False)
