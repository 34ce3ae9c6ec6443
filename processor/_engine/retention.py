"""History retention: a closed workflow is pruned `retention_ms` after it closed (DP_RETENTION_S,
default 7 days, 0 = never). Part of the Engine (engine.py inherits it).

When a workflow's run closes (not by continue-as-new), the engine sets its retention timer `p0`
(on wf.timers like every timer, in the same transaction). When it fires, and the workflow's
latest run is still closed (an id reused by a new run is never touched: that run's own close sets
the timer again), the whole workflow goes, in the firing's transaction:

  - a tombstone for every wf.events record of every run it holds (header `dp.pruned: 1`, so the
    visibility projection drops the run, unlike the tombstones of a hand-off, which moves it),
  - its wf.timers records (the retention timer's own tombstone is written by the firing),
  - its RocksDB history, summary and timers, and its cached instance.

A restore reads the events and then their tombstones and drops the workflow, as for a hand-off.
With DP_ARCHIVE_DIR set, each run's history is first written to
`<dir>/<prefix>/<workflow id, quoted>/<run id>.jsonl` (the JSON lines Replayer reads); a
transaction that aborts after that leaves the file, and the retry writes it again.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import quote

from processor._engine import keys
from processor._engine.core import EngineParts

log = logging.getLogger("processor.engine")

RETENTION_TIMER = "p0"
PRUNED_HEADER = ("dp.pruned", b"1")


class Retention(EngineParts):
    def _keep_until(self, partition: int, wid: str) -> None:
        """(At a close.) Set the workflow's retention timer, if retention is on."""
        if self.settings.retention_ms > 0:
            self._set_timer(partition, wid, RETENTION_TIMER, self.now_ms + self.settings.retention_ms)

    def _prune(self, partition: int, wid: str) -> None:
        """(The retention timer fired; its record is already removed.) Prune the workflow if it
        is still closed."""
        store = self.stores[partition]
        cached = self.cache.get(wid)
        summary = cached.summary if cached is not None else store.summary(wid)
        if summary is None or summary.running:
            return
        events = store.workflow_events(wid)
        if self.settings.archive_dir is not None:
            self._archive(wid, events)
        for run, seq, _ in events:
            self.sink.produce(self.topics.events, partition, keys.event_key(wid, run, seq), None, [PRUNED_HEADER])
        for tkey in store.timer_keys(wid):
            if store.timer_due(wid, tkey) is not None:
                self.sink.produce(self.topics.timers, partition, keys.timer_topic_key(wid, tkey), None)
        store.drop_workflow(wid)
        self._evict(wid)
        self.counters.pruned += 1

    def _archive(self, wid: str, events: list[tuple[str, int, bytes]]) -> None:
        from processor.replayer import history_to_json

        folder = Path(self.settings.archive_dir or ".") / self.topics.prefix / quote(wid, safe="")
        folder.mkdir(parents=True, exist_ok=True)
        runs: dict[str, list[bytes]] = {}
        for run, _, value in events:
            runs.setdefault(run, []).append(value)
        for run, values in runs.items():
            path = folder / f"{run or 'no-run'}.jsonl"
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text(history_to_json(self.codec.decode_typed(v) for v in values))
            tmp.replace(path)
