"""Continue-as-new on the real broker (issue 7): a 10,000-iteration loop that continues as new
every 500 iterations keeps each run's history bounded, and 50 signals sent while it runs (across
every hand-over) all arrive, once, in order. `result()` follows the chain to the last run."""

from __future__ import annotations

from collections import Counter

from processor._engine.keys import split_event_key
from processor.client import Client
from tests.dp_harness import Cluster, read_all

TOTAL, EVERY = 10_000, 500


def test_a_long_loop_continues_as_new_with_bounded_history_and_no_lost_signal(cluster: Cluster,
                                                                             client: Client) -> None:
    cluster.processor()
    handle = client.start_workflow("Looper", 0, TOTAL, EVERY, 0, [], id="looper")
    tags = []
    for i in range(TOTAL):  # queued in order on the id's partition; the processor batches them
        client.signal("looper", "bump", wait_for_ack=False)
        if i % 200 == 100:
            tags.append(f"tag-{len(tags)}")
            client.signal("looper", "tag", tags[-1], wait_for_ack=False)
    client.flush()
    assert len(tags) == 50

    out = handle.result(timeout=600)  # the first run's handle: followed through every continue-as-new
    assert out["count"] == TOTAL
    assert out["tags"] == tags, "every signal arrived once, in the order sent"

    closes = [(name, rec) for key, rec, headers in read_all(cluster.bootstrap, f"{cluster.prefix}.completions")
              if key == b"looper" for name in [dict(headers)["type"].decode()]]
    assert [n.rpartition(".")[2] for n, _ in closes] == ["WorkflowContinuedAsNew"] * (TOTAL // EVERY - 1) + [
        "WorkflowCompleted"]
    runs = [rec["run_id"] for _, rec in closes]
    assert runs[0] == handle.run_id and runs[-1] == out["run"] and len(set(runs)) == TOTAL // EVERY
    assert [rec["new_run_id"] for _, rec in closes[:-1]] == runs[1:], "each run names the next"

    per_run = Counter(split_event_key(key)[1] for key, _, _ in  # type: ignore[index]
                      read_all(cluster.bootstrap, f"{cluster.prefix}.events") if key is not None)
    assert set(per_run) == set(runs)
    largest = max(per_run.values())
    print(f"{TOTAL} iterations in {len(runs)} runs; events per run: largest {largest}, "
          f"smallest {min(per_run.values())}, total {sum(per_run.values())}")
    # A run: its start, 500 bumps (+ the tags that came meanwhile), its close.
    assert largest <= EVERY + 2 + 50
