"""Inputs that used to crash-loop a processor, and a restart that used to let timeouts win
(issue 6, defects 2 and 4). Real processes, real broker; counts read back from Kafka.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest

from processor import _payload
from processor.client import Client
from processor.exceptions import WorkflowFailureError
from tests.dp_harness import Cluster, read_all, wait_for

pytestmark = [pytest.mark.integration, pytest.mark.chaos]

APP = "tests.apps.hardening:app"


def test_bad_inputs_end_once_and_the_processor_keeps_serving(kafka_bootstrap: str, prefix: str,
                                                             tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, app=APP)
    client = Client(c.bootstrap, prefix=c.prefix)
    try:
        proc = c.processor()
        c.worker()
        # (a) a 600 KB input echoed twice through an activity: the result outgrows Kafka's limit
        client.start_workflow("Doubler", "y" * 600_000, id="big")
        # (b) workflow code that blocks past the transaction timeout
        client.start_workflow("Blocking", 16.0, id="blocked")
        # (c) a start with a task queue name Kafka cannot use (sent raw: the client refuses it)
        client._send("StartWorkflow", "badq", {  # noqa: SLF001 - what a producer in another language may send
            "workflow_type": "ThreeSteps", "args": _payload.to_payloads([1]), "task_queue": "bad queue!",
            "execution_timeout_ms": None, "request_id": "r-badq"})
        after = [f"after-{i}" for i in range(10)]
        for wid in after:
            client.start_workflow("ThreeSteps", 1, id=wid, wait_for_ack=False)
        client.flush()

        with pytest.raises(WorkflowFailureError, match="record limit"):
            client.result("big", timeout=120)
        for wid in after:
            assert client.result(wid, timeout=120) == [2, 3, 4]
        wait_for(lambda: "blocked the processor's event loop" in (client.describe("blocked").get("held") or ""), 60,
                 message="the blocking workflow held with its reason")

        def dlq_keys() -> Counter[bytes | None]:
            return Counter(k for k, _, _ in read_all(c.bootstrap, f"{c.prefix}.dlq", decode=False))

        wait_for(lambda: dlq_keys()[b"badq"] >= 1, 60, message="the bad start dead-lettered")
        time.sleep(3)  # a crash loop or a re-read would add copies by now
        assert dlq_keys()[b"badq"] == 1
        completions = Counter(k.decode() for k, _, _ in read_all(c.bootstrap, f"{c.prefix}.completions"))
        assert {w: n for w, n in completions.items() if n != 1} == {}
        assert sorted(completions) == sorted(["big", *after]), "blocked is held, badq never started"
        assert proc.poll() is None, "the processor never exited"
        log = (c.logs / "processor-0.log").read_text()
        assert log.count("assigned [") == 1, "the processor never restarted or lost its partitions"
    finally:
        client.close()
        c.close()


def test_results_waiting_in_the_log_beat_timeouts_that_fell_due_meanwhile(kafka_bootstrap: str, prefix: str,
                                                                          tmp_path: Path) -> None:
    """Processor SIGKILLed while 2 s activities run under a 5 s start-to-close timeout, down 8 s:
    the results are in the log before the timeouts fell due, so every workflow completes and no
    activity runs twice."""
    c = Cluster(kafka_bootstrap, prefix, tmp_path, app=APP)
    client = Client(c.bootstrap, prefix=c.prefix)
    try:
        proc = c.processor()
        c.worker()
        ids = [f"late-{i}" for i in range(5)]
        for wid in ids:
            client.start_workflow("Paused", 2.0, 5.0, id=wid, wait_for_ack=False)
        client.flush()
        wait_for(lambda: len(c.runs()) >= len(ids), 60, message="every activity running")
        c.kill(proc)
        time.sleep(8)  # the scenario: the processor stays down past every start-to-close deadline
        c.processor()
        for wid in ids:
            assert client.result(wid, timeout=120) == "paused"
        runs = c.runs()
        print(f"{len(ids)} workflows, {len(runs)} activity runs")
        assert len(runs) == len(ids), f"activities ran again: {runs}"
    finally:
        client.close()
        c.close()
