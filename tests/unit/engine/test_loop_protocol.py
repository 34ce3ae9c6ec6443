"""The commit protocol of ProcessorLoop, over in-memory twins of the Kafka clients.

What is pinned here (issue 6): every transaction that writes is fenced with the group metadata,
also one that only fires timers; a dead-lettered poison command is consumed once and the consumer
moves past it; retriable errors are retried, a fatal one replaces the producer and rewinds.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException, TopicPartition
from engine_harness import CMD, CODEC, ids_on_partition

from processor import _payload
from processor._engine.loop import ProcessorLoop
from processor._engine.settings import Settings
from processor._engine.store import PartitionStore
from tests.apps.hardening import Sleeper
from tests.kafka_twins import FakeMessage, fenced

PREFIX = "t"
COMMANDS = f"{PREFIX}.commands"
T0 = 1_700_000_000_000


class FakeProducer:
    """Records the transactional calls; `fail` maps a call name to errors raised on its next calls."""

    def __init__(self, log: list[tuple[str, Any]], fail: dict[str, list[KafkaError]]) -> None:
        self.log = log
        self.fail = fail
        self.produced: list[tuple[str, Any]] = []

    def _call(self, name: str, arg: Any = None) -> None:
        errors = self.fail.get(name)
        if errors:
            raise KafkaException(errors.pop(0))
        self.log.append((name, arg))

    def init_transactions(self, _timeout: float) -> None:
        self._call("init")

    def begin_transaction(self) -> None:
        self._call("begin")

    def produce(self, topic: str, **kwargs: Any) -> None:
        self.produced.append((topic, kwargs))

    def send_offsets_to_transaction(self, offsets: list[TopicPartition], metadata: Any, _timeout: float) -> None:
        self._call("send_offsets", ({tp.partition: tp.offset for tp in offsets}, metadata))

    def commit_transaction(self, _timeout: float) -> None:
        self._call("commit")

    def abort_transaction(self, _timeout: float) -> None:
        self._call("abort")

    def flush(self, _timeout: float) -> int:
        return 0

    def poll(self, _timeout: float) -> int:
        return 0


class FakeConsumer:
    def __init__(self, high: dict[int, int]) -> None:
        self.high = high
        self.positions: dict[int, int] = {}  # where the consumer would fetch next; unset: none yet
        self.seeks: list[tuple[int, int]] = []

    def position(self, tps: list[TopicPartition]) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, self.positions.get(tp.partition, -1001)) for tp in tps]

    def committed(self, tps: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        return [TopicPartition(tp.topic, tp.partition, 0) for tp in tps]

    def get_watermark_offsets(self, tp: TopicPartition, timeout: float = 0, cached: bool = False) -> tuple[int, int]:
        return 0, self.high.get(tp.partition, 0)

    def consumer_group_metadata(self) -> str:
        return "group-metadata"

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))
        self.positions.pop(tp.partition, None)  # as librdkafka: INVALID until a message is returned

    def pause(self, tps: list[TopicPartition]) -> None:
        self.paused = sorted(tp.partition for tp in tps)

    def subscribe(self, topics: list[str], **_callbacks: Any) -> None:
        self.subscribed = list(topics)

    def close(self) -> None:
        self.closed = True


class Rig:
    def __init__(self, root: Path, fail: dict[str, list[KafkaError]] | None = None) -> None:
        self.log: list[tuple[str, Any]] = []
        self.fail = fail or {}
        self.producers: list[FakeProducer] = []
        self.consumer = FakeConsumer({0: 0, 1: 0})
        settings = Settings(bootstrap="unused:9092", prefix=PREFIX, state_dir=root)

        def factory(_config: dict[str, Any]) -> Any:
            producer = FakeProducer(self.log, self.fail)
            self.producers.append(producer)
            return producer

        self.loop = ProcessorLoop(settings, [Sleeper], producer_factory=factory,
                                  consumer=self.consumer, partitions=2)  # type: ignore[arg-type]
        for p in (0, 1):
            self.loop.engine.open_partition(p, PartitionStore(root / f"p{p}"))
        self.loop.input.read_committed([0, 1])  # what _restore does after restoring
        self.offsets = {0: 0, 1: 0}

    def start(self, wid: str, seconds: float, p: int) -> FakeMessage:
        rec = {"workflow_id": wid, "workflow_type": "Sleeper", "args": _payload.to_payloads([seconds])}
        m = FakeMessage(p, self.offsets[p], CODEC.encode(CMD + "StartWorkflow", rec), wid.encode(), [], T0, COMMANDS)
        self.offsets[p] += 1
        self.consumer.high[p] = self.offsets[p]
        return m

    def close(self) -> None:
        for p in list(self.loop.engine.stores):
            self.loop.engine.close_partition(p)

    def calls(self) -> list[str]:
        return [name for name, _ in self.log]


@pytest.fixture
def rig(tmp_path: Path) -> Any:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_a_transaction_that_only_fires_timers_is_fenced(rig: Rig) -> None:
    (wid,) = ids_on_partition(0, 1, stem="sleep")
    rig.loop._transaction([rig.start(wid, 5.0, 0)], T0)  # noqa: SLF001
    rig.log.clear()
    assert rig.loop.engine.has_due(T0 + 5_000, rig.loop._horizons(T0 + 5_000))  # noqa: SLF001
    rig.loop._transaction([], T0 + 5_000)  # noqa: SLF001 - a timer-only transaction
    assert rig.calls() == ["begin", "send_offsets", "commit"]
    offsets, metadata = rig.log[1][1]
    assert metadata == "group-metadata"
    assert offsets == {0: 1, 1: 0}, "every owned partition's next input offset"
    produced = [topic for topic, _ in rig.producers[-1].produced]
    assert f"{PREFIX}.completions" in produced


def test_a_timer_waits_for_input_not_yet_read(rig: Rig) -> None:
    (wid,) = ids_on_partition(0, 1, stem="sleep")
    rig.loop._transaction([rig.start(wid, 5.0, 0)], T0)  # noqa: SLF001
    rig.consumer.high[0] = 7  # six more commands are in the log, not read yet
    horizons = rig.loop._horizons(T0 + 5_000)  # noqa: SLF001
    assert horizons[0] == T0, "the timestamp of the last command read"
    assert not rig.loop.engine.has_due(T0 + 5_000, horizons)
    rig.consumer.high[0] = 1
    assert rig.loop.engine.has_due(T0 + 5_000, rig.loop._horizons(T0 + 5_000))  # noqa: SLF001


def test_a_partition_that_ends_in_a_commit_marker_is_read_to_its_end(rig: Rig) -> None:
    """The last record is transactional (the engine's own: a forward, a child's start): its commit
    marker takes offset 1, so no message ever brings the next offset to the high watermark 2."""
    (wid,) = ids_on_partition(0, 1, stem="sleep")
    rig.loop._transaction([rig.start(wid, 5.0, 0)], T0)  # noqa: SLF001
    rig.consumer.high[0] = 2
    rig.consumer.positions[0] = 1  # the message returned, the marker not passed yet
    assert rig.loop._horizons(T0 + 5_000)[0] == T0  # noqa: SLF001
    rig.consumer.positions[0] = 2  # the consumer passed the marker: nothing is left to read
    assert rig.loop._horizons(T0 + 5_000)[0] == T0 + 5_000  # noqa: SLF001
    assert rig.loop.engine.has_due(T0 + 5_000, rig.loop._horizons(T0 + 5_000))  # noqa: SLF001


@pytest.mark.parametrize("error", [
    KafkaError(KafkaError._TIMED_OUT, "broker down", retriable=True),  # noqa: SLF001
    KafkaError(KafkaError._FENCED, "epoch bumped", fatal=True),  # noqa: SLF001
    KafkaError(KafkaError._INCONSISTENT, "records refused", txn_requires_abort=True),  # noqa: SLF001
], ids=["timed-out", "fatal", "records-refused"])
def test_a_failed_commit_restarts_in_process(tmp_path: Path, error: KafkaError) -> None:
    """Not a rebalance: the commit may even have happened. A fresh producer (same transactional.id)
    and every owned partition restored again from the log, as a process restart would do."""
    rig = Rig(tmp_path, {"commit": [error]})
    try:
        (wid,) = ids_on_partition(1, 1, stem="sleep")
        rig.loop._transaction([rig.start(wid, 5.0, 1)], T0)  # noqa: SLF001
        assert len(rig.producers) == 2, "a new producer replaced the failed one"
        assert rig.calls()[-1] == "init"
        assert "commit" not in rig.calls()
        assert rig.loop.engine.stores == {}, "local state is rebuilt from the log"
        assert sorted(rig.loop._to_restore) == [0, 1]  # noqa: SLF001
        assert rig.loop.sink._producer is rig.producers[-1]  # noqa: SLF001
    finally:
        rig.close()


def test_a_rebalance_during_the_transaction_aborts_and_rewinds(tmp_path: Path) -> None:
    stale = KafkaError(KafkaError.ILLEGAL_GENERATION, "group moved on", txn_requires_abort=True)
    rig = Rig(tmp_path, {"send_offsets": [stale]})
    try:
        (wid,) = ids_on_partition(1, 1, stem="sleep")
        rig.loop._transaction([rig.start(wid, 5.0, 1)], T0)  # noqa: SLF001
        assert rig.calls() == ["begin", "abort"]
        assert len(rig.producers) == 1
        assert (1, 0) in rig.consumer.seeks, "input rewound to the batch's first offset"
        assert rig.loop.engine.stores[1].summary(wid) is None, "nothing of the aborted batch was kept"
    finally:
        rig.close()


def test_a_partition_rewound_to_its_end_is_not_behind(tmp_path: Path) -> None:
    """After an aborted transaction every owned partition is sought to its next offset, and
    librdkafka's position() is INVALID until a message comes. A partition with nothing more to
    read is still read to its end: were it 'behind', it would hand off nothing after a growth --
    and no message ever comes to a partition whose workflows are moving away."""
    stale = KafkaError(KafkaError.ILLEGAL_GENERATION, "group moved on", txn_requires_abort=True)
    rig = Rig(tmp_path)
    try:
        (wid,) = ids_on_partition(0, 1, stem="sleep")
        rig.loop._transaction([rig.start(wid, 5.0, 0)], T0)  # noqa: SLF001 - applied
        rig.consumer.positions[0] = 1
        rig.fail["send_offsets"] = [stale]
        rig.loop._transaction([], T0)  # noqa: SLF001 - aborted: rewinds (seeks) every owned partition
        assert (0, 1) in rig.consumer.seeks
        assert 0 not in rig.consumer.positions, "the twin forgets the position on a seek, as librdkafka does"
        assert rig.loop.input.behind([0, 1]) == set()
        rig.consumer.high[0] = 3  # two commands arrive, not read yet
        assert rig.loop.input.behind([0, 1]) == {0}
    finally:
        rig.close()


def test_a_poison_command_is_dead_lettered_once_and_skipped(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    (wid,) = ids_on_partition(0, 1, stem="poison")
    m = rig.start(wid, 5.0, 0)

    def boom(*_args: Any) -> None:
        raise RuntimeError("a bug on this command")

    monkeypatch.setitem(rig.loop.engine._handlers, CMD + "StartWorkflow", boom)  # noqa: SLF001
    rig.loop._transaction([m], T0)  # noqa: SLF001
    assert rig.calls() == ["begin", "abort", "begin", "send_offsets", "commit"]
    assert rig.log[3][1][0][0] == 1, "the dead-letter transaction commits the offset past the poison"
    assert rig.consumer.seeks[-1] == (0, 1), "and the consumer moves past it"
    dlq = [kw for topic, kw in rig.producers[-1].produced if topic == f"{PREFIX}.dlq"]
    assert len(dlq) == 1


def test_a_command_returned_again_after_it_was_applied_is_skipped(rig: Rig) -> None:
    """A restore in the middle of a batch seeks the consumer; a command it returns a second
    time, below its partition's next offset, was applied once and is not applied again."""
    (wid,) = ids_on_partition(0, 1, stem="sleep")
    first = rig.start(wid, 5.0, 0)
    rig.loop._transaction(rig.loop._usable([first]), T0)  # noqa: SLF001
    later = rig.start(wid, 5.0, 0)  # a second command of the partition, not applied yet
    assert rig.loop._usable([first, later]) == [later]  # noqa: SLF001
    assert rig.loop.engine.counters.redelivered == 1


def test_a_consumer_that_failed_for_good_is_replaced(rig: Rig, monkeypatch: pytest.MonkeyPatch) -> None:
    """A fatal consumer error (a static member fenced by its own rejoin after an outage longer
    than the session, seen in CI): the consumer serves nothing again. The loop replaces it at once
    -- its partitions restored again from the log once the new member is assigned them."""
    (wid,) = ids_on_partition(0, 1, stem="sleep")
    old = rig.consumer
    fresh = FakeConsumer({0: 0, 1: 0})
    rig.loop._own_consumer = True  # noqa: SLF001 - as a loop with a real consumer
    monkeypatch.setattr(rig.loop, "_new_consumer", lambda: fresh)
    assert rig.loop._usable([rig.start(wid, 5.0, 0), fenced()]) == []  # type: ignore[list-item] # noqa: SLF001
    assert rig.loop.consumer is fresh and fresh.subscribed == [COMMANDS]
    assert rig.loop.engine.stores == {}, "restored again when the new member is assigned them"
    deadline = time.monotonic() + 10
    while not getattr(old, "closed", False) and time.monotonic() < deadline:  # closed on a side thread
        time.sleep(0.01)
    assert getattr(old, "closed", False)
