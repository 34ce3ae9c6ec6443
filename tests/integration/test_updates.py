"""Updates on the real broker (issue 7, item 5): through wf.commands and the client's own replies
partition; validated, recorded, applied once; a request id sent again after the processor was
SIGKILLed mid-update returns the first outcome; the CLI says what happened."""

from __future__ import annotations

import subprocess
import sys
from collections import Counter

import pytest

from processor.client import Client
from processor.exceptions import ApplicationError, UpdateFailedError, UpdateRejectedError, WorkflowNotFoundError
from tests.dp_harness import REPO, Cluster, read_all


def _events(cluster: Cluster, wid: str) -> list[str]:
    out = []
    for key, event, _ in read_all(cluster.bootstrap, f"{cluster.prefix}.events"):
        if (key or b"").decode().split("@")[0] == wid:
            out.append(event["type"])
    return out


def test_updates_are_validated_applied_once_and_answered(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    cluster.worker()
    handle = client.start_workflow("Cart", id="cart-1")
    assert handle.execute_update("add_item", "apple") == 1
    assert client.execute_update("cart-1", "add_priced", "melon", timeout=120) == 42, "an update that runs an activity"
    with pytest.raises(UpdateRejectedError, match="sku must not be empty"):
        client.execute_update("cart-1", "add_item", "")
    with pytest.raises(UpdateFailedError, match="out of stock") as failed:
        client.execute_update("cart-1", "refuse", "out of stock")
    assert isinstance(failed.value.__cause__, ApplicationError) and failed.value.__cause__.type == "Refused"
    with pytest.raises(WorkflowNotFoundError):
        client.execute_update("nobody", "add_item", "x")
    assert client.execute_update("cart-1", "add_item", "pear", request_id="fixed") == 3
    assert client.execute_update("cart-1", "add_item", "pear", request_id="fixed") == 3, "the first outcome again"
    assert client.query("cart-1", "contents") == ["apple", "melon@42", "pear"]
    client.signal("cart-1", "checkout")
    assert client.result("cart-1", timeout=60) == ["apple", "melon@42", "pear"]
    kinds = Counter(_events(cluster, "cart-1"))
    assert kinds["WorkflowUpdateAccepted"] == 4 and kinds["WorkflowUpdateCompleted"] == 4, kinds


def test_a_request_id_sent_again_after_a_sigkill_gets_the_first_outcome(cluster: Cluster, client: Client) -> None:
    victim = cluster.processor(0)
    cluster.processor(1)
    cluster.worker()
    ids = [f"cart-k{i}" for i in range(10)]
    for wid in ids:
        client.start_workflow("Cart", id=wid)
    for wid in ids:  # one update each, answered
        assert client.execute_update(wid, "add_item", "a", request_id=f"{wid}-u1") == 1
    cluster.kill(victim)
    for wid in ids:  # the same ids again, while half the partitions move: the first outcome, nothing re-applied
        assert client.execute_update(wid, "add_item", "b", request_id=f"{wid}-u1", timeout=120) == 1
    for wid in ids:
        assert client.execute_update(wid, "add_priced", "c", request_id=f"{wid}-u2", timeout=120) == 42
        client.signal(wid, "checkout")
    for wid in ids:
        assert client.result(wid, timeout=120) == ["a", "c@42"]
    kinds = Counter(event["type"] for _, event, _ in read_all(cluster.bootstrap, f"{cluster.prefix}.events"))
    assert kinds["WorkflowUpdateAccepted"] == 20 and kinds["WorkflowUpdateCompleted"] == 20, kinds
    keys = Counter(k for k, _, _ in read_all(cluster.bootstrap, f"{cluster.prefix}.events", decode=False))
    assert [k for k, n in keys.items() if n > 1] == []


def _cli(cluster: Cluster, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "processor.cli", *args, "--bootstrap", cluster.bootstrap,
                           "--prefix", cluster.prefix], cwd=REPO, capture_output=True, text=True, timeout=120)


def test_the_cli_prints_the_result_or_says_why_not(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    client.start_workflow("Cart", id="cart-cli")
    done = _cli(cluster, "update", "cart-cli", "add_item", "--input", '"kiwi"')
    assert (done.returncode, done.stdout.strip()) == (0, "1"), done.stderr
    rejected = _cli(cluster, "update", "cart-cli", "add_item", "--input", '""')
    assert rejected.returncode == 1 and rejected.stderr.startswith("rejected (nothing recorded): "), rejected.stderr
    assert "Traceback" not in rejected.stderr
    failed = _cli(cluster, "update", "cart-cli", "refuse", "--input", '"closed today"')
    assert failed.returncode == 1 and failed.stderr.startswith("failed: ") and "closed today" in failed.stderr
