"""History retention on a real broker and real processes (issue 9 item 6): with DP_RETENTION_S=3,
closed workflows' records are tombstoned on wf.events (read raw: every key's last record is a
tombstone) and wf.timers, the processor no longer knows them, the visibility projection drops
them; running workflows are untouched; a SIGKILLed processor restores without bringing them back."""

from __future__ import annotations

import signal
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from processor._kafka.messages import high_watermarks
from processor._kafka.topics import TopicNames
from processor._visibility.http import VisibilityClient
from processor.client import Client
from processor.exceptions import WorkflowNotFoundError
from tests.dp_harness import Cluster, wait_for
from tests.integration.test_visibility import _answers, _free_port, _ui

pytestmark = pytest.mark.integration


def last_records(bootstrap: str, topic: str, partitions: int) -> dict[bytes, bytes | None]:
    """Every key of the topic and its last committed value (None: a tombstone), read raw."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"raw-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    out: dict[bytes, bytes | None] = {}
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = high_watermarks(bootstrap, tps)
        for tp in tps:
            end = ends[(topic, tp.partition)]
            consumer.assign([TopicPartition(topic, tp.partition, OFFSET_BEGINNING)])
            deadline = time.monotonic() + 60
            while consumer.position([tp])[0].offset < end and time.monotonic() < deadline:
                for m in consumer.consume(1000, timeout=0.5):
                    if m.error() is None and m.key() is not None:
                        out[m.key()] = m.value()
    finally:
        consumer.close()
    return out


def test_closed_workflows_are_pruned_and_running_ones_kept(kafka_bootstrap: str, prefix: str,
                                                           tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=2, env={"DP_RETENTION_S": "3"})
    topics = TopicNames(prefix)
    port = _free_port()
    vis = VisibilityClient(f"http://127.0.0.1:{port}")
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        proc = c.processor(0)
        c.worker()
        _ui(c, port, tmp_path / "vis", "ui.log")
        closed = [f"done-{i}" for i in range(20)]
        running = [f"waits-{i}" for i in range(3)]
        for i, wid in enumerate(closed):
            client.start_workflow("ThreeSteps", i, id=wid)
        for wid in running:
            client.start_workflow("Approval", 3600.0, id=wid)
        for wid in closed:
            client.result(wid, timeout=120)

        def pruned() -> bool:
            last = last_records(kafka_bootstrap, topics.events, 2)
            keys = [k for k in last if k.split(b"@")[0].decode() in closed]
            return {k.split(b"@")[0].decode() for k in keys} == set(closed) and all(last[k] is None for k in keys)

        wait_for(pruned, 120, interval=1.0, message="every event of the closed workflows tombstoned")
        last = last_records(kafka_bootstrap, topics.events, 2)
        kept = {k: v for k, v in last.items() if k.split(b"@")[0].decode() in running}
        assert len(kept) == 3 * 2 and all(v is not None for v in kept.values()), "running workflows untouched"
        timers = last_records(kafka_bootstrap, topics.timers, 2)
        assert all(v is None for k, v in timers.items() if k.rpartition(b"@t")[0].decode() in closed), \
            "no timer of a pruned workflow left"
        for wid in closed[:3]:
            assert client.history(wid) == []
            with pytest.raises(WorkflowNotFoundError):
                client.describe(wid)
        assert all(client.describe(wid)["status"] == "running" for wid in running)
        wait_for(lambda: _answers(vis) and vis.count()["by_status"] == {"Running": 3}, 120, interval=0.5,
                 message="the projection without the pruned runs")

        # A SIGKILLed processor restores from the log (events, then their tombstones): still gone.
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
        c.processor(0)
        client.start_workflow("ThreeSteps", 100, id="after-restart")
        assert client.result("after-restart", timeout=120) == [101, 102, 103]
        for wid in closed:
            assert client.history(wid) == [], f"{wid} came back after the restore"
        assert all(client.describe(wid)["status"] == "running" for wid in running)
    finally:
        client.close()
        c.close()
