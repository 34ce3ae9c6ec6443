"""Ids that share a prefix on one partition keep their own history, describe and `processor show`
(issue 6, defect 6: `col2` showed the start of `col2@000000000001`)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from processor._codec.partitioner import partition_for
from processor.client import Client
from tests.dp_harness import REPO, Cluster

pytestmark = pytest.mark.integration

PARTITIONS = 4  # Cluster's default


def test_ids_sharing_a_prefix_keep_their_own_history(cluster: Cluster, client: Client) -> None:
    a, b = "col2", "col2@000000000001"  # b's id is a's first event key
    assert partition_for(a.encode(), PARTITIONS) == partition_for(b.encode(), PARTITIONS), "must share a partition"
    cluster.processor()
    cluster.worker()
    client.start_workflow("ThreeSteps", 10, id=a)
    client.start_workflow("ThreeSteps", 20, id=b)
    assert client.result(a, timeout=60) == [11, 12, 13]
    assert client.result(b, timeout=60) == [21, 22, 23]
    for wid, first in ((a, b"10"), (b, b"20")):
        history = client.history(wid)
        assert {e["workflow_id"] for e in history} == {wid}
        assert [e["seq"] for e in history] == list(range(1, 9))
        assert [e["type"] for e in history].count("WorkflowStarted") == 1
        assert history[0]["args"][0]["data"] == first
        summary = client.describe(wid)
        assert summary["workflow_id"] == wid and summary["status"] == "completed"
        assert summary["history_length"] == 8
    show = subprocess.run([sys.executable, "-m", "processor.cli", "show", a, "--bootstrap", cluster.bootstrap,
                           "--prefix", cluster.prefix], cwd=REPO, capture_output=True, text=True, check=False)
    assert show.returncode == 0, show.stderr
    # The two differ only in their data: col2's input 10 and result [11,12,13], the other's 20 and [21,22,23].
    assert show.stdout.count("WorkflowStarted") == 1 and show.stdout.count("WorkflowCompleted") == 1
    assert "[11,12,13]" in show.stdout and "[21,22,23]" not in show.stdout and "[20]" not in show.stdout
