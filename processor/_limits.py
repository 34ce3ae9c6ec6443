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

#: The largest encoded record value (Avro single-object bytes) any of our producers will send.
MAX_RECORD_BYTES = int(os.environ.get("DP_MAX_RECORD_BYTES") or 1_000_000 - 16_384)

#: librdkafka's producer limit: the record plus key, headers and overhead; set on every producer.
PRODUCER_MESSAGE_MAX_BYTES = MAX_RECORD_BYTES + 16_384


def too_large(what: str, size: int, limit: int = MAX_RECORD_BYTES) -> str:
    """The one wording of an oversized-record error, with what to do about it."""
    return (f"{what} is {size:,} bytes encoded, over the {limit:,}-byte record limit; pass large data by "
            "reference (store it elsewhere and send its key), or raise DP_MAX_RECORD_BYTES together with "
            "the broker's message.max.bytes")
