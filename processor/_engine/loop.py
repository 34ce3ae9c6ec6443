"""The processor process: consume commands, run the engine, commit exactly once.

The commit protocol lives in `ProcessorLoop._transaction` and nowhere else:

  Step 1  begin_transaction; the engine takes the batch clock.
  Step 2  resume held workflows, apply the consumed commands (within a time budget), THEN fire
          the timers that are due up to each partition's input horizon (commands already in the
          log when a timer fell due win over it); all output (events, timers, tasks,
          completions, DLQ, forwards) is produced into the transaction and all state changes go
          to the per-partition overlays.
  Step 3  send_offsets_to_transaction(next input offset of EVERY owned partition, consumer group
          metadata), in every transaction that writes -- also one that only fires timers or
          resumes: the group metadata is what fences a zombie that lost its partitions (EOS v2).
  Step 4  commit_transaction (it flushes; delivery reports tell the wf.events/wf.timers offsets).
  Step 5  write-after-commit: one RocksDB WriteBatch per touched partition (data + offsets).

Errors in steps 1-4: retriable ones (the broker is unreachable, a request timed out) retry the
step until the broker answers again; abortable ones (a rebalance during the transaction,
STALE_MEMBER_EPOCH, ILLEGAL_GENERATION, ...) abort, drop the overlays and every instance the batch
advanced, and seek each partition back to its last committed input offset; fatal ones (the
coordinator timed the transaction out during a long broker outage and bumped the epoch) replace
the producer in process -- the same stable transactional.id, so the old epoch stays fenced -- and
rewind the same way. The process therefore rides out a broker outage by itself; it exits only
when another live process holds its transactional.id.

A transaction never spans two consume() calls, so rebalance callbacks (which run inside
consume()) never see an open transaction: revoking a partition is always clean.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processor import _failpoints
from processor._codec import default_codec
from processor._engine.clock import LoopCalls, wall_ms
from processor._engine.coverage import CoverageWatch
from processor._engine.engine import Engine
from processor._engine.growth import Layout
from processor._engine.handoff import LayoutBehind
from processor._engine.identity import fence_departed_owners, stable_transactional_id
from processor._engine.input import InputPositions
from processor._engine.layout_watch import LayoutWatch
from processor._engine.restore import Restorer
from processor._engine.settings import Settings
from processor._engine.sink import TransactionSink
from processor._kafka.config import client_config
from processor._kafka.health import WedgeClock, kafka_answers, watchdog_s
from processor._kafka.messages import ConsumerFailed, close_quietly, consume_available, headers, position
from processor._kafka.topics import ensure_topics, load_specs
from processor._limits import PRODUCER_MESSAGE_MAX_BYTES
from processor._metrics import STATS_INTERVAL_MS, serve
from processor.exceptions import KafkaUnavailableError, ProcessorError

log = logging.getLogger("processor.loop")

SLOW_TRANSACTION_S = 0.2
STATS_EVERY_S = 60.0
# A transaction applies commands for at most this share of transaction.timeout.ms, so a batch of
# slow commands commits long before the broker would abort it.
BATCH_BUDGET_SHARE = 0.4
RETRY_BACKOFF_S = 0.5
OUTAGE_LOG_EVERY_S = 10.0
# More producer replacements than this within a minute means another live process holds our
# transactional.id (two processors on one state dir): exit rather than fence each other for ever.
MAX_PRODUCER_RESETS_PER_MIN = 5
HEARTBEAT_FILE = "heartbeat"
# How long restoring may fail while Kafka answers a new client before the group consumer is rebuilt.
CONSUMER_WATCHDOG_S = watchdog_s("DP_CONSUMER_WATCHDOG_MS", 10_000)
HEARTBEAT_EVERY_S = 1.0
# init_transactions waits this long per try. With a transaction call that timed out before it,
# one loop turn stays inside the supervisor's 60 s stall window (DP_STALL_TIMEOUT_S).
INIT_TIMEOUT_S = 20.0


# Abortable errors that only mean the group moved on: the producer itself is fine.
_REBALANCE_CODES = {KafkaError.ILLEGAL_GENERATION, KafkaError.UNKNOWN_MEMBER_ID, KafkaError.REBALANCE_IN_PROGRESS,
                    KafkaError.FENCED_INSTANCE_ID, KafkaError.STALE_MEMBER_EPOCH}



class ProcessorLoop:
    def __init__(self, settings: Settings, workflows: Sequence[type], *,
                 producer_factory: Callable[[dict[str, Any]], Producer] = Producer,
                 consumer: Consumer | None = None, partitions: int | None = None,
                 clock: Callable[[], int] = wall_ms) -> None:
        """`producer_factory`, `consumer` and `partitions` let unit tests put in-memory twins in
        place of the Kafka clients (tests/unit/engine/test_loop_protocol.py); `clock` (epoch ms)
        is the wall clock but in processor.testing's KafkaWorkflowEnvironment (clock.py)."""
        self.settings = settings
        self.clock = clock
        self.calls = LoopCalls()  # other threads' calls, run between two turns (clock.py)
        self._producer_factory = producer_factory
        self.stop_event = threading.Event()
        self._transactional_id = stable_transactional_id(settings)
        if consumer is None:
            specs = load_specs(settings.prefix)
            ensure_topics(settings.bootstrap, [s for s in specs if not s.name.startswith(settings.topics.tasks(""))],
                          exact_partitions=False)
            consumer = self._new_consumer()
            self._own_consumer = True
        else:
            self._own_consumer = False  # a twin from a test: never replaced
        self.consumer = consumer
        self._consumer_health = WedgeClock(CONSUMER_WATCHDOG_S, lambda: kafka_answers(self.settings.bootstrap))
        self.layout_watch = LayoutWatch(settings, lambda: self.consumer, lambda: self.producer)
        if partitions is None:
            md = self.consumer.list_topics(settings.topics.commands, timeout=30)
            layout = self.layout_watch.initial(len(md.topics[settings.topics.commands].partitions))
        else:
            layout = Layout(partitions)
        self.partitions = layout.partitions
        self.producer = self._new_producer()
        self.sink = TransactionSink(settings, self.producer, lambda p: self.engine.stores.get(p))
        self.engine = Engine(settings, workflows, default_codec(), self.sink, layout)
        self._to_restore: list[int] = []
        self._to_resume: list[int] = []
        # A partition left to nobody by a static member's rejoin is repaired by a rejoin (coverage.py).
        self.coverage = CoverageWatch(settings.bootstrap, settings.processor_group, settings.topics.commands,
                                      lambda: self._transactional_id) if self._own_consumer else None
        self._single_steps = 0  # after a processing error: this many one-command transactions
        self.input = InputPositions(settings.topics.commands, lambda: self.consumer)
        self.restorer = Restorer(
            settings, self.engine, self.input,
            fence=(lambda todo: fence_departed_owners(settings, todo, self._transactional_id))
            if self._own_consumer else None,
            layout=self.layout_watch if self._own_consumer else None, outage=self._outage, beat=self._beat)
        self._resets: list[float] = []
        self._outage_logged = 0.0
        self._beat_at = 0.0
        self._heartbeat = settings.state_dir / HEARTBEAT_FILE
        # send_offsets / commit wait this long: past transaction.timeout.ms the broker aborts the
        # transaction anyway, so waiting longer (it was 30 s each) only kept the loop from beating --
        # measured: an outage blocked it 60 s and the supervisor killed it as stalled.
        self._call_timeout_s = settings.transaction_timeout_ms / 1000 + 5

    def _new_consumer(self) -> Consumer:
        """A static member of the group (group.instance.id = the transactional.id): a process
        restarted on the same state dir takes its partitions back without a rebalance, instead of
        waiting for the group to expire the member it replaces (session.timeout.ms)."""
        conf = self.settings.group_consumer_config(self.settings.processor_group, "processor",
                                                   instance_id=self._transactional_id)
        made: list[Consumer] = []
        if self.settings.metrics_port is not None:  # the lag and engine gauges, refreshed on this thread
            conf.update({"statistics.interval.ms": STATS_INTERVAL_MS,
                         "stats_cb": lambda stats: self._on_stats(stats, made)})
        consumer = Consumer(conf)
        made.append(consumer)
        return consumer

    def _on_stats(self, stats_json: str, made: list[Consumer]) -> None:
        # Only the current consumer's, on the loop's thread: a replaced one is closed on a side
        # thread (_replace_consumer), and its close may still serve a statistics callback.
        if made and made[0] is self.consumer:
            self.engine.metrics.on_stats(stats_json, self.input.next)

    def _new_producer(self) -> Producer:
        return self._producer_factory(client_config("producer", self.settings.bootstrap, "processor", {
            "transaction.timeout.ms": self.settings.transaction_timeout_ms,
            "linger.ms": 2,
            "retry.backoff.ms": 10,
        }, fixed={
            "transactional.id": self._transactional_id,
            "enable.idempotence": True,
            "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES,
            "partitioner": "murmur2_random",
        }))

    # -- rebalance callbacks (run inside consume(), never during a transaction) ----------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        consumer.incremental_assign(partitions)
        consumer.pause(partitions)  # until restored
        self._to_restore.extend(tp.partition for tp in partitions)
        log.info("assigned %s", sorted(tp.partition for tp in partitions))

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer:  # a replaced consumer closing (see _replace_consumer)
            consumer.incremental_unassign(partitions)
            return
        for tp in partitions:
            self.engine.close_partition(tp.partition)
            self.input.forget(tp.partition)
            if tp.partition in self._to_restore:
                self._to_restore.remove(tp.partition)
        consumer.incremental_unassign(partitions)
        log.info("revoked %s", sorted(tp.partition for tp in partitions))
        _failpoints.reach("revoked")  # chaos tests kill a processor between the two phases of a rebalance here

    # -- restore ------------------------------------------------------------------------------

    def _restore(self) -> None:
        todo, self._to_restore = self._to_restore, []
        if not todo:
            return
        t0 = time.monotonic()
        self.engine.metrics.restoring.set(len(todo))
        try:
            total, phase = self.restorer.restore(todo)
        except BaseException:
            self.engine.metrics.restoring.set(0)
            self._to_restore = todo + self._to_restore  # restored again from scratch on the next turn
            raise
        self.consumer.resume([TopicPartition(self.settings.topics.commands, p) for p in todo])
        # After an in-process restart the consumer may be past them. Only these: the others may
        # have commands in the batch being applied now, which a seek would return again. After the
        # resume, not before: measured (librdkafka 2.16), a paused partition sought and then resumed
        # fetched nothing for 1.0 s; resumed and then sought, it fetches within 2 ms.
        self.input.seek_to_next(todo, self.engine.stores)
        self._to_resume.extend(todo)
        took = time.monotonic() - t0
        log.info("restored partitions %s: %d records in %.2fs (%s)", todo, total, took, phase)
        metrics = self.engine.metrics
        metrics.restoring.set(0)
        metrics.restore_records.inc(total)
        metrics.restore_seconds.observe(took)
        metrics.refresh()
        _failpoints.reach("restored")  # tests let the consumer fetch before the first transaction here

    # -- the loop -----------------------------------------------------------------------------

    def _subscribe(self) -> None:
        self.consumer.subscribe([self.settings.topics.commands], on_assign=self._on_assign,
                                on_revoke=self._on_revoke, on_lost=self._on_revoke)

    def _rejoin(self) -> None:
        """Leave the group and join it again, so it rebalances: unsubscribe revokes every
        partition (served by the next consume, between transactions) and sends the LeaveGroup;
        the subscription that follows joins once that is done."""
        self.consumer.unsubscribe()
        self._subscribe()

    def run(self) -> None:
        serve(self.engine.metrics.registry, self.settings.metrics_port, self.settings.metrics_addr, "processor")
        self._init_producer()
        if self._own_consumer:
            self.restorer.consumer()  # connected and holding metadata before the first assignment
        self._subscribe()
        max_wait = self.settings.max_wait_ms / 1000
        next_stats = time.monotonic() + STATS_EVERY_S
        try:
            while not self.stop_event.is_set():
                self.calls.run_pending()
                self._beat()
                if time.monotonic() >= next_stats:
                    next_stats = time.monotonic() + STATS_EVERY_S
                    log.info("stats: partitions %s, cached workflows %d, replies %d, %s", sorted(self.engine.stores),
                             len(self.engine.cache), self.engine.outbox.replies, self.engine.counters)
                if not self._restore_or_wait():
                    continue
                if self._own_consumer:
                    self.layout_watch.check(self.engine)
                if self.coverage is not None and self.coverage.poll(time.monotonic()):
                    self._rejoin()
                timeout = max_wait
                next_due = self.engine.next_due_ms()
                if next_due is not None:
                    now_ms = self.clock()
                    wait = (next_due - now_ms) / 1000
                    if wait <= 0 and not self.engine.has_due(now_ms, self._horizons(now_ms)):
                        wait = 0.02  # due, but its partition's input is not read up to it yet
                    timeout = min(timeout, max(0.0, wait))
                if self.engine.handing_off:
                    timeout = 0.0  # movers are waiting to be handed off
                batch = 1 if self._single_steps else self.settings.max_batch
                msgs = consume_available(self.consumer, batch, timeout)
                if self._to_restore and not self._restore_or_wait():
                    continue  # the batch is dropped unapplied: a failed restore rewinds the consumer
                msgs = self._usable(msgs)
                # Only a process that owns partitions beyond the layout scans the batch for them.
                if self._own_consumer and max(self.engine.stores, default=-1) >= self.engine.partitions \
                        and any(position(m)[0] >= self.engine.partitions for m in msgs):
                    self.layout_watch.check(self.engine, force=True)  # the topics may just have grown
                now_ms = self.clock()
                if msgs or self._to_resume or self.engine.handing_off or \
                        self.engine.has_due(now_ms, self._horizons(now_ms)):
                    if not msgs and not self._to_resume:
                        _failpoints.reach("timer_txn")  # chaos tests pause a zombie right here
                    self._transaction(msgs, now_ms)
        finally:
            self.calls.cancel_pending()
            self.close()

    def settled(self) -> tuple[dict[int, int], int | None, int | None] | None:
        """On the loop's thread (through `calls`), for processor.testing's time skipping: None
        while the loop has work in hand (a partition of the layout not owned, restored or
        resumed yet; a hand-off; a timer due; an activity attempt outstanding); else how far each
        partition's input is read (the next offset to apply, or the consumer's position past a
        commit marker), the next timer's due time, and the next one a workflow waits on (not a
        closed workflow's retention)."""
        engine = self.engine
        if self._to_restore or self._to_resume or engine.handing_off or len(engine.stores) < self.partitions:
            return None
        now_ms = self.clock()
        if engine.has_due(now_ms) or engine.activity_outstanding():
            return None
        read = {}
        for p in engine.stores:
            tp = TopicPartition(self.settings.topics.commands, p)
            at = self.consumer.position([tp])[0].offset
            read[p] = max(self.input.next.get(p, 0), at)
        return read, engine.next_due_ms(), engine.next_awaited_due_ms()

    def workflow_open(self, workflow_id: str, run_id: str | None) -> bool:
        """On the loop's thread (through `calls`), for processor.testing: whether the run is still
        running (`run_id` None: the id's latest)."""
        return self.engine.is_open(workflow_id, run_id)

    def _usable(self, msgs: list[Message]) -> list[Message]:
        """The batch's commands still to apply (InputPositions.usable); those applied already are
        counted. A consumer failed for good (fenced) is replaced, and its batch dropped unapplied."""
        try:
            out, again = self.input.usable(msgs, self.engine.stores, self._outage)
        except ConsumerFailed as exc:
            if not self._own_consumer:
                raise
            self._replace_consumer(f"failed for good ({exc})")
            return []
        self.engine.counters.redelivered += again
        return out

    def _restore_or_wait(self) -> bool:
        """Restore newly assigned partitions; if the broker cannot serve that now, wait a moment
        and report False (the partitions stay paused and are restored on a later turn)."""
        began = time.monotonic()
        try:
            self._restore()
            self._consumer_health.ok()
            return True
        except (KafkaException, ProcessorError) as exc:
            self._outage(f"restoring partitions: {exc}")
            self._rewind_all()
            if self._own_consumer and self._consumer_health.failing(time.monotonic(), began=began):
                self._replace_consumer(f"has failed to restore partitions for {self._consumer_health.wedged_for:.0f} s "
                                       "while Kafka answers a new client")
            self.stop_event.wait(RETRY_BACKOFF_S)
            return False

    def _replace_consumer(self, why: str) -> None:
        """A group consumer that cannot reach its coordinator long after the broker is back, or
        that failed for good (fenced), is rebuilt. Seen in CI after a broker restart (librdkafka
        2.16): `committed()` timed out for minutes while the producer and a fresh consumer worked;
        and a static member fenced by its own rejoin (messages.ConsumerFailed). Its partitions are
        dropped (the group hands them out again on the new member's join, which takes the static
        membership over) and restored from the log."""
        log.warning("the group consumer %s: replacing it", why)
        for p in list(self.engine.stores):
            self.engine.close_partition(p)
        self._to_restore.clear()
        self._to_resume.clear()
        self.input.clear()
        old = self.consumer
        self.consumer = self._new_consumer()
        self._subscribe()
        # Closed on the side: a wedged consumer's close may wait for a coordinator it cannot reach.
        threading.Thread(target=close_quietly, args=(old,), name="close-replaced-consumer", daemon=True).start()

    def _horizons(self, now_ms: int) -> dict[int, int]:
        return self.input.horizons(now_ms, self.engine.stores)

    def _transaction(self, msgs: list[Message], now_ms: int) -> None:
        first: dict[int, int] = {}
        nxt: dict[int, int] = {}
        t0 = time.perf_counter()
        budget = t0 + self.settings.transaction_timeout_ms / 1000 * BATCH_BUDGET_SHARE
        try:
            # Step 1
            self.producer.begin_transaction()
            self.sink.new_transaction()
            self.engine.begin(now_ms)
            self.engine.behind = self.input.behind(self.engine.handing_off) if self.engine.handing_off else set()
            # Step 2
            resume, self._to_resume = self._to_resume, []
            for p in resume:
                if p in self.engine.stores:
                    self.engine.resume_held(p)
            self.engine.firing = None
            applied = 0
            for m in msgs:
                p, offset = position(m)
                first.setdefault(p, offset)
                nxt[p] = offset + 1
                self.engine.handle_command(p, m.key(), m.value(), headers(m), offset)
                self.input.ts[p] = m.timestamp()[1]
                applied += 1
                if time.perf_counter() > budget and applied < len(msgs):
                    self.input.put_back(msgs[applied:])
                    break
            self.input.next.update(nxt)
            if self.engine.handing_off:
                self.engine.hand_off_step(deadline=budget)  # a batch of the movers after a growth (handoff.py)
                if self.engine.counters.handed_off >= 10:
                    _failpoints.reach("handoff_txn")  # chaos tests kill a processor mid-hand-off here
            self.engine.fire_due_timers(now_ms, self._horizons(now_ms))
            t_applied = time.perf_counter()
            # Step 3
            self._send_offsets()
            t_offsets = time.perf_counter()
            # Step 4
            if applied:
                _failpoints.reach("commit_txn")  # chaos tests kill a processor inside an open transaction here
            self.producer.commit_transaction(self._call_timeout_s)
        except KafkaException as exc:
            self._failed(exc.args[0], first)
            return
        except LayoutBehind as exc:
            # Not a poison command: this processor must adopt the growth first, then read it again.
            log.info("%s: catching up with the control topic", exc)
            self._abort(first)
            try:
                if not self.layout_watch.catch_up(self.engine):
                    self.stop_event.wait(RETRY_BACKOFF_S)
            except KafkaUnavailableError as err:
                self._outage(f"reading the layout: {err}")
            return
        except Exception:
            # A bug on one command must not wedge the partition: retry the batch one command per
            # transaction so only the culprit is dead-lettered.
            firing = self.engine.firing
            self._abort(first)
            if firing is not None:
                log.exception("firing timer %s of %s raised; quarantining it", firing[2], firing[1],
                              extra={"workflow_id": firing[1], "partition": firing[0]})
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
        t_stored = time.perf_counter()
        took = t_stored - t0
        metrics = self.engine.metrics
        metrics.transaction_seconds.observe(took)
        metrics.apply_seconds.observe(t_applied - t0)
        metrics.offsets_seconds.observe(t_offsets - t_applied)
        metrics.commit_seconds.observe(t_committed - t_offsets)
        metrics.store_seconds.observe(t_stored - t_committed)
        if applied:
            metrics.transaction_commands.observe(applied)
        if took > SLOW_TRANSACTION_S:
            ms = [(b - a) * 1000 for a, b in ((t0, t_applied), (t_applied, t_offsets), (t_offsets, t_committed),
                                              (t_committed, time.perf_counter()))]
            log.warning("slow transaction: %d commands in %.0f ms (apply %.0f, offsets %.0f, commit %.0f, "
                        "rocksdb %.0f)", len(msgs), took * 1000, *ms)

    def _send_offsets(self) -> None:
        """Step 3, in every transaction: the next input offset of every owned partition."""
        offsets = self.input.offsets(self.engine.stores, self._transactional_id)
        if not offsets:
            raise KafkaUnavailableError("no owned partition has a known input offset: nothing can fence "
                                        "this transaction")
        self.producer.send_offsets_to_transaction(offsets, self.consumer.consumer_group_metadata(),
                                                 self._call_timeout_s)

    def _failed(self, err: KafkaError, first: dict[int, int]) -> None:
        """The open transaction cannot commit. A rebalance: abort and rewind. Anything else (the
        broker unreachable, records refused, a fatal producer): restart in process."""
        if err.txn_requires_abort() and not err.fatal() and err.code() in _REBALANCE_CODES:
            log.warning("transaction aborted (%s); rewinding %s", err, first)
            self._abort(first)
            return
        self._restart_in_process(f"transaction failed: {err}")

    def _abort(self, first: dict[int, int]) -> None:
        self.engine.metrics.transactions_aborted.inc()
        try:
            self.producer.abort_transaction(10)
        except KafkaException as exc:
            self._restart_in_process(f"abort failed: {exc.args[0]}")
            return
        self._rewind(first)

    def _restart_in_process(self, why: str) -> None:
        """What a restart of the process would do, without leaving the group: a fresh producer
        (same transactional.id: its init_transactions fences the old epoch and aborts whatever
        it left open) and every owned partition restored again from the log.

        Retrying a timed-out send_offsets_to_transaction or commit_transaction was tried first:
        measured, after a broker outage the retried call could hang far past its timeout; and a
        commit that timed out may have committed, so local state must be rebuilt from the log and
        the committed input offsets, never rewound to the batch's first offset."""
        now = time.monotonic()
        self._resets = [t for t in self._resets if now - t < 60] + [now]
        if len(self._resets) > MAX_PRODUCER_RESETS_PER_MIN:
            raise KafkaUnavailableError(
                f"the transactional producer failed {len(self._resets)} times in a minute ({why}); if the broker "
                f"is up, another live process uses transactional.id {self._transactional_id!r} (two processors on "
                "one state dir?)")
        owned = sorted(self.engine.stores)
        log.warning("%s; replacing the producer and restoring partitions %s from the log", why, owned)
        self.engine.aborted()
        for p in owned:
            self.engine.close_partition(p)
            self.input.forget(p)
        try:
            self.consumer.pause([TopicPartition(self.settings.topics.commands, p) for p in owned])
        except KafkaException as exc:  # not assigned any more: the revoke callback follows
            log.debug("pause %s: %s", owned, exc)
        self._to_restore.extend(p for p in owned if p not in self._to_restore)
        self._to_resume.clear()
        self.producer = self._new_producer()
        self.sink.use(self.producer)
        self._init_producer()

    def _init_producer(self) -> None:
        """init_transactions, until the broker answers; a producer whose init failed is replaced."""
        while True:
            try:
                self.producer.init_transactions(INIT_TIMEOUT_S)
                return
            except KafkaException as exc:
                err = exc.args[0]
                if err.fatal() and not err.retriable() and err.code() == KafkaError._FENCED:  # noqa: SLF001
                    raise KafkaUnavailableError(
                        f"fenced at start: another live process uses transactional.id {self._transactional_id!r}"
                    ) from exc
                self._outage(f"init_transactions: {err}")
                self._beat()  # waiting for the broker is not a wedged loop
                if self.stop_event.wait(RETRY_BACKOFF_S):
                    raise
                self.producer = self._new_producer()
                self.sink.use(self.producer)

    def _rewind(self, first: dict[int, int]) -> None:
        """Forget the aborted batch: overlays, advanced instances, and input positions."""
        self.engine.aborted()
        for p, offset in first.items():
            self.input.next[p] = offset
        self._rewind_all()

    def _rewind_all(self) -> None:
        self.input.seek_to_next(list(self.input.next), self.engine.stores)

    def _outage(self, what: str) -> None:
        now = time.monotonic()
        if now - self._outage_logged >= OUTAGE_LOG_EVERY_S:
            self._outage_logged = now
            log.warning("Kafka at %s is not answering (%s); retrying until it is back", self.settings.bootstrap,
                        what)

    def _beat(self) -> None:
        """Touch the heartbeat file: the supervisor restarts a child whose loop stopped turning."""
        now = time.monotonic()
        if now - self._beat_at >= HEARTBEAT_EVERY_S:
            self._beat_at = now
            try:
                self._heartbeat.touch()
            except OSError:
                pass

    def _quarantine(self, firing: tuple[int, str, str], now_ms: int) -> None:
        reason = traceback.format_exc(limit=5)
        self._isolated(now_ms, lambda: self.engine.quarantine_timer(*firing, reason))

    def _dead_letter_poison(self, msgs: list[Message], now_ms: int) -> None:
        m = msgs[0]
        p, offset = position(m)
        reason = "processing raised: " + traceback.format_exc(limit=5)
        self._isolated(now_ms, lambda: self.engine.dead_letter(m.key(), m.value(), headers(m), p, offset, reason),
                       (p, offset))

    def _isolated(self, now_ms: int, work: Callable[[], None], skip: tuple[int, int] | None = None) -> None:
        """A transaction of its own for the one action that takes a failure out of the way (the same
        steps as _transaction, minus the batch). `skip` = (partition, offset) of a command that this
        transaction consumes: committed as offset + 1, and the consumer moves past it."""
        before = dict(self.input.next)
        try:
            self.producer.begin_transaction()
            self.sink.new_transaction()
            self.engine.begin(now_ms)
            work()
            if skip is not None:
                self.input.next[skip[0]] = skip[1] + 1
            self._send_offsets()
            self.producer.commit_transaction(self._call_timeout_s)
        except KafkaException as exc:
            self.input.next = before
            self._failed(exc.args[0], {})
            return
        except Exception:
            log.exception("isolating a failure failed; it is retried on the next turn")
            self.input.next = before
            self._abort({})
            return
        self.engine.committed()
        if skip is not None:
            self.consumer.seek(TopicPartition(self.settings.topics.commands, skip[0], skip[1] + 1))

    def close(self) -> None:
        try:
            if self._own_consumer:
                # A static member leaves the group only when it unsubscribes: close() alone would
                # keep its partitions from the others for session.timeout.ms (measured: 5.9 s, and
                # 1.5 s with the unsubscribe). A crash skips this, and a restart takes them back.
                try:
                    self.consumer.unsubscribe()
                    # Serves the revoke and lets the LeaveGroup go out: closed at once, the
                    # member stayed (a restart after a growth then kept its old partitions).
                    self.consumer.consume(1, 0.2)
                except KafkaException as exc:
                    log.debug("unsubscribe: %s", exc)
            self.consumer.close()  # the revoke callback closes the stores
        finally:
            self.restorer.close()
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
