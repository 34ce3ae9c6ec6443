"""The visibility service on real processes and a real broker (issue 9): `processor ui` projects
wf.events with faust into RocksDB tables and answers list/count/describe/history queries; the CLI
and Client read it; its cancel button cancels; SIGKILLed it
resumes from its tables and committed offsets -- the same answers, no run twice; restarted on an
empty state dir it restores its tables from their changelog topics -- the same answers again."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from processor._visibility.http import VisibilityClient
from processor.client import Client
from tests.dp_harness import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration

CUSTOMERS = ["c1", "c2", "c3"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ui(c: Cluster, port: int, state: Path, log_name: str) -> subprocess.Popen[bytes]:
    verbose = ["-v"] if os.environ.get("DP_UI_VERBOSE") else []
    log = open(c.logs / log_name, "ab")  # noqa: SIM115 - owned by the child
    proc = subprocess.Popen([sys.executable, "-m", "processor.cli", "ui", "--bootstrap", c.bootstrap, "--prefix",
                             c.prefix, "--port", str(port), "--state-dir", str(state), *verbose], cwd=REPO, env=c.env,
                            stdout=log, stderr=subprocess.STDOUT)
    log.close()
    c.procs.append(proc)
    return proc


def _answers(vis: VisibilityClient) -> bool:
    try:
        vis.status()
        return True
    except Exception:  # noqa: BLE001 - not serving yet
        return False


def _cli(*args: str, url: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", *args, "--visibility-url", url], cwd=REPO,
                          capture_output=True, text=True, timeout=60)


def _snapshot(vis: VisibilityClient) -> dict[str, Any]:
    return {(w["workflow_id"], w["run_id"]): (w["status"], w["history_length"], json.dumps(w["search_attributes"]))
            for w in vis.rows(page_size=500)}


def test_list_count_describe_cancel_and_rebuild(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=4)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    client = Client(kafka_bootstrap, prefix=prefix, visibility_url=url)
    vis = VisibilityClient(url)
    try:
        c.processor(0)
        c.worker()
        ui = _ui(c, port, tmp_path / "vis-a", "ui-1.log")
        wait_for(lambda: _answers(vis), 120, interval=0.5, message="processor ui serving")
        expected: dict[str, tuple[str, str, int]] = {}  # id -> (type, customer, amount)
        for i in range(30):
            wid, customer = f"vis-{i:02d}", CUSTOMERS[i % 3]
            kind = ("ThreeSteps", "Approval", "Failing")[i % 3 if i < 27 else 0]
            arg: Any = {"ThreeSteps": i, "Approval": 0.1, "Failing": f"no {i}"}[kind]
            client.start_workflow(kind, arg, id=wid, search_attributes={"CustomerId": customer, "Amount": i * 10,
                                                                         "Tags": ["batch", f"t{i % 2}"]},
                                  memo={"note": f"order {i}"})
            expected[wid] = (kind, customer, i * 10)
        for wid, (kind, _, _) in expected.items():
            if kind != "Approval":
                try:
                    client.result(wid, timeout=120)
                except Exception:  # noqa: BLE001 - Failing fails
                    pass
        closed_at = time.monotonic()
        n_running = sum(1 for k, _, _ in expected.values() if k == "Approval")
        n_failed = sum(1 for k, _, _ in expected.values() if k == "Failing")
        want = {"Completed": 30 - n_running - n_failed, "Failed": n_failed, "Running": n_running}
        wait_for(lambda: vis.count()["by_status"] == want, 120, interval=0.1,
                 message=f"the projection counting {want}")
        print(f"visibility lag: every completion listed {time.monotonic() - closed_at:.3f} s after the last "
              "result was read")

        running_c1 = {w["workflow_id"] for w in client.list_workflows(
            "WorkflowType = 'Approval' AND ExecutionStatus = 'Running' AND CustomerId = 'c2'")}
        assert running_c1 == {w for w, (k, cu, _) in expected.items() if k == "Approval" and cu == "c2"}
        big = [w["workflow_id"] for w in client.list_workflows("Amount >= 200 AND Tags = 't1' ORDER BY Amount DESC")]
        assert big == [w for w, (_, _, a) in sorted(expected.items(), key=lambda kv: -kv[1][2])
                       if a >= 200 and (a // 10) % 2 == 1]
        assert client.count_workflows("ExecutionStatus = 'Failed'") == n_failed

        failed = vis.describe(next(w for w, (k, _, _) in expected.items() if k == "Failing"))
        assert failed["status"] == "Failed" and failed["failure"]["stack_trace"], "the full failure"
        done = vis.describe("vis-00")
        assert done["result"]["json"] == [1, 2, 3] and done["memo"] == {"note": "order 0"}
        assert done["search_attributes"] == {"CustomerId": "c1", "Amount": 0, "Tags": ["batch", "t0"]}
        assert [e["type"] for e in vis.history("vis-00")] == [e["type"] for e in client.history("vis-00")]

        listed = _cli("list", "ExecutionStatus = 'Running'", "--output", "json", url=url)
        assert listed.returncode == 0, listed.stderr
        assert len(json.loads(listed.stdout)) == n_running
        table = _cli("list", "CustomerId = 'c3' AND ExecutionStatus = 'Completed'", url=url)
        assert table.returncode == 0 and table.stdout.splitlines()[0].split()[:3] == ["WORKFLOW", "ID", "TYPE"]
        counted = _cli("count", "WorkflowType = 'ThreeSteps'", "-o", "json", url=url)
        assert json.loads(counted.stdout)["count"] == sum(1 for k, _, _ in expected.values() if k == "ThreeSteps")
        bad = _cli("list", "Amount >", url=url)
        assert bad.returncode == 2 and bad.stderr.startswith("error: list query: expected a value for Amount")
        assert "Traceback" not in bad.stderr

        target = next(w for w, (k, _, _) in expected.items() if k == "Approval")
        request = urllib.request.Request(f"{url}/api/workflows/{target}/cancel", method="POST",
                                         data=b'{"reason": "from the test"}',
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310 - a local URL
            assert json.loads(response.read())["sent"] == "cancel"
        wait_for(lambda: vis.describe(target)["status"] == "Canceled", 60, message="canceled from the API")

        before = _snapshot(vis)
        assert len(before) == 30
        ui.send_signal(signal.SIGKILL)
        ui.wait(30)
        ui = _ui(c, port, tmp_path / "vis-a", "ui-2.log")
        wait_for(lambda: _answers(vis) and _snapshot(vis) == before, 120, interval=0.5,
                 message="the same answers after a SIGKILL")
        assert vis.status()["events_applied"] < sum(b[1] for b in before.values()), \
            "resumed from its committed offsets, not from the beginning of wf.events"

        ui.send_signal(signal.SIGKILL)
        ui.wait(30)
        ui = _ui(c, port, tmp_path / "vis-fresh", "ui-3.log")
        started = time.monotonic()
        wait_for(lambda: _answers(vis) and _snapshot(vis) == before, 180, interval=0.5,
                 message="the same answers from a fresh state dir")
        print(f"visibility rebuild on a fresh state dir: same answers after {time.monotonic() - started:.2f} s")
    finally:
        client.close()
        c.close()
        if os.environ.get("DP_KEEP_LOGS"):
            print(c.log_text())
