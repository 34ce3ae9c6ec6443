"""What the engine's parts share: the record-name prefixes, the Sink port, a cached workflow
(`Live`) and the counters. Kept apart so the rule modules (activities.py, requests.py) and the
engine import it without importing each other."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from processor._engine.state import Summary
from processor._runtime import WorkflowInstance

EV = "wf.events.v1."
CMD = "wf.commands.v1."
Headers = list[tuple[str, bytes]]


class Sink(Protocol):
    """Where the engine's output records go (the open Kafka transaction, or a list in tests)."""

    def produce(self, topic: str, partition: int | None, key: bytes, value: bytes | None,
                headers: Headers | None = None) -> None: ...

    def task_topic(self, queue: str) -> str: ...

    def task_partitions(self, queue: str) -> int:
        """The live partition count of the queue's task topic (after task_topic(queue))."""
        ...

    def reply_partitions(self) -> int:
        """The partition count of the replies topic."""
        ...


@dataclass
class Live:
    summary: Summary
    instance: WorkflowInstance | None


@dataclass
class Counters:
    commands: int = 0
    events: int = 0
    dlq: int = 0
    duplicates: int = 0
    forwarded: int = 0
    timers_fired: int = 0
    replays: int = 0
