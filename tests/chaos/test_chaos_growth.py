"""Growing the topics while 1,000 workflows are in flight (issue 8): 4 -> 8 and then 8 -> 16
partitions with `processor topics scale`, while workflows sleep, wait on signals, run
activities and keep arriving -- from our client and from two plain confluent-kafka producers
that know nothing of this project, one that refreshes its partition count every second and one
that never does (the engine forwards what it sends to the old partitions).

Run twice: once clean, once with a processor SIGKILLed in the middle of its hand-off (its
transaction open, earlier batches committed) and restarted with its state directory deleted.

Counted from Kafka, read_committed: one completion per workflow; in the events topic as
compaction will leave it, every workflow's history lives only on its home partition of 16,
whole (seqs 1..n, started once) with every activity result applied once; every activity ran
once; signals sent during the growths arrived once and in order; nothing dead-lettered. Tickers
(a 0.3 s timer in a loop) measure the longest pause a workflow that moved and one that stayed
lived through; the figures are printed with the workflows per partition before and after."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Producer

from processor._codec.partitioner import partition_for
from processor._engine import keys
from processor._engine.handoff import META_KEY_PREFIX
from processor.client import Client
from tests.dp_harness import REPO, Cluster, live_records, read_all, wait_for
from tests.integration.test_protocol_plain_kafka import encode

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

TICK_S = 0.3


def _scale(c: Cluster, n: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", "topics", "scale", "--partitions", str(n),
                           "--bootstrap", c.bootstrap, "--prefix", c.prefix, "--timeout", "300"],
                          cwd=REPO, capture_output=True, text=True, timeout=360)


class PlainProducer:
    """Starts and signals workflows from docs/protocol.md and schemas/ alone, Kafka's murmur2
    partitioner on whatever partition count its metadata holds."""

    def __init__(self, bootstrap: str, prefix: str, refresh_ms: int) -> None:
        self.topic = f"{prefix}.commands"
        self.producer = Producer({"bootstrap.servers": bootstrap, "partitioner": "murmur2_random",
                                  "enable.idempotence": True, "topic.metadata.refresh.interval.ms": refresh_ms})

    def _send(self, wid: str, name: str, record: dict[str, Any]) -> None:
        self.producer.produce(self.topic, encode(name, record), wid.encode(), headers=[("type", name.encode())])
        self.producer.poll(0)

    def start(self, wid: str, workflow_type: str, *args: bytes) -> None:
        self._send(wid, "wf.commands.v1.StartWorkflow",
                   {"workflow_id": wid, "workflow_type": workflow_type, "task_queue": "default",
                    "args": [{"encoding": "json/plain", "data": a} for a in args],
                    "execution_timeout_ms": None, "request_id": None})

    def signal(self, wid: str, name: str, *args: bytes) -> None:
        self._send(wid, "wf.commands.v1.SignalWorkflow",
                   {"workflow_id": wid, "signal_name": name, "run_id": None, "request_id": None,
                    "args": [{"encoding": "json/plain", "data": a} for a in args]})

    def flush(self) -> None:
        assert self.producer.flush(60) == 0, "plain producer: records not delivered"


def _tickers(n: int, *, moving: bool = True) -> list[str]:
    """The first n ticker ids that move in 4 -> 8 -> 16 (or that stay on their partition)."""
    ids = (f"tick-{i}" for i in range(10_000))
    return [w for w in ids if (partition_for(w.encode(), 16) != partition_for(w.encode(), 4)) == moving][:n]


def _histories(bootstrap: str, prefix: str) -> tuple[dict[str, int], dict[tuple[str, str], list[dict[str, Any]]]]:
    """Where each workflow's history lives in wf.events once compaction has run, and each run's events."""
    where: dict[str, set[int]] = defaultdict(set)
    runs: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for partition, records in live_records(bootstrap, f"{prefix}.events").items():
        for key, event in records.items():
            if key.startswith(META_KEY_PREFIX):  # the engine's own hand-off state
                continue
            parsed = keys.split_event_key(key)
            assert parsed is not None, key
            wid, run, _ = parsed
            where[wid].add(partition)
            runs[(wid, run)].append(event)
    split = {wid: parts for wid, parts in where.items() if len(parts) != 1}
    assert split == {}, "a workflow's history left on two partitions"
    return {wid: next(iter(parts)) for wid, parts in where.items()}, runs


@pytest.mark.parametrize("fault", ["clean", "sigkill"])
def test_growing_twice_with_1000_workflows_in_flight(kafka_bootstrap: str, prefix: str, tmp_path: Path,
                                                     fault: str) -> None:
    marker = tmp_path / "at-handoff"
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=4, env={"DP_HANDOFF_BATCH": "20"})
    client = Client(kafka_bootstrap, prefix=prefix)
    fresh = PlainProducer(kafka_bootstrap, prefix, refresh_ms=1000)
    stale = PlainProducer(kafka_bootstrap, prefix, refresh_ms=-1)  # never refreshes: forwarded
    try:
        first = c.processor(0, env={"DP_FAILPOINTS": f"handoff_txn=60000@{marker}"} if fault == "sigkill" else None)
        c.processor(1)
        c.worker()
        sleepers = [f"sleep-{i}" for i in range(680)]  # a 5..44 s timer, then an `approve` signal
        waiters = [f"wait-{i}" for i in range(250)]  # wait for `release`, then an activity
        busy = [f"busy-{i}" for i in range(100)]  # a 4..11 s heartbeating activity
        loopers = [f"tags-{i}" for i in range(20)]  # ordered `tag` signals through both growths
        tickers = _tickers(8) + _tickers(8, moving=False)  # pauses of workflows that move and that stay
        plain_waiters = [f"plain-appr-{i}" for i in range(30)]  # started and approved by `fresh`
        for i, wid in enumerate(sleepers):
            client.start_workflow("Approval", 5.0 + i % 40, id=wid, wait_for_ack=False)
        for i, wid in enumerate(waiters):
            client.start_workflow("Child", i, True, id=wid, wait_for_ack=False)
        for i, wid in enumerate(busy):
            client.start_workflow("LongBeat", 4.0 + i % 8, id=wid, wait_for_ack=False)
        for wid in loopers:
            client.start_workflow("Looper", 0, 1, 1000, 0, [], id=wid, wait_for_ack=False)
        for wid in tickers:
            client.start_workflow("Ticker", TICK_S, id=wid, wait_for_ack=False)
        client.flush()
        for wid in plain_waiters:
            fresh.start(wid, "Approval", b"1.0")
        stale.start("plain-tags", "Looper", b"0", b"1", b"1000", b"0", b"[]")
        fresh.flush()
        stale.flush()
        in_flight = sleepers + waiters + busy + loopers + tickers + plain_waiters + ["plain-tags"]
        wait_for(lambda: sum(1 for _, ev, _ in read_all(c.bootstrap, f"{prefix}.events")
                             if ev is not None and ev["type"] == "WorkflowStarted") >= len(in_flight),
                 180, interval=2.0, message="every workflow started (they have state to hand off)")

        arrivals: list[str] = []  # ThreeSteps started during the growths, by all three producers
        state = {"tags": 0, "approved": 0, "released": 0, "plain_approved": 0}
        stop = threading.Event()

        def traffic() -> None:
            i = 0
            while not stop.is_set():
                for source, start in (("client", lambda w: client.start_workflow("ThreeSteps", 1, id=w,
                                                                                  wait_for_ack=False)),
                                      ("fresh", lambda w: fresh.start(w, "ThreeSteps", b"1")),
                                      ("stale", lambda w: stale.start(w, "ThreeSteps", b"1"))):
                    wid = f"{source}-steady-{i}"
                    start(wid)
                    arrivals.append(wid)
                if i % 2 == 0:
                    wid = f"busy-steady-{i}"
                    client.start_workflow("LongBeat", 3.0, id=wid, wait_for_ack=False)
                    arrivals.append(wid)
                for looper in loopers:
                    client.signal(looper, "tag", f"t{i}")
                stale.signal("plain-tags", "tag", f'"p{i}"'.encode())
                state["tags"] = i + 1
                for _ in range(2):
                    if state["approved"] < len(sleepers):
                        client.signal(sleepers[state["approved"]], "approve", "ops")
                        state["approved"] += 1
                if state["released"] < len(waiters):
                    client.signal(waiters[state["released"]], "release")
                    state["released"] += 1
                if i % 5 == 0 and state["plain_approved"] < len(plain_waiters):
                    fresh.signal(plain_waiters[state["plain_approved"]], "approve", b'"plain"')
                    state["plain_approved"] += 1
                i += 1
                time.sleep(0.2)
            client.flush()
            fresh.flush()
            stale.flush()

        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        time.sleep(2.0)
        done_before = {k.decode() for k, _, _ in read_all(c.bootstrap, f"{prefix}.completions") if k}
        running = [w for w in in_flight + list(arrivals) if w not in done_before]
        print(f"{fault}: {len(running)} workflows in flight when the growth to 8 began")
        assert len(running) >= 1000
        results: list[subprocess.CompletedProcess[str]] = []
        began = time.monotonic()
        scaler = threading.Thread(target=lambda: results.append(_scale(c, 8)), daemon=True)
        scaler.start()
        if fault == "sigkill":
            wait_for(marker.exists, 240, interval=0.05, message="processor 0 mid-hand-off")
            c.kill(first)  # its open transaction (a batch of hand-offs) is aborted; earlier batches stand
            shutil.rmtree(c.state / "processor-0", ignore_errors=True)
            time.sleep(2.0)
            c.processor(0)  # rebuilt from the log alone
        scaler.join(360)
        assert results and results[0].returncode == 0, results[0].stderr if results else "scale did not return"
        to_8 = time.monotonic() - began
        print(results[0].stdout)
        began = time.monotonic()
        second = _scale(c, 16)
        assert second.returncode == 0, second.stderr
        to_16 = time.monotonic() - began
        print(second.stdout)
        time.sleep(1.0)
        stop.set()
        sender.join(60)
        assert not sender.is_alive()

        for wid in sleepers[state["approved"]:]:
            client.signal(wid, "approve", "ops")
        for wid in waiters[state["released"]:]:
            client.signal(wid, "release")
        for wid in plain_waiters[state["plain_approved"]:]:
            fresh.signal(wid, "approve", b'"plain"')
        for wid in loopers:
            client.signal(wid, "bump")
        stale.signal("plain-tags", "bump")
        for wid in tickers:
            client.signal(wid, "halt")
        client.flush()
        fresh.flush()
        stale.flush()

        for wid in sleepers:
            assert client.result(wid, timeout=300).startswith("approved by ops"), wid
        for i, wid in enumerate(waiters):
            assert client.result(wid, timeout=300) == i + 1, wid
        for wid in busy + [w for w in arrivals if w.startswith("busy-")]:
            assert client.result(wid, timeout=300) == "finished", wid
        for wid in arrivals:
            if not wid.startswith("busy-"):
                assert client.result(wid, timeout=300) == [2, 3, 4], wid
        for wid in plain_waiters:
            assert client.result(wid, timeout=300).startswith("approved by plain"), wid
        tags = [f"t{i}" for i in range(state["tags"])]
        for wid in loopers:
            assert client.result(wid, timeout=300)["tags"] == tags, f"{wid}: signals once and in order"
        plain_tags = client.result("plain-tags", timeout=300)["tags"]
        assert plain_tags == [f"p{i}" for i in range(state["tags"])], "a stale producer's signals, forwarded, in order"
        wakes = {wid: client.result(wid, timeout=300) for wid in tickers}

        everyone = in_flight + arrivals
        completions = Counter(k.decode() for k, _, _ in read_all(c.bootstrap, f"{prefix}.completions") if k)
        assert {w: completions[w] for w in everyone if completions[w] != 1} == {}, "one completion per workflow"
        home, runs = _histories(c.bootstrap, prefix)
        assert {w for w in everyone if w not in home} == set(), "every workflow's history is in wf.events"
        assert {w: p for w, p in home.items() if p != partition_for(w.encode(), 16)} == {}, "history off its home"
        for (wid, _run), events in runs.items():
            events.sort(key=lambda e: e["seq"])
            assert [e["seq"] for e in events] == list(range(1, len(events) + 1)), wid
            assert [e["type"] for e in events].count("WorkflowStarted") == 1, wid
            scheduled = {e["activity_seq"] for e in events if e["type"] == "ActivityScheduled"}
            done = Counter(e["activity_seq"] for e in events if e["type"] == "ActivityCompleted")
            assert done == Counter(scheduled), f"{wid}: every activity result applied exactly once"
        ran = Counter((wid, seq) for wid, seq, _ in c.runs())
        assert {k: n for k, n in ran.items() if n != 1} == {}, "an activity ran twice"
        assert read_all(c.bootstrap, f"{prefix}.dlq", decode=False) == [], "nothing dead-lettered"

        before = Counter(partition_for(w.encode(), 4) for w in running)
        after = Counter(home[w] for w in running)
        print(f"{fault}: 4 -> 8 in {to_8:.1f} s, 8 -> 16 in {to_16:.1f} s; {len(everyone)} workflows, "
              f"{state['tags']} ordered signals to each of {len(loopers) + 1} loopers")
        print(f"{fault}: the {len(running)} in flight per partition before: {sorted(before.items())}")
        print(f"{fault}: the same workflows per partition after:  {sorted(after.items())}")
        assert set(after) == set(range(16))
        pauses: dict[bool, list[float]] = {True: [], False: []}
        for wid, times in wakes.items():
            moved = partition_for(wid.encode(), 16) != partition_for(wid.encode(), 4)
            gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
            assert gaps, wid
            pauses[moved].append(max(gaps) - TICK_S)
        assert pauses[True] and pauses[False], "tickers both moved and stayed"
        print(f"{fault}: longest pause of a ticker that moved: {max(pauses[True]):.2f} s "
              f"({len(pauses[True])} tickers), of one that stayed: {max(pauses[False]):.2f} s "
              f"({len(pauses[False])} tickers); every {TICK_S} s timer")
    finally:
        client.close()
        c.close()
