"""The visibility projection's rules and reads, over three mappings (its ports).

`Visibility.apply` takes one `wf.events` record as the projection consumes it and updates:

    runs     run_key(id, run) -> the run's record (record.fold): what lists, counts and describe read
    latest   workflow id -> its latest run id (the run that started last)
    history  the wf.events key -> the raw event record, so one run's history is read by key, not by
             scanning a partition from offset 0

The faust app (faust_app.py) binds them to RocksDB-backed faust tables, changelogged and partitioned
like wf.events; unit tests bind them to dicts. Reads (`list`, `count`, `describe`, `history`) go
through the same mappings, so both bindings answer the same way.
"""

from __future__ import annotations

import base64
import logging
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from processor._codec import Codec
from processor._engine.keys import event_key, split_event_key
from processor._search import decode_attributes
from processor._visibility.query import Query, compile_query, status_name
from processor._visibility.record import Record, fold, jsonable_event, run_key
from processor.exceptions import DecodeError, WorkflowNotFoundError

__all__ = ["MAX_PAGE_SIZE", "Visibility", "row_view"]

log = logging.getLogger("processor.visibility")
MAX_PAGE_SIZE = 1_000


@dataclass
class Progress:
    """How far the projection is, per wf.events partition: for the lag it reports."""

    applied: dict[int, int] = field(default_factory=dict)  # partition -> last offset applied
    event_ms: dict[int, int] = field(default_factory=dict)  # partition -> time_ms of that event
    events: int = 0
    duplicates: int = 0
    undecodable: int = 0
    pruned: int = 0  # runs removed by history retention


class Visibility:
    def __init__(self, codec: Codec, runs: MutableMapping[str, Record], latest: MutableMapping[str, str],
                 history: MutableMapping[str, bytes]) -> None:
        self.codec, self.runs, self.latest, self.history = codec, runs, latest, history
        self.progress = Progress()
        self.epoch: Callable[[], int] = lambda: 0  # changes when the owned partitions change
        self.steady: Callable[[], bool] = lambda: True  # False while the tables are being restored
        self._mirror: dict[str, Record] | None = None
        self._mirror_epoch = -1

    # -- the write side: one wf.events record -------------------------------------------------

    def apply(self, key: bytes | None, value: bytes | None, partition: int, offset: int,
              pruned: bool = False) -> None:
        """One wf.events record. `pruned`: a tombstone of history retention (header dp.pruned),
        not of a hand-off."""
        self.apply_batch([(key, value, partition, offset, pruned)])

    def _apply_one(self, key: bytes | None, value: bytes | None, partition: int, offset: int,
                   pruned: bool) -> None:
        self.progress.applied[partition] = offset
        parts = split_event_key(key) if key else None
        if parts is None:
            return  # not an event key: nothing of ours
        wid, run, seq = parts
        hkey = key.decode(errors="replace")  # type: ignore[union-attr]
        if value is None:  # a tombstone: retention pruned the event, or a hand-off moved it
            if not pruned:
                return  # moved: the same event, same key, is in its new partition (a duplicate there)
            self.history.pop(hkey, None)
            if seq == 1:  # the run is gone: so is its row
                self.runs.pop(run_key(wid, run), None)
                if self.latest.get(wid) == run:
                    self.latest.pop(wid, None)
                self.progress.pruned += 1
            return
        try:
            event = self.codec.decode_typed(value)
        except DecodeError as exc:
            self.progress.undecodable += 1
            log.warning("wf.events partition %d offset %d does not decode (%s): skipped", partition, offset, exc)
            return
        self.progress.event_ms[partition] = event["time_ms"]
        rkey = run_key(wid, run)
        record = fold(self.runs.get(rkey), event, partition, offset)
        if record is None:
            self.progress.duplicates += 1
            return
        self.progress.events += 1
        self.history[hkey] = value
        self.runs[rkey] = record
        if event["type"] == "WorkflowStarted":
            current = self.latest.get(wid)
            if current is None or current == run or self._started(wid, current) <= record["start_ms"]:
                self.latest[wid] = run

    def apply_batch(self, records: Iterable[tuple[bytes | None, bytes | None, int, int, bool]]) -> None:
        """`apply` each (key, value, partition, offset, pruned) in order, writing each run's record
        once at the end instead of after every event: a run's events come in bursts, and a table
        write is the projection's dearest step."""
        base = self.runs
        self.runs = overlay = _Overlay(base)
        try:
            for key, value, partition, offset, pruned in records:
                self._apply_one(key, value, partition, offset, pruned)
        finally:
            self.runs = base
            mirror = self._mirror if self._mirror_epoch == self.epoch() else None
            for rkey, record in overlay.flush():
                if mirror is not None:
                    if record is None:
                        mirror.pop(rkey, None)
                    else:
                        mirror[rkey] = record

    def _started(self, wid: str, run: str) -> int:
        record = self.runs.get(run_key(wid, run))
        return record["start_ms"] if record is not None else 0

    # -- the read side -------------------------------------------------------------------------

    def rows(self, query: Query) -> list[Record]:
        return [r for r in self._every_run() if query.matches(r)]

    def _every_run(self) -> Iterable[Record]:
        """Every run record, from the in-memory mirror of the runs table: decoding every record
        of a RocksDB table for each list took 200-300 ms at 10,000 runs. The mirror is built by
        the first read in a steady state (`steady()`: no rebalance or recovery under way) and
        kept by `apply_batch`; a change of the owned partitions (`epoch()` changes) drops it."""
        epoch = self.epoch()
        if self._mirror is not None and self._mirror_epoch == epoch:
            return self._mirror.values()
        if not self.steady():
            self._mirror = None
            return list(self.runs.values())
        self._mirror, self._mirror_epoch = dict(self.runs.items()), epoch
        return self._mirror.values()

    def list_workflows(self, query: str | None = None, page_size: int = 100,
             page_token: str | None = None) -> dict[str, Any]:
        """One page of the runs the query matches, in its order, and the token of the next page
        (None: this was the last). Tokens are offsets into the ordered matches: a page can shift
        when runs start or close between two calls."""
        compiled = compile_query(query)
        page_size = max(1, min(int(page_size), MAX_PAGE_SIZE))
        start = _offset(page_token)
        rows = compiled.sort(self.rows(compiled))
        page = rows[start:start + page_size]
        more = start + page_size < len(rows)
        return {"workflows": [row_view(r) for r in page], "count": len(rows),
                "next_page_token": _token(start + page_size) if more else None}

    def count_workflows(self, query: str | None = None) -> dict[str, Any]:
        compiled = compile_query(query)
        by_status: dict[str, int] = {}
        total = 0
        for record in self.rows(compiled):
            total += 1
            name = status_name(record["status"])
            by_status[name] = by_status.get(name, 0) + 1
        return {"count": total, "by_status": by_status}

    def record(self, workflow_id: str, run_id: str | None = None) -> Record:
        run = run_id if run_id is not None else self.latest.get(workflow_id)
        record = self.runs.get(run_key(workflow_id, run)) if run is not None else None
        if record is None:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}"
                                        + (f" and run {run_id}" if run_id else "") + " in the visibility store")
        return record

    def describe(self, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
        record = self.record(workflow_id, run_id)
        view = row_view(record, full=True)
        view["runs"] = self.runs_of(workflow_id)
        return view

    def runs_of(self, workflow_id: str) -> list[dict[str, Any]]:
        """Every run of the id this projection holds, oldest first: walks the continue-as-new chain
        back from the latest run (earlier, unrelated runs of a reused id are found by a list query)."""
        out: list[dict[str, Any]] = []
        run = self.latest.get(workflow_id)
        while run is not None and len(out) < MAX_PAGE_SIZE:
            record = self.runs.get(run_key(workflow_id, run))
            if record is None:
                break
            out.append({"run_id": run, "status": status_name(record["status"]), "start_ms": record["start_ms"]})
            run = record.get("continued_from_run_id")
        return out[::-1]

    def history_of(self, workflow_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """The run's events in order, decoded (as Client.history returns them)."""
        record = self.record(workflow_id, run_id)
        events = []
        for seq in range(1, record["last_seq"] + 1):
            raw = self.history.get(event_key(workflow_id, record["run_id"], seq).decode())
            if raw is not None:  # None: pruned by retention
                events.append(self.codec.decode_typed(raw))
        return events

    def history_json(self, workflow_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        return [jsonable_event(e) for e in self.history_of(workflow_id, run_id)]

    def lag(self, high_watermarks: dict[int, int]) -> dict[str, Any]:
        """Records behind wf.events per partition (high watermark - next offset to apply), and
        how old the last applied event of a partition that is behind is."""
        now = int(time.time() * 1000)
        behind, age = {}, {}
        for partition, high in sorted(high_watermarks.items()):
            applied = self.progress.applied.get(partition, -1)
            behind[partition] = max(0, high - (applied + 1))
            if behind[partition] and partition in self.progress.event_ms:
                age[partition] = now - self.progress.event_ms[partition]
        return {"records_behind": behind, "total_behind": sum(behind.values()),
                "behind_ms": max(age.values(), default=0), "events_applied": self.progress.events,
                "duplicates_skipped": self.progress.duplicates, "undecodable": self.progress.undecodable}


_GONE = object()


class _Overlay(MutableMapping[str, Record]):
    """A mapping over `base` that keeps its writes and removals until `flush`."""

    def __init__(self, base: MutableMapping[str, Record]) -> None:
        self.base = base
        self.pending: dict[str, Any] = {}

    def __getitem__(self, key: str) -> Record:
        value = self.pending.get(key)
        if value is _GONE:
            raise KeyError(key)
        return value if value is not None else self.base[key]

    def __setitem__(self, key: str, value: Record) -> None:
        self.pending[key] = value

    def __delitem__(self, key: str) -> None:
        self[key]  # noqa: B018 - KeyError if absent
        self.pending[key] = _GONE

    def __iter__(self) -> Iterator[str]:
        raise NotImplementedError("a write overlay is not listed")

    def __len__(self) -> int:
        raise NotImplementedError("a write overlay is not counted")

    def flush(self) -> list[tuple[str, Record | None]]:
        """Write the pending changes to the base; returns them (None: removed)."""
        done: list[tuple[str, Record | None]] = []
        for key, value in self.pending.items():
            if value is _GONE:
                self.base.pop(key, None)
                done.append((key, None))
            else:
                self.base[key] = value
                done.append((key, value))
        self.pending.clear()
        return done


def row_view(record: Mapping[str, Any], *, full: bool = False) -> dict[str, Any]:
    """What the API and the CLI show of a run: the status as queries spell it, times in ms and
    ISO-8601, search attributes as plain values. `full` adds input, result, failure, pending
    activities and timers."""
    view = {k: record.get(k) for k in ("workflow_id", "run_id", "workflow_type", "task_queue", "start_ms",
                                       "close_ms", "duration_ms", "history_length", "held", "parent_workflow_id",
                                       "cancel_requested")}
    view["status"] = status_name(record["status"])
    view["start_time"] = _iso(record["start_ms"])
    view["close_time"] = _iso(record["close_ms"]) if record.get("close_ms") is not None else None
    view["search_attributes"] = {k: v.isoformat() if hasattr(v, "isoformat") else v
                                 for k, v in decode_attributes(record.get("search_attributes")).items()}
    view["memo"] = {k: (p or {}).get("json", p) for k, p in (record.get("memo") or {}).items()}
    if full:
        for key in ("input", "result", "failure", "close_reason", "activities", "timers", "children", "signals",
                    "continued_from_run_id", "new_run_id", "parent_run_id", "partition", "first_offset"):
            view[key] = record.get(key)
    return view


def _iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"o:{offset}".encode()).decode()


def _offset(token: str | None) -> int:
    if not token:
        return 0
    try:
        kind, _, number = base64.urlsafe_b64decode(token.encode()).decode().partition(":")
        if kind == "o" and number.isdigit():
            return int(number)
    except (ValueError, UnicodeDecodeError):
        pass
    from processor.exceptions import ConfigError

    raise ConfigError(f"page token {token[:20]!r} is not one this service gave: start from the first page")
