"""QueryWorkflow in the engine (issue 7): answered on the replies topic from the live instance, or
from one replayed for the purpose (evicted, closed); nothing is appended, nothing dead-lettered."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from engine_harness import DLQ, EVENTS, EngineHarness

from processor import _payload


@pytest.fixture
def h(tmp_path: Path) -> EngineHarness:
    return EngineHarness(tmp_path)


def query(h: EngineHarness, wid: str, name: str, *args: Any, run_id: str | None = None) -> dict[str, Any]:
    n = len(h.replies())
    events = len(h.sink.on(EVENTS))
    h.send("QueryWorkflow", {"workflow_id": wid, "query_name": name, "args": _payload.to_payloads(args),
                             "request_id": f"q{n}", "reply_partition": 2, "run_id": run_id})
    assert len(h.sink.on(EVENTS)) == events, "a query appends nothing"
    (reply,) = h.replies()[n:]
    assert reply["command"] == "QueryWorkflow" and reply["request_id"] == f"q{n}"
    return reply


def answer(reply: dict[str, Any]) -> Any:
    assert reply["outcome"] == "answered", reply
    return _payload.from_payload(reply["result"])


def test_a_running_workflow_answers_from_its_live_state(h: EngineHarness) -> None:
    h.start("a", "Approval", 60.0)
    assert answer(query(h, "a", "state")) == {"approved_by": None}
    h.signal("a", "approve", "ann")
    reply = query(h, "a", "state")
    assert answer(reply) == {"approved_by": "ann"} and reply["run_id"] == h.run_of("a")
    assert h.engine.counters.replays == 0


def test_an_evicted_or_restarted_workflow_is_replayed_to_answer(h: EngineHarness) -> None:
    h.start("a", "Approval", 60.0)
    h.signal("a", "approve", "bob")
    h.reopen(h.partition_of("a"))  # the cached instance is gone, as after a restart
    assert answer(query(h, "a", "state")) == {"approved_by": "bob"}
    assert h.engine.counters.replays == 1


def test_a_closed_workflow_is_answered_by_replaying_its_history(h: EngineHarness) -> None:
    h.start("a", "Approval", 0.0)
    h.signal("a", "approve", "cy")
    h.tick(1)
    assert h.summary("a").status == "completed"  # type: ignore[union-attr]
    assert answer(query(h, "a", "state")) == {"approved_by": "cy"}


def test_unknown_workflows_queries_and_runs_are_answered_as_such(h: EngineHarness) -> None:
    ghost = query(h, "ghost", "state")
    assert (ghost["outcome"], ghost["message"]) == ("not_found", "QueryWorkflow for unknown workflow 'ghost'")
    h.start("a", "Approval", 60.0)
    missing = query(h, "a", "nope")
    assert missing["outcome"] == "failed" and "has no query 'nope' (queries: state)" in missing["message"]
    stale = query(h, "a", "state", run_id="0" * 32)
    assert stale["outcome"] == "not_found" and "is not its latest run" in stale["message"]
    assert h.sink.on(DLQ) == [], "a query is never a dead letter"
