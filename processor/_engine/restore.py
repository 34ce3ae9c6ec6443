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
from processor._engine.store import PartitionStore
from processor._kafka.config import client_config
from processor._kafka.messages import position
from processor.exceptions import KafkaUnavailableError

RESTORE_FLUSH_EVERY = 5_000
# Past the transaction timeout the broker aborts any transaction left open on the partition, so a
# restore stuck longer than this (plus a margin for the broker's abort sweep) is a broker problem.
STUCK_MARGIN_S = 60.0


def restore_consumer(settings: Settings) -> Consumer:
    """A plain reader (read_committed, no commits): it reads only what committed transactions wrote."""
    return Consumer(client_config("consumer", settings.bootstrap, "restore", fixed={
        "group.id": f"{settings.processor_group}.restore", "isolation.level": "read_committed",
        "enable.auto.commit": False, "enable.partition.eof": False}))


def restore_topic(restorer: Consumer, engine: Engine, settings: Settings, p: int, store: PartitionStore,
                  topic: str, meta: bytes, high: int, beat: Callable[[], None]) -> int:
    """Apply `topic`[p] from the stored offset until the position passes `high`, the high
    watermark taken before the restore began (see high_watermarks). Returns the records applied."""
    start = store.offset(meta)
    if start >= high:
        return 0
    restorer.assign([TopicPartition(topic, p, start)])
    applied = 0
    deadline = time.monotonic() + settings.transaction_timeout_ms / 1000 + STUCK_MARGIN_S
    is_events = topic == settings.topics.events
    while True:
        reached = restorer.position([TopicPartition(topic, p)])[0].offset
        if reached >= high:
            break
        if time.monotonic() > deadline:
            raise KafkaUnavailableError(
                f"restore of {topic}[{p}] stuck at offset {reached} < {high}: an open transaction on it "
                "neither committed nor aborted in time")
        beat()  # a long restore is progress too
        for m in restorer.consume(2_000, timeout=0.5):
            value = m.value()
            if m.error():
                continue
            _, offset = position(m)
            if is_events:
                engine.restore_events_record(p, m.key(), value)
                store.batch.events_next = offset + 1
            else:
                engine.restore_timer(p, m.key() or b"", value)
                store.batch.timers_next = offset + 1
            applied += 1
            if applied % RESTORE_FLUSH_EVERY == 0:
                store.flush()
    if is_events:
        store.batch.events_next = max(store.batch.events_next or 0, high)
    else:
        store.batch.timers_next = max(store.batch.timers_next or 0, high)
    store.flush()
    restorer.unassign()
    return applied
