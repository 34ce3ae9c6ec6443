"""`processor run` as a user runs it: it starts processor and worker children, restarts a child
that dies (here: SIGKILL), and stops them all on SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from processor.client import Client
from tests.apps.basic import ThreeSteps
from tests.dp_harness import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration


def _children(parent: int) -> dict[str, int]:
    """role -> pid of the supervisor's children, from /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) != parent or b"--role" not in cmdline:
            continue
        out[cmdline[cmdline.index(b"--role") + 1].decode()] = int(entry.name)
    return out


def test_supervisor_restarts_a_killed_child_and_stops_cleanly(cluster: Cluster, client: Client) -> None:
    log = open(cluster.logs / "supervisor.log", "ab")  # noqa: SIM115 - owned by the child
    supervisor = subprocess.Popen(
        [sys.executable, "-m", "processor.cli", "run", "--app", "tests.apps.basic:app", "--processors", "1",
         "--workers", "1", "--bootstrap", cluster.bootstrap, "--prefix", cluster.prefix, "--state-dir",
         str(cluster.state)], cwd=REPO, env=cluster.env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    try:
        wait_for(lambda: set(_children(supervisor.pid)) == {"processor", "worker"}, 30, message="both children")
        assert client.start_workflow(ThreeSteps.run, 1, id="sup-1").result(timeout=60) == [2, 3, 4]
        first = _children(supervisor.pid)["processor"]
        os.kill(first, signal.SIGKILL)
        wait_for(lambda: _children(supervisor.pid).get("processor", first) != first, 30, message="restart")
        assert client.start_workflow(ThreeSteps.run, 10, id="sup-2").result(timeout=90) == [11, 12, 13]
        kids = list(_children(supervisor.pid).values())
        supervisor.send_signal(signal.SIGTERM)
        assert supervisor.wait(60) == 0
        time.sleep(0.5)
        assert all(not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
                   for pid in kids), "children outlived the supervisor"
        assert "restarting" in (cluster.logs / "supervisor.log").read_text()
    finally:
        if supervisor.poll() is None:
            supervisor.kill()
