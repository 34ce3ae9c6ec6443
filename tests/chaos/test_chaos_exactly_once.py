"""Exactly-once under SIGKILL, restore from the event topic, and failover between processors.

Counter-based: every assertion counts records in the topics (read_committed) or activity runs in
the run log; nothing is inferred from the processes' own claims.
"""

from __future__ import annotations

import shutil
import time
from collections import Counter, defaultdict
from typing import Any

import pytest

from processor.client import Client
from tests.apps.basic import ThreeSteps
from tests.dp_harness import Cluster, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _histories(c: Cluster) -> dict[str, list[dict[str, Any]]]:
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, ev, _ in read_all(c.bootstrap, f"{c.prefix}.events"):
        out[ev["workflow_id"]].append(ev)
    return out


def _assert_exactly_once(c: Cluster, ids: list[str], starts: dict[str, int]) -> None:
    completions = Counter(k.decode() for k, _, _ in read_all(c.bootstrap, f"{c.prefix}.completions"))
    assert {wid: n for wid, n in completions.items() if n != 1} == {}, "a workflow completed more than once"
    assert sorted(completions) == sorted(ids)
    histories = _histories(c)
    for wid in ids:
        events = histories[wid]
        seqs = [e["seq"] for e in events]
        assert seqs == list(range(1, len(events) + 1)), f"{wid}: seqs not contiguous/unique: {seqs}"
        done = [e for e in events if e["type"] == "ActivityCompleted"]
        assert sorted(e["activity_seq"] for e in done) == [1, 2, 3], (
            f"{wid}: one result per activity; history {[(e['seq'], e['type']) for e in events]}; "
            f"all records of it: {_raw_records(c, wid)}")
        assert [e["type"] for e in events].count("WorkflowStarted") == 1
        assert events[-1]["type"] == "WorkflowCompleted"
    runs = {(wid, seq) for wid, seq, _ in c.runs()}
    missing = [(wid, s) for wid in ids for s in (1, 2, 3) if (wid, s) not in runs]
    assert missing == [], "activities that never ran"


def _raw_records(c: Cluster, wid: str) -> list[tuple[str, int | None, int | None, str, int]]:
    """Every record of one workflow in events and completions, aborted ones included, for diagnosis."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from processor._codec import default_codec

    out = []
    codec = default_codec()
    views = (("events", "read_uncommitted"), ("events", "read_committed"), ("completions", "read_committed"))
    for name, isolation in views:
        topic = f"{c.prefix}.{name}"
        consumer = Consumer({"bootstrap.servers": c.bootstrap, "group.id": "diag", "isolation.level": isolation})
        md = consumer.list_topics(topic, timeout=10)
        consumer.assign([TopicPartition(topic, p, OFFSET_BEGINNING) for p in md.topics[topic].partitions])
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            for m in consumer.consume(1000, 0.2):
                key = m.key() or b""
                if m.error() or not (key == wid.encode() or key.startswith(wid.encode() + b"@")):
                    continue
                rec_name, rec = codec.decode(m.value())
                out.append((name + "/" + isolation[5:9], m.partition(), m.offset(), rec_name.rpartition(".")[2],
                            rec.get("seq", -1)))
        consumer.close()
    return sorted(out)


def _progress(c: Cluster) -> int:
    return len(c.runs())


def _start_three_steps(client: Client, ids: list[str]) -> dict[str, int]:
    """Start ThreeSteps for every id (input = its index) and watch their completions."""
    starts = {wid: i for i, wid in enumerate(ids)}
    for wid in ids:
        client.start_workflow(ThreeSteps.run, starts[wid], id=wid, wait_for_ack=False)
    client.flush()
    for wid in ids:
        client.watch(wid)
    return starts


def test_sigkill_processor_twice_and_worker_once(slow_cluster: Cluster) -> None:
    c = slow_cluster
    client = Client(c.bootstrap, prefix=c.prefix)
    proc = c.processor()
    worker = c.worker()
    ids = [f"crash-{i}" for i in range(200)]
    starts = _start_three_steps(client, ids)

    wait_for(lambda: _progress(c) >= 100, 120, message="100 activity runs before the first kill")
    c.kill(proc)
    proc = c.processor()
    wait_for(lambda: _progress(c) >= 250, 120, message="250 activity runs before killing the worker")
    c.kill(worker)
    worker = c.worker()
    wait_for(lambda: _progress(c) >= 400, 120, message="400 activity runs before the second kill")
    c.kill(proc)
    proc = c.processor()

    for wid in ids:
        assert client.result(wid, timeout=180) == [starts[wid] + 1, starts[wid] + 2, starts[wid] + 3]
    client.close()
    _assert_exactly_once(c, ids, starts)
    runs = c.runs()
    print(f"activity runs: {len(runs)} for 600 activities ({len(runs) - 600} re-runs after kills)")


def test_restore_from_event_topic_after_state_dir_is_deleted(slow_cluster: Cluster) -> None:
    c = slow_cluster
    client = Client(c.bootstrap, prefix=c.prefix)
    proc = c.processor()
    c.worker()
    ids = [f"restore-{i}" for i in range(20)]
    for wid in ids:
        client.start_workflow("Approval", 0.2, id=wid, wait_for_ack=False)
    client.flush()

    def all_waiting_for_signal() -> bool:
        return all(any(e["type"] == "TimerFired" for e in h) for h in (_histories(c)[w] for w in ids))

    wait_for(all_waiting_for_signal, 60, interval=1, message="all workflows past their timer")
    c.stop(proc)
    shutil.rmtree(c.state)
    c.processor()
    for wid in ids:
        client.signal(wid, "approve", "ops")
    for wid in ids:
        assert client.result(wid, timeout=90) == "approved by ops after sleeping True"
    client.close()
    log = (c.logs / "processor-0.log").read_text()
    assert "restored partitions" in log


def test_failover_between_two_processors(slow_cluster: Cluster) -> None:
    c = slow_cluster
    client = Client(c.bootstrap, prefix=c.prefix)
    c.processor(0)
    doomed = c.processor(1)
    c.worker()

    def both_assigned() -> bool:
        return all("assigned [" in (c.logs / f"processor-{i}.log").read_text() for i in (0, 1))

    wait_for(both_assigned, 60, message="both processors own partitions")
    ids = [f"failover-{i}" for i in range(100)]
    starts = _start_three_steps(client, ids)
    wait_for(lambda: _progress(c) >= 60, 60, message="work in flight")
    c.kill(doomed)
    t0 = time.monotonic()
    for wid in ids:
        assert client.result(wid, timeout=120) == [starts[wid] + 1, starts[wid] + 2, starts[wid] + 3]
    print(f"all done {time.monotonic() - t0:.1f}s after the kill")
    client.close()
    _assert_exactly_once(c, ids, starts)
    log0 = (c.logs / "processor-0.log").read_text()
    assert log0.count("assigned [") >= 2, "processor 0 never took over partitions"
