"""Fail-over paths, with exactly-once counted after each:

- a crashed processor restarted by its supervisor takes its partitions back as the same static
  group member: nobody else's partitions move (no rebalance);
- a processor killed inside an open transaction and not restarted: the survivor fences it when it
  takes its partitions over, so the restore does not wait for the broker to time that
  transaction out (transaction.timeout.ms is set to 60 s here: waiting for it would show).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from processor._engine.identity import ID_FILE
from processor.client import Client
from tests.chaos.test_chaos_exactly_once import _assert_exactly_once, _progress, _start_three_steps
from tests.dp_harness import Cluster, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

LONG_TXN_TIMEOUT_MS = 60_000


def _log(c: Cluster, name: str) -> str:
    path = c.logs / name
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_restarted_processor_takes_its_partitions_back_without_a_rebalance(slow_cluster: Cluster) -> None:
    c = slow_cluster
    client = Client(c.bootstrap, prefix=c.prefix)
    c.supervisor(processors=2, workers=1)
    wait_for(lambda: _log(c, "supervisor.log").count("restored partitions") >= 2, 120,
             message="both processors restored their partitions")
    wait_for(lambda: c.child_pid("processor", 1) is not None, 30, message="processor-1 running")
    ids = [f"restart-{i}" for i in range(100)]
    starts = _start_three_steps(client, ids)
    wait_for(lambda: _progress(c) >= 60, 120, message="work in flight")
    before = _log(c, "supervisor.log")
    pid = c.child_pid("processor", 1)
    assert pid is not None
    os.kill(pid, signal.SIGKILL)
    for wid in ids:
        assert client.result(wid, timeout=180) == [starts[wid] + 1, starts[wid] + 2, starts[wid] + 3]
    client.close()
    _assert_exactly_once(c, ids, starts)
    after = _log(c, "supervisor.log")[len(before):]
    assert "processor-1 exited with -9" in after
    # The restarted member took back what it had; the survivor was neither revoked nor given anything.
    assert "revoked" not in after, after[-3000:]
    assigned = [line for line in after.splitlines() if "processor.loop assigned [" in line]
    assert len(assigned) == 1 and "assigned []" not in assigned[0], assigned


def test_the_survivor_fences_a_processor_killed_inside_a_transaction(kafka_bootstrap: str, prefix: str,
                                                                     tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, env={"DP_TEST_ACTIVITY_DELAY": "0.04",
                                                        "DP_TRANSACTION_TIMEOUT_MS": str(LONG_TXN_TIMEOUT_MS)})
    try:
        client = Client(c.bootstrap, prefix=c.prefix)
        c.processor(0)
        wait_for(lambda: "restored partitions" in _log(c, "processor-0.log"), 120, message="processor 0 started")
        marker = tmp_path / "in-open-transaction"
        doomed = c.processor(1, env={"DP_FAILPOINTS": f"commit_txn=600000@{marker}"})
        c.worker()
        wait_for(lambda: "restored partitions" in _log(c, "processor-1.log"), 120,
                 message="processor 1 owns partitions")
        ids = [f"fence-{i}" for i in range(100)]
        starts = _start_three_steps(client, ids)
        wait_for(marker.exists, 120, message="processor 1 inside a transaction, before its commit")
        doomed_id = (c.state / "processor-1" / ID_FILE).read_text().strip()
        c.kill(doomed)
        killed = time.monotonic()
        wait_for(lambda: f"fenced {doomed_id}" in _log(c, "processor-0.log"), 60,
                 message="processor 0 fenced the dead owner of its new partitions")
        wait_for(lambda: _log(c, "processor-0.log").count("restored partitions") >= 2, 60,
                 message="processor 0 restored the partitions it took over")
        took = time.monotonic() - killed
        print(f"takeover: partitions restored {took:.1f} s after the kill")
        # Restored before the open transaction could have timed out: the fence aborted it.
        assert took < LONG_TXN_TIMEOUT_MS / 1000
        for wid in ids:
            assert client.result(wid, timeout=120) == [starts[wid] + 1, starts[wid] + 2, starts[wid] + 3]
        client.close()
        _assert_exactly_once(c, ids, starts)
    except BaseException:
        print(c.log_text())
        raise
    finally:
        c.close()
