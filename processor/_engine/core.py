"""What the engine's parts share: the record-name prefixes, the Sink port, a cached workflow
(`Live`) and the counters. Kept apart so the rule modules (activities.py, requests.py) and the
engine import it without importing each other."""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from processor._engine.state import Summary
from processor._payload import Payload
from processor._runtime import Completion, WorkflowInstance

if TYPE_CHECKING:
    from processor._codec import Codec
    from processor._engine.deadline import Deadline
    from processor._engine.growth import Layout
    from processor._engine.outbox import Outbox
    from processor._engine.settings import Settings
    from processor._engine.store import PartitionStore
    from processor._kafka.topics import TopicNames
    from processor._metrics import ProcessorMetrics
    from processor.workflow import WorkflowDefinition

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
    handed_off: int = 0  # workflows sent to their new home after a growth (handoff.py)
    parked: int = 0  # commands parked for a hand-off (handoff.py), like the others counted since start
    redelivered: int = 0  # commands the consumer returned again after they were applied (loop.py)
    pruned: int = 0  # closed workflows whose history retention removed (retention.py)
    cache_hits: int = 0  # workflow loads the instance cache served (engine.py _load)
    cache_misses: int = 0  # workflow loads that read the store


class EngineParts:
    """What the Engine (engine.py) and its rule modules (activities.py, requests.py, handoff.py,
    timers.py) provide to each other: declared once, for the type checker; nothing at run time."""

    if TYPE_CHECKING:
        settings: Settings
        topics: TopicNames
        partitions: int
        layout: Layout
        handing_off: set[int]
        behind: set[int]
        waiting: set[int]
        _scan_after: dict[int, str]
        codec: Codec
        sink: Sink
        outbox: Outbox
        counters: Counters
        metrics: ProcessorMetrics
        now_ms: int
        stores: dict[int, PartitionStore]
        definitions: dict[str, WorkflowDefinition]
        _update_waiters: dict[tuple[str, str], list[dict[str, Any]]]
        _beat_details: dict[tuple[str, str, int], tuple[int, Payload]]
        deadline: Deadline
        cache: OrderedDict[str, Live]

        def _load(self, partition: int, wid: str) -> Live | None: ...
        def _evict(self, wid: str) -> None: ...
        def _prune(self, partition: int, wid: str) -> None: ...  # retention.py
        # provided by the other rule modules (activities.py, handoff.py), used by timers.py
        firing: tuple[int, str, str] | None
        def moved_away(self, partition: int, wid: str) -> bool: ...
        def keeps(self, partition: int, wid: str) -> bool: ...
        def dead_letter(self, key: bytes | None, value: bytes | None, headers: Headers | None, partition: int,
                        offset: int, reason: str, topic: str | None = None) -> None: ...
        def _dispatch(self, partition: int, wid: str, live: Live, scheduled: dict[str, Any], attempt: int) -> None: ...
        def _scheduled_event(self, partition: int, wid: str, live: Live, seq: int) -> dict[str, Any]: ...
        def _cancel_attempts(self, partition: int, wid: str, run_id: str, pending: dict[int, list[int]],
                             reason: str) -> None: ...
        def _attempt_failed(self, partition: int, wid: str, live: Live, seq: int, attempt: int,
                            failure: dict[str, Any]) -> None: ...
        def apply_decoded(self, partition: int, key: bytes | None, value: bytes, headers: Headers | None,
                          offset: int, name: str, rec: dict[str, Any]) -> None: ...
        def _input(self, partition: int, wid: str, live: Live, event: dict[str, Any]) -> None: ...
        def _append(self, partition: int, wid: str, live: Live, event: dict[str, Any]) -> None: ...
        def _set_timer(self, partition: int, wid: str, tkey: str, due_ms: int | None) -> None: ...
        def _addressed(self, rec: dict[str, Any], live: Live) -> str | None: ...
        def _trace_parent(self, live: Live) -> str | None: ...
        def _activate(self, wid: str, instance: WorkflowInstance, events: list[dict[str, Any]], *,
                      replay: bool) -> Completion: ...
