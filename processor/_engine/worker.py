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
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import signal
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime
from typing import Any, cast

from confluent_kafka import Consumer, KafkaError, Message, Producer, TopicPartition

from processor import activity
from processor._codec import default_codec
from processor._engine.settings import Settings
from processor._failure import failure_from_exception
from processor._kafka.messages import consume_available, dlq_headers, headers, position
from processor._kafka.topics import ensure_topics, task_queue_spec
from processor._payload import from_payloads, to_payload
from processor.exceptions import DecodeError

log = logging.getLogger("processor.worker")

TASK = "wf.tasks.v1.ActivityTask"
HEARTBEAT_EVERY_S = 1.0


class _Offsets:
    """In-flight offsets per partition; the committable offset is just below the oldest one."""

    def __init__(self) -> None:
        self.inflight: dict[int, set[int]] = {}
        self.done_max: dict[int, int] = {}

    def start(self, p: int, offset: int) -> None:
        self.inflight.setdefault(p, set()).add(offset)

    def finish(self, p: int, offset: int) -> None:
        s = self.inflight.get(p)
        if s is not None:
            s.discard(offset)
            self.done_max[p] = max(self.done_max.get(p, -1), offset)

    def committable(self) -> dict[int, int]:
        out = {}
        for p, done in self.done_max.items():
            pending = self.inflight.get(p)
            out[p] = min(pending) if pending else done + 1
        return out

    def drop(self, p: int) -> None:
        self.inflight.pop(p, None)
        self.done_max.pop(p, None)

    def count(self) -> int:
        return sum(len(s) for s in self.inflight.values())


class ActivityWorker:
    def __init__(self, settings: Settings, activities: Sequence[Callable[..., Any]], task_queue: str = "default",
                 max_concurrent: int = 100) -> None:
        self.settings = settings
        self.queue = task_queue
        self.topic = settings.topics.tasks(task_queue)
        self.max_concurrent = max_concurrent
        self.definitions = {d.name: d for d in (activity.ActivityDefinition.of(fn) for fn in activities)}
        self.codec = default_codec()
        self.stop_event = threading.Event()
        ensure_topics(settings.bootstrap, [task_queue_spec(task_queue, settings.prefix)], exact_partitions=False)
        common = {"bootstrap.servers": settings.bootstrap, "client.id": f"worker-{task_queue}"}
        # read_committed: a task is visible only once the processor's transaction committed.
        self.consumer = Consumer(settings.group_consumer_config(settings.worker_group(task_queue), common["client.id"]))
        self.producer = Producer({**common, "enable.idempotence": True, "linger.ms": 2,
                                  "partitioner": "murmur2_random"})
        self.pool = ThreadPoolExecutor(max_workers=max_concurrent, thread_name_prefix="activity")
        self.aio = asyncio.new_event_loop()
        self._aio_thread = threading.Thread(target=self.aio.run_forever, name="activity-aio", daemon=True)
        self.offsets = _Offsets()
        self._assigned: set[int] = set()
        self.backlog: deque[Message] = deque()  # fetched, not started (offsets not committed)
        self.max_backlog = max(1_000, 4 * max_concurrent)
        self._finished: list[tuple[int, int]] = []  # (partition, offset) acked by the broker
        self._lock = threading.Lock()
        self.completed = 0
        self.failed = 0

    # -- rebalance ------------------------------------------------------------------------------

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._assigned.update(tp.partition for tp in partitions)

    def _on_revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._commit()
        gone = {tp.partition for tp in partitions}
        for p in gone:
            self._assigned.discard(p)
            self.offsets.drop(p)
        # Not started, not committed: the partition's next owner runs them.
        self.backlog = deque(m for m in self.backlog if position(m)[0] not in gone)

    # -- running one task -----------------------------------------------------------------------

    def _start(self, m: Message) -> None:
        p, offset = position(m)
        try:
            task = self.codec.decode_as(m.value() or b"", TASK)
        except DecodeError as exc:
            self._dead_letter(m, f"undecodable activity task: {exc}")
            return
        self.offsets.start(p, offset)
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
            scheduled_time=datetime.fromtimestamp(task["scheduled_time_ms"] / 1000, UTC))
        ctx = activity.ActivityContext(info=info, heartbeat_fn=self._heartbeater(task))
        try:
            args = from_payloads(task["args"], definition.param_hints)
        except Exception as exc:  # noqa: BLE001 - a bad argument is the activity's failure, reported
            self._report(p, offset, task, None, exc)
            return
        fut: Future[Any]
        if definition.is_async:
            fut = asyncio.run_coroutine_threadsafe(self._run_async(ctx, definition.fn, args), self.aio)
        else:
            fut = self.pool.submit(contextvars.copy_context().run, self._run_sync, ctx, definition.fn, args)
        fut.add_done_callback(lambda f: self._done(p, offset, task, f))

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

    def _done(self, p: int, offset: int, task: dict[str, Any], fut: Future[Any]) -> None:
        exc = fut.exception()
        self._report(p, offset, task, None if exc is not None else fut.result(), exc)

    def _report(self, p: int, offset: int, task: dict[str, Any], result: Any, exc: BaseException | None) -> None:
        base = {"workflow_id": task["workflow_id"], "activity_seq": task["activity_seq"], "attempt": task["attempt"]}
        if exc is None:
            try:
                name, rec = "wf.commands.v1.ActivityCompleted", {**base, "result": to_payload(result)}
            except Exception as conv:  # noqa: BLE001 - an unserialisable result fails the attempt
                exc = conv
        if exc is not None:
            name, rec = "wf.commands.v1.ActivityFailed", {**base, "failure": failure_from_exception(exc)}
            self.failed += 1
        else:
            self.completed += 1
        value = self.codec.encode(name, rec)
        self._produce(self.settings.topics.commands, task["workflow_id"].encode(), value, self.codec.headers(name),
                      self._finish_when_acked(p, offset))

    def _finish_when_acked(self, p: int, offset: int) -> Callable[[KafkaError | None, Message], None]:
        """A delivery callback that makes the task's offset committable once the broker has the
        record that settles it; unacknowledged, the offset stays uncommitted and the task runs again."""

        def acked(err: KafkaError | None, _msg: Message) -> None:
            if err is None:
                with self._lock:
                    self._finished.append((p, offset))
            else:
                log.error("record settling %s[%d]@%d not delivered: %s", self.topic, p, offset, err)

        return acked

    def _produce(self, topic: str, key: bytes, value: bytes | None, out_headers: list[tuple[str, bytes]],
                 cb: Callable[[KafkaError | None, Message], None] | None = None) -> None:
        while True:
            try:
                self.producer.produce(topic, value, key, headers=cast(Any, out_headers), on_delivery=cb)
                return
            except BufferError:
                time.sleep(0.01)

    def _heartbeater(self, task: dict[str, Any]) -> Callable[[tuple[Any, ...]], None]:
        last = [0.0]
        name = "wf.commands.v1.ActivityHeartbeat"
        # Throttled so a tight loop cannot flood the commands topic, yet several beats fit in
        # the activity's heartbeat timeout.
        every = min(HEARTBEAT_EVERY_S, (task.get("heartbeat_timeout_ms") or 3_000) / 3_000)

        def beat(details: tuple[Any, ...]) -> None:
            now = time.monotonic()
            if now - last[0] < every:
                return
            last[0] = now
            rec = {"workflow_id": task["workflow_id"], "activity_seq": task["activity_seq"],
                   "attempt": task["attempt"], "details": to_payload(list(details)) if details else None}
            self._produce(self.settings.topics.commands, task["workflow_id"].encode(),
                          self.codec.encode(name, rec), self.codec.headers(name))

        return beat

    def _dead_letter(self, m: Message, reason: str) -> None:
        p, offset = position(m)
        self.offsets.start(p, offset)
        self._produce(self.settings.topics.dlq, m.key() or b"", m.value(),
                      dlq_headers(headers(m), reason, self.topic, p, offset), self._finish_when_acked(p, offset))

    # -- the loop -------------------------------------------------------------------------------

    def _commit(self) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
        for p, offset in finished:
            self.offsets.finish(p, offset)
        offsets = [TopicPartition(self.topic, p, o) for p, o in self.offsets.committable().items()
                   if p in self._assigned]
        if offsets:
            try:
                self.consumer.commit(offsets=offsets, asynchronous=True)
            except Exception as exc:  # noqa: BLE001 - a failed commit only means re-running tasks
                log.warning("offset commit failed: %s", exc)

    def run(self) -> None:
        self._aio_thread.start()
        self.consumer.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke,
                                on_lost=self._on_revoke)
        paused = False
        last_commit = 0.0
        try:
            while not self.stop_event.is_set():
                while self.backlog and self.offsets.count() < self.max_concurrent:
                    self._start(self.backlog.popleft())
                if len(self.backlog) >= self.max_backlog and not paused:
                    self.consumer.pause(self.consumer.assignment())
                    paused = True
                elif len(self.backlog) < self.max_backlog // 2 and paused:
                    self.consumer.resume(self.consumer.assignment())
                    paused = False
                for m in consume_available(self.consumer, 100, 0.05 if not self.backlog else 0.005):
                    if m.error() is None:
                        if self.offsets.count() < self.max_concurrent and not self.backlog:
                            self._start(m)
                        else:
                            self.backlog.append(m)
                self.producer.poll(0)
                now = time.monotonic()
                if now - last_commit > 0.1:
                    self._commit()
                    last_commit = now
        finally:
            self.close()

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.producer.flush(10)
        self._commit()
        self.consumer.close()
        self.aio.call_soon_threadsafe(self.aio.stop)


def run_worker(settings: Settings, activities: Sequence[Callable[..., Any]], task_queue: str = "default",
               max_concurrent: int = 100, *, install_signals: bool = True) -> None:
    worker = ActivityWorker(settings, activities, task_queue, max_concurrent)
    if install_signals:
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: worker.stop_event.set())
    worker.run()
