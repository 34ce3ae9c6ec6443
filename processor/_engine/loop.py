"""The processor process: consume commands, run the engine, commit exactly once.

The commit protocol lives in `ProcessorLoop._transaction` and nowhere else:

  Step 1  begin_transaction; the engine takes the batch clock.
  Step 2  fire due timers, resume held workflows, apply every consumed command; all output
          (events, timers, tasks, completions, DLQ, forwards) is produced into the transaction and
          all state changes go to the per-partition overlays.
  Step 3  send_offsets_to_transaction(next input offsets, consumer group metadata) -- the group
          metadata fences a zombie that lost its partitions (EOS v2).
  Step 4  commit_transaction (it flushes; delivery reports tell the wf.events/wf.timers offsets).
  Step 5  write-after-commit: one RocksDB WriteBatch per touched partition (data + offsets).

Abortable errors in steps 2-4 (a rebalance during the transaction, STALE_MEMBER_EPOCH,
ILLEGAL_GENERATION, ...): abort, drop the overlays and every instance the batch advanced, and
seek each partition back to the first offset of the batch. Fenced or fatal: raise, the supervisor
restarts the process, and the stable transactional.id makes the new process fence its zombie.

A transaction never spans two consume() calls, so rebalance callbacks (which run inside
consume()) never see an open transaction: revoking a partition is always clean.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processor._codec import default_codec
from processor._engine.engine import Engine, Headers
from processor._engine.settings import Settings
from processor._engine.store import EVENTS_NEXT, TIMERS_NEXT, PartitionStore
from processor._kafka.messages import consume_available, headers, high_watermarks, position
from processor._kafka.topics import ensure_topics, load_specs, task_queue_spec
from processor.exceptions import KafkaUnavailableError

log = logging.getLogger("processor.loop")

RESTORE_FLUSH_EVERY = 5_000
SLOW_TRANSACTION_S = 0.2
STATS_EVERY_S = 60.0


def _stable_transactional_id(settings: Settings) -> str:
    """Persisted in the state dir: a restarted process reuses it and so fences its zombie at once."""
    path = settings.state_dir / "transactional.id"
    if path.exists():
        return path.read_text().strip()
    settings.state_dir.mkdir(parents=True, exist_ok=True)
    tid = f"{settings.prefix}.processor.{uuid.uuid4().hex[:12]}"
    path.write_text(tid)
    return tid


class _TransactionSink:
    """The engine's Sink: produce into the open transaction, track wf.events/wf.timers offsets."""

    def __init__(self, loop: ProcessorLoop) -> None:
        self._loop = loop
        self._producer = loop.producer
        self._events = loop.settings.topics.events
        self._timers = loop.settings.topics.timers
        self._task_topics: set[str] = set()
        # (topic, partition) that already carry a delivery callback in the open transaction.
        self._tracked: set[tuple[str, int]] = set()

    def produce(self, topic: str, partition: int | None, key: bytes, value: bytes | None,
                headers: Headers | None = None) -> None:
        # Any: the stubs' header list type is invariant and narrower than ours.
        kwargs: dict[str, Any] = {"key": key, "value": value, "headers": headers}
        if partition is not None:
            kwargs["partition"] = partition
        if (topic == self._events or topic == self._timers) and (topic, partition) not in self._tracked:
            # Only the first record per partition and transaction reports its offset: restore
            # needs a lower bound (replaying past it is idempotent), not every offset, and a
            # Python callback per record is measurable in the hot loop.
            assert partition is not None
            self._tracked.add((topic, partition))
            kwargs["on_delivery"] = self._delivered
        while True:
            try:
                self._producer.produce(topic, **kwargs)
                return
            except BufferError:
                self._producer.poll(0.05)  # local queue full: let deliveries drain

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        if err is not None:
            return  # the transaction will fail to commit and be aborted
        p, offset = position(msg)
        store = self._loop.engine.stores.get(p)
        if store is None:
            return
        # The first record of this transaction in the partition: everything before it is
        # committed and applied once this transaction is, so restore may start here.
        if msg.topic() == self._events:
            store.batch.events_next = max(store.batch.events_next or 0, offset)
        else:
            store.batch.timers_next = max(store.batch.timers_next or 0, offset)

    def new_transaction(self) -> None:
        self._tracked.clear()

    def task_topic(self, queue: str) -> str:
        name = self._loop.settings.topics.tasks(queue)
        if name not in self._task_topics:
            ensure_topics(self._loop.settings.bootstrap, [task_queue_spec(queue, self._loop.settings.prefix)],
                          exact_partitions=False)
            self._task_topics.add(name)
        return name


class ProcessorLoop:
    def __init__(self, settings: Settings, workflows: Sequence[type]) -> None:
        self.settings = settings
        specs = load_specs(settings.prefix)
        ensure_topics(settings.bootstrap, [s for s in specs if not s.name.startswith(settings.topics.tasks(""))],
                      exact_partitions=False)
        self.stop_event = threading.Event()
        common = {"bootstrap.servers": settings.bootstrap, "client.id": "processor"}
        self.producer = Producer({
            **common,
            "transactional.id": _stable_transactional_id(settings),
            "enable.idempotence": True,
            "transaction.timeout.ms": settings.transaction_timeout_ms,
            "linger.ms": 2,
            "retry.backoff.ms": 10,
            "partitioner": "murmur2_random",
        })
        self.consumer = Consumer(settings.group_consumer_config(settings.processor_group, "processor"))
        md = self.consumer.list_topics(settings.topics.commands, timeout=30)
        self.partitions = len(md.topics[settings.topics.commands].partitions)
        self.sink = _TransactionSink(self)
        self.engine = Engine(settings, workflows, default_codec(), self.sink, self.partitions)
        self._to_restore: list[int] = []
        self._to_resume: list[int] = []
        self._single_steps = 0  # after a processing error: this many one-command transactions

    # -- rebalance callbacks (run inside consume(), never during a transaction) ----------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)  # until restored
        self._to_restore.extend(tp.partition for tp in partitions)
        log.info("assigned %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        for tp in partitions:
            self.engine.close_partition(tp.partition)
            if tp.partition in self._to_restore:
                self._to_restore.remove(tp.partition)
        consumer.incremental_unassign(partitions)
        log.info("revoked %s", sorted(tp.partition for tp in partitions))

    # -- restore ------------------------------------------------------------------------------

    def _restore(self) -> None:
        todo, self._to_restore = self._to_restore, []
        if not todo:
            return
        t0 = time.monotonic()
        restorer = Consumer({
            "bootstrap.servers": self.settings.bootstrap, "group.id": f"{self.settings.processor_group}.restore",
            "isolation.level": "read_committed", "enable.auto.commit": False, "enable.partition.eof": False,
        })
        total = 0
        topics = ((self.settings.topics.events, EVENTS_NEXT), (self.settings.topics.timers, TIMERS_NEXT))
        # One probe for every partition being restored (a probe is a client: connection, metadata).
        highs = {topic: high_watermarks(self.settings.bootstrap, [TopicPartition(topic, p) for p in todo])
                 for topic, _ in topics}
        try:
            for p in todo:
                store = PartitionStore(self.settings.state_dir / f"p{p:04d}")
                self.engine.open_partition(p, store)
                for topic, meta in topics:
                    total += self._restore_topic(restorer, p, store, topic, meta, highs[topic][p])
        finally:
            restorer.close()
        self.consumer.resume([TopicPartition(self.settings.topics.commands, p) for p in todo])
        self._to_resume.extend(todo)
        log.info("restored partitions %s: %d records in %.2fs", todo, total, time.monotonic() - t0)

    def _restore_topic(self, restorer: Consumer, p: int, store: PartitionStore, topic: str, meta: bytes,
                       high: int) -> int:
        """Apply `topic`[p] from the stored offset until the position passes `high`, the high
        watermark taken before the restore began (see high_watermarks)."""
        start = store.offset(meta)
        if start >= high:
            return 0
        restorer.assign([TopicPartition(topic, p, start)])
        applied = 0
        deadline = time.monotonic() + self.settings.transaction_timeout_ms / 1000 + 60
        is_events = topic == self.settings.topics.events
        while True:
            reached = restorer.position([TopicPartition(topic, p)])[0].offset
            if reached >= high:
                break
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(
                    f"restore of {topic}[{p}] stuck at offset {reached} < {high}: an open transaction on it "
                    "neither committed nor aborted in time")
            for m in restorer.consume(2_000, timeout=0.5):
                value = m.value()
                if m.error() or (is_events and value is None):
                    continue
                _, offset = position(m)
                if is_events:
                    assert value is not None
                    self.engine.restore_event(p, value)
                    store.batch.events_next = offset + 1
                else:
                    self.engine.restore_timer(p, m.key() or b"", value)
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

    # -- the loop -----------------------------------------------------------------------------

    def run(self) -> None:
        self.producer.init_transactions(60)
        self.consumer.subscribe([self.settings.topics.commands], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)
        max_wait = self.settings.max_wait_ms / 1000
        next_stats = time.monotonic() + STATS_EVERY_S
        try:
            while not self.stop_event.is_set():
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + STATS_EVERY_S
                    log.info("stats: partitions %s, cached workflows %d, %s", sorted(self.engine.stores),
                             len(self.engine.cache), self.engine.counters)
                self._restore()
                timeout = max_wait
                next_due = self.engine.next_due_ms()
                if next_due is not None:
                    timeout = min(timeout, max(0.0, (next_due - time.time() * 1000) / 1000))
                batch = 1 if self._single_steps else self.settings.max_batch
                msgs = consume_available(self.consumer, batch, timeout)
                if self._to_restore:
                    self._restore()
                msgs = [m for m in msgs if m.error() is None and position(m)[0] in self.engine.stores]
                now_ms = int(time.time() * 1000)
                next_due = self.engine.next_due_ms()
                if msgs or self._to_resume or (next_due is not None and next_due <= now_ms):
                    self._transaction(msgs, now_ms)
        finally:
            self.close()

    def _transaction(self, msgs: list[Message], now_ms: int) -> None:
        first: dict[int, int] = {}
        nxt: dict[int, int] = {}
        t0 = time.perf_counter()
        # Step 1
        self.producer.begin_transaction()
        self.sink.new_transaction()
        self.engine.begin(now_ms)
        try:
            # Step 2
            resume, self._to_resume = self._to_resume, []
            for p in resume:
                if p in self.engine.stores:
                    self.engine.resume_held(p)
            self.engine.firing = None
            self.engine.fire_due_timers(now_ms)
            for m in msgs:
                p, offset = position(m)
                first.setdefault(p, offset)
                nxt[p] = offset + 1
                self.engine.handle_command(p, m.key(), m.value(), headers(m), offset)
            t_applied = time.perf_counter()
            # Step 3
            if nxt:
                offsets = [TopicPartition(self.settings.topics.commands, p, o) for p, o in nxt.items()]
                self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
            t_offsets = time.perf_counter()
            # Step 4
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            err = exc.args[0]
            if not err.txn_requires_abort():
                raise
            log.warning("transaction aborted (%s); rewinding %s", err, first)
            self._abort(first)
            return
        except Exception:
            # A bug on one command must not wedge the partition: retry the batch one command per
            # transaction so only the culprit is dead-lettered.
            firing = self.engine.firing
            self._abort(first)
            if firing is not None:
                log.exception("firing timer %s of %s raised; quarantining it", firing[2], firing[1])
                self._quarantine(firing, now_ms)
                return
            log.exception("processing failed; retrying the batch one command at a time")
            if not msgs:
                return  # resuming held workflows failed: they are retried on their next command
            if len(msgs) > 1:
                self._single_steps = len(msgs)
                return
            self._dead_letter_poison(msgs, now_ms)
            return
        finally:
            self._single_steps = max(0, self._single_steps - 1)
        t_committed = time.perf_counter()
        # Step 5
        self.engine.committed()
        took = time.perf_counter() - t0
        if took > SLOW_TRANSACTION_S:
            ms = [(b - a) * 1000 for a, b in ((t0, t_applied), (t_applied, t_offsets), (t_offsets, t_committed),
                                              (t_committed, time.perf_counter()))]
            log.warning("slow transaction: %d commands in %.0f ms (apply %.0f, offsets %.0f, commit %.0f, "
                        "rocksdb %.0f)", len(msgs), took * 1000, *ms)

    def _abort(self, first: dict[int, int]) -> None:
        self.producer.abort_transaction(60)
        self.engine.aborted()
        for p, offset in first.items():
            if p in self.engine.stores:
                self.consumer.seek(TopicPartition(self.settings.topics.commands, p, offset))

    def _quarantine(self, firing: tuple[int, str, str], now_ms: int) -> None:
        reason = traceback.format_exc(limit=5)
        self._isolated(now_ms, lambda: self.engine.quarantine_timer(*firing, reason))

    def _dead_letter_poison(self, msgs: list[Message], now_ms: int) -> None:
        m = msgs[0]
        p, offset = position(m)
        reason = "processing raised: " + traceback.format_exc(limit=5)
        self._isolated(now_ms, lambda: self.engine.dead_letter(m.key(), m.value(), headers(m), p, offset, reason),
                       [TopicPartition(self.settings.topics.commands, p, offset + 1)])

    def _isolated(self, now_ms: int, work: Callable[[], None], offsets: list[TopicPartition] | None = None) -> None:
        """A transaction of its own for the one action that takes a failure out of the way (the same
        steps as _transaction, minus the batch)."""
        self.producer.begin_transaction()
        self.sink.new_transaction()
        self.engine.begin(now_ms)
        work()
        if offsets:
            self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(), 30)
        self.producer.commit_transaction(60)
        self.engine.committed()

    def close(self) -> None:
        try:
            self.consumer.close()  # leaves the group: the revoke callback closes the stores
        finally:
            for p in list(self.engine.stores):
                self.engine.close_partition(p)


def run_processor(settings: Settings, workflows: Sequence[type], *, install_signals: bool = True) -> None:
    loop = ProcessorLoop(settings, workflows)
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: loop.stop_event.set())
    loop.run()


def state_dir_for(base: Path, index: int) -> Path:
    return base / f"processor-{index}"
