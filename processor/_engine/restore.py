"""Rebuilding a partition's RocksDB state from the log: `wf.events` and `wf.timers` from the
offsets the store last flushed up to the high watermarks taken when the restore began.

The loop decides when (a partition assigned, or every owned one after the producer was replaced)
and what follows (resuming the partitions' input); `Restorer` does the restore itself: fence
the departed owner, take the ends, open the stores, read, and read the committed input offsets.
Replaying records already applied is idempotent (events by (run, seq), timers by key), so a
restore may always start earlier than it needs to.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from confluent_kafka import Consumer, KafkaException, TopicPartition

from processor._engine.engine import Engine
from processor._engine.input import InputPositions
from processor._engine.layout_watch import LayoutWatch
from processor._engine.settings import Settings
from processor._engine.store import EVENTS_NEXT, TIMERS_NEXT, PartitionStore
from processor._kafka.config import client_config
from processor._kafka.messages import close_quietly, consume_available, high_watermarks, position
from processor.exceptions import KafkaUnavailableError

RESTORE_FLUSH_EVERY = 5_000
# Past the transaction timeout the broker aborts any transaction left open on the partition, so a
# restore stuck longer than this (plus a margin for the broker's abort sweep) is a broker problem.
STUCK_MARGIN_S = 60.0


class Phases:
    """Where a restore's time went, for its log line: `done(name)` ends the phase begun when the
    previous one ended."""

    def __init__(self) -> None:
        self.took: dict[str, float] = {}
        self._mark = time.monotonic()

    def done(self, name: str) -> None:
        now = time.monotonic()
        self.took[name], self._mark = now - self._mark, now

    def __str__(self) -> str:
        return ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in self.took.items())


class Restorer:
    """The restore of newly assigned partitions, and the restore consumer it reads with.

    `fence(partitions)`: fence their departed last owners (identity.fence_departed_owners), and
    `layout`: the live topic sizes and the latest layout -- both None for a loop run on in-memory
    twins. `outage` reports a broker that does not answer; `beat` is progress (a long restore)."""

    def __init__(self, settings: Settings, engine: Engine, input_positions: InputPositions, *,
                 fence: Callable[[list[int]], object] | None, layout: LayoutWatch | None,
                 outage: Callable[[str], None], beat: Callable[[], None]) -> None:
        self.settings, self.engine, self.input = settings, engine, input_positions
        self._fence, self._layout, self._outage, self._beat = fence, layout, outage, beat
        self._consumer: Consumer | None = None

    def consumer(self) -> Consumer:
        """The restore consumer, kept for the process's life and made before the group assigns
        anything: measured (librdkafka 2.16), a consumer made for each restore often fetched
        nothing for its first 1.0 s, and a restart after a crash waits for exactly that read."""
        if self._consumer is None:
            self._consumer = restore_consumer(self.settings)
            try:  # the metadata of BOTH topics it reads: measured, a restore whose consumer had
                # asked only for wf.events' got its first wf.timers record 0.74-0.96 s after the
                # assign (waiting for that topic's metadata), its wf.events records in 1 ms -- most
                # of a restart's restore
                for topic in (self.settings.topics.events, self.settings.topics.timers):
                    self._consumer.list_topics(topic, timeout=10)
            except KafkaException as exc:
                self._outage(f"connecting the restore consumer: {exc}")
        return self._consumer

    def drop(self) -> None:
        """A fresh consumer next time (this one may be what failed); this one closes on the side."""
        if self._consumer is not None:
            threading.Thread(target=close_quietly, args=(self._consumer,), name="close-restorer", daemon=True).start()
            self._consumer = None

    def close(self) -> None:
        if self._consumer is not None:
            close_quietly(self._consumer)
            self._consumer = None

    def restore(self, todo: list[int]) -> tuple[int, Phases]:
        """Open and restore partitions `todo` and read where their input resumes. Returns the
        records applied and where the time went. On any error every one of them is closed again
        (half restored: restored from scratch next time) and the consumer dropped."""
        phase = Phases()
        restorer = self.consumer()
        phase.done("restorer")
        engine, settings = self.engine, self.settings
        events, timers = settings.topics.events, settings.topics.timers
        try:
            if self._fence is not None:  # a previous owner that died inside a transaction holds the restore up
                self._fence(todo)
            phase.done("fence")
            counts = self._layout.live_counts() if self._layout is not None else None
            phase.done("layout")
            # One probe for every partition being restored (a probe is a client: connection,
            # metadata). 15 s: with committed() (10 s) a restore against a broker that is down
            # stays well inside the supervisor's 60 s stall window.
            # A partition the events or timers topic does not have (only commands grew, so the
            # layout did not follow) holds nothing: its commands are forwarded (growth.py).
            present = [TopicPartition(topic, p) for topic, name in ((events, "events"), (timers, "timers"))
                       for p in todo if counts is None or p < counts[name]]
            ends = high_watermarks(settings.bootstrap, present, timeout=15.0) if present else {}
            phase.done("ends")
            highs: dict[str, dict[int, int]] = {events: {}, timers: {}}
            for (topic, p), high in ends.items():
                highs[topic][p] = high
            stores = {}
            for p in todo:
                stores[p] = PartitionStore(settings.state_dir / f"p{p:04d}")
                engine.open_partition(p, stores[p])
            phase.done("open")
            total = restore_partitions(restorer, engine, settings, stores, highs, self._beat)
            phase.done("read")
            if self._layout is not None:
                self._layout.catch_up(engine)  # a partition taken over is placed by the latest layout
            for p in todo:
                engine.partition_ready(p)  # what it still owes the last growth (handoff.py)
            self.input.read_committed(todo)
            phase.done("committed")
        except BaseException:
            for p in todo:
                engine.close_partition(p)
            self.drop()
            raise
        return total, phase


def restore_consumer(settings: Settings) -> Consumer:
    """A plain reader (read_committed, no commits): it reads only what committed transactions
    wrote. Fetches wait 10 ms, not librdkafka's 500: at the end of a partition's log every wait is
    the restore's, and a restore after a crash is the whole fail-over."""
    return Consumer(client_config("consumer", settings.bootstrap, "restore", {"fetch.wait.max.ms": 10}, fixed={
        "group.id": f"{settings.processor_group}.restore", "isolation.level": "read_committed",
        "enable.auto.commit": False, "enable.partition.eof": False}))


def restore_partitions(restorer: Consumer, engine: Engine, settings: Settings, stores: dict[int, PartitionStore],
                       highs: dict[str, dict[int, int]], beat: Callable[[], None]) -> int:
    """Apply `wf.events`[p] and `wf.timers`[p] of every partition in `stores`, each from its stored
    offset until the position passes its entry in `highs` (topic -> partition -> the high
    watermark taken before the restore began; see high_watermarks). All of them are read at once,
    by one assignment: a partition's events and its timers are independent, and each topic-
    partition read on its own paid a fetch round of its own. Returns the records applied."""
    events = settings.topics.events
    meta = {events: EVENTS_NEXT, settings.topics.timers: TIMERS_NEXT}
    left: dict[tuple[str, int], int] = {}  # (topic, partition) -> the high watermark to pass
    start = []
    for topic, per_partition in highs.items():
        for p, high in per_partition.items():
            offset = stores[p].offset(meta[topic])
            if offset < high:
                left[(topic, p)] = high
                start.append(TopicPartition(topic, p, offset))
    if not left:
        return 0
    restorer.assign(start)
    applied = 0
    unflushed: dict[int, int] = {}
    deadline = time.monotonic() + settings.transaction_timeout_ms / 1000 + STUCK_MARGIN_S
    try:
        while True:
            for tp in restorer.position([TopicPartition(t, p) for t, p in left]):
                high = left[(tp.topic, tp.partition)]
                if tp.offset >= high:
                    _passed(stores[tp.partition], tp.topic == events, high)
                    del left[(tp.topic, tp.partition)]
                    restorer.incremental_unassign([TopicPartition(tp.topic, tp.partition)])
            if not left:
                break
            if time.monotonic() > deadline:
                stuck = ", ".join(f"{t}[{p}] < {h}" for (t, p), h in sorted(left.items()))
                raise KafkaUnavailableError(
                    f"restore stuck ({stuck}): an open transaction neither committed nor aborted in time")
            beat()  # a long restore is progress too
            # The first record ends the wait (consume(n, t) waits for all n or all of t), and the
            # positions are checked every 20 ms: a log ending in a commit marker is passed by a
            # fetch that returns no record.
            for m in consume_available(restorer, 2_000, 0.02):
                if m.error():
                    continue
                p, offset = position(m)
                store = stores[p]
                if m.topic() == events:
                    engine.restore_events_record(p, m.key(), m.value())
                    store.batch.events_next = offset + 1
                else:
                    engine.restore_timer(p, m.key() or b"", m.value())
                    store.batch.timers_next = offset + 1
                applied += 1
                unflushed[p] = unflushed.get(p, 0) + 1
                if unflushed[p] >= RESTORE_FLUSH_EVERY:
                    store.flush()
                    unflushed[p] = 0
    finally:
        restorer.unassign()
    for p in {p for _, p in (*left, *((tp.topic, tp.partition) for tp in start))}:
        stores[p].flush()
    return applied


def _passed(store: PartitionStore, is_events: bool, high: int) -> None:
    """A topic-partition restored up to `high`: the next restore starts there (or later)."""
    if is_events:
        store.batch.events_next = max(store.batch.events_next or 0, high)
    else:
        store.batch.timers_next = max(store.batch.timers_next or 0, high)
