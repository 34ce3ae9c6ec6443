"""The engine's Sink in a processor: everything the engine writes goes into the open transaction.

It also tells restore where to start: the offset of the first record each transaction writes to
a `wf.events` or `wf.timers` partition (loop.py, step 4; store.py keeps it after step 5).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from confluent_kafka import KafkaError, Message, Producer

from processor._engine.core import Headers
from processor._engine.settings import Settings
from processor._engine.store import PartitionStore
from processor._kafka.messages import position
from processor._kafka.topics import ensure_topics, task_queue_spec


class TransactionSink:
    """Produce into the open transaction; track the wf.events/wf.timers offsets restore needs."""

    def __init__(self, settings: Settings, producer: Producer,
                 store_of: Callable[[int], PartitionStore | None]) -> None:
        self._settings = settings
        self._producer = producer
        self._store_of = store_of
        self._events = settings.topics.events
        self._timers = settings.topics.timers
        self._task_topics: dict[str, int] = {}  # task topic -> live partition count
        self._replies: int | None = None  # partition count of the replies topic
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
        store = self._store_of(p)
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

    def use(self, producer: Producer) -> None:
        """The loop replaced its producer (after a fatal error)."""
        self._producer = producer

    def task_topic(self, queue: str) -> str:
        name = self._settings.topics.tasks(queue)
        if name not in self._task_topics:
            ensure_topics(self._settings.bootstrap, [task_queue_spec(queue, self._settings.prefix)],
                          exact_partitions=False)
            md = self._producer.list_topics(name, timeout=30)
            self._task_topics[name] = max(1, len(md.topics[name].partitions))
        return name

    def task_partitions(self, queue: str) -> int:
        return self._task_topics[self._settings.topics.tasks(queue)]

    def reply_partitions(self) -> int:
        if self._replies is None:
            name = self._settings.topics.replies
            md = self._producer.list_topics(name, timeout=30)
            self._replies = max(1, len(md.topics[name].partitions))
        return self._replies
