"""In-memory twins of the confluent_kafka Producer and Consumer for the activity worker, and
the helpers its unit tests share (like tests/unit/engine/engine_harness.py for the engine)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition

from processor import activity
from processor._codec import default_codec
from processor._engine import worker as worker_module
from processor._engine.settings import Settings
from processor._engine.worker import CANCEL, TASK, ActivityWorker
from processor._payload import to_payloads
from tests.kafka_twins import FakeMessage as KafkaMessage

CODEC = default_codec()
PREFIX = "t"
TASKS = f"{PREFIX}.tasks.default"
COMMANDS = f"{PREFIX}.commands"
DLQ = f"{PREFIX}.dlq"
RELEASE = threading.Event()


@activity.defn
def sized(n: int) -> str:
    return "x" * n


@activity.defn
def gated(tag: str) -> str:
    RELEASE.wait(10)
    return tag


@activity.defn
def resumes() -> list[object]:
    """Returns where the previous attempt got to (its last heartbeat details)."""
    return list(activity.info().heartbeat_details)


@activity.defn
def beating(seconds: float) -> str:
    """Heartbeats until canceled (then activity.heartbeat raises) or `seconds` pass."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        activity.heartbeat("working")
        time.sleep(0.01)
    return "not canceled"


@dataclass
class FakeMessage(KafkaMessage):
    """A task record: the type header of an ActivityTask unless told otherwise."""

    _headers: list[tuple[str, bytes]] = field(default_factory=lambda: [("type", TASK.encode())])


@dataclass
class Sent:
    topic: str
    key: bytes
    value: bytes | None
    headers: list[tuple[str, bytes]]

    @property
    def name(self) -> str:
        return dict(self.headers).get("type", b"").decode()

    def record(self) -> dict[str, Any]:
        assert self.value is not None
        return CODEC.decode_as(self.value, self.name)


class FakeProducer:
    """Delivers on poll(); `outcomes` are the delivery errors of the next produces (None: acked),
    `refuse` the errors raised by the next produce() calls. A `wedged` one delivers nothing (a
    client that lost its brokers) until purge() withdraws what it holds."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.sent: list[Sent] = []
        self.outcomes: list[KafkaError | None] = []
        self.refuse: list[KafkaError] = []
        self.wedged = False
        self.purged = 0
        self._queue: list[tuple[Callable[[KafkaError | None, Any], None] | None, KafkaError | None]] = []
        self._lock = threading.Lock()

    def produce(self, topic: str, value: bytes | None, key: bytes, headers: Any = None,
                on_delivery: Callable[[KafkaError | None, Any], None] | None = None) -> None:
        with self._lock:
            if self.refuse:
                raise KafkaException(self.refuse.pop(0))
            self.sent.append(Sent(topic, key, value, list(headers or [])))
            self._queue.append((on_delivery, self.outcomes.pop(0) if self.outcomes else None))

    def __len__(self) -> int:
        with self._lock:
            return len(self._queue)

    def purge(self, in_queue: bool = True, in_flight: bool = True, blocking: bool = True) -> None:
        with self._lock:
            self.purged += len(self._queue)
            self._queue = [(cb, KafkaError(KafkaError._PURGE_QUEUE)) for cb, _ in self._queue]
            self.wedged = False  # what it holds now is the purge reports

    def poll(self, timeout: float = 0) -> int:
        with self._lock:
            if self.wedged:
                return 0
            queue, self._queue = self._queue, []
        for cb, err in queue:
            if cb is not None:
                cb(err, None)
        return len(queue)

    def flush(self, timeout: float = 0) -> int:
        self.poll()
        return 0


class FakeConsumer:
    """`member` is what memberid() answers: None while out of the group (librdkafka resets it on
    a session timeout)."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.config = config
        self.commits: list[tuple[dict[int, int], bool]] = []
        self.closed = False
        self.member: str | None = "worker-1"
        self.subscribed: list[str] = []

    def subscribe(self, topics: list[str], **callbacks: Any) -> None:
        self.subscribed = list(topics)

    def memberid(self) -> str | None:
        return self.member

    def commit(self, *, offsets: list[TopicPartition], asynchronous: bool = True) -> None:
        self.commits.append(({tp.partition: tp.offset for tp in offsets}, asynchronous))

    def close(self) -> None:
        self.closed = True

    def committed_to(self) -> dict[int, int]:
        out: dict[int, int] = {}
        for offsets, _ in self.commits:
            out.update(offsets)
        return out


@contextmanager
def worker_factory(monkeypatch: pytest.MonkeyPatch, **defaults: Any) -> Iterator[Callable[..., ActivityWorker]]:
    """ActivityWorkers on the twins, owning partitions 0 and 1 of the task topic; `RELEASE` lets
    the `gated` activities finish; every worker made is shut down at the end."""
    monkeypatch.setattr(worker_module, "ensure_topics", lambda *a, **k: None)
    monkeypatch.setattr(worker_module, "kafka_answers", lambda bootstrap: True)  # the watchdogs' probe
    monkeypatch.setattr(worker_module, "Producer", FakeProducer)
    monkeypatch.setattr(worker_module, "Consumer", FakeConsumer)
    made: list[ActivityWorker] = []

    def make(**kwargs: Any) -> ActivityWorker:
        w = ActivityWorker(Settings(bootstrap="unused:9092", prefix=PREFIX), [sized, gated, resumes, beating],
                           max_concurrent=4,
                           **{**defaults, **kwargs})
        w._aio_thread.start()
        w._assigned.update({0, 1})
        made.append(w)
        return w

    RELEASE.clear()
    try:
        yield make
    finally:
        RELEASE.set()
        for w in made:
            w.pool.shutdown(wait=True)
            w.aio.call_soon_threadsafe(w.aio.stop)


def producer(w: ActivityWorker) -> FakeProducer:
    p = w.producer
    assert isinstance(p, FakeProducer)
    return p


def consumer(w: ActivityWorker) -> FakeConsumer:
    c = w.consumer
    assert isinstance(c, FakeConsumer)
    return c


def task_message(p: int, offset: int, activity_type: str, *args: Any, **over: Any) -> FakeMessage:
    task = {"workflow_id": "w-1", "activity_seq": offset + 1, "attempt": 1, "activity_type": activity_type,
            "task_queue": "default", "args": to_payloads(args), "scheduled_time_ms": int(time.time() * 1000),
            "start_to_close_timeout_ms": None, "heartbeat_timeout_ms": None, "workflow_type": "W", **over}
    return FakeMessage(p, offset, CODEC.encode(TASK, task))


def cancel_message(p: int, offset: int, activity_seq: int, attempt: int = 1, reason: str = "user asked") -> FakeMessage:
    rec = {"workflow_id": "w-1", "run_id": "", "activity_seq": activity_seq, "attempt": attempt, "reason": reason}
    return FakeMessage(p, offset, CODEC.encode(CANCEL, rec), _headers=[("type", CANCEL.encode())])


def wait_sent(w: ActivityWorker, n: int, timeout: float = 5) -> list[Sent]:
    deadline = time.monotonic() + timeout
    while len(producer(w).sent) < n:
        assert time.monotonic() < deadline, f"only {len(producer(w).sent)} of {n} records produced"
        time.sleep(0.005)
    return producer(w).sent


def turn(w: ActivityWorker) -> None:
    """One turn of the poll loop's bookkeeping: delivery reports, undelivered records, commit."""
    w.producer.poll(0)
    w.settler.redeliver()
    w._commit()
