"""Growing the topics under SIGKILL (issue 8): 4 -> 8 partitions with `processor topics scale`
while a processor is killed in the middle of its hand-off (its transaction open, some batches
committed) and restarted with its state directory deleted; then 8 -> 16. Every workflow
completes once, every activity ran once and its result was applied once, and signals sent
during the growth arrive once and in order -- counted from Kafka, read_committed."""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest

from processor._codec.partitioner import partition_for
from processor.client import Client
from tests.dp_harness import REPO, Cluster, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _scale(c: Cluster, n: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", "topics", "scale", "--partitions", str(n),
                           "--bootstrap", c.bootstrap, "--prefix", c.prefix, "--timeout", "180"],
                          cwd=REPO, capture_output=True, text=True, timeout=240)


def test_growth_survives_a_processor_killed_mid_hand_off(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    marker = tmp_path / "at-handoff"
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=4, env={"DP_HANDOFF_BATCH": "5"})
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        first = c.processor(0, env={"DP_FAILPOINTS": f"handoff_txn=60000@{marker}"})
        c.processor(1)
        c.worker()
        sleepers = [f"sleep-{i}" for i in range(120)]
        loopers = [f"tags-{i}" for i in range(10)]
        for wid in sleepers:
            client.start_workflow("Approval", 3.0, id=wid, wait_for_ack=False)
        for wid in loopers:
            client.start_workflow("Looper", 0, 1, 1000, 0, [], id=wid, wait_for_ack=False)
        client.flush()
        steady: list[str] = []
        stop = threading.Event()
        tags_sent = 0

        def traffic() -> None:  # new starts and ordered signals through both growths
            nonlocal tags_sent
            i = 0
            while not stop.is_set():
                wid = f"steady-{i}"
                client.start_workflow("ThreeSteps", 1, id=wid, wait_for_ack=False)
                steady.append(wid)
                for looper in loopers:
                    client.signal(looper, "tag", f"t{i}")
                tags_sent = i + 1
                i += 1
                time.sleep(0.2)

        mover_owner = {partition_for(w.encode(), 4) for w in sleepers}
        assert mover_owner == {0, 1, 2, 3}
        started = len(sleepers) + len(loopers)
        wait_for(lambda: sum(1 for _, ev, _ in read_all(c.bootstrap, f"{prefix}.events")
                             if ev["type"] == "WorkflowStarted") >= started, 120, interval=0.5,
                 message="every workflow started (they have state to hand off)")
        sender = threading.Thread(target=traffic, daemon=True)
        sender.start()
        time.sleep(1.0)
        scaler = threading.Thread(target=lambda: results.append(_scale(c, 8)), daemon=True)
        results: list[subprocess.CompletedProcess[str]] = []
        scaler.start()
        wait_for(marker.exists, 120, interval=0.05, message="processor 0 mid-hand-off")
        c.kill(first)  # its open transaction (a batch of hand-offs) is aborted; earlier batches stand
        shutil.rmtree(c.state / "processor-0", ignore_errors=True)
        time.sleep(2.0)
        c.processor(0)  # rebuilt from the log alone
        scaler.join(240)
        assert results and results[0].returncode == 0, results[0].stderr if results else "scale did not return"
        print(results[0].stdout)
        second = _scale(c, 16)
        assert second.returncode == 0, second.stderr
        print(second.stdout)
        stop.set()
        sender.join(10)

        for wid in sleepers:
            client.signal(wid, "approve", "ops")
        for wid in loopers:
            client.signal(wid, "bump")
        for wid in sleepers:
            assert client.result(wid, timeout=180).startswith("approved by ops"), wid
        for wid in steady:
            assert client.result(wid, timeout=180) == [2, 3, 4], wid
        for wid in loopers:
            out = client.result(wid, timeout=180)
            assert out["tags"] == [f"t{i}" for i in range(tags_sent)], f"{wid}: signals once and in order"
        everyone = sleepers + loopers + steady
        completions = Counter(k.decode() for k, _, _ in read_all(c.bootstrap, f"{prefix}.completions") if k)
        assert {w: completions[w] for w in everyone if completions[w] != 1} == {}, "one completion per run"
        for wid in steady[:: max(1, len(steady) // 20)] + sleepers[::10]:
            history = client.history(wid)
            assert [e["seq"] for e in history] == list(range(1, len(history) + 1)), wid
            assert [e["type"] for e in history].count("WorkflowStarted") == 1, wid
            done = Counter(e["activity_seq"] for e in history if e["type"] == "ActivityCompleted")
            assert all(n == 1 for n in done.values()), f"{wid}: an activity result applied twice"
        runs = Counter((wid, seq) for wid, seq, _ in c.runs())
        assert {k: n for k, n in runs.items() if n != 1} == {}, "an activity ran twice"
        assert read_all(c.bootstrap, f"{prefix}.dlq", decode=False) == [], "nothing dead-lettered"
        per_partition = Counter(partition_for(w.encode(), 16) for w in everyone)
        print(f"{len(everyone)} workflows over 16 partitions: {sorted(per_partition.items())}; "
              f"{tags_sent} tag signals to each of {len(loopers)} loopers")
    finally:
        client.close()
        c.close()
