"""Where each owned partition's input (`wf.commands`) stands, and what follows from it.

Per owned partition: the next offset to apply (what the open transaction commits, what a rewind
seeks to) and the timestamp of the last command read (the timer horizon). Reads of the consumer
here are cheap (cached watermarks and positions), except `read_committed`.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Collection, Iterable

from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from processor._kafka.messages import ConsumerFailed, is_fatal, position

log = logging.getLogger("processor.loop")

# A committed-offsets query waits this long: a wedged consumer is found sooner, and the coordinator
# answers in milliseconds when it can.
COMMITTED_TIMEOUT_S = 10.0


class InputPositions:
    def __init__(self, topic: str, consumer: Callable[[], Consumer]) -> None:
        self.topic = topic
        self._consumer = consumer  # the loop may replace its consumer
        self.next: dict[int, int] = {}
        self.ts: dict[int, int] = {}

    def forget(self, p: int) -> None:
        self.next.pop(p, None)
        self.ts.pop(p, None)

    def clear(self) -> None:
        self.next.clear()
        self.ts.clear()

    def read_committed(self, partitions: list[int]) -> None:
        """Where each partition's input resumes: its committed offset (the start of the log if
        none was ever committed). Every transaction commits these again, so even a transaction
        that consumed nothing carries the group metadata that fences a zombie."""
        consumer = self._consumer()
        for tp in consumer.committed([TopicPartition(self.topic, p) for p in partitions],
                                     timeout=COMMITTED_TIMEOUT_S):
            offset = tp.offset
            if tp.error is not None:
                raise KafkaException(tp.error)
            if offset < 0:
                offset = consumer.get_watermark_offsets(TopicPartition(self.topic, tp.partition), timeout=30,
                                                        cached=False)[0]
            self.next[tp.partition] = offset

    def usable(self, msgs: list[Message], owned: Collection[int], outage: Callable[[str], None]) \
            -> tuple[list[Message], int]:
        """The batch's commands of owned partitions not applied yet, and how many were skipped as
        applied already. A command below its partition's next offset was applied by an earlier
        transaction of this process: the consumer can return it again after a seek (a restore in
        the middle of a batch rewinds the partitions it restores), and applying it twice would be
        a signal received twice. ConsumerFailed if the batch holds a fatal consumer error."""
        out = []
        again = 0
        applied_upto = self.next
        for m in msgs:
            err = m.error()
            if err is not None:
                if is_fatal(err):
                    raise ConsumerFailed(err)
                if err.code() != KafkaError._PARTITION_EOF:  # noqa: SLF001 - librdkafka's own code name
                    outage(f"consume: {err}")
                continue
            p, offset = position(m)
            if p not in owned:
                continue
            if offset < applied_upto.get(p, offset):
                again += 1
                continue
            out.append(m)
        return out, again

    def horizons(self, now_ms: int, owned: Iterable[int]) -> dict[int, int]:
        """How far each partition's timers may fire: `now` once its input is read to the end of
        the log, else the timestamp of the last command read -- a timer due at T waits until every
        command written before T has been applied (after a restart, results that were already
        waiting beat the timeouts that fell due meanwhile). Cheap: cached watermarks, no I/O."""
        out = {}
        for p in owned:
            nxt = self.next.get(p)
            try:
                caught_up = nxt is not None and self.at_end(p, nxt) is True
            except KafkaException:
                caught_up = False
            out[p] = now_ms if caught_up else self.ts.get(p, 0)
        return out

    def at_end(self, p: int, nxt: int | None = None) -> bool | None:
        """Whether partition p's input is read to the end of the log: `nxt` (the next offset to
        apply) or the consumer's position at the cached high watermark; None while that is not
        known. The position, because a partition whose last record is transactional (a command
        the engine forwarded or wrote: a child's start, a hand-off) ends in a commit marker,
        which takes an offset but is never a message: the position passes it, `nxt` cannot."""
        consumer = self._consumer()
        tp = TopicPartition(self.topic, p)
        high = consumer.get_watermark_offsets(tp, cached=True)[1]
        if high < 0:
            return None
        return (nxt is not None and nxt >= high) or consumer.position([tp])[0].offset >= high

    def behind(self, partitions: Iterable[int]) -> set[int]:
        """Of `partitions`, those with commands in the log beyond what has been consumed (a
        restore's backlog): an old partition of a growth hands off nothing while it is behind
        (handoff.py, `keeps`).

        The next offset to apply counts, not only the consumer's position: librdkafka's seek()
        resets position() to INVALID until the partition returns a message (rdkafka_partition.c,
        rd_kafka_toppar_seek, #3567). A partition rewound to its end after an aborted transaction
        then looked behind for as long as nothing new reached it -- and after a growth nothing
        does (producers send to the new partitions), so it never handed off and its movers' new
        partition waited for ever (found in CI: 300 s, tests/chaos/test_chaos_growth.py)."""
        out = set()
        for p in partitions:
            try:
                if self.at_end(p, self.next.get(p)) is False:
                    out.add(p)
            except KafkaException:
                out.add(p)
        return out

    def put_back(self, rest: list[Message]) -> None:
        """Commands consumed but left for the next transaction (the batch ran out of time)."""
        seek: dict[int, int] = {}
        for m in rest:
            p, offset = position(m)
            seek.setdefault(p, offset)
        consumer = self._consumer()
        for p, offset in seek.items():
            consumer.seek(TopicPartition(self.topic, p, offset))

    def seek_to_next(self, partitions: Iterable[int], owned: Collection[int]) -> None:
        """Seek the consumer to the next offset to apply of each of `partitions` that is owned."""
        consumer = self._consumer()
        for p in partitions:
            offset = self.next.get(p)
            if offset is not None and p in owned:
                try:
                    consumer.seek(TopicPartition(self.topic, p, offset))
                except KafkaException as exc:  # not fetching yet: it starts at the committed offset anyway
                    log.debug("seek %s[%d] to %d: %s", self.topic, p, offset, exc)

    def offsets(self, owned: Collection[int], committer: str) -> list[TopicPartition]:
        """What a transaction commits: the next input offset of every owned partition, with the
        committer's transactional.id as metadata (the next owner fences it if it is gone:
        identity.py)."""
        return [TopicPartition(self.topic, p, o, committer) for p, o in self.next.items() if p in owned]
