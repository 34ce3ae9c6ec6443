"""The dead-letter topic for operators: `processor dlq list` and `processor dlq redrive`.

A record on `<prefix>.dlq` is the original record (key, value, headers) plus where it came from
and why (`dlq.reason`, `dlq.topic`, `dlq.partition`, `dlq.offset`; docs/protocol.md). Redrive
puts chosen records back on the topic they came from -- after the fix (a deploy that knows the
workflow type, a topic created, ...) -- with their own key, value and headers and a
`dlq.redriven-from` header naming the DLQ record.

`redrive --all` is exactly-once: it reads from where the last `--all` stopped (the consumer group
`<prefix>.dlq-redrive`) and writes the copies and that position in one Kafka transaction, so run
twice it sends nothing the second time, and a crash in between sends nothing twice. `--at P:O`
redrives the named records whatever was redriven before (the operator's explicit choice).

The rules (what a record is, whether and where it may go back) are pure functions here; the
mechanism is `DeadLetters`.
"""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, cast

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition

from processor._codec import Codec, default_codec
from processor._kafka.config import client_config
from processor._kafka.messages import high_watermarks
from processor._kafka.topics import TopicNames
from processor._visibility.record import jsonable_event
from processor.exceptions import ConfigError, DecodeError, KafkaUnavailableError

__all__ = ["DeadLetter", "DeadLetters", "parse_at", "redrive_problem", "redriven_headers"]

_DLQ_HEADERS = ("dlq.reason", "dlq.topic", "dlq.partition", "dlq.offset", "dlq.truncated", "dlq.redriven-from")


@dataclass(frozen=True)
class DeadLetter:
    partition: int  # on the DLQ topic
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k == name:
                return v.decode(errors="replace") if v is not None else ""
        return None

    @property
    def reason(self) -> str:
        return self.header("dlq.reason") or ""

    @property
    def source(self) -> str:
        """Where it came from: topic[partition]@offset."""
        topic, partition, offset = (self.header(f"dlq.{k}") or "?" for k in ("topic", "partition", "offset"))
        return f"{topic}[{partition}]@{offset}"

    def view(self, codec: Codec) -> dict[str, Any]:
        """What `dlq list` shows: the record decoded when it decodes, else its bytes in base64."""
        record: Any = None
        record_type, problem = None, None
        if self.value is not None:
            try:
                name, record = codec.decode(self.value)
                record_type, record = name, jsonable_event(record)
            except DecodeError as exc:
                problem = str(exc)
        return {"dlq_partition": self.partition, "dlq_offset": self.offset, "at": self.timestamp_ms,
                "reason": self.reason, "from": self.source, "topic": self.header("dlq.topic"),
                "key": self.key.decode(errors="replace") if self.key is not None else None,
                "record_type": record_type, "record": record, "undecodable": problem,
                "value_base64": base64.b64encode(self.value).decode() if self.value is not None else None,
                "redriven_from": self.header("dlq.redriven-from")}


def parse_at(text: str) -> tuple[int, int]:
    """`P:O` (a DLQ partition and offset, as `dlq list` prints them) -> (P, O)."""
    partition, sep, offset = text.partition(":")
    if not sep or not partition.isdigit() or not offset.isdigit():
        raise ConfigError(f"--at takes PARTITION:OFFSET of a DLQ record (as `processor dlq list` shows); got {text!r}")
    return int(partition), int(offset)


def redrive_problem(letter: DeadLetter, topics: TopicNames) -> str | None:
    """None if the record may go back where it came from, else why not."""
    topic = letter.header("dlq.topic")
    if letter.value is None:
        return "it has no value"
    if letter.header("dlq.truncated") is not None:
        return "it was cut to the size limit when dead-lettered (dlq.truncated): the original is gone"
    if topic != topics.commands:
        return f"it came from {topic or 'an unknown topic'}, not {topics.commands}: only commands are redriven"
    return None


def redriven_headers(letter: DeadLetter) -> list[tuple[str, bytes]]:
    """The record's own headers (the dlq.* ones dropped) and where this copy comes from."""
    own = [(k, v) for k, v in letter.headers if k not in _DLQ_HEADERS]
    return [*own, ("dlq.redriven-from", f"{letter.partition}:{letter.offset}".encode())]


class DeadLetters:
    """Reads and redrives one prefix's DLQ topic."""

    def __init__(self, bootstrap: str, prefix: str, timeout: float = 30.0) -> None:
        self.bootstrap, self.topics, self.timeout = bootstrap, TopicNames(prefix), timeout
        self.codec = default_codec()

    def _consumer(self, group: str) -> Consumer:
        return Consumer(client_config("consumer", self.bootstrap, "dlq", fixed={
            "group.id": group, "isolation.level": "read_committed", "enable.auto.commit": False,
            "auto.offset.reset": "earliest"}))

    def _partitions(self, consumer: Consumer) -> list[int]:
        md = consumer.list_topics(self.topics.dlq, timeout=self.timeout)
        found = md.topics.get(self.topics.dlq)
        if found is None or found.error is not None:
            raise ConfigError(f"topic {self.topics.dlq} does not exist: create the topics (`processor topics create`)")
        return sorted(found.partitions)

    def read(self, consumer: Consumer, starts: dict[int, int]) -> Iterator[DeadLetter]:
        """Every record from `starts` (partition -> offset) to the end of each partition now."""
        ends = high_watermarks(self.bootstrap, [TopicPartition(self.topics.dlq, p) for p in starts], self.timeout)
        for p, start in sorted(starts.items()):
            end = ends[(self.topics.dlq, p)]
            if start >= end:
                continue
            consumer.assign([TopicPartition(self.topics.dlq, p, start)])
            deadline = time.monotonic() + self.timeout
            position = start
            while position < end:
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(f"reading {self.topics.dlq}[{p}] timed out at offset {position}")
                msgs = consumer.consume(500, timeout=0.2)
                for m in msgs:
                    if m.error() is not None:
                        continue
                    offset = int(m.offset() or 0)
                    position = offset + 1
                    headers = [(str(k), v if isinstance(v, bytes) else (v or "").encode())
                               for k, v in cast(list[tuple[str, Any]], m.headers() or [])]
                    yield DeadLetter(p, offset, m.timestamp()[1], m.key(), m.value(), headers)
                if not msgs:  # transaction markers end the partition without a record
                    position = max(position, consumer.position([TopicPartition(self.topics.dlq, p)])[0].offset)

    def all(self, limit: int | None = None) -> list[DeadLetter]:
        consumer = self._consumer(f"{self.topics.prefix}.dlq-list-{uuid.uuid4().hex[:12]}")
        try:
            out = []
            for letter in self.read(consumer, dict.fromkeys(self._partitions(consumer), 0)):
                out.append(letter)
                if limit is not None and len(out) >= limit:
                    break
            return out
        except KafkaException as exc:
            raise KafkaUnavailableError(f"reading {self.topics.dlq} failed: {exc.args[0]}") from None
        finally:
            consumer.close()

    def redrive(self, at: Sequence[tuple[int, int]] = (), everything: bool = False,
                dry_run: bool = False) -> tuple[list[DeadLetter], list[tuple[DeadLetter, str]]]:
        """Put records back on wf.commands: those `at` names, or (`everything`) every record after
        the last `--all`. Returns (redriven, skipped with why). `dry_run`: decide, send nothing."""
        group = f"{self.topics.prefix}.dlq-redrive"
        consumer = self._consumer(group if everything else f"{group}-at-{uuid.uuid4().hex[:12]}")
        try:
            partitions = self._partitions(consumer)
            if everything:
                committed = consumer.committed([TopicPartition(self.topics.dlq, p) for p in partitions],
                                               timeout=self.timeout)
                starts = {tp.partition: max(tp.offset, 0) for tp in committed}
                chosen = list(self.read(consumer, starts))
            else:
                wanted = set(at)
                unknown = sorted(p for p, _ in wanted if p not in partitions)
                if unknown:
                    raise ConfigError(f"{self.topics.dlq} has no partition {unknown[0]}")
                firsts: dict[int, int] = {}
                for p, o in wanted:
                    firsts[p] = min(firsts.get(p, o), o)
                chosen = [d for d in self.read(consumer, firsts) if (d.partition, d.offset) in wanted]
                missing = wanted - {(d.partition, d.offset) for d in chosen}
                if missing:
                    p, o = sorted(missing)[0]
                    raise ConfigError(f"no DLQ record at {p}:{o} (`processor dlq list` shows what is there)")
            go = [d for d in chosen if redrive_problem(d, self.topics) is None]
            skipped = [(d, problem) for d in chosen if (problem := redrive_problem(d, self.topics)) is not None]
            if dry_run:
                return go, skipped
            self._send(consumer, go, everything, chosen)
            return go, skipped
        except KafkaException as exc:
            raise KafkaUnavailableError(f"redriving from {self.topics.dlq} failed: {exc.args[0]}") from None
        finally:
            consumer.close()

    def _send(self, consumer: Consumer, go: list[DeadLetter], everything: bool, seen: list[DeadLetter]) -> None:
        """The copies, and with --all the new redrive position, in one transaction."""
        producer = Producer(client_config("producer", self.bootstrap, "dlq-redrive", fixed={
            "transactional.id": f"{self.topics.prefix}.dlq-redrive", "enable.idempotence": True}))
        producer.init_transactions(self.timeout)
        producer.begin_transaction()
        try:
            for d in go:
                producer.produce(self.topics.commands, d.value, d.key, headers=cast(Any, redriven_headers(d)))
            if everything and seen:
                last: dict[int, int] = {}
                for d in seen:
                    last[d.partition] = max(last.get(d.partition, -1), d.offset)
                offsets = [TopicPartition(self.topics.dlq, p, o + 1) for p, o in sorted(last.items())]
                producer.send_offsets_to_transaction(offsets, consumer.consumer_group_metadata(), self.timeout)
            producer.commit_transaction(self.timeout)
        except BaseException:
            try:
                producer.abort_transaction(self.timeout)
            except KafkaException:
                pass
            raise
        finally:
            producer.flush(1)
