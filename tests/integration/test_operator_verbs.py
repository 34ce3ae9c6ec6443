"""Operator verbs and reads that do not scan (issue 9 items 4 and 5), on a real broker and real
processes: a client that never started a workflow gets its result from the processor (the run
closed before the client existed); `processor describe -o json`, `history -o jsonl` (replayed by
`processor replay --file`), `show --full` (stack traces); `processor dlq list` and `dlq redrive`
(a signal that came before its workflow, redriven once after the start: a second --all sends
nothing)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from processor.client import Client
from processor.exceptions import WorkflowFailureError, WorkflowNotFoundError
from tests.dp_harness import REPO, Cluster, wait_for

pytestmark = pytest.mark.integration


def _cli(c: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", *args, "--bootstrap", c.bootstrap, "--prefix",
                           c.prefix], cwd=REPO, capture_output=True, text=True, timeout=120, env=c.env)


def test_reads_verbs_and_dlq_redrive(kafka_bootstrap: str, prefix: str, tmp_path: Path) -> None:
    c = Cluster(kafka_bootstrap, prefix, tmp_path, partitions=2)
    try:
        c.processor(0)
        c.worker()
        with Client(kafka_bootstrap, prefix=prefix) as first:
            first.start_workflow("ThreeSteps", 5, id="done")
            first.start_workflow("Failing", "out of stock", id="broken")
            first.start_workflow("Looper", 0, 3, 1, 3, [], id="loops")  # three runs: continues as new twice
            assert first.result("done", timeout=120) == [6, 7, 8]
            with pytest.raises(WorkflowFailureError):
                first.result("broken", timeout=120)
            assert first.result("loops", timeout=120)["count"] == 3

        # A client that starts nothing: every run closed before it existed; the processor says so.
        with Client(kafka_bootstrap, prefix=prefix) as later:
            assert later.result("done", timeout=60) == [6, 7, 8]
            with pytest.raises(WorkflowFailureError, match="out of stock"):
                later.result("broken", timeout=60)
            assert later.result("loops", timeout=60)["count"] == 3
            assert later.describe("loops")["status"] == "completed"
            assert later.history("nobody") == []

        described = _cli(c, "describe", "done", "-o", "json")
        assert described.returncode == 0, described.stderr
        summary = json.loads(described.stdout)
        assert summary["status"] == "completed" and summary["workflow_type"] == "ThreeSteps"

        jsonl = _cli(c, "history", "done", "-o", "jsonl")
        assert jsonl.returncode == 0, jsonl.stderr
        events = [json.loads(line) for line in jsonl.stdout.splitlines()]
        assert [e["type"] for e in events][0] == "WorkflowStarted" and events[-1]["type"] == "WorkflowCompleted"
        saved = tmp_path / "done.jsonl"
        saved.write_text(jsonl.stdout)
        replayed = _cli(c, "replay", "--app", "tests.apps.basic:app", "--file", str(saved))
        assert replayed.returncode == 0 and "OK" in replayed.stdout, replayed.stdout + replayed.stderr

        shown = _cli(c, "show", "broken", "--full")
        assert shown.returncode == 0, shown.stderr
        assert "out of stock" in shown.stdout and "          | " in shown.stdout, "the stack trace, line by line"
        missing = _cli(c, "history", "nobody")
        assert missing.returncode == 1 and missing.stderr.startswith("error: no workflow with id 'nobody'")

        # The DLQ: a signal sent before its workflow exists is dead-lettered ...
        with Client(kafka_bootstrap, prefix=prefix) as client:
            with pytest.raises(WorkflowNotFoundError):
                client.signal("early", "approve", "ann")

            def listed() -> list[dict[str, object]]:
                out = _cli(c, "dlq", "list", "-o", "json")
                assert out.returncode == 0, out.stderr
                return list(json.loads(out.stdout))

            wait_for(lambda: len(listed()) == 1, 60, message="the signal dead-lettered")
            (letter,) = listed()
            assert letter["reason"] == "SignalWorkflow for unknown workflow 'early'"
            assert str(letter["record_type"]).endswith("SignalWorkflow") and letter["key"] == "early"
            table = _cli(c, "dlq", "list")
            assert "SignalWorkflow" in table.stdout and "1 record(s)" in table.stdout

            # ... and, once the workflow is started, redriven: it arrives, once.
            client.start_workflow("Approval", 0.0, id="early")
            dry = _cli(c, "dlq", "redrive", "--all", "--dry-run")
            assert dry.returncode == 0 and "1 record(s) would redrive" in dry.stdout, dry.stdout + dry.stderr
            redriven = _cli(c, "dlq", "redrive", "--all")
            assert redriven.returncode == 0 and "1 record(s) redriven" in redriven.stdout, redriven.stderr
            assert client.result("early", timeout=60) == "approved by ann after sleeping True"
            again = _cli(c, "dlq", "redrive", "--all")
            assert again.returncode == 0 and "0 record(s) redriven" in again.stdout, again.stdout
            signals = [e for e in client.history("early") if e["type"] == "SignalReceived"]
            assert len(signals) == 1, "redriven exactly once"

        bad = _cli(c, "dlq", "redrive")
        assert bad.returncode == 2 and bad.stderr.startswith("error: say which records to redrive")
        assert "Traceback" not in bad.stderr
        nowhere = _cli(c, "dlq", "redrive", "--at", "0:999999")
        assert nowhere.returncode == 2 and "no DLQ record at 0:999999" in nowhere.stderr, nowhere.stderr
    finally:
        c.close()
