"""Child workflows in the engine (issue 7): the start goes out as a StartWorkflow command in the
parent's transaction, to the child's own partition; the child's close comes back as a
ChildWorkflowResult command; the parent close policy and cancellation reach the children."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_harness import CODEC, COMMANDS, EVENTS, EngineHarness


@pytest.fixture
def h(tmp_path: Path) -> EngineHarness:
    return EngineHarness(tmp_path)


def commands(h: EngineHarness, since: int = 0) -> list[tuple[str, dict[str, Any], int | None]]:
    out = []
    for r in h.sink.on(COMMANDS, since):
        name, rec = CODEC.decode(r.value or b"")
        out.append((name.rpartition(".")[2], rec, r.partition))
    return out


def test_a_parent_starts_children_on_their_own_partitions_and_gets_their_results(h: EngineHarness) -> None:
    h.start("p", "Parent", 3)
    starts = [(rec, part) for name, rec, part in commands(h) if name == "StartWorkflow"]
    assert [rec["workflow_id"] for rec, _ in starts] == ["p-child-0", "p-child-1", "p-child-2"]
    for rec, part in starts:
        assert part == h.partition_of(rec["workflow_id"])
        assert (rec["parent_workflow_id"], rec["parent_run_id"]) == ("p", h.run_of("p"))
        assert rec["request_id"] == f"p/{h.run_of('p')}/child/{rec['parent_child_seq']}"
        assert rec["if_exists"] == "fail"
    assert {p for _, p in starts} == {0, 1}, "the children are spread over both partitions"
    h.pump()
    assert h.result("p") == {"results": [1, 2, 3]}
    for i in range(3):
        child = h.summary(f"p-child-{i}")
        assert child is not None and child.status == "completed" and child.parent == ["p", h.run_of("p"), i + 1]
    types = h.event_types("p")
    assert types.count("ChildWorkflowStarted") == 3 and types.count("ChildWorkflowCompleted") == 3
    done = [e for e in h.events("p") if e["type"] == "ChildWorkflowCompleted"]
    assert {e["child_run_id"] for e in done} == {h.run_of(f"p-child-{i}") for i in range(3)}
    assert h.summary("p").children == {}  # type: ignore[union-attr]


def test_a_failed_child_surfaces_in_the_parent_as_child_workflow_error(h: EngineHarness) -> None:
    h.start("p", "Parent", 14)
    h.pump()
    results = h.result("p")["results"]
    assert results[:13] == list(range(1, 14))
    assert results[13] == "failed: child p-child-13 refuses -1"


def test_a_child_id_that_is_already_running_fails_the_child_start(h: EngineHarness) -> None:
    h.start("p-child-0", "Child", 5, True)  # someone else runs a workflow under the child's id
    h.start("p", "Parent", 1)
    h.pump()
    (result,) = h.result("p")["results"]
    assert result.startswith("start_refused: workflow 'p-child-0' is already running")
    assert h.summary("p-child-0").parent is None  # type: ignore[union-attr]  # the stranger was untouched


def test_a_duplicate_child_result_changes_nothing(h: EngineHarness) -> None:
    h.start("p", "Parent", 1)
    h.pump()
    mark = len(h.events("p"))
    report = [r for r in h.sink.on(COMMANDS) if CODEC.decode(r.value or b"")[0].endswith("ChildWorkflowResult")]
    (r,) = report
    h.transaction([(r.partition or 0, r.key, r.value, r.headers)])  # delivered again
    assert len(h.events("p")) == mark and h.engine.counters.duplicates >= 1


@pytest.mark.parametrize(("policy", "expect"), [("terminate", "TerminateWorkflow"),
                                                  ("request_cancel", "CancelWorkflow"), ("abandon", None)])
def test_the_parent_close_policy_reaches_children_still_running(h: EngineHarness, policy: str,
                                                                expect: str | None) -> None:
    h.start("p", "Parent", 2, True, policy, False)  # children wait for a release that never comes ...
    h.pump(activities=False)
    mark = len(h.sink.records)
    h.send("TerminateWorkflow", {"workflow_id": "p", "reason": "operator"})  # ... the parent goes first
    sent = [(name, rec["workflow_id"]) for name, rec, _ in commands(h, mark)]
    if expect is None:
        assert sent == []
    else:
        assert sent == [(expect, "p-child-0"), (expect, "p-child-1")]
        h.pump()
        status = "terminated" if expect == "TerminateWorkflow" else "canceled"
        assert {h.summary(f"p-child-{i}").status for i in range(2)} == {status}  # type: ignore[union-attr]


def test_cancelling_the_parent_cancels_its_children(h: EngineHarness) -> None:
    h.start("p", "Parent", 2, True, "terminate", False)
    h.pump(activities=False)
    mark = len(h.sink.records)
    h.send("CancelWorkflow", {"workflow_id": "p", "reason": "user"})
    assert [(name, rec["workflow_id"]) for name, rec, _ in commands(h, mark)][:2] == [
        ("CancelWorkflow", "p-child-0"), ("CancelWorkflow", "p-child-1")]
    h.pump()
    assert {h.summary(f"p-child-{i}").status for i in range(2)} == {"canceled"}  # type: ignore[union-attr]
    assert h.summary("p").status in ("canceled", "completed")  # type: ignore[union-attr]


def test_signal_from_the_parent_handle_reaches_the_child_once(h: EngineHarness) -> None:
    h.start("p", "Parent", 1, True)
    signals = [rec for name, rec, _ in commands(h) if name == "SignalWorkflow"]
    assert [(s["workflow_id"], s["signal_name"]) for s in signals] == [("p-child-0", "release")]
    h.pump()
    assert h.result("p") == {"results": [1]}
    assert h.event_types("p-child-0").count("SignalReceived") == 1


def test_restore_rebuilds_pending_children(tmp_path: Path) -> None:
    live = EngineHarness(tmp_path / "live")
    live.start("p", "Parent", 2, True, "terminate", False)
    restored = EngineHarness(tmp_path / "restored", now_ms=live.now_ms)
    restored.engine.begin(live.now_ms)
    for r in live.sink.on(EVENTS):
        restored.engine.restore_event(r.partition or 0, r.key, r.value or b"")
    restored.engine.committed()
    assert restored.summary("p").children == live.summary("p").children  # type: ignore[union-attr]
    assert set(restored.summary("p").children) == {1, 2}  # type: ignore[union-attr]


def test_commands_from_a_parent_never_reach_a_workflow_it_did_not_start(h: EngineHarness) -> None:
    h.start("p-child-0", "Child", 5, True)  # an unrelated workflow already runs under the child's id
    h.start("p", "Parent", 1, True)  # starts (refused), signals the child in the same step
    h.send("TerminateWorkflow", {"workflow_id": "p", "reason": "before the refusal came back"})
    h.pump(activities=False)
    stranger = h.summary("p-child-0")
    assert stranger is not None and stranger.running, "neither the signal nor the close policy touched it"
    assert "SignalReceived" not in h.event_types("p-child-0")
    assert any("is not a child of run" in r for r in h.dlq_reasons())
