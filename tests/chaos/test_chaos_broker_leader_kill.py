"""A 3-broker cluster (`processor kafka start --brokers 3`: replication 3, min.insync.replicas 2)
loses, by SIGKILL under steady load, the broker that leads the most partitions of wf.commands
and wf.events; it is started again 10 s later. Nothing is lost (every workflow completes with
its result) and nothing duplicated (one completion record per workflow, every wf.events key
once); the longest pause between completions is printed, with how many activities ran twice
and how many children the supervisor restarted (librdkafka 2.16 has been seen to abort a
worker on an assertion while the group coordinator moves; `processor run` restarts it).

Uses a cluster of its own (tmp dir), not the session's broker.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition
from confluent_kafka.admin import AdminClient

from processor._kafka import cluster
from processor._kafka.messages import high_watermarks
from processor.client import Client
from tests.dp_harness import Cluster, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

WORKFLOWS = int(os.environ.get("DP_LEADER_KILL_WORKFLOWS") or 300)
DOWN_S = 10.0


def busiest_leader(bootstrap: str, topics: list[str]) -> tuple[int, int]:
    """(node id, partitions it leads) of the node leading the most partitions of `topics`."""
    md = AdminClient({"bootstrap.servers": bootstrap}).list_topics(timeout=10)
    led = Counter(p.leader for t in topics for p in md.topics[t].partitions.values())
    return led.most_common(1)[0]


def completion_times(bootstrap: str, topic: str) -> list[tuple[str, int]]:
    """(workflow id, broker timestamp ms) of every committed completion, in time order."""
    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": f"ts-{uuid.uuid4().hex}",
                         "isolation.level": "read_committed", "enable.auto.commit": False})
    md = consumer.list_topics(topic, timeout=10)
    tps = [TopicPartition(topic, p) for p in md.topics[topic].partitions]
    ends = high_watermarks(bootstrap, tps)
    out = []
    try:
        consumer.assign([TopicPartition(topic, tp.partition, OFFSET_BEGINNING) for tp in tps])
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and any(
                consumer.position([tp])[0].offset < ends[(topic, tp.partition)] for tp in tps):
            for m in consumer.consume(500, timeout=0.5):
                if m.error() is None and m.key() is not None:
                    out.append((m.key().decode(), m.timestamp()[1]))
    finally:
        consumer.close()
    return sorted(out, key=lambda x: x[1])


def test_the_leading_broker_sigkilled_under_load(tmp_path: Path, prefix: str) -> None:
    home = tmp_path / "kafka3"
    servers, _ = cluster.start_cluster(home, 3)
    c = None
    try:
        c = Cluster(servers, prefix, tmp_path, env={"DP_TEST_ACTIVITY_DELAY": "0.05"})
        sup = c.supervisor(processors=1, workers=1)  # as users run it: a child that dies is restarted
        client = Client(servers, prefix=prefix)
        ids = [f"lk-{i}" for i in range(WORKFLOWS)]
        rate = 25.0  # workflows started per second, steadily, across the kill

        def load() -> None:
            t0 = time.monotonic()
            for i, wid in enumerate(ids):
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))
                client.start_workflow("ThreeSteps", i, id=wid, wait_for_ack=False)
            client.flush()

        loader = threading.Thread(target=load, name="load")
        loader.start()
        wait_for(lambda: len(c.runs()) >= 90, 120, message="load running before the kill")
        victim, led = busiest_leader(servers, [f"{prefix}.commands", f"{prefix}.events"])
        killed_at = time.time()
        os.kill(cluster.node_infos(home)[victim].pid, signal.SIGKILL)
        runs_at_kill = len(c.runs())
        time.sleep(DOWN_S)
        _, restarted = cluster.start_cluster(home, 3)
        assert restarted == [victim]
        loader.join(120)
        assert not loader.is_alive(), "every start was sent"
        for i, wid in enumerate(ids):
            assert client.result(wid, timeout=300) == [i + 1, i + 2, i + 3]
        client.close()

        completions = Counter(k.decode() for k, _, _ in read_all(servers, f"{prefix}.completions"))
        assert {w: n for w, n in completions.items() if n != 1} == {}, "one completion record per workflow"
        assert sorted(completions) == sorted(ids), "no workflow lost"
        keys = Counter(k for k, _, _ in read_all(servers, f"{prefix}.events", decode=False))
        assert [k for k, n in keys.items() if n > 1] == [], "every history event once"
        runs = Counter((wid, seq) for wid, seq, _ in c.runs())
        assert set(runs) == {(w, s) for w in ids for s in (1, 2, 3)}, "every activity ran"
        again = sum(n - 1 for n in runs.values())
        supervised = (c.logs / "supervisor.log").read_text(errors="replace")
        exits = supervised.count(" exited with ")
        assert sup.poll() is None, "the supervisor rode it out"
        times = completion_times(servers, f"{prefix}.completions")
        after = [t for _, t in times if t >= killed_at * 1000]
        gaps = [b - a for a, b in zip([killed_at * 1000, *after], after, strict=False)]
        print(f"3-broker leader kill: node {victim} (leading {led} partitions of commands+events) SIGKILLed with "
              f"{runs_at_kill} of {3 * WORKFLOWS} activity runs done, restarted after {DOWN_S:.0f}s; "
              f"{WORKFLOWS} workflows completed once each, 0 lost, 0 duplicate events; "
              f"longest pause between completions after the kill {max(gaps) / 1000:.2f}s; "
              f"activities run again: {again}; children restarted by the supervisor: {exits}")
    finally:
        if c is not None:
            c.close()
        cluster.stop_cluster(home)
