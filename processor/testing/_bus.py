"""What stands in for Kafka in the test environment: the engine's Sink, routing each record of a
committed transaction to where the real topics would take it (env.py drives it).

Records are held back until the engine's transaction commits (`commit`), and dropped if it aborts
(`abort`): what the rest of the environment sees is only what a committed Kafka transaction would
have shown a read_committed consumer.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from processor._codec import Codec
from processor._codec.partitioner import partition_for
from processor._engine.core import Headers
from processor._kafka.topics import TopicNames

CANCEL = "wf.tasks.v1.ActivityCancel"


@dataclass
class Command:
    partition: int
    key: bytes | None
    value: bytes
    headers: Headers | None


@dataclass
class Task:
    queue: str
    record: dict[str, Any]


@dataclass
class Bus:
    """The topics, in memory: what each holds once a transaction commits."""

    topics: TopicNames
    codec: Codec
    partitions: int
    commands: deque[Command] = field(default_factory=deque)
    tasks: deque[Task] = field(default_factory=deque)
    canceled: dict[tuple[str, str, int, int], str] = field(default_factory=dict)  # attempt -> reason
    replies: dict[str, dict[str, Any]] = field(default_factory=dict)  # request id -> CommandReply
    completions: dict[str, dict[str, tuple[str, dict[str, Any]]]] = field(default_factory=dict)  # id -> run -> rec
    latest: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)  # id -> its last completion
    events: dict[int, list[tuple[bytes | None, bytes | None]]] = field(default_factory=dict)  # wf.events per partition
    dead_letters: list[tuple[bytes | None, bytes | None, Headers | None]] = field(default_factory=list)
    _open: list[tuple[str, int | None, bytes, bytes | None, Headers | None]] = field(default_factory=list)

    # -- the engine's Sink ---------------------------------------------------------------------

    def produce(self, topic: str, partition: int | None, key: bytes, value: bytes | None,
                headers: Headers | None = None) -> None:
        self._open.append((topic, partition, key, value, list(headers) if headers else None))

    def task_topic(self, queue: str) -> str:
        return self.topics.tasks(queue)

    def task_partitions(self, queue: str) -> int:
        return 1

    def reply_partitions(self) -> int:
        return 1

    # -- the transaction -----------------------------------------------------------------------

    def abort(self) -> None:
        self._open.clear()

    def commit(self) -> None:
        records, self._open = self._open, []
        for topic, partition, key, value, headers in records:
            self._deliver(topic, partition, key, value, headers)

    def home(self, key: bytes) -> int:
        """The partition of a workflow id's records (the engine's producers' partitioner)."""
        return partition_for(key, self.partitions)

    def send(self, key: bytes, value: bytes, headers: Headers | None) -> None:
        """A command from outside (the environment's client calls, a worker's result)."""
        self.commands.append(Command(self.home(key), key, value, headers))

    def _deliver(self, topic: str, partition: int | None, key: bytes, value: bytes | None,
                 headers: Headers | None) -> None:
        t = self.topics
        if topic == t.commands:
            assert value is not None, "the engine writes no tombstone to the commands topic"
            p = partition if partition is not None else self.home(key)
            self.commands.append(Command(p, key, value, headers))
        elif topic == t.events:
            self.events.setdefault(partition or 0, []).append((key, value))
        elif topic == t.replies:
            assert value is not None
            _, rec = self.codec.decode(value)
            self.replies[rec["request_id"]] = rec
        elif topic == t.completions:
            assert value is not None
            name, rec = self.codec.decode(value)
            completion = (name.rpartition(".")[2], rec)
            self.completions.setdefault(rec["workflow_id"], {})[rec.get("run_id", "")] = completion
            self.latest[rec["workflow_id"]] = completion
        elif topic == t.dlq:
            self.dead_letters.append((key, value, headers))
        elif topic.startswith(t.tasks("")):
            assert value is not None
            name, rec = self.codec.decode(value)
            if name == CANCEL:
                attempt = (rec["workflow_id"], rec["run_id"], rec["activity_seq"], rec["attempt"])
                self.canceled[attempt] = rec["reason"]
            else:
                self.tasks.append(Task(topic[len(t.tasks("")):], rec))
        # wf.timers and wf.control: the engine's own state, kept in its stores already
