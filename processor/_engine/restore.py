"""Rebuilding a partition's RocksDB state from the log: `wf.events` and `wf.timers` from the
offsets the store last flushed up to the high watermarks taken when the restore began.

The loop decides when (a partition assigned, or every owned one after the producer was replaced);
this module only reads. Replaying records already applied is idempotent (events by (run, seq),
timers by key), so a restore may always start earlier than it needs to.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from confluent_kafka import Consumer, TopicPartition

from processor._engine.engine import Engine
from processor._engine.settings import Settings
from processor._engine.store import EVENTS_NEXT, TIMERS_NEXT, PartitionStore
from processor._kafka.config import client_config
from processor._kafka.messages import consume_available, position
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
