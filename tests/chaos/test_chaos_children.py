"""Child workflows under SIGKILL (issue 7): a parent fans out 20 children across all partitions;
both processors are SIGKILLed during the run (and restarted). Every child runs once (one
WorkflowStarted, one completion), the parent gets all 20 results, one completion record per run,
no event key twice -- counted from Kafka, read_committed."""

from __future__ import annotations

from collections import Counter

import pytest

from processor._codec.partitioner import partition_for
from processor._engine.keys import split_event_key
from processor.client import Client
from tests.dp_harness import Cluster, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

N = 20


def _children_started(c: Cluster) -> int:
    return sum(1 for key, ev, _ in read_all(c.bootstrap, f"{c.prefix}.events")
               if ev["type"] == "WorkflowStarted" and (key or b"").startswith(b"fan-child-"))


def test_children_across_partitions_survive_two_sigkills(slow_cluster: Cluster) -> None:
    c = slow_cluster
    client = Client(c.bootstrap, prefix=c.prefix)
    first, second = c.processor(0), c.processor(1)
    c.worker()
    ids = [f"fan-child-{i}" for i in range(N)]
    assert {partition_for(wid.encode(), 4) for wid in ids} == {0, 1, 2, 3}, "children on every partition"
    handle = client.start_workflow("Parent", N, True, id="fan")  # children wait for the parent's release signal

    wait_for(lambda: _children_started(c) >= 5, 120, interval=0.3, message="some children started")
    c.kill(first)
    first = c.processor(0)
    wait_for(lambda: len(c.runs()) >= 5, 120, interval=0.3, message="some child activities ran")
    c.kill(second)
    second = c.processor(1)

    out = handle.result(timeout=240)
    assert out == {"results": list(range(1, N + 1))}
    client.close()

    everyone = ["fan", *ids]
    closes = Counter((k or b"").decode() for k, _, _ in read_all(c.bootstrap, f"{c.prefix}.completions"))
    assert closes == dict.fromkeys(everyone, 1), "one completion record per run, for parent and each child"
    keys = [k for k, _, _ in read_all(c.bootstrap, f"{c.prefix}.events", decode=False)]
    assert len(keys) == len(set(keys)), "no event key twice"
    starts = Counter(split_event_key(k)[0] for k, ev, _ in read_all(c.bootstrap, f"{c.prefix}.events")  # type: ignore[index]
                     if ev["type"] == "WorkflowStarted")
    assert starts == dict.fromkeys(everyone, 1), "each child started exactly once"
    parent = [ev["type"] for k, ev, _ in read_all(c.bootstrap, f"{c.prefix}.events") if k and k.startswith(b"fan@")]
    assert parent.count("ChildWorkflowStarted") == N and parent.count("ChildWorkflowCompleted") == N
    runs = Counter(wid for wid, _seq, _attempt in c.runs())
    print(f"parent + {N} children: {sum(closes.values())} completion records; child activity runs: "
          f"{sum(runs.values())} for {N} activities")
