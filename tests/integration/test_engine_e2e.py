"""End to end through real processor and worker processes on a real broker."""

from __future__ import annotations

import threading
from collections import Counter

import pytest

from processor.client import Client, WorkflowHandle
from processor.exceptions import WorkflowAlreadyStartedError, WorkflowFailureError, WorkflowNotFoundError
from tests.apps.basic import ThreeSteps
from tests.dp_harness import Cluster, read_all, wait_for

pytestmark = pytest.mark.integration


def test_three_activity_workflow_completes(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    cluster.worker()
    handle = client.start_workflow(ThreeSteps.run, 10, id="three-1")
    assert handle.result(timeout=60) == [11, 12, 13]
    history = client.history("three-1")
    assert [e["type"] for e in history] == [
        "WorkflowStarted", "ActivityScheduled", "ActivityCompleted", "ActivityScheduled", "ActivityCompleted",
        "ActivityScheduled", "ActivityCompleted", "WorkflowCompleted"]
    assert [e["seq"] for e in history] == list(range(1, 9))
    summary = client.describe("three-1")
    assert summary["status"] == "completed" and summary["workflow_type"] == "ThreeSteps"
    completions = [v for k, v, _ in read_all(client.bootstrap, client.topics.completions) if k == b"three-1"]
    assert len(completions) == 1 and completions[0]["type"] == "WorkflowCompleted"


def test_fan_out_retry_failure_signal_and_timer(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    cluster.worker()
    client.start_workflow("FanOut", 20, id="fan")
    client.start_workflow("Retrying", 2, id="retry")
    client.start_workflow("Failing", "no stock", id="fail")
    client.start_workflow("Approval", 1.0, id="approve")
    assert client.result("fan", timeout=60) == sum(i * 2 for i in range(20))
    assert client.result("retry", timeout=60) == "ok after 3 attempts"
    with pytest.raises(WorkflowFailureError) as info:
        client.result("fail", timeout=60)
    assert info.value.status == "failed"
    assert "no stock" in str(info.value) and info.value.__cause__ is not None
    client.signal("approve", "approve", "alice")
    assert client.result("approve", timeout=60) == "approved by alice after sleeping True"
    types = [e["type"] for e in client.history("retry")]
    assert types.count("ActivityAttemptFailed") == 2
    approve = client.history("approve")
    started = next(e for e in approve if e["type"] == "TimerStarted")
    fired = next(e for e in approve if e["type"] == "TimerFired")
    assert fired["time_ms"] >= started["fire_at_ms"]


def test_starts_of_one_id_attach_refuse_or_begin_a_new_run(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    cluster.worker()
    first = client.start_workflow("Approval", 0.0, id="once")
    assert first.outcome == "started" and first.run_id is not None and len(first.run_id) == 32
    others = [Client(client.bootstrap, prefix=cluster.prefix) for _ in range(4)]
    handles: list[WorkflowHandle] = []
    threads = [threading.Thread(target=lambda c=c: handles.append(c.start_workflow("Approval", 5.0, id="once")))
               for c in others]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for c in others:
        c.close()
    assert [(h.outcome, h.run_id) for h in handles] == [("attached", first.run_id)] * 4
    with pytest.raises(WorkflowAlreadyStartedError, match="already running") as refused:
        client.start_workflow("Approval", 0.0, id="once", if_exists="fail")
    assert refused.value.run_id == first.run_id
    client.signal("once", "approve", "ann")
    assert first.result(timeout=60) == "approved by ann after sleeping True"

    with pytest.raises(WorkflowAlreadyStartedError, match="id_reuse_policy=reject_duplicate"):
        client.start_workflow("Approval", 0.0, id="once", id_reuse_policy="reject_duplicate")
    second = client.start_workflow("Approval", 0.0, id="once")  # the default: a new run after the close
    assert second.outcome == "started" and second.run_id not in (None, first.run_id)
    client.signal("once", "approve", "bob")
    assert client.result("once", timeout=60) == "approved by bob after sleeping True"
    assert first.result(timeout=5) == "approved by ann after sleeping True", "each handle keeps its own run"

    assert [e["type"] for e in client.history("once")].count("WorkflowStarted") == 1
    assert client.history("once", run_id=first.run_id)[0]["run_id"] == first.run_id
    completions = [v for k, v, _ in read_all(client.bootstrap, client.topics.completions) if k == b"once"]
    assert [c["run_id"] for c in completions] == [first.run_id, second.run_id]


def test_bad_input_goes_to_dead_letters_with_reasons(cluster: Cluster, client: Client) -> None:
    from confluent_kafka import Producer

    cluster.processor()
    cluster.worker()
    p = Producer({"bootstrap.servers": client.bootstrap, "partitioner": "murmur2_random"})
    p.produce(client.topics.commands, b"\x00garbage bytes", key=b"junk")
    p.flush(10)
    with pytest.raises(WorkflowNotFoundError, match="SignalWorkflow for unknown workflow 'nobody-home'"):
        client.signal("nobody-home", "approve", "x")
    codec = client.codec
    stray = codec.encode("wf.commands.v1.ActivityCompleted", {
        "workflow_id": "three-x", "activity_seq": 99, "attempt": 1, "result": {"encoding": "binary/null", "data": b""}})
    client.start_workflow(ThreeSteps.run, 1, id="three-x")
    assert client.result("three-x", timeout=60) == [2, 3, 4]
    p.produce(client.topics.commands, stray, key=b"three-x", headers=codec.headers("wf.commands.v1.ActivityCompleted"))
    p.flush(10)
    client.start_workflow("NoSuchWorkflow", id="unknown-type")
    with pytest.raises(WorkflowFailureError, match="NoSuchWorkflow.*not registered.*ThreeSteps"):
        client.result("unknown-type", timeout=60)

    def dlq() -> list[str]:
        return [dict(h)["dlq.reason"].decode() for _, _, h in read_all(client.bootstrap, client.topics.dlq,
                                                                      decode=False)]

    wait_for(lambda: len(dlq()) >= 3, 30, message="3 dead letters")
    reasons = dlq()
    assert len(reasons) == 3, reasons
    assert any("undecodable command" in r for r in reasons)
    assert any("unknown workflow 'nobody-home'" in r for r in reasons)
    assert any("activity_seq 99" in r and "never scheduled" in r for r in reasons)
    # The processor kept going after all of it.
    client.start_workflow(ThreeSteps.run, 5, id="after-bad")
    assert client.result("after-bad", timeout=60) == [6, 7, 8]


def test_misrouted_command_is_forwarded_once(cluster: Cluster, client: Client) -> None:
    from confluent_kafka import Producer

    from processor._codec.partitioner import partition_for

    cluster.processor()
    cluster.worker()
    wid = "misrouted-1"
    right = partition_for(wid.encode(), 4)
    wrong = (right + 1) % 4
    name = "wf.commands.v1.StartWorkflow"
    value = client.codec.encode(name, {"workflow_id": wid, "workflow_type": "ThreeSteps",
                                       "args": [{"encoding": "json/plain", "data": b"1"}], "task_queue": "default"})
    p = Producer({"bootstrap.servers": client.bootstrap})
    p.produce(client.topics.commands, value, wid.encode(), partition=wrong, headers=client.codec.headers(name))
    p.flush(10)
    assert client.result(wid, timeout=60) == [2, 3, 4]
    commands = [(k, v) for k, v, _ in read_all(client.bootstrap, client.topics.commands) if k == wid.encode()]
    starts = Counter(v["type"] for _, v in commands)
    assert starts["StartWorkflow"] == 2  # the original and its forwarded copy
    assert [e["type"] for e in client.history(wid)].count("WorkflowStarted") == 1


def test_a_timer_fires_on_a_partition_that_ends_in_the_engines_own_record(cluster: Cluster,
                                                                          client: Client) -> None:
    """The forwarded start is the partition's last record, written in a transaction: a commit
    marker follows it and takes an offset. The partition counts as read to its end all the same,
    so the timer fires at its time with no later command to move the partition on."""
    from confluent_kafka import Producer

    from processor._codec.partitioner import partition_for

    cluster.processor()
    wid = "forwarded-sleeper"
    right = partition_for(wid.encode(), 4)
    name = "wf.commands.v1.StartWorkflow"
    value = client.codec.encode(name, {"workflow_id": wid, "workflow_type": "Approval",
                                       "args": [{"encoding": "json/plain", "data": b"1.0"}], "task_queue": "default"})
    p = Producer({"bootstrap.servers": client.bootstrap})
    p.produce(client.topics.commands, value, wid.encode(), partition=(right + 1) % 4,
              headers=client.codec.headers(name))
    p.flush(10)
    wait_for(lambda: "TimerFired" in [e["type"] for e in client.history(wid)], 60, interval=0.5,
             message="the 1 s timer fired with nothing more written to its partition")


def test_durable_timeouts(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    cluster.worker()
    for which in ("start_to_close", "schedule_to_close", "heartbeat_missed", "heartbeat_kept"):
        client.start_workflow("Timeouts", which, id=f"timeout-{which}")
    client.start_workflow("Approval", 0.0, id="never-approved", execution_timeout=1.0)
    assert client.result("timeout-start_to_close", timeout=60).endswith("StartToCloseTimeout")
    assert client.result("timeout-schedule_to_close", timeout=60).endswith("ActivityTimeout")
    assert client.result("timeout-heartbeat_missed", timeout=60).endswith("HeartbeatTimeout")
    assert client.result("timeout-heartbeat_kept", timeout=60) == "finished"
    with pytest.raises(WorkflowFailureError) as info:
        client.result("never-approved", timeout=60)
    assert info.value.status == "timed out"
    assert client.describe("never-approved")["status"] == "timed_out"


def test_start_to_close_counts_from_the_start_and_queue_time_is_schedule_to_start(
        cluster: Cluster, client: Client) -> None:
    """One activity at a time on the only worker: five 1 s activities under a 1.5 s start-to-close
    wait up to 4 s for it, all finish (counted from dispatch, the last three would time out). An
    activity on a queue nobody serves times out after its 0.5 s schedule-to-start, not retried."""
    cluster.processor()
    cluster.worker(app="tests.apps.basic:one_at_a_time")
    ids = [f"queued-{i}" for i in range(5)]
    for wid in ids:
        client.start_workflow("Timeouts", "queued", id=wid, wait_for_ack=False)
    client.start_workflow("Timeouts", "schedule_to_start", id="unserved")
    client.flush()
    assert client.result("unserved", timeout=60) == "ApplicationError: ActivityTimeout"
    history = client.history("unserved")
    (timed_out,) = [e for e in history if e["type"] == "ActivityTimedOut"]
    assert timed_out["timeout_type"] == "schedule_to_start" and timed_out["attempt"] == 1
    assert not [e for e in history if e["type"] == "ActivityAttemptFailed"], "schedule-to-start is not retried"
    for wid in ids:
        assert client.result(wid, timeout=90) == "no timeout", wid
    runs = Counter(wid for wid, _, _ in cluster.runs())
    assert [runs[wid] for wid in ids] == [1] * 5
    def at(wid: str, etype: str) -> int:
        return int(next(e["time_ms"] for e in client.history(wid) if e["type"] == etype))

    longest = max(at(w, "ActivityCompleted") - at(w, "ActivityScheduled") for w in ids)
    assert longest > 3_000, f"the last activity waited in the queue (longest schedule-to-close {longest} ms)"


def test_cancel_and_terminate(cluster: Cluster, client: Client) -> None:
    cluster.processor()
    cluster.worker()
    client.start_workflow("Approval", 0.1, id="to-cancel")
    client.start_workflow("Approval", 0.1, id="to-terminate")
    for wid in ("to-cancel", "to-terminate"):
        wait_for(lambda w=wid: any(e["type"] == "TimerFired" for e in client.history(w)), 60,
                 message=f"{wid} waiting for its signal")
    client.cancel("to-cancel", "customer changed their mind")
    client.terminate("to-terminate", "operator cleanup")
    with pytest.raises(WorkflowFailureError) as canceled:
        client.result("to-cancel", timeout=60)
    assert canceled.value.status == "canceled"
    with pytest.raises(WorkflowFailureError) as terminated:
        client.result("to-terminate", timeout=60)
    assert terminated.value.status == "terminated" and "operator cleanup" in str(terminated.value)
    assert [e["type"] for e in client.history("to-cancel")][-2:] == ["WorkflowCancelRequested", "WorkflowCanceled"]
    assert client.describe("to-terminate")["status"] == "terminated"
    client.terminate("to-terminate", "again")  # a closed workflow: a no-op, not a second completion
    completions = [k for k, _, _ in read_all(client.bootstrap, client.topics.completions)]
    assert completions.count(b"to-cancel") == 1 and completions.count(b"to-terminate") == 1
