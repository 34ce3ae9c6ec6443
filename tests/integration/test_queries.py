"""Queries on the real broker (issue 7): 100 running workflows answered by the processors that own
them, through wf.commands and the client's own replies partition; again after the owner of half
of them was SIGKILLed and its partitions moved. Latency percentiles are printed."""

from __future__ import annotations

import statistics
import time

import pytest

from processor.client import Client
from processor.exceptions import QueryFailedError, WorkflowNotFoundError
from tests.dp_harness import Cluster, read_all

N = 100


def _latencies(client: Client, ids: list[str], expect: dict[str, object]) -> list[float]:
    took = []
    for wid in ids:
        t0 = time.perf_counter()
        assert client.query(wid, "state", timeout=120) == expect[wid]
        took.append((time.perf_counter() - t0) * 1000)
    return took


def _report(label: str, took: list[float]) -> str:
    q = statistics.quantiles(took, n=100)
    return f"{label}: {len(took)} queries, p50 {q[49]:.1f} ms, p99 {q[98]:.1f} ms, max {max(took):.1f} ms"


def test_queries_are_answered_before_and_after_the_owner_is_killed(cluster: Cluster, client: Client) -> None:
    victim = cluster.processor(0)
    cluster.processor(1)
    cluster.worker()
    ids = [f"q-{i}" for i in range(N)]
    handles = [client.start_workflow("Approval", 600.0, id=wid) for wid in ids]
    assert all(h.outcome == "started" for h in handles)
    for wid in ids[::2]:
        client.signal(wid, "approve", f"by-{wid}")
    expect: dict[str, object] = {wid: {"approved_by": f"by-{wid}" if i % 2 == 0 else None}
                                 for i, wid in enumerate(ids)}

    first = _latencies(client, ids, expect)
    print(_report("live", first))

    cluster.kill(victim)
    t0 = time.monotonic()
    after = _latencies(client, ids, expect)  # the moved half waits for the survivor's restore
    print(_report("after SIGKILL", after) + f"; all answered {time.monotonic() - t0:.1f} s after the kill")

    with pytest.raises(QueryFailedError, match="has no query 'nope'"):
        client.query(ids[0], "nope")
    with pytest.raises(WorkflowNotFoundError, match="unknown workflow 'nobody'"):
        client.query("nobody", "state")
    # Queries wrote nothing: each workflow's history is its start, its timer and (half) the signal.
    per_id: dict[str, int] = {}
    for key, _, _ in read_all(cluster.bootstrap, f"{cluster.prefix}.events"):
        wid = (key or b"").decode().split("@")[0]
        per_id[wid] = per_id.get(wid, 0) + 1
    assert {per_id[wid] for wid in ids[::2]} == {3} and {per_id[wid] for wid in ids[1::2]} == {2}
