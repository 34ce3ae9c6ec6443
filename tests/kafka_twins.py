"""In-memory twins of confluent_kafka objects that unit tests share (no broker)."""

from __future__ import annotations

from dataclasses import dataclass, field

from confluent_kafka import KafkaError


@dataclass
class FakeMessage:
    """A consumed record: what the loops read off a confluent_kafka.Message."""

    _partition: int
    _offset: int
    _value: bytes
    _key: bytes = b"w-1"
    _headers: list[tuple[str, bytes]] = field(default_factory=list)
    _ts: int = 0
    _topic: str = ""

    def error(self) -> None:
        return None

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def key(self) -> bytes:
        return self._key

    def value(self) -> bytes:
        return self._value

    def headers(self) -> list[tuple[str, bytes]]:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return (1, self._ts)

    def topic(self) -> str:
        return self._topic


@dataclass
class ErrorEvent:
    """A consumer error event: librdkafka hands its errors (a fatal one too) to consume() as messages."""

    err: KafkaError

    def error(self) -> KafkaError:
        return self.err

    def partition(self) -> None:
        return None

    def offset(self) -> None:
        return None


def fenced() -> ErrorEvent:
    return ErrorEvent(KafkaError(KafkaError._FATAL, "Fatal error: Broker: Static consumer fenced by other "  # noqa: SLF001
                                 "consumer with same group.instance.id", fatal=True))


class NoWatcher:
    """Stands in for the client's reply/completion reader (processor/_watcher.py) in unit tests
    of what a client does before and while sending, on no broker: no reply ever comes."""

    reply_partition = 0

    def __init__(self, *args: object) -> None:
        pass

    def expect_reply(self, *args: object) -> None:
        pass

    def forget_reply(self, *args: object) -> None:
        pass

    def watch(self, *args: object) -> None:
        pass

    def watching(self, *args: object) -> bool:
        return True

    def pin(self, *args: object) -> None:
        pass

    def unpin(self, *args: object) -> None:
        pass

    def close(self) -> None:
        pass
