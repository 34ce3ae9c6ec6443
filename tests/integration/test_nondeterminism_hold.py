"""A deploy that changes workflow code incompatibly holds the workflow (not failed, not advanced);
deploying code that replays it releases it."""

from __future__ import annotations

import subprocess
import sys

import pytest

from processor.client import Client
from tests.dp_harness import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration


def test_held_until_fixed_code_is_deployed(cluster: Cluster, client: Client) -> None:
    proc = cluster.processor()
    cluster.worker()
    client.start_workflow("Approval", 0.1, id="hold-me")
    wait_for(lambda: any(e["type"] == "TimerFired" for e in client.history("hold-me")), 60,
             message="workflow waiting for its signal")
    cluster.stop(proc)

    bad = cluster.processor(app="tests.apps.changed:app")
    client.signal("hold-me", "approve", "bob")
    wait_for(lambda: client.describe("hold-me").get("held"), 60, message="workflow held")
    summary = client.describe("hold-me")
    assert summary["status"] == "running"
    assert "nondeterministic at history seq 2" in summary["held"]
    history = client.history("hold-me")
    assert [e["type"] for e in history][-2:] == ["WorkflowTaskFailed", "SignalReceived"]
    replay = subprocess.run(
        [sys.executable, "-m", "processor.cli", "replay", "hold-me", "--app", "tests.apps.changed:app",
         "--bootstrap", cluster.bootstrap, "--prefix", cluster.prefix], cwd=REPO, capture_output=True, text=True,
        check=False)
    assert replay.returncode == 1 and "NONDETERMINISTIC" in replay.stdout
    cluster.stop(bad)

    cluster.processor()  # the original code again
    assert client.result("hold-me", timeout=60) == "approved by bob after sleeping True"
    assert client.describe("hold-me")["held"] is None
