"""The activity worker's settling mechanism: the records that settle task offsets (an attempt's
result or failure, a task's DLQ copy), their delivery reports, and what an undelivered one
becomes -- produced again, replaced by a failure that fits, or given up loudly -- decided on the
worker's poll thread (the rules are settle.py's `delivery_action`). And which offsets may be
committed once settled (`Offsets`). worker.py owns consuming, running and committing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from processor._codec.codec import Codec
from processor._engine.settle import FAILED, MAX_DELIVERY_ATTEMPTS, Kind, _what, delivery_action, refused_value
from processor._kafka.messages import Headers

log = logging.getLogger("processor.worker")


@dataclass
class Settle:
    """A record whose delivery settles one task offset."""

    p: int
    offset: int
    kind: Kind
    topic: str
    key: bytes
    value: bytes | None
    headers: Headers
    task: Mapping[str, Any] | None  # the task, for result and failure records
    attempts: int = 1
    not_before: float = 0.0


class Offsets:
    """In-flight offsets per partition; the committable offset is just below the oldest one.

    Tasks start in offset order per partition (the backlog is FIFO), so everything below the
    highest finished offset that is not in flight is settled.
    """

    def __init__(self) -> None:
        self.inflight: dict[int, set[int]] = {}
        self.done_max: dict[int, int] = {}

    def start(self, p: int, offset: int) -> None:
        self.inflight.setdefault(p, set()).add(offset)

    def finish(self, p: int, offset: int) -> None:
        # Only an offset started in the current assignment counts: a task of a partition that was
        # revoked (and maybe assigned back, from its committed offset) can finish late, and its
        # offset must not move the commit past tasks of the new assignment still in the backlog.
        s = self.inflight.get(p)
        if s is not None and offset in s:
            s.discard(offset)
            self.done_max[p] = max(self.done_max.get(p, -1), offset)

    def committable(self) -> dict[int, int]:
        out = {}
        for p, done in self.done_max.items():
            pending = self.inflight.get(p)
            out[p] = min(pending) if pending else done + 1
        return out

    def busy(self, partitions: set[int] | None = None) -> bool:
        return any(s for p, s in self.inflight.items() if partitions is None or p in partitions)

    def drop(self, p: int) -> None:
        self.inflight.pop(p, None)
        self.done_max.pop(p, None)

    def count(self) -> int:
        return sum(len(s) for s in self.inflight.values())


def produce(producer: Producer, topic: str, key: bytes, value: bytes | None, out_headers: Headers,
            cb: Callable[[KafkaError | None, Message], None] | None = None) -> None:
    """Produce, waiting out a full local queue by serving delivery reports (they free it) rather
    than only sleeping; the callbacks are thread-safe, so any thread may serve them."""
    while True:
        try:
            producer.produce(topic, value, key, headers=cast(Any, out_headers), on_delivery=cb)
            return
        except BufferError:
            producer.poll(0.01)


class Settler:
    """Settling records in flight, and the offsets they settled. Delivery callbacks (any thread)
    only record under the lock; `redeliver` and `take_finished` run on the poll thread."""

    def __init__(self, topic: str, codec: Codec, producer: Callable[[], Producer],
                 on_fatal: Callable[[KafkaError], None], on_replaced: Callable[[], None]) -> None:
        """`producer`: the worker's current producer (it may be replaced); `on_fatal`: the
        producer failed for good; `on_replaced`: a result was refused and replaced by a failure."""
        self.topic = topic
        self.codec = codec
        self._producer = producer
        self._on_fatal = on_fatal
        self._on_replaced = on_replaced
        self._lock = threading.Lock()
        self.finished: list[tuple[int, int]] = []  # (partition, offset) settled: acked, skipped or given up
        self.undelivered: list[tuple[Settle, KafkaError]] = []  # settling records the broker did not take
        self.retries: list[Settle] = []  # to produce again at their not_before (poll thread only)
        self.delivered_at = time.monotonic()  # the producer's last delivery, or when it last had nothing to do
        self.given_up = 0  # settling records that could not be delivered (delivery_action)

    def settle(self, s: Settle) -> None:
        """Produce a record that settles a task offset; its delivery report decides what next."""
        producer = self._producer()

        def acked(err: KafkaError | None, _msg: Message) -> None:
            if err is not None and producer is not self._producer():
                # Whatever the old producer of a replacement says, even _FATAL: the record gets
                # its chance on the new one.
                err = KafkaError(KafkaError._PURGE_QUEUE)  # noqa: SLF001 - librdkafka's code name
            self.delivered(s, err)

        try:
            produce(producer, s.topic, s.key, s.value, s.headers, acked)
        except KafkaException as exc:  # refused before sending (fatal producer, bad record): same path
            self.delivered(s, exc.args[0])

    def delivered(self, s: Settle, err: KafkaError | None) -> None:
        with self._lock:
            if err is None:
                self.delivered_at = time.monotonic()
                self.finished.append((s.p, s.offset))
            else:
                self.undelivered.append((s, err))

    def skipped(self, p: int, offset: int) -> None:
        """An offset settled with no record (a task not run)."""
        with self._lock:
            self.finished.append((p, offset))

    def take_finished(self) -> list[tuple[int, int]]:
        with self._lock:
            finished, self.finished = self.finished, []
        return finished

    def redeliver(self) -> None:
        """Decide, for each settling record not delivered, what happens to its offset
        (`delivery_action`), and produce the retries that are due. Runs on the poll thread, never
        inside a delivery callback (producing from one could wait on a queue only poll drains)."""
        now = time.monotonic()
        due = [s for s in self.retries if s.not_before <= now]
        if due:
            self.retries = [s for s in self.retries if s.not_before > now]
            for s in due:
                self.settle(s)
        with self._lock:
            undelivered, self.undelivered = self.undelivered, []
        for s, err in undelivered:
            where = f"{s.kind} record settling {self.topic}[{s.p}]@{s.offset}"
            action = delivery_action(err.code(), s.kind, s.attempts)
            if action == "stop":
                log.critical("%s not delivered, the producer failed for good (%s): stopping the worker; the task "
                             "runs again after the restart", where, err)
                self._on_fatal(err)
            elif action == "retry":
                log.warning("%s not delivered (%s), attempt %d of %d: producing it again", where, err, s.attempts,
                            MAX_DELIVERY_ATTEMPTS)
                s.not_before = now + min(30.0, 0.5 * 2 ** s.attempts)
                s.attempts += 1
                self.retries.append(s)
            elif action == "resend":
                s.not_before = now
                self.retries.append(s)
            elif action == "replace" and s.task is not None:
                log.error("%s refused (%s): reporting the attempt as failed instead", where, err)
                self._on_replaced()
                self.settle(Settle(s.p, s.offset, "failure", s.topic, s.key,
                                   refused_value(self.codec, s.task, len(s.value or b""), err),
                                   self.codec.headers(FAILED), s.task))
            else:
                what = _what(s.task) if s.task is not None else "an undecodable task"
                log.error("GIVING UP on the %s of %s: %s (after %d attempt(s)); its offset is committed without "
                          "it, the processor's timeouts must retry the attempt", where, what, err, s.attempts)
                self.given_up += 1
                self.skipped(s.p, s.offset)
