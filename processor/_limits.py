"""Size limits of records on the wire, in one place.

Kafka refuses a record larger than the producer's `message.max.bytes` (librdkafka default
1,000,000) or the broker's / topic's `max.message.bytes` (default 1,048,588). A record that is
refused after it was made is the worst place to learn it: inside a transaction it aborts the
whole batch, and in a delivery callback it is easy to lose. So every producer checks the encoded
value against `MAX_RECORD_BYTES` where the record is made, and turns an oversized one into a
clear error (client), a failed activity attempt (worker) or a failed workflow (processor).

`MAX_RECORD_BYTES` leaves head room under librdkafka's default for the key, the headers and the
record overhead. Set DP_MAX_RECORD_BYTES to raise it together with the broker's limits.
"""

from __future__ import annotations

import os

from processor.exceptions import PayloadTooLargeError

#: The largest encoded record value (Avro single-object bytes) any of our producers will send.
MAX_RECORD_BYTES = int(os.environ.get("DP_MAX_RECORD_BYTES") or 1_000_000 - 16_384)

#: librdkafka's producer limit: the record plus key, headers and overhead; set on every producer.
PRODUCER_MESSAGE_MAX_BYTES = MAX_RECORD_BYTES + 16_384


def too_large(what: str, size: int, limit: int = MAX_RECORD_BYTES) -> str:
    """The one wording of an oversized-record error, with what to do about it."""
    return (f"{what} is {size:,} bytes encoded, over the {limit:,}-byte record limit; pass large data by "
            "reference (store it elsewhere and send its key), or raise DP_MAX_RECORD_BYTES together with "
            "the broker's message.max.bytes")


#: The Failure type of an attempt or workflow failed because its record would not fit.
PAYLOAD_TOO_LARGE = "PayloadTooLarge"


def check_size(what: str, value: bytes, limit: int = MAX_RECORD_BYTES) -> bytes:
    """`value` if it fits; else `PayloadTooLargeError` with the too_large message, before anything
    is sent (the caller has not produced yet, so the error is the caller's to handle)."""
    if len(value) > limit:
        raise PayloadTooLargeError(too_large(what, len(value), limit))
    return value


def clip(text: str, max_chars: int) -> str:
    """`text` cut to `max_chars` characters, saying how much was cut (for messages, stack traces,
    headers that must leave room in a record)."""
    if len(text) <= max_chars:
        return text
    note = f"... [{len(text) - max_chars:,} characters cut]"
    return text[: max(0, max_chars - len(note))] + note


def dlq_value(value: bytes | None, headers: list[tuple[str, bytes]]) -> tuple[bytes | None, list[tuple[str, bytes]]]:
    """The DLQ copy of a record's value: whole if it fits, else its first MAX_RECORD_BYTES and a
    `dlq.truncated` header with the original size. A record may reach us larger than our limit
    (the broker's is higher, or another producer's limit is), and a DLQ copy that Kafka refuses
    leaves the offset it settles with nothing to settle it."""
    if value is None or len(value) <= MAX_RECORD_BYTES:
        return value, headers
    return value[:MAX_RECORD_BYTES], [*headers, ("dlq.truncated", str(len(value)).encode())]
