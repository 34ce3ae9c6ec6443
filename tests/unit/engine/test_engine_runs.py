"""Runs (issue 7, part 1): every execution of a workflow id is a run with its own id, its own
history (seq from 1) and its own keys; a StartWorkflow starts, attaches or is refused by the id
reuse policy and if_exists, and says which in a CommandReply when asked."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import COMPLETIONS, DLQ, EVENTS, REPLIES, EngineHarness, default_activity

from processor import _payload
from processor._engine import keys
from processor._engine.store import FORMAT, FORMAT_KEY, PartitionStore


@pytest.fixture
def h(tmp_path: Path) -> EngineHarness:
    return EngineHarness(tmp_path)


def start(h: EngineHarness, wid: str, *args: object, request_id: str, workflow: str = "ThreeSteps",
          **fields: object) -> dict[str, object]:
    """Start with a reply requested; returns the reply."""
    n = len(h.replies())
    h.start(wid, workflow, *args, request_id=request_id, reply_partition=7, **fields)
    (reply,) = h.replies()[n:]
    assert reply["request_id"] == request_id and reply["workflow_id"] == wid
    assert reply["command"] == "StartWorkflow"
    return reply


def finish(h: EngineHarness) -> None:
    h.run_activities()


def test_a_start_reports_the_new_run_on_the_requested_reply_partition(h: EngineHarness) -> None:
    reply = start(h, "w", 1, request_id="r1")
    assert reply["outcome"] == "started" and reply["message"] == ""
    run = h.run_of("w")
    assert reply["run_id"] == run and keys.is_run_id(run)
    (record,) = h.sink.on(REPLIES)
    assert record.key == b"r1" and record.partition == 7 % h.sink.reply_partitions()
    assert h.events("w")[0]["run_id"] == run
    (task,) = h.new_tasks()
    assert task["run_id"] == run


def test_no_reply_unless_one_is_asked_for(h: EngineHarness) -> None:
    h.start("w", "ThreeSteps", 1, request_id="r1")  # no reply_partition
    h.start("v", "ThreeSteps", 1, reply_partition=3)  # no request_id to key it by
    assert h.sink.on(REPLIES) == []


def test_a_start_of_a_running_id_attaches_or_fails_as_told(h: EngineHarness) -> None:
    run = start(h, "w", 1, request_id="r1")["run_id"]
    attached = start(h, "w", 1, request_id="r2")
    assert (attached["outcome"], attached["run_id"]) == ("attached", run)
    assert "already running" in str(attached["message"])
    refused = start(h, "w", 1, request_id="r3", if_exists="fail")
    assert (refused["outcome"], refused["run_id"]) == ("refused", run)
    assert refused["message"] == f"workflow 'w' is already running (run {run}) and the start says if_exists=fail"
    assert h.event_types("w") == ["WorkflowStarted", "ActivityScheduled"]
    assert h.sink.on(DLQ) == []  # a refusal is an answer, not bad input


def test_a_retried_start_attaches_to_the_run_it_started_even_after_it_closed(h: EngineHarness) -> None:
    run = start(h, "w", 1, request_id="r1")["run_id"]
    finish(h)
    again = start(h, "w", 1, request_id="r1", if_exists="fail")
    assert (again["outcome"], again["run_id"]) == ("attached", run)
    assert len(h.completions("w")) == 1 and h.run_of("w") == run


def test_a_closed_id_gets_a_new_run_with_fresh_history_and_its_own_keys(h: EngineHarness) -> None:
    first = start(h, "w", 1, request_id="r1")["run_id"]
    finish(h)
    second_reply = start(h, "w", 10, request_id="r2")
    second = second_reply["run_id"]
    assert second_reply["outcome"] == "started" and second != first
    finish(h)
    events = h.events("w")
    assert [e["seq"] for e in events] == list(range(1, 9)) * 2
    keys_ = [r.key for r in h.sink.on(EVENTS)]
    assert len(set(keys_)) == 16, "no key of the second run collides with the first's"
    assert {keys.split_event_key(k)[1] for k in keys_} == {first, second}  # type: ignore[index]
    completions = h.completions("w")
    assert [(rec["run_id"], _payload.from_payload(rec["result"])) for _, rec in completions] == [
        (first, [2, 3, 4]), (second, [11, 12, 13])]
    summary = h.summary("w")
    assert summary is not None and summary.run_id == second and summary.last_seq == 8
    assert len(h.stored_history("w")) == 8, "the store holds each run's history under its own run"


@pytest.mark.parametrize(("policy", "after", "outcome"), [
    ("allow_duplicate", "completed", "started"),
    ("allow_duplicate", "failed", "started"),
    ("allow_duplicate_failed_only", "completed", "refused"),
    ("allow_duplicate_failed_only", "failed", "started"),
    ("reject_duplicate", "completed", "refused"),
    ("reject_duplicate", "failed", "refused"),
    ("terminate_if_running", "completed", "started"),
])
def test_id_reuse_policy_after_the_run_closed(h: EngineHarness, policy: str, after: str, outcome: str) -> None:
    workflow, arg = ("ThreeSteps", 1) if after == "completed" else ("Failing", "no")
    first = start(h, "w", arg, request_id="r1", workflow=workflow)["run_id"]
    h.run_activities(default_activity)
    assert h.summary("w").status == after  # type: ignore[union-attr]
    reply = start(h, "w", 1, request_id="r2", id_reuse_policy=policy)
    assert reply["outcome"] == outcome
    if outcome == "refused":
        assert reply["run_id"] == first and f"id_reuse_policy={policy}" in str(reply["message"])
        assert h.run_of("w") == first
    else:
        assert reply["run_id"] == h.run_of("w") != first


def test_terminate_if_running_terminates_the_running_run_and_starts_another(h: EngineHarness) -> None:
    first = start(h, "w", 1, request_id="r1")["run_id"]
    (stale,) = h.new_tasks()
    reply = start(h, "w", 5, request_id="r2", id_reuse_policy="terminate_if_running")
    second = reply["run_id"]
    assert reply["outcome"] == "started" and second != first
    (name, rec), = h.completions("w")
    assert name.endswith("WorkflowTerminated") and rec["run_id"] == first
    assert "terminate_if_running" in rec["reason"]
    # The first run's activity finishing late changes nothing in the second run, though its seq matches.
    n = len(h.events("w"))
    assert h.complete(stale, 2) == []
    assert len(h.events("w")) == n and h.engine.counters.duplicates >= 1
    finish(h)
    (_, done) = h.completions("w")[1]
    assert done["run_id"] == second and _payload.from_payload(done["result"]) == [6, 7, 8]


def test_an_invalid_policy_is_refused_and_dead_lettered(h: EngineHarness) -> None:
    reply = start(h, "w", 1, request_id="r1", id_reuse_policy="sometimes")
    assert reply["outcome"] == "refused" and reply["run_id"] == ""
    assert "id_reuse_policy 'sometimes' is not one of allow_duplicate" in str(reply["message"])
    assert h.dlq_reasons() == ["StartWorkflow of 'w': " + str(reply["message"])]
    reply = start(h, "v", 1, request_id="r2", if_exists="replace")
    assert reply["outcome"] == "refused" and "if_exists 'replace' is not one of use_existing, fail" in str(
        reply["message"])
    assert h.summary("w") is None and h.summary("v") is None


def test_commands_addressed_to_a_run_that_is_not_current_are_rejected(h: EngineHarness) -> None:
    first = start(h, "w", 1, request_id="r1")["run_id"]
    finish(h)
    second = start(h, "w", 1, request_id="r2")["run_id"]
    n = len(h.replies())
    h.send("SignalWorkflow", {"workflow_id": "w", "signal_name": "approve", "args": [], "run_id": first,
                              "request_id": "s1", "reply_partition": 0})
    h.send("CancelWorkflow", {"workflow_id": "w", "run_id": second, "request_id": "c1", "reply_partition": 0})
    h.send("TerminateWorkflow", {"workflow_id": "w", "run_id": first, "request_id": "t1", "reply_partition": 0})
    signal, cancel, terminate = h.replies()[n:]
    assert (signal["outcome"], signal["run_id"]) == ("rejected", second)
    assert signal["message"] == f"run {first} of workflow 'w' is not its current run ({second}, running)"
    assert (cancel["outcome"], cancel["run_id"]) == ("delivered", second)
    assert terminate["outcome"] == "rejected"
    assert h.dlq_reasons() == [signal["message"], terminate["message"]]
    assert "WorkflowCancelRequested" in h.event_types("w")


def test_a_signal_to_an_unknown_or_closed_workflow_reaches_the_sender(h: EngineHarness) -> None:
    h.send("SignalWorkflow", {"workflow_id": "ghost", "signal_name": "x", "args": [], "request_id": "s1",
                              "reply_partition": 1})
    start(h, "w", 1, request_id="r1")
    finish(h)
    h.send("SignalWorkflow", {"workflow_id": "w", "signal_name": "x", "args": [], "request_id": "s2",
                              "reply_partition": 1})
    ghost, closed = [r for r in h.replies() if r["command"] == "SignalWorkflow"]
    assert (ghost["outcome"], ghost["message"]) == ("not_found", "SignalWorkflow for unknown workflow 'ghost'")
    assert (closed["outcome"], closed["message"]) == ("rejected",
                                                      "SignalWorkflow for workflow 'w' that is already completed")


def test_restore_rebuilds_the_latest_run_and_keeps_each_runs_history(tmp_path: Path) -> None:
    live = EngineHarness(tmp_path / "live")
    first = start(live, "w", 1, request_id="r1")["run_id"]
    finish(live)
    second = start(live, "w", 10, request_id="r2")["run_id"]
    (task,) = live.new_tasks()

    restored = EngineHarness(tmp_path / "restored", now_ms=live.now_ms)
    restored.engine.begin(live.now_ms)
    for r in live.sink.on(EVENTS):
        restored.engine.restore_event(r.partition or 0, r.key, r.value or b"")
    for r in live.sink.on(EVENTS):  # restore is idempotent: the same records again change nothing
        restored.engine.restore_event(r.partition or 0, r.key, r.value or b"")
    restored.engine.committed()
    summary = restored.summary("w")
    assert summary is not None and (summary.run_id, summary.last_seq, summary.running) == (second, 2, True)
    p = restored.partition_of("w")
    assert len(restored.store(p).history("w", first)) == 8 and len(restored.store(p).history("w", second)) == 2
    # And the restored engine carries the second run on.
    restored.complete(task, 11)
    restored.run_activities()
    (_, rec), = [c for c in restored.completions("w")]
    assert rec["run_id"] == second and _payload.from_payload(rec["result"]) == [11, 12, 13]
    assert [c for c in restored.sink.on(COMPLETIONS)] and live.summary("w").run_id == second  # type: ignore[union-attr]


def test_state_in_the_old_layout_is_rebuilt_from_the_log(tmp_path: Path) -> None:
    path = tmp_path / "p0"
    store = PartitionStore(path)
    store.batch.events_next = 42  # a partition restored by the code before runs ...
    store.flush()
    store._cf["meta"].delete(FORMAT_KEY)  # noqa: SLF001 - ... which wrote no format marker
    store.close()
    reopened = PartitionStore(path)
    assert reopened.offset(b"events_next") == 0, "rebuilt: restore starts from the beginning of the log"
    assert reopened._cf["meta"].get(FORMAT_KEY) == FORMAT  # noqa: SLF001
    reopened.close()
    kept = PartitionStore(path)
    kept.batch.events_next = 7
    kept.flush()
    kept.close()
    again = PartitionStore(path)
    assert again.offset(b"events_next") == 7, "the current layout is kept"
    again.close()


# ---- continue-as-new ------------------------------------------------------------------------------

def bump(h: EngineHarness, wid: str, n: int = 1) -> None:
    for _ in range(n):
        h.signal(wid, "bump")


def test_continue_as_new_closes_the_run_and_starts_the_next_in_the_same_transaction(h: EngineHarness) -> None:
    first = start(h, "loop", 0, 7, 3, 0, [], request_id="r1", workflow="Looper")["run_id"]
    bump(h, "loop", 2)
    n = len(h.sink.records)
    out = h.signal("loop", "bump")  # the third: the run continues as new
    kinds = [(r.topic, r.event()["type"] if r.topic == EVENTS else None) for r in out]
    assert kinds == [(EVENTS, "SignalReceived"), (EVENTS, "WorkflowContinuedAsNew"), (COMPLETIONS, None),
                     (EVENTS, "WorkflowStarted")], kinds
    can = out[1].event()
    second = can["new_run_id"]
    assert keys.is_run_id(second) and second != first
    (name, closed), = h.completions("loop")
    assert name == "wf.completions.v1.WorkflowContinuedAsNew"
    assert (closed["run_id"], closed["new_run_id"]) == (first, second)
    started = out[3].event()
    assert (started["run_id"], started["continued_from_run_id"], started["seq"]) == (second, first, 1)
    assert started["request_id"] == "r1", "a retry of the chain's first start attaches to the chain"
    assert keys.split_event_key(out[3].key) == ("loop", second, 1)
    assert len(h.sink.records) == n + 4
    summary = h.summary("loop")
    assert summary is not None and (summary.run_id, summary.running, summary.last_seq) == (second, True, 1)

    # Signals after the hand-over reach the new run; the chain goes on to the end.
    h.signal("loop", "tag", "t1")
    bump(h, "loop", 4)
    (_, last) = h.completions("loop")[-1]
    assert last["run_id"] != second  # 3 more bumps made it continue again at 6, then 7 completes
    runs = [rec["run_id"] for _, rec in h.completions("loop")]
    assert len(set(runs)) == 3
    assert h.result_of_last("loop") == {"count": 7, "tags": ["t1"], "run": runs[-1]}
    assert start(h, "loop", 0, 1, 1, 0, [], request_id="r1", workflow="Looper")["outcome"] == "attached"


def test_restore_follows_a_chain_of_runs(tmp_path: Path) -> None:
    live = EngineHarness(tmp_path / "live")
    start(live, "loop", 0, 10, 2, 0, [], request_id="r1", workflow="Looper")
    bump(live, "loop", 5)
    current = live.run_of("loop")
    restored = EngineHarness(tmp_path / "restored", now_ms=live.now_ms)
    restored.engine.begin(live.now_ms)
    for r in live.sink.on(EVENTS):
        restored.engine.restore_event(r.partition or 0, r.key, r.value or b"")
    restored.engine.committed()
    assert restored.summary("loop").run_id == current  # type: ignore[union-attr]
    bump(restored, "loop", 5)
    assert restored.result_of_last("loop")["count"] == 10


# ---- signal-with-start ----------------------------------------------------------------------------

def test_signal_with_start_starts_and_signals_in_one_transaction(h: EngineHarness) -> None:
    signal = {"signal_name": "approve", "signal_args": _payload.to_payloads(["ann"])}
    out = h.start("a", "Approval", 1.0, request_id="r1", reply_partition=1, **signal)
    assert [r.event()["type"] for r in out if r.topic == EVENTS] == ["WorkflowStarted", "TimerStarted",
                                                                      "SignalReceived"]
    assert h.replies()[-1]["outcome"] == "started"
    h.tick(1_000)
    assert h.result("a") == "approved by ann after sleeping True"


def test_signal_with_start_on_a_running_id_signals_the_running_run(h: EngineHarness) -> None:
    run = start(h, "a", 60.0, request_id="r1", workflow="Approval")["run_id"]
    reply = start(h, "a", 60.0, request_id="r2", workflow="Approval", signal_name="approve",
                  signal_args=_payload.to_payloads(["bob"]))
    assert (reply["outcome"], reply["run_id"]) == ("attached", run)
    assert h.event_types("a")[-1] == "SignalReceived"
    refused = start(h, "a", 60.0, request_id="r3", workflow="Approval", if_exists="fail", signal_name="approve",
                    signal_args=_payload.to_payloads(["eve"]))
    assert refused["outcome"] == "refused" and h.event_types("a").count("SignalReceived") == 1
