"""Typed views of a consumed confluent_kafka Message.

The stubs type every accessor as Optional (a Message can also be an error event); messages that
reach these helpers were filtered for `error() is None`, so partition and offset are present.
"""

from __future__ import annotations

from confluent_kafka import Message

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
