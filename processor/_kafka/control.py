"""The control topic (`<prefix>.control`, compacted, one partition): the layout of the
co-partitioned topics and the progress of a growth (engine/growth.py, engine/handoff.py).

Keys: `layout` -> Layout JSON; `handoff/<epoch>/<old partition>` -> `{"handed_off": n}`, written
by the old partition's owner in the transaction that finishes its hand-off; `received/<epoch>/<new
partition>` -> `1`, by the new partition's owner in the transaction that applies the last of it. Small and compacted,
so it is read whole, from the start, whenever it is needed.
"""

from __future__ import annotations

import json
import time
import uuid

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Producer, TopicPartition

from processor._engine.growth import LAYOUT_KEY, Layout
from processor._kafka.config import client_config
from processor._kafka.messages import consume_available, watermarks
from processor._kafka.topics import prefix_of
from processor.exceptions import KafkaUnavailableError


def handoff_key(epoch: int, partition: int) -> bytes:
    return f"handoff/{epoch}/{partition}".encode()


def received_key(epoch: int, partition: int) -> bytes:
    return f"received/{epoch}/{partition}".encode()


def handoff_value(count: int) -> bytes:
    return json.dumps({"handed_off": count}).encode()


def read_control(bootstrap: str, topic: str, timeout: float = 15.0) -> dict[bytes, bytes]:
    """Every live key of the control topic and its latest value (read_committed)."""
    ours = {"log_level": 3, "fetch.wait.max.ms": 10}
    consumer = Consumer(client_config("consumer", bootstrap, "control", ours, fixed={
        "group.id": f"{prefix_of(topic)}.control-{uuid.uuid4().hex}", "isolation.level": "read_committed",
        "enable.auto.commit": False}))
    tp = TopicPartition(topic, 0)
    try:
        _, high = watermarks(consumer, tp, timeout)  # retries a leader still being elected (a new topic)
        out: dict[bytes, bytes] = {}
        if high <= 0:
            return out
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while consumer.position([tp])[0].offset < high:
            if time.monotonic() > deadline:
                raise KafkaUnavailableError(f"reading {topic} timed out")
            # Returns with the first record (consume(n, t) waits for all n or all of t), and checks
            # the position every 20 ms: a log ending in a commit marker is passed by a fetch that
            # returns no record.
            for m in consume_available(consumer, 500, 0.02):
                key, value = m.key(), m.value()
                if m.error() is not None or key is None:
                    continue
                if value is None:
                    out.pop(key, None)
                else:
                    out[key] = value
        return out
    except KafkaException as exc:
        raise KafkaUnavailableError(f"cannot read {topic}: {exc.args[0]}") from None
    finally:
        consumer.close()


def read_layout(bootstrap: str, topic: str) -> tuple[Layout | None, dict[bytes, bytes]]:
    control = read_control(bootstrap, topic)
    raw = control.get(LAYOUT_KEY)
    return (Layout.from_bytes(raw) if raw is not None else None), control


def settled(layout: Layout, control: dict[bytes, bytes]) -> bool:
    """Whether every old partition of the last growth has finished its hand-off and every new
    partition has applied it."""
    return all(handoff_key(layout.epoch, p) in control for p in range(layout.previous)) and \
        all(received_key(layout.epoch, q) in control for q in range(layout.previous, layout.partitions)
            if layout.previous)


def write_layout(bootstrap: str, topic: str, layout: Layout) -> None:
    producer = Producer(client_config("producer", bootstrap, "control", {"log_level": 3},
                                      fixed={"enable.idempotence": True}))
    producer.produce(topic, layout.to_bytes(), LAYOUT_KEY, partition=0)
    if producer.flush(15) != 0:
        raise KafkaUnavailableError(f"could not write the layout to {topic}")
