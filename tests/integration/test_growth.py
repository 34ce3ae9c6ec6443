"""Growing commands, events and timers online (issue 8), through real processes: workflows
sleeping, waiting on signals, running activities and starting at a steady rate while the topics
grow from 4 to 8 partitions -- by `processor topics scale`, or by Kafka's AdminClient alone."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka.admin import AdminClient, NewPartitions  # type: ignore[attr-defined]

from processor._codec.partitioner import partition_for
from processor.client import Client
from tests.dp_harness import REPO, Cluster, read_all, wait_for

pytestmark = pytest.mark.integration


def _moves(wid: str) -> bool:
    return partition_for(wid.encode(), 4) != partition_for(wid.encode(), 8)


@pytest.mark.parametrize("how", ["verb", "admin"])
def test_growing_4_to_8_partitions_under_load_loses_nothing(kafka_bootstrap: str, prefix: str, tmp_path: Path,
                                                             how: str) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=4)
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        c.processor(0)
        c.processor(1)
        c.worker()
        sleepers = [f"sleep-{i}" for i in range(30)]  # a 4 s timer, then a signal
        beaters = [f"beat-{i}" for i in range(10)]  # 2 s heartbeating activities
        for wid in sleepers:
            client.start_workflow("Approval", 4.0, id=wid, wait_for_ack=False)
        for wid in beaters:
            client.start_workflow("Timeouts", "heartbeat_ok", id=wid, wait_for_ack=False)
        client.flush()
        wait_for(lambda: len(c.runs()) >= len(beaters), 60, interval=0.1, message="activities running")
        steady: list[str] = []
        stop = threading.Event()

        def arrive() -> None:  # new starts at a steady rate through the growth
            i = 0
            while not stop.is_set():
                wid = f"steady-{i}"
                client.start_workflow("ThreeSteps", 1, id=wid, wait_for_ack=False)
                steady.append(wid)
                i += 1
                time.sleep(0.1)

        starter = threading.Thread(target=arrive, daemon=True)
        starter.start()
        time.sleep(1.0)
        began = time.monotonic()
        if how == "verb":
            done = subprocess.run([sys.executable, "-m", "processor.cli", "topics", "scale", "--partitions", "8",
                                   "--bootstrap", kafka_bootstrap, "--prefix", prefix, "--timeout", "120"],
                                  cwd=REPO, capture_output=True, text=True, timeout=180)
            print(done.stdout, done.stderr)
            assert done.returncode == 0, done.stderr
            assert "4 of 4 old partitions handed off" in done.stdout and "4 of 4 new partitions complete" in done.stdout
        else:
            admin = AdminClient({"bootstrap.servers": kafka_bootstrap})
            futures = admin.create_partitions([NewPartitions(f"{prefix}.{t}", 8)
                                               for t in ("events", "timers", "commands")])
            for fut in futures.values():
                fut.result(60)
            from processor._engine.growth import Layout
            from processor._kafka.control import read_control, settled

            wait_for(lambda: settled(Layout(8, 4, 1), read_control(kafka_bootstrap, f"{prefix}.control")), 120,
                     interval=0.5, message="every partition handed off and received")
        grew_in = time.monotonic() - began
        time.sleep(1.0)
        stop.set()
        starter.join(10)
        # Signals after the growth reach the sleepers wherever they live now.
        for wid in sleepers:
            client.signal(wid, "approve", "ops")
        for wid in sleepers:
            assert client.result(wid, timeout=120).startswith("approved by ops"), wid
        for wid in beaters:
            assert client.result(wid, timeout=120) == "finished", wid
        for wid in steady:
            assert client.result(wid, timeout=120) == [2, 3, 4], wid
        everyone = sleepers + beaters + steady
        moved = [w for w in everyone if _moves(w)]
        print(f"{how}: grew in {grew_in:.1f}s; {len(everyone)} workflows, {len(moved)} in new partitions")
        assert moved, "some workflows live in the new partitions"
        completions = Counter(k.decode() for k, _, _ in read_all(kafka_bootstrap, f"{prefix}.completions")
                              if k is not None)
        assert {w: completions[w] for w in everyone if completions[w] != 1} == {}, "one completion per run"
        assert read_all(kafka_bootstrap, f"{prefix}.dlq", decode=False) == [], "nothing dead-lettered"
        mover = next(w for w in sleepers if _moves(w))
        assert client.describe(mover)["status"] == "completed"  # its history is in its new partition
        assert [e["type"] for e in client.history(mover)].count("WorkflowStarted") == 1
        # The operator's verbs find it there too, and its history replays against the code.
        common = ["--bootstrap", kafka_bootstrap, "--prefix", prefix]
        show = subprocess.run([sys.executable, "-m", "processor.cli", "show", mover, *common],
                              cwd=REPO, capture_output=True, text=True, timeout=120)
        assert show.returncode == 0, show.stderr
        assert "completed" in show.stdout and "TimerFired" in show.stdout and "WorkflowCompleted" in show.stdout
        replay = subprocess.run([sys.executable, "-m", "processor.cli", "replay", mover, "--app",
                                 "tests.apps.basic:app", *common],
                                cwd=REPO, capture_output=True, text=True, timeout=120)
        assert replay.returncode == 0, replay.stdout + replay.stderr
        print(replay.stdout)
    finally:
        client.close()
        c.close()


def _sleep_then_grow_while_stopped(c: Cluster, client: Client, movers: list[str]) -> None:
    """Start `movers` (Approval: a 0.5 s timer, then a wait) on one processor, let them sleep,
    stop it, and grow the three co-partitioned topics 4 -> 8 with Kafka's AdminClient."""
    proc = c.processor(0)
    for wid in movers:
        client.start_workflow("Approval", 0.5, id=wid)
    wait_for(lambda: all("TimerFired" in [e["type"] for e in client.history(w)] for w in movers), 60,
             message="the movers slept")
    c.stop(proc)
    admin = AdminClient({"bootstrap.servers": c.bootstrap})
    for fut in admin.create_partitions([NewPartitions(f"{c.prefix}.{t}", 8)
                                        for t in ("events", "timers", "commands")]).values():
        fut.result(60)


def test_a_workflow_not_handed_off_yet_is_found_where_it_still_is(kafka_bootstrap: str, prefix: str,
                                                                   tmp_path: Path) -> None:
    """The topics grew while no processor ran: every mover still lives on its old partition.
    `history`, `describe` and `show` read it there; once a processor hands it off, from its new home."""
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=4)
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        movers = [w for w in (f"in-transit-{i}" for i in range(40)) if _moves(w)][:3]
        _sleep_then_grow_while_stopped(c, client, movers)
        for wid in movers:
            assert [e["type"] for e in client.history(wid)][:3] == ["WorkflowStarted", "TimerStarted", "TimerFired"]
            assert client.describe(wid)["status"] == "running"
        show = subprocess.run([sys.executable, "-m", "processor.cli", "show", movers[0], "--bootstrap",
                               kafka_bootstrap, "--prefix", prefix], cwd=REPO, capture_output=True, text=True,
                              timeout=120)
        assert show.returncode == 0 and "TimerFired" in show.stdout, show.stdout + show.stderr
        c.processor(0)  # notices the growth and hands the movers off
        for wid in movers:
            client.signal(wid, "approve", "ops")
        for wid in movers:
            assert client.result(wid, timeout=120).startswith("approved by ops")
            assert [e["type"] for e in client.history(wid)][-1] == "WorkflowCompleted"
    finally:
        client.close()
        c.close()


def test_a_partition_with_nothing_more_to_read_still_hands_off(kafka_bootstrap: str, prefix: str,
                                                                tmp_path: Path) -> None:
    """Found in CI (a growth stuck 300 s): a partition sought to its end -- by a restore, or by the
    rewind after an aborted transaction -- reads as position INVALID in librdkafka until a record
    comes, so it looked 'behind' and handed nothing off. After a growth nothing comes: producers
    send to the new partitions. Here the topics grow while no processor runs, the old partitions
    end in a client's command, and no command reaches them after the restart."""
    from processor._engine.growth import Layout
    from processor._kafka.control import read_control, settled

    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=4)
    client = Client(kafka_bootstrap, prefix=prefix)
    fresh: Client | None = None
    try:
        candidates = [w for w in (f"idle-{i}" for i in range(200)) if _moves(w)]
        # one per old partition; each partition's last record is its start
        movers = [next(w for w in candidates if partition_for(w.encode(), 4) == p) for p in range(4)]
        _sleep_then_grow_while_stopped(c, client, movers)
        # Restored, it waits a moment before its first transaction: the consumer fetches meanwhile,
        # finds nothing after the committed offsets, and so reports no position for any partition.
        c.processor(0, env={"DP_FAILPOINTS": f"restored=3000@{tmp_path / 'restored'}"})
        wait_for(lambda: settled(Layout(8, 4, 1), read_control(kafka_bootstrap, f"{prefix}.control")), 60,
                 interval=0.5, message="every old partition handed off with no command reaching it")
        fresh = Client(kafka_bootstrap, prefix=prefix)  # knows 8 partitions: sends to the new homes
        for wid in movers:
            fresh.signal(wid, "approve", "ops")
        for wid in movers:
            assert fresh.result(wid, timeout=120).startswith("approved by ops"), wid
    finally:
        if fresh is not None:
            fresh.close()
        client.close()
        c.close()
