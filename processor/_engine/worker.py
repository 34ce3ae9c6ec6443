"""Activity worker: consume tasks of one queue, run activities concurrently, report results.

At-least-once: a task's offset is committed only after its result (or failure) was acknowledged
by the broker, so a worker killed mid-activity leaves the task to be run again by the group. The
processor ignores duplicate and late results, and each task carries an idempotency key for the
outside systems an activity touches.

Hours-long activities do not get the worker evicted: the poll loop never blocks on an activity
(sync ones run in a thread pool, async ones on an event loop thread) and keeps polling. Past the
concurrency bound, fetched tasks wait in a local backlog; only a large backlog pauses the
partitions, because pause() throws librdkafka's prefetched messages away and resuming refetches
them (measured: pausing at the bound cut throughput from 208 to 88 workflows/s).

Every task offset is settled by exactly one record (the attempt's ActivityCompleted or
ActivityFailed, or the task's DLQ copy), made to fit the record limit where it is made, and whose
delivery failure has a decided outcome (worker_settle.py) -- an offset is never left stuck silently.
Attempts that the processor has already timed out are skipped, not run: by their
schedule-to-start deadline (`stale_attempt`), or by the ActivityCancel the processor writes to
the task's partition when it times an attempt out (a new owner of a dead worker's partition
finds both the task and its cancel there).

An attempt whose task has a start-to-close, heartbeat or schedule-to-start timeout is reported
as started (ActivityStarted) just before it runs: those clocks count from the start at the
processor, so time spent waiting in the queue or in this worker's backlog is not the attempt's.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import os
import signal
import socket
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, Producer, TopicPartition

from processor import _failpoints, _tracing, activity
from processor._codec import default_codec
from processor._engine.clock import LoopCalls, wall_ms
from processor._engine.coverage import CoverageWatch
from processor._engine.identity import stable_worker_instance_id
from processor._engine.settings import Settings
from processor._engine.settle import (  # noqa: F401 - re-exported for tests and callers
    _DLQ_REASON_CHARS,
    _PERMANENT,
    _TOO_LARGE,
    COMPLETED,
    FAILED,
    HEARTBEAT,
    HEARTBEAT_EVERY_S,
    MAX_DELIVERY_ATTEMPTS,
    STARTED,
    TASK,
    Action,
    Kind,
    _base,
    _clip_failure,
    _env_ms,
    _what,
    delivery_action,
    failure_value,
    heartbeat_value,
    refused_value,
    reports_start,
    settle_value,
    stale_attempt,
    start_report_delay_s,
    started_value,
)
from processor._engine.worker_settle import Offsets, Settle, Settler, produce
from processor._kafka.config import client_config
from processor._kafka.health import WedgeClock, kafka_answers
from processor._kafka.messages import (
    ConsumerFailed,
    close_quietly,
    consume_available,
    data_messages,
    dlq_headers,
    headers,
    position,
)
from processor._kafka.topics import ensure_topics, task_queue_spec
from processor._limits import (
    MAX_RECORD_BYTES,
    PRODUCER_MESSAGE_MAX_BYTES,
    clip,
    dlq_value,
)
from processor._logs import task_fields
from processor._metrics import STATS_INTERVAL_MS, WorkerMetrics, serve
from processor._payload import from_payload, from_payloads
from processor.exceptions import ActivityCancelledError, DecodeError, KafkaUnavailableError

log = logging.getLogger("processor.worker")
CANCEL = "wf.tasks.v1.ActivityCancel"
_CANCEL_HEADER = ("type", CANCEL.encode())
_CANCELED_KEPT = 10_000
# A producer with records pending that has delivered nothing this long is failing (see _check_producer).
_PRODUCER_SILENCE_S = 5.0



class ActivityWorker:
    def __init__(self, settings: Settings, activities: Sequence[Callable[..., Any] | activity.ActivityDefinition],
                 task_queue: str = "default",
                 max_concurrent: int = 100, *, clock_skew_ms: int | None = None,
                 shutdown_grace_s: float | None = None, revoke_grace_s: float | None = None,
                 rejoin_watchdog_s: float | None = None, producer_watchdog_s: float | None = None,
                 instance_id: str | None = None, clock: Callable[[], int] = wall_ms) -> None:
        """`instance_id`: a static group membership (identity.stable_worker_instance_id), kept
        across restarts; None for a dynamic member. `activities`: `@activity.defn` functions, or
        ActivityDefinitions (processor.testing registers mocks by name so). `clock` (epoch ms)
        is the wall clock but in processor.testing's KafkaWorkflowEnvironment (clock.py)."""
        self.settings = settings
        self.clock = clock
        self.calls = LoopCalls()  # other threads' calls, run between two turns (clock.py)
        self._static = instance_id is not None
        self.queue = task_queue
        self.topic = settings.topics.tasks(task_queue)
        self.max_concurrent = max_concurrent
        # How far this worker's clock may run ahead of the processors' (see stale_attempt).
        self.clock_skew_ms = clock_skew_ms if clock_skew_ms is not None else _env_ms("DP_CLOCK_SKEW_MS", 1_000)
        # A graceful stop waits this long for running activities (see close).
        self.shutdown_grace_s = (shutdown_grace_s if shutdown_grace_s is not None
                                 else _env_ms("DP_WORKER_SHUTDOWN_GRACE_MS", 10_000) / 1000)
        # A revoked partition's running tasks get this long to settle before it moves (see _on_revoke).
        self.revoke_grace_s = (revoke_grace_s if revoke_grace_s is not None
                               else _env_ms("DP_WORKER_REVOKE_GRACE_MS", 1_000) / 1000)
        # A consumer out of its group, or a producer delivering nothing, this long while Kafka
        # answers a new client is rebuilt (_check_membership, _check_producer; processor/_kafka/health.py).
        self.rejoin_watchdog_s = (rejoin_watchdog_s if rejoin_watchdog_s is not None
                                  else _env_ms("DP_WORKER_REJOIN_WATCHDOG_MS", 20_000) / 1000)
        self.producer_watchdog_s = (producer_watchdog_s if producer_watchdog_s is not None
                                    else _env_ms("DP_WORKER_PRODUCER_WATCHDOG_MS", 15_000) / 1000)
        self._membership = WedgeClock(self.rejoin_watchdog_s, lambda: kafka_answers(settings.bootstrap))
        self._producer_health = WedgeClock(self.producer_watchdog_s, lambda: kafka_answers(settings.bootstrap))
        self.definitions = {d.name: d for d in (fn if isinstance(fn, activity.ActivityDefinition)
                                                 else activity.ActivityDefinition.of(fn) for fn in activities)}
        self.codec = default_codec()
        self.identity = f"{socket.gethostname()}:{os.getpid()}"  # in ActivityStarted, for operators
        self.stop_event = threading.Event()
        ensure_topics(settings.bootstrap, [task_queue_spec(task_queue, settings.prefix)], exact_partitions=False)
        # read_committed: a task is visible only once the processor's transaction committed.
        self._consumer_config = settings.group_consumer_config(settings.worker_group(task_queue),
                                                               f"worker-{task_queue}", instance_id)
        self._running = 0  # activities executing now, revoked partitions' included
        self.metrics = WorkerMetrics(lambda: self._running)
        if settings.metrics_port is not None:  # the task topic's lag, from librdkafka's statistics
            self._consumer_config.update({"statistics.interval.ms": STATS_INTERVAL_MS,
                                          "stats_cb": self.metrics.on_stats})
        self.consumer = Consumer(self._consumer_config)
        # Only a static member can rejoin a Stable group without a rebalance (coverage.py).
        self.coverage = CoverageWatch(settings.bootstrap, settings.worker_group(task_queue), self.topic,
                                      lambda: instance_id or "") if instance_id is not None else None
        self._producer_config = client_config(
            "producer", settings.bootstrap, f"worker-{task_queue}",
            {"linger.ms": 2, "topic.metadata.refresh.interval.ms": 10_000},  # sees a growth within seconds
            fixed={"enable.idempotence": True, "message.max.bytes": PRODUCER_MESSAGE_MAX_BYTES,
                   "partitioner": "murmur2_random"})
        self.producer = Producer(self._producer_config)
        self.pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="activity")
        self.aio = asyncio.new_event_loop()
        self._aio_thread = threading.Thread(target=self.aio.run_forever, name="activity-aio", daemon=True)
        self.offsets = Offsets()
        self._assigned: set[int] = set()
        self._paused = False  # the assignment is paused for a full backlog (run)
        self.backlog: deque[Message] = deque()  # fetched, not started (offsets not committed)
        self.max_backlog = max(1_000, 4 * max_concurrent)
        # The records that settle task offsets, and their delivery (worker_settle.py).
        self.settler = Settler(self.topic, self.codec, lambda: self.producer, self._producer_failed,
                               self._result_replaced)
        self._closing = False
        self._lock = threading.Lock()
        # (workflow id, run id, activity_seq, attempt) -> the context of an attempt running here
        self._contexts: dict[tuple[str, str, int, int], activity.ActivityContext] = {}
        # Attempts canceled before they started here (skipped when their task comes up), newest last.
        self._canceled: OrderedDict[tuple[str, str, int, int], str] = OrderedDict()
        # Start reports held back (start_report_delay_s): attempt -> (due, began, task), monotonic.
        self._starts: dict[tuple[str, str, int, int], tuple[float, float, dict[str, Any]]] = {}
        self._start_lock = threading.Lock()  # never taken by a delivery callback (see _report_due_starts)
        self._spans: dict[tuple[str, str, int, int], Any] = {}  # attempt -> its RunActivity span, when tracing
        self._fatal: KafkaError | None = None
        self.completed = 0
        self.failed = 0
        self.skipped = 0  # stale attempts not run (stale_attempt)

    @property
    def given_up(self) -> int:
        """Settling records that could not be delivered (delivery_action)."""
        return self.settler.given_up

    def _producer_failed(self, err: KafkaError) -> None:
        self._fatal = err
        self.stop_event.set()

    def _result_replaced(self) -> None:
        """A result the broker refused was replaced by a failure that fits."""
        self.completed -= 1
        self.failed += 1

    # -- rebalance ------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if consumer is not self.consumer:
            return  # a replaced consumer (see _check_membership): what it gets is not ours
        self._assigned.update(tp.partition for tp in partitions)
        log.info("assigned %s of %s", sorted(tp.partition for tp in partitions), self.topic)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """A partition moves to another member (cooperative: the others keep running here).

        Its backlog is dropped (not started, not committed: the next owner runs it). Its running
        tasks get `revoke_grace_s` to finish and have their results acknowledged, then what is
        settled is committed synchronously while this member still owns the partition: without
        that, every task running at a rebalance also ran on the new owner. Tasks still running
        after the grace go on here and report their results (the processor takes the first one
        of an attempt); the new owner runs them again unless `stale_attempt` says it need not.
        """
        if consumer is not self.consumer:
            return  # a replaced consumer closing: its partitions were given up already
        gone = {tp.partition for tp in partitions}
        self.backlog = deque(m for m in self.backlog if position(m)[0] not in gone)
        self._settle_running(gone, 0.0 if self._closing else self.revoke_grace_s)
        self._commit(sync=True)
        self._forget(gone)
        log.info("revoked %s of %s", sorted(gone), self.topic)
        _failpoints.reach("worker_revoked")  # chaos tests kill a worker between the two phases of a rebalance here

    def _on_lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        """The partitions already belong to someone else (session timed out): nothing to commit."""
        if consumer is not self.consumer and consumer is not None:
            return
        gone = {tp.partition for tp in partitions}
        log.warning("lost %s of %s (the group session timed out)", sorted(gone), self.topic)
        self.backlog = deque(m for m in self.backlog if position(m)[0] not in gone)
        self._forget(gone)

    def _forget(self, gone: set[int]) -> None:
        for p in gone:
            self._assigned.discard(p)
            self.offsets.drop(p)

    def _subscribe(self) -> None:
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_lost)

    def _check_membership(self, now: float) -> None:
        """Rebuild a consumer that has been out of its group for `rejoin_watchdog_s` while Kafka
        answers a new client (`WedgeClock`).

        After a session timeout during a broker outage librdkafka resets the member id and is
        meant to rejoin by itself; seen in CI (librdkafka 2.16, load 12): it never connected to
        the broker again, so the worker polled an empty assignment forever. A member with no
        partitions (more workers than partitions) still has a member id and is left alone.
        """
        if self.consumer.memberid():
            self._membership.ok()
            return
        if not self._membership.failing(now):
            return
        self._replace_consumer(f"has been out of group {self.settings.worker_group(self.queue)} for "
                               f"{self._membership.wedged_for:.0f} s while Kafka answers")

    def _consumed(self, batch: list[Message]) -> None:
        """A consumed batch: its tasks taken; a consumer failed for good (fenced) replaced."""
        try:
            self._take(data_messages(batch))
        except ConsumerFailed as exc:
            self._replace_consumer(f"failed for good ({exc})")

    def _replace_consumer(self, why: str) -> None:
        log.warning("the consumer of %s %s: replacing it", self.topic, why)
        # Whatever it held is lost already (its session timed out, or it was fenced): nothing to
        # commit, the backlog runs on whoever owns the partitions now; running tasks report their
        # results as usual.
        self._on_lost(self.consumer, [TopicPartition(self.topic, p) for p in self._assigned])
        self._paused = False
        old = self.consumer
        self.consumer = Consumer(self._consumer_config)
        self._subscribe()
        # Closed on the side: a wedged consumer's close may wait for a coordinator it cannot reach.
        threading.Thread(target=close_quietly, args=(old,), name="close-replaced-consumer", daemon=True).start()

    def _check_producer(self, now: float) -> None:
        """Rebuild a producer that has had records pending and delivered nothing for
        `producer_watchdog_s` (after `_PRODUCER_SILENCE_S`) while Kafka answers a new client. What
        the old one still holds is purged: those records come back as `resend` and go out on the
        new one. A duplicate is harmless (the processor ignores results it already has)."""
        pending = len(self.producer) + len(self.settler.retries)
        if pending == 0:
            self.settler.delivered_at = now
        if pending == 0 or now - self.settler.delivered_at < _PRODUCER_SILENCE_S:
            self._producer_health.ok()
            return
        if not self._producer_health.failing(now, began=self.settler.delivered_at + _PRODUCER_SILENCE_S):
            return
        log.warning("the producer of worker %s has delivered nothing for %.0f s with %d record(s) pending while "
                    "Kafka answers a new client: replacing it", self.queue, now - self.settler.delivered_at, pending)
        old = self.producer
        self.producer = Producer(self._producer_config)
        self.settler.delivered_at = now
        threading.Thread(target=_retire_producer, args=(old,), name="retire-replaced-producer", daemon=True).start()

    # -- running one task -----------------------------------------------------------------------

    def _take(self, batch: list[Message]) -> None:
        """Messages just consumed: started while there is room and no backlog, else queued."""
        for m in batch:  # cancels first: a task fetched with its cancel never starts
            if _is_cancel(m):
                self._cancel_seen(m)
        for m in batch:
            if self._busy() < self.max_concurrent and not self.backlog:
                self._start(m)
            else:
                self.backlog.append(m)

    def _cancel_seen(self, m: Message) -> None:
        """An ActivityCancel consumed: the attempt it names, if running here, is told at once (its
        next activity.heartbeat() raises); if not started yet, it is skipped when its turn comes.
        The record's offset itself settles in order, through the backlog like a task (_start)."""
        try:
            rec = self.codec.decode_as(m.value() or b"", CANCEL)
        except DecodeError:
            return  # _start dead-letters it
        key = (rec["workflow_id"], rec["run_id"], rec["activity_seq"], rec["attempt"])
        with self._lock:
            ctx = self._contexts.get(key)
        if ctx is not None:
            ctx.cancel_reason.append(rec["reason"])
            ctx.cancelled.set()
            named = {**rec, "activity_type": ctx.info.activity_type}
            log.info("canceled %s: %s", _what(named), rec["reason"], extra=task_fields(named))
        else:
            self._canceled[key] = rec["reason"]
            while len(self._canceled) > _CANCELED_KEPT:
                self._canceled.popitem(last=False)

    def _start(self, m: Message) -> None:
        p, offset = position(m)
        if _is_cancel(m):
            try:
                self.codec.decode_as(m.value() or b"", CANCEL)
            except DecodeError as exc:
                self._dead_letter(m, f"undecodable activity cancel: {exc}")
                return
            self.offsets.start(p, offset)
            self.offsets.finish(p, offset)
            return
        try:
            task = self.codec.decode_as(m.value() or b"", TASK)
        except DecodeError as exc:
            self._dead_letter(m, f"undecodable activity task: {exc}")
            return
        self.offsets.start(p, offset)
        stale = stale_attempt(task, self.clock(), self.clock_skew_ms)
        if stale is not None:
            self.skipped += 1
            log.debug("skipped %s: its %s passed before it was started; the processor retries it", _what(task), stale,
                      extra=task_fields(task))
            self.offsets.finish(p, offset)
            return
        key = (task["workflow_id"], task.get("run_id", ""), task["activity_seq"], task["attempt"])
        reason = self._canceled.pop(key, None)
        if reason is not None:  # reported, not skipped: a run that goes on (cleanup) must hear of it
            self.skipped += 1
            self._report(p, offset, task, None, ActivityCancelledError(
                f"{_what(task)} was canceled before it started: {reason}"))
            return
        definition = self.definitions.get(task["activity_type"])
        if definition is None:
            names = ", ".join(sorted(self.definitions)) or "none"
            missing = LookupError(f"activity type {task['activity_type']!r} is not registered on task queue "
                                  f"{self.queue!r} (registered: {names})")
            self._report(p, offset, task, None, missing)
            return
        info = activity.ActivityInfo(
            workflow_id=task["workflow_id"], workflow_type=task["workflow_type"], activity_seq=task["activity_seq"],
            activity_type=task["activity_type"], attempt=task["attempt"], task_queue=task["task_queue"],
            scheduled_time=datetime.fromtimestamp(task["scheduled_time_ms"] / 1000, UTC), run_id=task.get("run_id", ""),
            heartbeat_details=_details(task.get("heartbeat_details")))
        ctx = activity.ActivityContext(info=info, heartbeat_fn=self._heartbeater(task))
        try:
            args = from_payloads(task["args"], definition.param_hints)
        except Exception as exc:  # noqa: BLE001 - a bad argument is the activity's failure, reported
            self._report(p, offset, task, None, exc)
            return
        if reports_start(task):
            # Its start-to-close and heartbeat clocks count from now at the processor (and its
            # schedule-to-start clock stops): the time the task waited in the queue is not the run's.
            # Held back a little: an attempt that ends first needs no report (start_report_delay_s).
            delay, began = start_report_delay_s(task), time.monotonic()
            if delay > 0:
                with self._start_lock:
                    self._starts[key] = (began + delay, began, task)
            else:
                self._report_start(task, 0)
        fut: Future[Any]
        with self._lock:
            self._running += 1
            self._contexts[key] = ctx
        self.metrics.started(task["activity_type"])
        t = _tracing.tracer()
        if t is not None:  # RunActivity: child of the processor's StartActivity (the task's traceparent)
            self._spans[key] = _tracing.start(t, f"RunActivity:{task['activity_type']}",
                                              _tracing.header_value(headers(m)), {
                                                  **task_fields(task), "worker": self.identity}, kind="CONSUMER")
        began = time.perf_counter()
        if definition.is_async:
            fut = asyncio.run_coroutine_threadsafe(self._run_async(ctx, definition.fn, args), self.aio)
        else:
            fut = self.pool.submit(contextvars.copy_context().run, self._run_sync, ctx, definition.fn, args)
        fut.add_done_callback(lambda f: self._done(p, offset, task, f, key, began))

    @staticmethod
    def _run_sync(ctx: activity.ActivityContext, fn: Callable[..., Any], args: list[Any]) -> Any:
        token = activity._set_context(ctx)  # noqa: SLF001 - the worker is the context's owner
        try:
            return fn(*args)
        finally:
            activity._reset_context(token)  # noqa: SLF001

    @staticmethod
    async def _run_async(ctx: activity.ActivityContext, fn: Callable[..., Any], args: list[Any]) -> Any:
        token = activity._set_context(ctx)  # noqa: SLF001 - the worker is the context's owner
        try:
            return await fn(*args)
        finally:
            activity._reset_context(token)  # noqa: SLF001

    def _done(self, p: int, offset: int, task: dict[str, Any], fut: Future[Any],
              key: tuple[str, str, int, int], began: float) -> None:
        ran_s = time.perf_counter() - began
        with self._lock:
            self._running -= 1
            self._contexts.pop(key, None)
        if self._starts:
            with self._start_lock:  # ended before its start was reported: the result says it all
                self._starts.pop(key, None)
        span = self._spans.pop(key, None) if self._spans else None
        if span is not None:
            if not fut.cancelled() and fut.exception() is not None:
                _tracing.failed(span, cast(BaseException, fut.exception()))
            span.end()
        if fut.cancelled():  # shut down before it ran: unsettled, the task runs again
            return
        exc = fut.exception()
        self._report(p, offset, task, None if exc is not None else fut.result(), exc, ran_s)

    def _report(self, p: int, offset: int, task: dict[str, Any], result: Any, exc: BaseException | None,
                ran_s: float | None = None) -> None:
        """`ran_s`: how long the attempt ran (None: it did not run)."""
        name, value = settle_value(self.codec, task, result, exc)
        if name == COMPLETED:
            self.completed += 1
        else:
            self.failed += 1
        self.metrics.finished(task["activity_type"], ran_s, name != COMPLETED)
        kind: Kind = "result" if name == COMPLETED else "failure"
        self.settler.settle(Settle(p, offset, kind, self.settings.topics.commands, task["workflow_id"].encode(), value,
                                   self.codec.headers(name), task))

    def _heartbeater(self, task: dict[str, Any]) -> Callable[[tuple[Any, ...]], None]:
        last = [0.0]
        # Throttled so a tight loop cannot flood the commands topic, yet several beats fit in
        # the activity's heartbeat timeout.
        every = min(HEARTBEAT_EVERY_S, (task.get("heartbeat_timeout_ms") or 3_000) / 3_000)
        key = (task["workflow_id"], task.get("run_id", ""), task["activity_seq"], task["attempt"])

        def beat(details: tuple[Any, ...]) -> None:
            now = time.monotonic()
            if now - last[0] < every:
                return
            last[0] = now
            self._report_due_starts(now, key)  # the start before the first beat
            value = heartbeat_value(self.codec, task, details)
            try:
                produce(self.producer, self.settings.topics.commands, task["workflow_id"].encode(), value,
                              self.codec.headers(HEARTBEAT), self._beat_delivered)
            except KafkaException as exc:  # a lost beat costs at most a heartbeat timeout, never the activity
                log.warning("heartbeat of %s not sent: %s", _what(task), exc.args[0], extra=task_fields(task))

        return beat

    def _report_due_starts(self, now: float, key: tuple[str, str, int, int] | None = None) -> None:
        """Send the held-back start reports that are due (or `key`'s, due or not: before its first
        heartbeat). Under `_start_lock`, so a start goes out before its attempt's result or not at
        all (_done drops it under the same lock)."""
        if not self._starts:
            return
        with self._start_lock:
            due = [k for k, (at, _, _) in self._starts.items() if at <= now or k == key]
            for k in due:
                _, began, task = self._starts.pop(k)
                self._report_start(task, int((now - began) * 1000))

    def _report_start(self, task: dict[str, Any], elapsed_ms: int) -> None:
        try:
            produce(self.producer, self.settings.topics.commands, task["workflow_id"].encode(),
                          started_value(self.codec, task, self.identity, elapsed_ms), self.codec.headers(STARTED),
                          self._beat_delivered)
        except KafkaException as exc:  # like a lost beat: the heartbeat that follows starts the clocks
            log.warning("start of %s not reported: %s", _what(task), exc.args[0], extra=task_fields(task))

    def _beat_delivered(self, err: KafkaError | None, _msg: Message) -> None:
        """A heartbeat the broker took: the producer works (see _check_producer), even while no
        result settles for a while."""
        if err is None:
            self.settler.delivered_at = time.monotonic()

    def _dead_letter(self, m: Message, reason: str) -> None:
        p, offset = position(m)
        self.offsets.start(p, offset)
        original = m.value()
        value, out_headers = dlq_value(original, dlq_headers(headers(m), clip(reason, _DLQ_REASON_CHARS),
                                                             self.topic, p, offset))
        if original is not None and len(original) > MAX_RECORD_BYTES:
            log.warning("DLQ copy of %s[%d]@%d truncated from %d to %d bytes (dlq.truncated header)", self.topic, p,
                        offset, len(original), MAX_RECORD_BYTES)
        self.settler.settle(Settle(p, offset, "dlq", self.settings.topics.dlq, m.key() or b"", value, out_headers,
                                   None))

    # -- the loop -------------------------------------------------------------------------------

    def _collect_finished(self) -> None:
        for p, offset in self.settler.take_finished():
            self.offsets.finish(p, offset)

    def _busy(self) -> int:
        # Revoked partitions' tasks leave `offsets` but still hold a pool thread.
        return max(self.offsets.count(), self._running)

    def _settle_running(self, partitions: set[int] | None, grace_s: float) -> None:
        """Serve delivery reports until no task of `partitions` (None: any) is in flight, for at
        most `grace_s`."""
        deadline = time.monotonic() + grace_s
        while True:
            self.settler.redeliver()
            self._collect_finished()
            left = deadline - time.monotonic()
            if not self.offsets.busy(partitions) or left <= 0:
                return
            self.producer.poll(min(0.05, left))

    def _commit(self, *, sync: bool = False) -> None:
        self._collect_finished()
        offsets = [TopicPartition(self.topic, p, o) for p, o in self.offsets.committable().items()
                   if p in self._assigned]
        if offsets:
            try:
                if sync:
                    self.consumer.commit(offsets=offsets, asynchronous=False)
                else:
                    self.consumer.commit(offsets=offsets, asynchronous=True)
            except Exception as exc:  # noqa: BLE001 - a failed commit only means re-running tasks
                log.warning("offset commit failed: %s", exc)

    def run(self) -> None:
        serve(self.metrics.registry, self.settings.metrics_port, self.settings.metrics_addr, f"worker {self.queue}")
        self._aio_thread.start()
        self._subscribe()
        last_commit = last_member_check = 0.0
        try:
            while not self.stop_event.is_set():
                self.calls.run_pending()
                while self.backlog and self._busy() < self.max_concurrent:
                    self._start(self.backlog.popleft())
                if len(self.backlog) >= self.max_backlog and not self._paused:
                    self.consumer.pause(self.consumer.assignment())
                    self._paused = True
                elif len(self.backlog) < self.max_backlog // 2 and self._paused:
                    self.consumer.resume(self.consumer.assignment())
                    self._paused = False
                self._consumed(consume_available(self.consumer, 100, 0.05 if not self.backlog else 0.005))
                self.producer.poll(0)
                self.settler.redeliver()
                now = time.monotonic()
                self._report_due_starts(now)
                if now - last_commit > 0.1:
                    self._commit()
                    last_commit = now
                if now - last_member_check > 1.0:
                    self._check_membership(now)
                    self._check_producer(now)
                    last_member_check = now
                if self.coverage is not None and self.coverage.poll(now):
                    self.consumer.unsubscribe()  # leave and join again: the group rebalances
                    self._subscribe()
                    self._paused = False  # the next assignment starts unpaused
        finally:
            self.calls.cancel_pending()
            self.close()
        if self._fatal is not None:
            raise KafkaUnavailableError(f"activity worker of {self.queue!r} stopped: its producer failed for good "
                                        f"({self._fatal}); restart it")

    def settled(self) -> dict[int, int] | None:
        """On the poll thread (through `calls`), for processor.testing's time skipping: None while
        a task is in hand (fetched, running, or its settling record or start report not yet
        delivered) or the task topic is not wholly assigned here; else the consumer's position in
        each partition."""
        if self.backlog or self._busy() or self._starts or self.settler.retries or self.settler.undelivered \
                or self.settler.finished:
            return None
        assigned = self.consumer.assignment()
        known = self.consumer.list_topics(self.topic, timeout=10).topics[self.topic].partitions
        if len(assigned) < len(known):
            return None
        return {tp.partition: tp.offset for tp in self.consumer.position(assigned)}

    def close(self) -> None:
        """Graceful stop (SIGTERM / SIGINT, or the end of `run`), in this order:

        Step 1: the poll loop has stopped taking tasks; the backlog is dropped (never started, so
                never committed: the partitions' next owner runs it).
        Step 2: wait up to `shutdown_grace_s` for running activities and the delivery of what
                settles them (retries and replacements included). Without it every activity
                running at a stop ran again on the next owner, however short.
        Step 3: commit, synchronously, while still in the group.
        Step 4: close the consumer: it leaves the group, so the partitions move now, not after
                the session timeout (a static member unsubscribes first: close alone would not
                leave).
        Step 5: stop the pool and the event loop. An activity still running is abandoned: its
                offset is not committed, the next owner runs it again (at least once).
        """
        self.backlog.clear()
        self._settle_running(None, 0.0 if self._fatal is not None else self.shutdown_grace_s)
        if self.offsets.busy():
            log.warning("stopping with %d task(s) unsettled after %.1f s: they run again on the next owner",
                        self.offsets.count(), self.shutdown_grace_s)
        self._commit(sync=True)
        self._closing = True  # close() revokes everything once more: no second grace
        if self._static:
            try:
                self.consumer.unsubscribe()
                self.consumer.consume(1, 0.2)  # serves the revoke and lets the LeaveGroup go out
            except KafkaException as exc:
                log.debug("unsubscribe: %s", exc)
        self.consumer.close()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.producer.flush(1)
        self.aio.call_soon_threadsafe(self.aio.stop)


def run_worker(settings: Settings, activities: Sequence[Callable[..., Any]], task_queue: str = "default",
               max_concurrent: int = 100, *, install_signals: bool = True, instance_dir: Path | None = None) -> None:
    """`instance_dir`: where this worker keeps its static group identity (`processor run` gives
    each worker one in the state dir); None for a dynamic member."""
    instance_id = (stable_worker_instance_id(instance_dir, settings.prefix, task_queue)
                   if instance_dir is not None else None)
    worker = ActivityWorker(settings, activities, task_queue, max_concurrent, instance_id=instance_id)
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop_event.set())
    worker.run()


def _is_cancel(m: Message) -> bool:
    found = m.headers()
    return bool(found) and _CANCEL_HEADER in found  # type: ignore[operator]


def _details(payload: Any) -> tuple[Any, ...]:
    """The previous attempt's heartbeat details (a Payload of a JSON list, see heartbeat_value)."""
    if payload is None:
        return ()
    try:
        value = from_payload(payload)
    except Exception as exc:  # noqa: BLE001 - unreadable details must not keep the attempt from running
        log.warning("heartbeat details of the previous attempt cannot be read (%s): starting without them", exc)
        return ()
    return tuple(value) if isinstance(value, list) else (value,)


def _retire_producer(producer: Producer) -> None:
    """Withdraw what a replaced producer holds, so its delivery reports (_PURGE_*) send it again
    on the new one; a record produced onto it in the moment of the swap is withdrawn too."""
    try:
        for _ in range(3):
            producer.purge(in_queue=True, in_flight=True)
            producer.poll(1.0)
    except Exception as exc:  # noqa: BLE001 - the old producer is abandoned either way
        log.warning("retiring the replaced producer failed: %s", exc)


