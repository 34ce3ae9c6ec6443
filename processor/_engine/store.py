"""Per-partition RocksDB state, and the overlay of one open transaction.

Write-after-commit: everything a transaction changes is kept in a `PartitionBatch` (the overlay)
and reaches RocksDB in ONE WriteBatch only after Kafka committed the transaction, together with
the wf.events / wf.timers offsets it reflects. RocksDB is therefore never ahead of the log; a
crash between commit and write leaves it behind, and restore replays the tail.

Column families:
  history     workflow_id NUL run_id NUL seq(u64 BE) -> event (Avro single-object bytes, as in wf.events)
  workflows   workflow_id                        -> Summary JSON
  timers      due_ms(u64 BE) workflow_id NUL key -> b""  (the due-date index, scanned from the front)
  timer_refs  workflow_id NUL key                -> due_ms (u64 BE), so a cancel finds its index entry
  held        workflow_id                        -> reason (workflows held by a nondeterminism)
  meta        b"events_next" / b"timers_next"    -> next wf.events / wf.timers offset to restore from
              b"format"                          -> FORMAT: the layout above
              b"x/..."                           -> the partition's hand-off state (handoff.py), mirrored
                                                    in wf.events under the key NUL + the same bytes

RocksDB is derived state: a partition directory written in another layout (FORMAT differs) is
deleted on open and rebuilt from the log by restore.
"""

from __future__ import annotations

import logging
import shutil
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from rocksdict import Options, Rdict, WriteBatch

from processor._engine import keys
from processor._engine.state import Summary

_CFS = ("history", "workflows", "timers", "timer_refs", "held", "meta")
EVENTS_NEXT = b"events_next"
TIMERS_NEXT = b"timers_next"
FORMAT_KEY = b"format"
FORMAT = b"2"  # 2: history keyed by (workflow, run, seq); 1 (no key): by (workflow, seq)
log = logging.getLogger("processor.store")


def _options() -> Options:
    opt = Options(raw_mode=True)
    opt.create_if_missing(True)
    opt.create_missing_column_families(True)
    opt.set_write_buffer_size(8 * 1024 * 1024)
    return opt


@dataclass
class PartitionBatch:
    """What one transaction changed in one partition, not yet in RocksDB."""

    history: dict[tuple[str, str], list[tuple[int, bytes]]] = field(default_factory=lambda: defaultdict(list))
    summaries: dict[str, Summary] = field(default_factory=dict)
    # Ordered timer operations: (workflow_id, timer key, due_ms or None for delete).
    timers: list[tuple[str, str, int | None]] = field(default_factory=list)
    timer_view: dict[tuple[str, str], int | None] = field(default_factory=dict)
    events_next: int | None = None
    timers_next: int | None = None
    meta: dict[bytes, bytes | None] = field(default_factory=dict)  # hand-off state (b"x/..." keys)
    dropped: set[str] = field(default_factory=set)  # workflows handed off to another partition, or pruned
    # Of those, the ones whose timers stay: a restore drops a workflow on its event tombstones but
    # takes its timers from wf.timers alone (the two topics' records interleave).
    timers_kept: set[str] = field(default_factory=set)

    def is_empty(self) -> bool:
        return not (self.history or self.summaries or self.timers or self.meta or self.dropped) \
            and self.events_next is None and self.timers_next is None


class PartitionStore:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._open()
        if self._cf["meta"].get(FORMAT_KEY) != FORMAT:
            if self._cf["meta"].get(EVENTS_NEXT) is not None or self._cf["meta"].get(TIMERS_NEXT) is not None:
                log.warning("state in %s has another layout; rebuilding it from the log", path)
                self.close()
                shutil.rmtree(path)
                self._open()
            self._cf["meta"][FORMAT_KEY] = FORMAT
        self.batch = PartitionBatch()

    def _open(self) -> None:
        self.path.mkdir(parents=True, exist_ok=True)
        cf_opts = {name: _options() for name in _CFS}
        self._db = Rdict(str(self.path), _options(), column_families=cf_opts)
        self._cf = {name: self._db.get_column_family(name) for name in _CFS}
        self._handles = {name: self._db.get_column_family_handle(name) for name in _CFS}

    # -- reads (overlay first, then RocksDB) ---------------------------------------------------

    def summary(self, workflow_id: str) -> Summary | None:
        pending = self.batch.summaries.get(workflow_id)
        if pending is not None:
            return pending
        if workflow_id in self.batch.dropped:
            return None
        raw = self._cf["workflows"].get(keys.workflow_key(workflow_id))
        return Summary.from_bytes(raw) if raw is not None else None

    def history(self, workflow_id: str, run_id: str) -> list[bytes]:
        """One run's events in seq order."""
        out: list[bytes] = [] if workflow_id in self.batch.dropped else \
            [v for _, v in self._iter_prefix("history", keys.run_prefix(workflow_id, run_id))]
        out.extend(v for _, v in self.batch.history.get((workflow_id, run_id), ()))
        return out

    def event(self, workflow_id: str, run_id: str, seq: int) -> bytes | None:
        for s, v in self.batch.history.get((workflow_id, run_id), ()):
            if s == seq:
                return v
        if workflow_id in self.batch.dropped:
            return None
        raw: bytes | None = self._cf["history"].get(keys.history_key(workflow_id, run_id, seq))
        return raw

    def _iter_prefix(self, cf: str, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        it = self._cf[cf].iter()
        it.seek(prefix)
        while it.valid():
            k = it.key()
            if not k.startswith(prefix):
                return
            yield k, it.value()
            it.next()

    def workflow_ids(self, after: str | None = None) -> Iterator[str]:
        """Every workflow of the partition (committed; what this transaction dropped left out), in
        id order, after `after`."""
        it = self._cf["workflows"].iter()
        if after is None:
            it.seek_to_first()
        else:
            it.seek(keys.workflow_key(after) + b"\x00")
        while it.valid():
            wid = it.key().decode()
            if wid not in self.batch.dropped:
                yield wid
            it.next()

    def workflow_events(self, workflow_id: str) -> list[tuple[str, int, bytes]]:
        """(run, seq, event) of every run of the workflow, committed, in key order."""
        prefix = keys.workflow_prefix(workflow_id)
        out = []
        for k, v in self._iter_prefix("history", prefix):
            run, _, seq = k[len(prefix):].partition(b"\x00")
            out.append((run.decode(), keys.unpack_u64(seq), v))
        return out

    def meta_get(self, key: bytes) -> bytes | None:
        if key in self.batch.meta:
            return self.batch.meta[key]
        raw: bytes | None = self._cf["meta"].get(key)
        return raw

    def meta_items(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        """The meta entries under `prefix`, overlay applied, in key order."""
        found = dict(self._iter_prefix("meta", prefix))
        for k, v in self.batch.meta.items():
            if k.startswith(prefix):
                if v is None:
                    found.pop(k, None)
                else:
                    found[k] = v
        return sorted(found.items())

    def timer_due(self, workflow_id: str, timer_key: str) -> int | None:
        view = self.batch.timer_view
        if (workflow_id, timer_key) in view:
            return view[(workflow_id, timer_key)]
        if workflow_id in self.batch.dropped and workflow_id not in self.batch.timers_kept:
            return None
        raw = self._cf["timer_refs"].get(keys.timer_ref_key(workflow_id, timer_key))
        return keys.unpack_u64(raw) if raw is not None else None

    def timer_keys(self, workflow_id: str) -> list[str]:
        prefix = keys.workflow_prefix(workflow_id)
        found = set() if workflow_id in self.batch.dropped and workflow_id not in self.batch.timers_kept else \
            {k[len(prefix):].decode() for k, _ in self._iter_prefix("timer_refs", prefix)}
        for (wid, tkey), due in self.batch.timer_view.items():
            if wid == workflow_id:
                (found.add if due is not None else found.discard)(tkey)
        return sorted(found)

    def due_timers(self, now_ms: int, limit: int) -> list[tuple[int, str, str]]:
        """Committed timers due at or before now, in due order (call with an empty overlay)."""
        out: list[tuple[int, str, str]] = []
        it = self._cf["timers"].iter()
        it.seek_to_first()
        while it.valid() and len(out) < limit:
            due, wid, tkey = keys.split_due_key(it.key())
            if due > now_ms:
                break
            out.append((due, wid, tkey))
            it.next()
        return out

    def next_due(self) -> int | None:
        it = self._cf["timers"].iter()
        it.seek_to_first()
        return keys.split_due_key(it.key())[0] if it.valid() else None

    def next_due_except(self, kinds: frozenset[str]) -> int | None:
        """The first committed timer's due time whose kind letter is not in `kinds` (a scan from
        the start: for processor.testing's time skipping, never on the hot path)."""
        it = self._cf["timers"].iter()
        it.seek_to_first()
        while it.valid():
            due, _, tkey = keys.split_due_key(it.key())
            if tkey[0] not in kinds:
                return due
            it.next()
        return None

    def timer_keys_all(self) -> list[tuple[str, str]]:
        """(workflow id, timer key) of every committed timer (a full scan: for processor.testing's
        time skipping, never on the hot path)."""
        out = []
        it = self._cf["timers"].iter()
        it.seek_to_first()
        while it.valid():
            _, wid, tkey = keys.split_due_key(it.key())
            out.append((wid, tkey))
            it.next()
        return out

    def held_workflows(self) -> list[str]:
        return [k.decode() for k in self._cf["held"].keys() if isinstance(k, bytes)]

    def offset(self, name: bytes) -> int:
        raw = self._cf["meta"].get(name)
        return keys.unpack_u64(raw) if raw is not None else 0

    # -- writes (into the overlay) ---------------------------------------------------------------

    def add_event(self, workflow_id: str, run_id: str, seq: int, value: bytes) -> None:
        self.batch.history[(workflow_id, run_id)].append((seq, value))

    def put_summary(self, summary: Summary) -> None:
        self.batch.summaries[summary.workflow_id] = summary

    def set_timer(self, workflow_id: str, timer_key: str, due_ms: int | None) -> None:
        self.batch.timers.append((workflow_id, timer_key, due_ms))
        self.batch.timer_view[(workflow_id, timer_key)] = due_ms

    def put_meta(self, key: bytes, value: bytes | None) -> None:
        self.batch.meta[key] = value

    def drop_workflow(self, workflow_id: str, timers: bool = True) -> None:
        """Remove the workflow entirely (it was handed off, or pruned): its history of every run,
        summary, hold and -- unless `timers` is False -- timers. Its changes in this
        transaction's overlay are dropped too.

        A restore passes timers=False: it drops a workflow on the tombstones of its events, but
        wf.timers carries a tombstone of its own for every timer the hand-off or prune removed,
        and the records of the two topics arrive interleaved -- the timers of a later run of the
        id (an id reused after a prune) may already have been restored."""
        b = self.batch
        b.dropped.add(workflow_id)
        b.summaries.pop(workflow_id, None)
        for run_key in [k for k in b.history if k[0] == workflow_id]:
            del b.history[run_key]
        if not timers:
            b.timers_kept.add(workflow_id)
            return
        b.timers_kept.discard(workflow_id)
        b.timers = [t for t in b.timers if t[0] != workflow_id]
        for view_key in [k for k in b.timer_view if k[0] == workflow_id]:
            b.timer_view[view_key] = None

    def discard(self) -> PartitionBatch:
        """Drop the overlay (the transaction aborted); returns what was dropped."""
        dropped, self.batch = self.batch, PartitionBatch()
        return dropped

    # -- commit ------------------------------------------------------------------------------

    def flush(self) -> None:
        """Write the overlay in one WriteBatch. Call only after the Kafka transaction committed."""
        b = self.batch
        if b.is_empty():
            return
        h = self._handles
        wb = WriteBatch(raw_mode=True)
        for wid in b.dropped:
            for k, _ in self._iter_prefix("history", keys.workflow_prefix(wid)):
                wb.delete(k, h["history"])
            if wid in b.timers_kept:
                wb.delete(keys.workflow_key(wid), h["workflows"])
                wb.delete(keys.workflow_key(wid), h["held"])
                continue
            for ref_key, raw_due in self._iter_prefix("timer_refs", keys.workflow_prefix(wid)):
                tkey = ref_key[len(keys.workflow_prefix(wid)):].decode()
                wb.delete(keys.due_key(keys.unpack_u64(raw_due), wid, tkey), h["timers"])
                wb.delete(ref_key, h["timer_refs"])
            wb.delete(keys.workflow_key(wid), h["workflows"])
            wb.delete(keys.workflow_key(wid), h["held"])
        for k, v in b.meta.items():
            if v is None:
                wb.delete(k, h["meta"])
            else:
                wb.put(k, v, h["meta"])
        for (wid, run), events in b.history.items():
            for seq, value in events:
                wb.put(keys.history_key(wid, run, seq), value, h["history"])
        for wid, summary in b.summaries.items():
            wb.put(keys.workflow_key(wid), summary.to_bytes(), h["workflows"])
            if summary.held is not None:
                wb.put(keys.workflow_key(wid), summary.held.encode(), h["held"])
            else:
                wb.delete(keys.workflow_key(wid), h["held"])
        refs: dict[tuple[str, str], int | None] = {}
        for wid, tkey, due in b.timers:
            old = refs[(wid, tkey)] if (wid, tkey) in refs else self._committed_due(wid, tkey)
            if old is not None:
                wb.delete(keys.due_key(old, wid, tkey), h["timers"])
            ref = keys.timer_ref_key(wid, tkey)
            if due is None:
                wb.delete(ref, h["timer_refs"])
            else:
                wb.put(keys.due_key(due, wid, tkey), b"", h["timers"])
                wb.put(ref, keys.pack_u64(due), h["timer_refs"])
            refs[(wid, tkey)] = due
        if b.events_next is not None:
            wb.put(EVENTS_NEXT, keys.pack_u64(b.events_next), h["meta"])
        if b.timers_next is not None:
            wb.put(TIMERS_NEXT, keys.pack_u64(b.timers_next), h["meta"])
        self._db.write(wb)
        self.batch = PartitionBatch()

    def _committed_due(self, workflow_id: str, timer_key: str) -> int | None:
        raw = self._cf["timer_refs"].get(keys.timer_ref_key(workflow_id, timer_key))
        return keys.unpack_u64(raw) if raw is not None else None

    def close(self) -> None:
        self._cf.clear()
        self._handles.clear()
        self._db.close()
