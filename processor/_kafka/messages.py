"""Typed views of a consumed confluent_kafka Message.

The stubs type every accessor as Optional (a Message can also be an error event); messages that
reach these helpers were filtered for `error() is None`, so partition and offset are present.
"""

from __future__ import annotations

from confluent_kafka import Consumer, Message

Headers = list[tuple[str, bytes]]


def position(m: Message) -> tuple[int, int]:
    p, o = m.partition(), m.offset()
    assert p is not None and o is not None, "a data message always has partition and offset"
    return p, o


def headers(m: Message) -> Headers | None:
    raw = m.headers()
    if not raw:
        return None
    items = raw.items() if isinstance(raw, dict) else raw
    return [(str(k), v if isinstance(v, bytes) else (v or "").encode()) for k, v in items]


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
