"""The activity worker hardened (issue 6, defects 3 and 7), through real processes:

- an activity result over the record limit fails the attempt (PayloadTooLarge) instead of being
  lost, and the partition's offsets keep committing: a restarted worker re-runs nothing;
- a graceful worker stop (SIGTERM) settles and commits what ran: nothing runs twice;
- after a worker is killed, each in-flight activity runs about once more, not once per retry.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from processor.client import Client
from processor.exceptions import WorkflowFailureError
from tests.dp_harness import Cluster, wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def hardening(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> Iterator[Cluster]:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, app="tests.apps.hardening:app")
    yield c
    c.close()


def test_an_oversized_result_fails_the_workflow_and_offsets_keep_committing(hardening: Cluster) -> None:
    client = Client(hardening.bootstrap, prefix=hardening.prefix)
    try:
        hardening.processor()
        first = hardening.worker()
        client.start_workflow("BigResult", 2_000_000, id="big-result")
        ids = [f"after-big-{i}" for i in range(30)]
        for wid in ids:
            client.start_workflow("ThreeSteps", 1, id=wid, wait_for_ack=False)
        client.flush()
        with pytest.raises(WorkflowFailureError) as info:
            client.result("big-result", timeout=60)
        chain: list[BaseException] = []
        cause = info.value.__cause__
        while cause is not None:
            chain.append(cause)
            cause = cause.__cause__
        too_large = [e for e in chain if getattr(e, "type", None) == "PayloadTooLarge"]
        assert too_large, f"no PayloadTooLarge in {[(getattr(e, 'type', None), str(e)) for e in chain]}"
        assert "2,000,0" in str(too_large[0]) and "record limit" in str(too_large[0])
        assert getattr(too_large[0], "non_retryable", None) is True
        for wid in ids:
            assert client.result(wid, timeout=60) == [2, 3, 4]
        time.sleep(1)  # several commit turns (every 0.1 s)
        hardening.kill(first)  # no graceful close: only what the loop committed counts
        hardening.worker(1)
        client.start_workflow("ThreeSteps", 1, id="after-restart")
        assert client.result("after-restart", timeout=90) == [2, 3, 4]
        runs = Counter((wid, seq) for wid, seq, _ in hardening.runs())
        assert runs[("big-result", 1)] == 1
        assert {k: n for k, n in runs.items() if n != 1} == {}, "tasks ran again after the restart"
    finally:
        client.close()


def test_a_graceful_worker_stop_runs_nothing_twice(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, env={"DP_TEST_ACTIVITY_DELAY": "0.5"})
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        c.processor()
        first = c.worker()
        ids = [f"graceful-{i}" for i in range(20)]
        for wid in ids:
            client.start_workflow("ThreeSteps", 1, id=wid, wait_for_ack=False)
        client.flush()
        wait_for(lambda: len(c.runs()) >= 15, 60, interval=0.05, message="activities running")
        c.stop(first)  # SIGTERM: running activities finish and are committed before it leaves
        c.worker(1)
        for wid in ids:
            assert client.result(wid, timeout=90) == [2, 3, 4]
        runs = Counter((wid, seq) for wid, seq, _ in c.runs())
        assert {k: n for k, n in runs.items() if n != 1} == {}, "activities ran again after a graceful stop"
        assert len(runs) == 60
    finally:
        client.close()
        c.close()


@pytest.mark.parametrize(("mode", "allowed"), [("heartbeat_ok", 2.0), ("heartbeat_ok_10s", 1.5)],
                         ids=["2s-activity-0.6s-heartbeat", "10s-activity-2s-heartbeat"])
def test_a_killed_workers_in_flight_activities_run_about_once_more(kafka_bootstrap: str, prefix: str,
                                                                  tmp_path: Path, mode: str, allowed: float) -> None:
    """13 activities in flight (default retries) on a worker that is SIGKILLed. Its partitions
    reach the new worker only after the session timeout. Each attempt that the processor timed out
    meanwhile has its ActivityCancel after its task in the partition, so the new owner skips it;
    and since an attempt's clocks start with its ActivityStarted, the retry that waits for a worker
    is not timed out again and again in the queue. Issue 6 measured 7 runs per activity (10 s
    activities, 2 s heartbeat timeout) before its fix."""
    # Processes on one machine share a clock: a small skew margin makes the boundary crisp.
    c = Cluster(kafka_bootstrap, prefix, tmp_path, env={"DP_CLOCK_SKEW_MS": "100"})
    client = Client(kafka_bootstrap, prefix=prefix)
    try:
        c.processor()
        first = c.worker()
        ids = [f"inflight-{i}" for i in range(13)]
        for wid in ids:
            client.start_workflow("Timeouts", mode, id=wid, wait_for_ack=False)
        client.flush()
        wait_for(lambda: {w for w, _, _ in c.runs()} >= set(ids), 60, interval=0.05, message="all 13 in flight")
        c.kill(first)
        before = len(c.runs())
        c.worker(1)
        for wid in ids:
            assert client.result(wid, timeout=120) == "finished"
        after = Counter(wid for wid, _, _ in c.runs()[before:])
        # Measured unloaded: with heartbeat-timeout clocks from dispatch (issue 6's fix), 0.6 s
        # heartbeat 13, 13, 17, 15 runs for 13 and 10 s / 2 s 13, 13, 13, 13; with clocks from
        # the start and cancels of timed-out attempts (issue 7), 13 and 13 in each of 2 runs.
        # The bound leaves room for a loaded CI machine.
        print(f"{mode}: runs after the kill: {sum(after.values())} for {len(ids)} in-flight activities")
        assert sum(after.values()) <= allowed * len(ids), f"re-executions after the kill: {dict(after)}"
        assert all(after[wid] >= 1 for wid in ids)
    finally:
        client.close()
        c.close()
