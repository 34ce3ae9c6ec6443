"""Patching across a deploy (issue 7 item 7): a run started on v1 is asleep when v2 (with
`workflow.patched("courier")`) replaces the processor; it finishes on the old branch, a new run
takes the new one, and `processor replay` passes for both against v2."""

from __future__ import annotations

import subprocess
import sys

from processor.client import Client
from tests.dp_harness import REPO, Cluster, wait_for

V1, V2 = "tests.apps.patch_v1:app", "tests.apps.patch_v2:app"


def _replay(cluster: Cluster, wid: str, app: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", "replay", wid, "--app", app, "--bootstrap",
                           cluster.bootstrap, "--prefix", cluster.prefix], cwd=REPO, capture_output=True, text=True,
                          timeout=120)


def test_a_patch_deployed_under_a_sleeping_run(cluster: Cluster, client: Client) -> None:
    v1 = cluster.processor(app=V1)
    cluster.worker(app=V1)
    client.start_workflow("Dispatch", "old-order", 8.0, id="old")
    wait_for(lambda: any(e["type"] == "TimerStarted" for e in client.history("old")), 60,
             message="the v1 run asleep")
    cluster.stop(v1)  # the deploy: v2 takes over while the old run sleeps
    cluster.processor(app=V2)
    client.start_workflow("Dispatch", "new-order", 0.0, id="new")
    assert client.result("new", timeout=120) == "new-order sent by courier"
    assert client.result("old", timeout=120) == "old-order sent by post"
    new_types = [e["type"] for e in client.history("new")]
    assert new_types[:3] == ["WorkflowStarted", "PatchMarker", "ActivityScheduled"], new_types
    assert "PatchMarker" not in [e["type"] for e in client.history("old")]
    for wid in ("old", "new"):
        replayed = _replay(cluster, wid, V2)
        assert replayed.returncode == 0, replayed.stdout + replayed.stderr
