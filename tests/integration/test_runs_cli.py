"""`processor start`, `signal`, `show` on an id that already ran (issue 7, runs): each says what it
did and exits accordingly -- 0 started or attached or delivered, 1 refused or not delivered."""

from __future__ import annotations

import re
import subprocess
import sys

from processor.client import Client
from tests.dp_harness import REPO, Cluster, read_all


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", *args, "--bootstrap", cluster.bootstrap,
                           "--prefix", cluster.prefix], capture_output=True, text=True, cwd=REPO, timeout=180)


def _run_of(out: str) -> str:
    found = re.search(r"\(run ([0-9a-f]{32})\)", out)
    assert found, out
    return found.group(1)


def test_start_says_started_attached_or_refused_and_exits_accordingly(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    cluster.worker()
    first = _cli(cluster, "start", "Approval", "--id", "cli-run", "--input", "0")
    assert first.returncode == 0, first.stderr
    assert first.stdout.startswith("started Approval cli-run (run ")
    run1 = _run_of(first.stdout)

    again = _cli(cluster, "start", "Approval", "--id", "cli-run", "--input", "0")
    assert again.returncode == 0, again.stderr
    assert again.stdout == (f"cli-run is already running (run {run1}): attached to it, nothing started "
                            "(--if-exists fail refuses instead)\n")

    refused = _cli(cluster, "start", "Approval", "--id", "cli-run", "--input", "0", "--if-exists", "fail")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr == (f"refused: workflow 'cli-run' is already running (run {run1}) and the start says "
                              "if_exists=fail; nothing started\n")

    signal = _cli(cluster, "signal", "cli-run", "approve", "--input", '"cli"')
    assert (signal.returncode, signal.stdout) == (0, "signal approve delivered to cli-run\n"), signal.stderr
    assert client.result("cli-run", timeout=60, run_id=run1) == "approved by cli after sleeping True"

    late = _cli(cluster, "signal", "cli-run", "approve", "--input", '"late"')
    assert late.returncode == 1
    assert late.stderr == "not delivered: SignalWorkflow for workflow 'cli-run' that is already completed\n"
    nobody = _cli(cluster, "cancel", "nobody-home")
    assert (nobody.returncode, nobody.stderr) == (1, "not delivered: CancelWorkflow for unknown workflow "
                                                     "'nobody-home'\n")

    rejected = _cli(cluster, "start", "Approval", "--id", "cli-run", "--input", "0",
                    "--id-reuse-policy", "reject_duplicate")
    assert rejected.returncode == 1
    assert rejected.stderr == (f"refused: workflow 'cli-run' already ran (run {run1}, completed) and the start "
                               "says id_reuse_policy=reject_duplicate; nothing started\n")
    failed_only = _cli(cluster, "start", "Approval", "--id", "cli-run", "--input", "0",
                       "--id-reuse-policy", "allow_duplicate_failed_only")
    assert failed_only.returncode == 1 and "id_reuse_policy=allow_duplicate_failed_only" in failed_only.stderr

    second = _cli(cluster, "start", "Approval", "--id", "cli-run", "--input", "0")
    assert second.returncode == 0 and second.stdout.startswith("started Approval cli-run (run "), second.stderr
    run2 = _run_of(second.stdout)
    assert run2 != run1

    stale = _cli(cluster, "signal", "cli-run", "approve", "--input", '"x"', "--run-id", run1)
    assert stale.returncode == 1
    assert stale.stderr == f"not delivered: run {run1} of workflow 'cli-run' is not its current run ({run2}, running)\n"
    replaced = _cli(cluster, "start", "Approval", "--id", "cli-run", "--input", "0",
                    "--id-reuse-policy", "terminate_if_running")
    assert replaced.returncode == 0 and replaced.stdout.startswith("started Approval cli-run (run ")
    run3 = _run_of(replaced.stdout)

    show = _cli(cluster, "show", "cli-run", "--run-id", run2)
    assert show.returncode == 0 and f"run_id               {run2}" in show.stdout
    assert "terminated" in show.stdout
    latest = _cli(cluster, "show", "cli-run")
    assert f"run_id               {run3}" in latest.stdout and "running" in latest.stdout

    closes = [(v["run_id"], k) for k, v, _ in read_all(cluster.bootstrap, f"{cluster.prefix}.completions")
              if k == b"cli-run"]
    assert [run for run, _ in closes] == [run1, run2]
