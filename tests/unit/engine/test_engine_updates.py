"""UpdateWorkflow in the engine (issue 7, item 5): validated read-only on the live instance; a
rejected update leaves no trace in history; an accepted one is recorded (WorkflowUpdateAccepted),
its handler runs as workflow code and its WorkflowUpdateCompleted is answered on the replies
topic; a repeated request id is answered with the first outcome and never applied twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_harness import EVENTS, EngineHarness

from processor import _payload


@pytest.fixture
def h(tmp_path: Path) -> EngineHarness:
    return EngineHarness(tmp_path)


def update(h: EngineHarness, wid: str, name: str, *args: Any, request_id: str, run_id: str | None = None,
           reply_partition: int = 1) -> list[dict[str, Any]]:
    """Send one UpdateWorkflow; the replies it produced in that transaction."""
    n = len(h.replies())
    h.send("UpdateWorkflow", {"workflow_id": wid, "update_name": name, "args": _payload.to_payloads(args),
                              "request_id": request_id, "reply_partition": reply_partition, "run_id": run_id})
    return h.replies()[n:]


def completed(replies: list[dict[str, Any]]) -> Any:
    (reply,) = replies
    assert reply["command"] == "UpdateWorkflow" and reply["outcome"] == "completed", reply
    return _payload.from_payload(reply["result"])


def test_an_accepted_update_is_recorded_applied_and_answered(h: EngineHarness) -> None:
    h.start("c", "Cart")
    assert completed(update(h, "c", "add_item", "apple", request_id="u1")) == 1
    assert completed(update(h, "c", "add_item", "pear", request_id="u2")) == 2
    types = h.event_types("c")
    assert types == ["WorkflowStarted", "WorkflowUpdateAccepted", "WorkflowUpdateCompleted",
                     "WorkflowUpdateAccepted", "WorkflowUpdateCompleted"]
    accepted = h.events("c")[1]
    assert (accepted["update_id"], accepted["update_name"], accepted["reply_partition"]) == ("u1", "add_item", 1)
    h.signal("c", "checkout")
    assert h.result("c") == ["apple", "pear"]


def test_a_rejected_update_leaves_no_trace(h: EngineHarness) -> None:
    h.start("c", "Cart")
    events = len(h.sink.on(EVENTS))
    (reply,) = update(h, "c", "add_item", "", request_id="u1")
    assert reply["outcome"] == "rejected"
    assert "update 'add_item' rejected: validator of update 'add_item' raised ValueError: sku must not be empty" \
        in reply["message"]
    (reply,) = update(h, "c", "no_such", request_id="u2")
    assert reply["outcome"] == "rejected" and "has no update 'no_such' (updates: add_item, add_priced, refuse)" \
        in reply["message"]
    assert len(h.sink.on(EVENTS)) == events, "nothing appended for a rejected update"
    assert "u1" not in h.summary("c").updates  # type: ignore[union-attr]
    assert completed(update(h, "c", "add_item", "fig", request_id="u1")) == 1, "a rejected id may be used again"


def test_a_repeated_request_id_returns_the_first_result_and_applies_once(h: EngineHarness) -> None:
    h.start("c", "Cart")
    assert completed(update(h, "c", "add_item", "apple", request_id="same")) == 1
    assert completed(update(h, "c", "add_item", "apple", request_id="same")) == 1
    h.reopen(h.partition_of("c"))  # from RocksDB, as after a restart
    assert completed(update(h, "c", "add_item", "other", request_id="same")) == 1
    assert h.event_types("c").count("WorkflowUpdateAccepted") == 1
    assert h.engine.counters.duplicates == 2


def test_an_update_that_waits_for_an_activity_answers_when_it_completes(h: EngineHarness) -> None:
    h.start("c", "Cart")
    assert update(h, "c", "add_priced", "melon", request_id="p1") == [], "accepted: the answer comes later"
    assert update(h, "c", "add_priced", "melon", request_id="p1") == [], "a repeat waits for the same outcome"
    h.run_activities()
    replies = [r for r in h.replies() if r["request_id"] == "p1"]
    assert [(r["outcome"], _payload.from_payload(r["result"])) for r in replies] == [("completed", 42)] * 2
    assert h.event_types("c").count("ActivityScheduled") == 1


def test_an_application_error_fails_the_update_not_the_workflow(h: EngineHarness) -> None:
    h.start("c", "Cart")
    (reply,) = update(h, "c", "refuse", "out of stock", request_id="r1")
    assert reply["outcome"] == "failed" and reply["message"] == "out of stock"
    assert reply["failure"]["type"] == "Refused"
    assert h.summary("c").running  # type: ignore[union-attr]
    assert completed(update(h, "c", "add_item", "kiwi", request_id="r2")) == 1


def test_updates_to_closed_unknown_or_other_runs_are_refused(h: EngineHarness) -> None:
    (reply,) = update(h, "nobody", "add_item", "x", request_id="n1")
    assert reply["outcome"] == "not_found"
    h.start("c", "Cart")
    (reply,) = update(h, "c", "add_item", "x", request_id="n2", run_id="0" * 32)
    assert reply["outcome"] == "rejected" and "is not its current run" in reply["message"]
    h.signal("c", "checkout")
    (reply,) = update(h, "c", "add_item", "x", request_id="n3")
    assert reply["outcome"] == "rejected" and "is completed: a closed workflow takes no updates" in reply["message"]


def test_a_run_that_closes_with_an_update_running_tells_its_caller(h: EngineHarness) -> None:
    h.start("c", "Cart")
    update(h, "c", "add_priced", "melon", request_id="p1")
    h.send("TerminateWorkflow", {"workflow_id": "c", "reason": "ops"})
    (reply,) = [r for r in h.replies() if r["request_id"] == "p1"]
    assert reply["outcome"] == "failed" and "closed (terminated) before update 'p1' completed" in reply["message"]


def test_an_update_replays_from_history(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, always_replay=True)
    h.start("c", "Cart")
    assert completed(update(h, "c", "add_item", "a", request_id="u1")) == 1
    update(h, "c", "add_priced", "b", request_id="u2")
    h.run_activities()
    h.signal("c", "checkout")
    assert h.result("c") == ["a", "b@42"]
    assert h.engine.counters.replays > 3


def test_a_run_remembers_its_last_completed_updates_only(h: EngineHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    from processor._engine import state

    monkeypatch.setattr(state, "UPDATES_KEPT", 3)
    h.start("c", "Cart")
    for n in range(1, 6):
        assert completed(update(h, "c", "add_item", f"i{n}", request_id=f"u{n}")) == n
    assert list(h.summary("c").updates) == ["u3", "u4", "u5"]  # type: ignore[union-attr]
    assert completed(update(h, "c", "add_item", "again", request_id="u5")) == 5, "a remembered id: its outcome"
    assert completed(update(h, "c", "add_item", "again", request_id="u1")) == 6, "a forgotten id is a new update"


def test_a_long_update_that_completes_after_many_others_is_still_answered(
        h: EngineHarness, monkeypatch: pytest.MonkeyPatch) -> None:
    """Forgetting goes by completion: the update completing now is never the one forgotten."""
    from processor._engine import state

    monkeypatch.setattr(state, "UPDATES_KEPT", 3)
    h.start("c", "Cart")
    assert update(h, "c", "add_priced", "slow", request_id="long") == []  # waits for its activity
    for n in range(1, 5):
        completed(update(h, "c", "add_item", f"i{n}", request_id=f"u{n}"))
    h.run_activities()
    (reply,) = [r for r in h.replies() if r["request_id"] == "long"]
    assert reply["outcome"] == "completed"
    assert "long" in h.summary("c").updates  # type: ignore[union-attr]
    assert completed(update(h, "c", "add_priced", "slow", request_id="long")) == 42, "still answered once"
