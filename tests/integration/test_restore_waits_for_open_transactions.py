"""Restore reads to the high watermark, not the last stable offset: a transaction that a slow
previous owner (a zombie) still has open on the events partition is waited for, so what it
commits a moment later is not missed by the new owner."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import Producer

from processor._codec import default_codec
from processor._codec.partitioner import partition_for
from processor._engine import keys
from processor.client import Client
from tests.dp_harness import Cluster, read_all, wait_for

pytestmark = pytest.mark.integration


RUN = keys.new_run_id()


def test_restore_includes_what_an_open_transaction_commits_later(cluster: Cluster, client: Client) -> None:
    wid = "zombie-started"
    p = partition_for(wid.encode(), 4)
    codec = default_codec()
    started = {"workflow_id": wid, "seq": 1, "time_ms": int(time.time() * 1000), "workflow_type": "Approval",
               "args": [{"encoding": "json/plain", "data": b"0"}], "task_queue": "default",
               "execution_timeout_ms": None, "random_seed": 7, "request_id": None, "run_id": RUN}
    zombie = Producer({"bootstrap.servers": cluster.bootstrap, "transactional.id": f"{cluster.prefix}-zombie"})
    zombie.init_transactions(30)
    zombie.begin_transaction()
    zombie.produce(f"{cluster.prefix}.events", codec.encode("wf.events.v1.WorkflowStarted", started),
                   keys.event_key(wid, RUN, 1), partition=p, headers=codec.headers("wf.events.v1.WorkflowStarted"))
    zombie.flush(10)

    committer = threading.Timer(3.0, lambda: zombie.commit_transaction(30))
    committer.start()
    t0 = time.monotonic()
    cluster.processor()  # restores partition p while the zombie's transaction is still open
    cluster.worker()
    committer.join()
    wait_for(lambda: "restored partitions" in (cluster.logs / "processor-0.log").read_text(), 60,
             message="restore finished")
    assert time.monotonic() - t0 >= 3.0

    client.signal(wid, "approve", "late")
    assert client.result(wid, timeout=60) == "approved by late after sleeping True"
    assert read_all(cluster.bootstrap, f"{cluster.prefix}.dlq", decode=False) == []
