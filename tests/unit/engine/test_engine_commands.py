"""Command handling: idempotency, duplicates, dead letters (exact reasons), forwarding."""

from __future__ import annotations

from pathlib import Path

import pytest
from engine_harness import (
    CMD,
    CODEC,
    COMMANDS,
    DLQ,
    EVENTS,
    PARTITIONS,
    EngineHarness,
    Record,
    encode_command,
)

from processor import _payload


@pytest.fixture
def h(tmp_path: Path):  # type: ignore[no-untyped-def]
    harness = EngineHarness(tmp_path)
    yield harness
    harness.close()


def _only_dlq(records: list[Record]) -> Record:
    assert [r.topic for r in records] == [DLQ], [(r.topic, r.key) for r in records]
    return records[0]


def test_a_start_of_a_running_id_attaches_to_its_run(h: EngineHarness) -> None:
    h.start("w", "ThreeSteps", 1)
    before = len(h.sink.records)
    out = h.start("w", "ThreeSteps", 99)
    assert out == [] and len(h.sink.records) == before
    assert h.engine.counters.duplicates == 1
    assert h.event_types("w") == ["WorkflowStarted", "ActivityScheduled"]
    (task,) = h.new_tasks()
    assert _payload.from_payloads(task["args"]) == ["a", 1]


def test_duplicate_and_late_activity_results_are_ignored(h: EngineHarness) -> None:
    h.start("w", "ThreeSteps", 1)
    (t1,) = h.new_tasks()
    h.complete(t1, 2)
    n_events = len(h.events("w"))
    assert h.complete(t1, 2) == []  # redelivered result of a finished activity
    (t2,) = h.new_tasks()
    assert h.complete({**t2, "attempt": 2}, 3) == []  # an attempt that was never dispatched
    assert h.fail(t1, {"type": "X", "message": "", "stack_trace": "", "non_retryable": True, "cause": None}) == []
    assert len(h.events("w")) == n_events and h.engine.counters.duplicates == 3
    assert h.engine.counters.dlq == 0
    h.complete(t2, 3)
    h.run_activities()
    assert h.result("w") == [2, 3, 4]
    # Results after the close are duplicates too, not dead letters.
    assert h.complete(t2, 3) == []
    assert h.engine.counters.duplicates == 4


def test_result_for_never_scheduled_activity_is_dead_lettered(h: EngineHarness) -> None:
    h.start("w", "ThreeSteps", 1)
    (t1,) = h.new_tasks()
    for seq in (2, 0):
        out = h.complete({**t1, "activity_seq": seq}, 5)
        dlq = _only_dlq(out)
        assert dlq.header("dlq.reason") == f"activity result for activity_seq {seq} that workflow 'w' never scheduled"
        assert dlq.header("dlq.topic") == COMMANDS
        assert dlq.header("dlq.partition") == str(h.partition_of("w"))
        assert dlq.header("type") == CMD + "ActivityCompleted"  # original headers kept
        assert dlq.key == b"w" and CODEC.decode(dlq.value or b"")[1]["activity_seq"] == seq
    assert h.event_types("w") == ["WorkflowStarted", "ActivityScheduled"]
    assert h.engine.counters.dlq == 2


def test_commands_for_unknown_workflows_are_dead_lettered(h: EngineHarness) -> None:
    p = h.partition_of("ghost")
    out = h.signal("ghost", "approve", "bob")
    dlq = _only_dlq(out)
    assert dlq.header("dlq.reason") == "SignalWorkflow for unknown workflow 'ghost'"
    assert dlq.header("dlq.offset") == "0" and dlq.header("dlq.partition") == str(p)
    reasons = [
        (
            "CancelWorkflow",
            {"workflow_id": "ghost", "reason": "x"},
            "CancelWorkflow for unknown workflow 'ghost'",
        ),
        (
            "TerminateWorkflow",
            {"workflow_id": "ghost", "reason": "x"},
            "TerminateWorkflow for unknown workflow 'ghost'",
        ),
        (
            "ActivityCompleted",
            {"workflow_id": "ghost", "activity_seq": 1, "attempt": 1, "result": _payload.to_payload(1)},
            "activity result for unknown workflow 'ghost'",
        ),
        (
            "ActivityHeartbeat",
            {"workflow_id": "ghost", "activity_seq": 1, "attempt": 1},
            "activity result for unknown workflow 'ghost'",
        ),
    ]
    for name, rec, reason in reasons:
        assert _only_dlq(h.send(name, rec)).header("dlq.reason") == reason
    assert h.records(EVENTS) == [] and h.summary("ghost") is None
    assert [r.header("dlq.offset") for r in h.records(DLQ)] == ["0", "1", "2", "3", "4"]


def test_signal_to_closed_workflow_is_dead_lettered(h: EngineHarness) -> None:
    h.start("w", "ThreeSteps", 1)
    h.run_activities()
    out = h.signal("w", "approve", "late")
    assert _only_dlq(out).header("dlq.reason") == "SignalWorkflow for workflow 'w' that is already completed"


def test_undecodable_and_tombstone_commands_are_dead_lettered(h: EngineHarness) -> None:
    out = h.transaction([(1, b"k", b"garbage", [("type", b"whatever")])])
    dlq = _only_dlq(out)
    reason = dlq.header("dlq.reason") or ""
    assert reason.startswith("undecodable command: not an Avro single-object encoded record")
    assert dlq.key == b"k" and dlq.value == b"garbage" and dlq.header("type") == "whatever"
    assert (dlq.header("dlq.partition"), dlq.header("dlq.offset")) == ("1", "0")

    dlq = _only_dlq(h.transaction([(2, b"k2", None, None)]))
    assert dlq.header("dlq.reason") == "empty value (tombstone) on the commands topic"
    assert dlq.value is None and dlq.key == b"k2"

    # A valid record that is not a command (an event written to the commands topic).
    event = CODEC.encode("wf.events.v1.TimerFired", {"workflow_id": "w", "seq": 1, "time_ms": 0, "timer_seq": 1})
    dlq = _only_dlq(h.transaction([(h.partition_of("w"), b"w", event, None)]))
    assert dlq.header("dlq.reason") == "wf.events.v1.TimerFired is not a command this processor accepts"

    # Workflow ids that cannot be stored.
    for bad in ("", "a\x00b"):
        value = encode_command("SignalWorkflow", {"workflow_id": bad, "signal_name": "s", "args": []})
        dlq = _only_dlq(h.transaction([(0, None, value, None)]))
        assert dlq.header("dlq.reason") == f"invalid workflow_id {bad!r}" and dlq.key == b""
    assert h.engine.counters.dlq == 5 and h.engine.counters.commands == 5
    assert h.records(EVENTS) == []


def test_wrong_partition_command_is_forwarded_not_applied(h: EngineHarness) -> None:
    wid = "misrouted"
    owner = h.partition_of(wid)
    wrong = (owner + 1) % PARTITIONS
    value = encode_command(
        "StartWorkflow", {"workflow_id": wid, "workflow_type": "ThreeSteps", "args": _payload.to_payloads([1])}
    )
    headers = CODEC.headers(CMD + "StartWorkflow")
    out = h.transaction([(wrong, b"other-key", value, headers)])
    assert len(out) == 1
    fwd = out[0]
    assert (fwd.topic, fwd.partition, fwd.key) == (COMMANDS, owner, b"other-key")
    assert (fwd.value, fwd.headers) == (value, headers)
    assert h.engine.counters.forwarded == 1
    assert h.summary(wid) is None and h.store(wrong).summary(wid) is None and h.events() == []

    # Without a key the workflow id becomes the key.
    out = h.transaction([(wrong, None, value, headers)])
    assert [(r.topic, r.partition, r.key) for r in out] == [(COMMANDS, owner, wid.encode())]

    # Delivered on the owner partition (as the forwarded record would be), it is applied once.
    h.transaction([(fwd.partition or 0, fwd.key, fwd.value, fwd.headers)])
    h.transaction([(owner, None, value, headers)])
    assert h.event_types(wid) == ["WorkflowStarted", "ActivityScheduled"]
    assert h.engine.counters.duplicates == 1
