"""A canceled workflow's heartbeating activity learns it is canceled (issue 7, item 8): the
processor sends ActivityCancel on the attempt's task partition; the worker running it makes the
next activity.heartbeat() raise, the activity stops, and it is not retried."""

from __future__ import annotations

import time

import pytest

from processor.client import Client
from processor.exceptions import WorkflowFailureError
from tests.dp_harness import Cluster, read_all, wait_for


def test_cancel_reaches_the_running_activity(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    cluster.worker()
    client.start_workflow("LongBeat", 120.0, id="beat-1")
    wait_for(lambda: len(cluster.runs()) >= 1, 60, message="the activity running")
    t0 = time.monotonic()
    client.cancel("beat-1", "user asked")
    with pytest.raises(WorkflowFailureError, match="canceled"):
        client.result("beat-1", timeout=60)

    def cancelled_report() -> bool:
        for _, rec, headers in read_all(cluster.bootstrap, f"{cluster.prefix}.commands"):
            if dict(headers).get("type") == b"wf.commands.v1.ActivityFailed" and \
                    rec["failure"]["type"] == "ActivityCancelled":
                return True
        return False

    wait_for(cancelled_report, 30, interval=0.5, message="the activity reported itself canceled")
    print(f"activity stopped and reported ActivityCancelled within {time.monotonic() - t0:.1f} s of the cancel")
    assert len(cluster.runs()) == 1, "ran once, not retried after the cancel"
