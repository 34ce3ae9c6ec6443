"""A static member killed between the two phases of a cooperative rebalance, and restarted at once.

Processor 0 owns all four partitions; processor 1 joins; the group's first phase has processor 0
give up two partitions, which nobody owns until processor 0 rejoins for the second phase. It is
killed right there (failpoint `revoked`) and restarted on the same state dir, so it rejoins as the
same static member. Kafka hands a static member that rejoins a Stable group its last assignment
without a rebalance, so the two partitions it gave up stayed assigned to nobody -- found in CI,
where a workflow waited 240 s for them. The group coverage watch (coverage.py) must see the hole and
have a member rejoin: every workflow completes, exactly once.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from processor._codec.partitioner import partition_for
from processor.client import Client
from tests.chaos.test_chaos_exactly_once import _assert_exactly_once, _start_three_steps
from tests.dp_harness import Cluster, group_owned, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]


def _log(c: Cluster, name: str) -> str:
    path = c.logs / name
    return path.read_text(errors="replace") if path.exists() else ""


def test_a_member_killed_between_the_rebalance_phases_leaves_no_partition_unowned(
        slow_cluster: Cluster, tmp_path: Path) -> None:
    c = slow_cluster
    marker = tmp_path / "between-phases"
    first = c.processor(0, env={"DP_FAILPOINTS": f"revoked=600000@{marker}"})
    wait_for(lambda: "restored partitions" in _log(c, "processor-0.log"), 120, message="processor 0 owns all")
    c.worker()
    c.processor(1)
    wait_for(marker.exists, 120, message="processor 0 gave partitions up and has not rejoined yet")
    c.kill(first)
    c.processor(0)  # the same state dir: the same group.instance.id

    client = Client(c.bootstrap, prefix=c.prefix)
    ids = [f"rejoin-{i}" for i in range(40)]
    assert {partition_for(wid.encode(), 4) for wid in ids} == {0, 1, 2, 3}
    starts = _start_three_steps(client, ids)
    for wid in ids:
        assert client.result(wid, timeout=120) == [starts[wid] + 1, starts[wid] + 2, starts[wid] + 3]
    client.close()
    _assert_exactly_once(c, ids, starts)
    assert group_owned(c.bootstrap, f"{c.prefix}.processor") == {0, 1, 2, 3}


def test_a_worker_killed_between_the_rebalance_phases_leaves_no_task_partition_unowned(
        slow_cluster: Cluster, tmp_path: Path) -> None:
    c = slow_cluster
    marker = tmp_path / "worker-between-phases"
    c.processor(0)
    first = c.worker(0, env={"DP_FAILPOINTS": f"worker_revoked=600000@{marker}"})
    wait_for(lambda: "assigned [0, 1, 2, 3]" in _log(c, "worker-0.log"), 120, message="worker 0 owns all")
    c.worker(1)
    wait_for(marker.exists, 120, message="worker 0 gave task partitions up and has not rejoined yet")
    c.kill(first)
    c.worker(0)  # the same state dir: the same group.instance.id

    client = Client(c.bootstrap, prefix=c.prefix)
    ids = [f"wrejoin-{i}" for i in range(40)]
    starts = _start_three_steps(client, ids)
    for wid in ids:
        assert client.result(wid, timeout=120) == [starts[wid] + 1, starts[wid] + 2, starts[wid] + 3]
    client.close()
    _assert_exactly_once(c, ids, starts)
    assert group_owned(c.bootstrap, f"{c.prefix}.workers.default") == {0, 1, 2, 3}
