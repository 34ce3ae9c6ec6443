"""Typed views of a consumed confluent_kafka Message.

The stubs type every accessor as Optional (a Message can also be an error event); messages that
reach these helpers were filtered for `error() is None`, so partition and offset are present.
"""

from __future__ import annotations

import logging
import time

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processor._kafka.config import client_config
from processor._kafka.topics import prefix_of

log = logging.getLogger("processor.kafka")

# librdkafka's own "_TRANSPORT"/"_TIMED_OUT" codes are underscored by its naming, not private.
_TRANSIENT = {KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
              KafkaError._TRANSPORT, KafkaError._TIMED_OUT}  # noqa: SLF001

Headers = list[tuple[str, bytes]]


def position(m: Message) -> tuple[int, int]:
    p, o = m.partition(), m.offset()
    assert p is not None and o is not None, "a data message always has partition and offset"
    return p, o


class ConsumerFailed(Exception):  # noqa: N818 - a condition of the consumer, caught by its owner
    """A fatal consumer error among consumed messages (librdkafka's _FATAL event): the consumer
    serves nothing again and must be replaced. Seen in CI after a broker outage longer than the
    session timeout (librdkafka 2.16, load ~10): a static member rejoined and was then fenced "by
    other consumer with same group.instance.id" -- itself (librdkafka #3437)."""

    def __init__(self, err: KafkaError) -> None:
        super().__init__(err.str())
        self.error = err


def is_fatal(err: KafkaError) -> bool:
    return bool(err.code() == KafkaError._FATAL)  # noqa: SLF001 - librdkafka's code name


def data_messages(msgs: list[Message]) -> list[Message]:
    """The data messages of a consumed batch, error events dropped; ConsumerFailed on a fatal one."""
    out = []
    for m in msgs:
        err = m.error()
        if err is None:
            out.append(m)
        elif is_fatal(err):
            raise ConsumerFailed(err)
    return out


def headers(m: Message) -> Headers | None:
    raw = m.headers()
    if not raw:
        return None
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if isinstance(v, bytes) else (v or "").encode()) for k, v in items]


def dlq_headers(original: Headers | None, reason: str, topic: str, partition: int, offset: int) -> Headers:
    """The record's own headers plus where it came from and why it is dead-lettered (the layout
    docs/architecture.md promises operators)."""
    return [*(original or []), ("dlq.reason", reason.encode()), ("dlq.topic", topic.encode()),
            ("dlq.partition", str(partition).encode()), ("dlq.offset", str(offset).encode())]


def consume_available(consumer: Consumer, max_messages: int, timeout: float) -> list[Message]:
    """Wait up to `timeout` for the first message, then take what is already fetched, up to max.

    `Consumer.consume(n, timeout)` waits until n messages arrived OR the timeout passed, so a
    lone command would sit out the whole timeout: at low load that is pure added latency.
    """
    msgs = consumer.consume(max_messages, 0)
    if msgs:
        return msgs
    msgs = consumer.consume(1, timeout)
    if msgs and max_messages > 1:
        msgs.extend(consumer.consume(max_messages - 1, 0))
    return msgs


def high_watermarks(bootstrap: str, tps: list[TopicPartition], timeout: float = 30.0) -> dict[tuple[str, int], int]:
    """The high watermark (end of the log, open transactions included) of each (topic, partition).

    A read_committed consumer's watermark query answers the LAST STABLE offset, which stops in
    front of any open transaction. Reading only that far would miss what a slow zombie commits
    a moment later; reading (read_committed) until the position passes the high watermark waits
    for every transaction open now to commit or abort.
    """
    group = f"{prefix_of(tps[0].topic)}.probe" if tps else "probe"
    probe = Consumer(client_config("consumer", bootstrap, "probe", fixed={
        "group.id": group, "isolation.level": "read_uncommitted", "enable.auto.commit": False}))
    # One deadline for all of them: a broker that is down must cost `timeout`, not one per
    # partition (a processor restoring 4 partitions of 2 topics blocked 4 minutes without a
    # heartbeat, and its supervisor killed it as stalled).
    deadline = time.monotonic() + timeout
    try:
        return {(tp.topic, tp.partition): watermarks(probe, tp, max(0.0, deadline - time.monotonic()))[1]
                for tp in tps}
    finally:
        probe.close()


def watermarks(consumer: Consumer, tp: TopicPartition, timeout: float = 30.0) -> tuple[int, int]:
    """(low, high) of a partition, retrying the transient errors of a cluster that is still
    electing leaders (NOT_LEADER_FOR_PARTITION right after topic creation, a broker restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            low, high = consumer.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()),
                                                       cached=False)
            return int(low), int(high)
        except KafkaException as exc:
            err = exc.args[0]
            if not (err.retriable() or err.code() in _TRANSIENT) or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def close_quietly(consumer: Consumer) -> None:
    """Close a consumer that is abandoned either way (replaced, or its process is stopping)."""
    try:
        consumer.close()
    except Exception as exc:  # noqa: BLE001 - the consumer is abandoned either way
        log.warning("closing the replaced consumer failed: %s", exc)
