"""QueryWorkflow in the engine (issue 7): answered on the replies topic from the live instance, or
from one replayed for the purpose (evicted, closed); nothing is appended, nothing dead-lettered."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from engine_harness import DLQ, EVENTS, WORKFLOWS, EngineHarness

from processor import _payload, workflow


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


# -- a handler that blocks the processor's event loop -------------------------------------------------


def _spin() -> None:
    n = 0
    while n < 10**9:  # tens of seconds of pure Python: only the deadline's signal stops it
        n += 1


@workflow.defn(name="Stuck", activation_deadline=timedelta(milliseconds=200))
class Stuck:
    """Read-only handlers that block the loop (a long computation) when asked to: workflow code
    outside an activation, under the same deadline. (time.sleep is refused by the sandbox.)"""

    def __init__(self) -> None:
        self.items: list[str] = []

    @workflow.query
    def count(self, block: bool) -> int:
        if block:
            _spin()
        return len(self.items)

    @workflow.update
    def add(self, item: str) -> int:
        self.items.append(item)
        return len(self.items)

    @add.validator
    def _check(self, item: str) -> None:
        if item == "block":
            _spin()

    @workflow.run
    async def run(self) -> list[str]:
        await workflow.wait_condition(lambda: len(self.items) >= 2)
        return self.items


def test_a_query_or_validator_that_blocks_is_interrupted_and_the_workflow_goes_on(tmp_path: Path) -> None:
    h = EngineHarness(tmp_path, [*WORKFLOWS, Stuck])
    h.start("s", "Stuck")
    began = time.monotonic()
    reply = query(h, "s", "count", True)
    assert time.monotonic() - began < 3, "interrupted at the deadline"
    assert reply["outcome"] == "failed"
    assert reply["message"].startswith("the query handler 'count' of workflow 's' blocked the processor's event loop "
                                       "for more than 0.2s")
    assert answer(query(h, "s", "count", False)) == 0, "rebuilt from history, it answers"
    n = len(h.replies())
    h.send("UpdateWorkflow", {"workflow_id": "s", "update_name": "add", "args": _payload.to_payloads(["block"]),
                              "request_id": "u1", "reply_partition": 0})
    (rejected,) = h.replies()[n:]
    assert rejected["outcome"] == "rejected" and "validator of update 'add'" in rejected["message"]
    assert h.event_types("s") == ["WorkflowStarted"], "a rejected update leaves no trace"
    for i, item in enumerate(("a", "b")):
        h.send("UpdateWorkflow", {"workflow_id": "s", "update_name": "add", "args": _payload.to_payloads([item]),
                                  "request_id": f"ok{i}", "reply_partition": 0})
    assert h.result("s") == ["a", "b"]
    assert h.dlq_reasons() == []
    h.close()


# -- the built-in __history query (docs/protocol.md#built-in-queries) ------------------------------

def history_pages(h: EngineHarness, wid: str, *args: Any, run_id: str | None = None) -> Any:
    from processor._builtin_queries import HISTORY_QUERY, history_page

    return history_page(query(h, wid, HISTORY_QUERY, *args, run_id=run_id), h.engine.codec.decode_typed)


def test_history_is_answered_from_the_store_in_pages_without_a_replay(h: EngineHarness) -> None:
    h.start("a", "Approval", 0.0)
    h.signal("a", "approve", "dee")
    h.tick(1)
    h.reopen(h.partition_of("a"))  # evicted: answering must not replay it
    whole = history_pages(h, "a")
    assert [e["type"] for e in whole.events] == h.event_types("a") and whole.next_seq is None
    assert whole.run_id == h.run_of("a") and whole.last_seq == len(whole.events)
    assert h.engine.counters.replays == 0
    first = history_pages(h, "a", 1, 1)  # one byte a page: one event a page, never none
    assert len(first.events) == 1 and first.next_seq == 2
    pages, seq = [], 1
    while seq is not None:
        page = history_pages(h, "a", seq, 200)
        pages.extend(page.events)
        seq = page.next_seq
    assert pages == whole.events
    assert [e["type"] for e in history_pages(h, "a", -1).events] == ["WorkflowCompleted"]


def test_history_of_an_unknown_workflow_or_run_and_bad_arguments(h: EngineHarness) -> None:
    from processor._builtin_queries import HISTORY_QUERY

    assert history_pages(h, "nobody") is None
    h.start("a", "Approval", 60.0)
    assert history_pages(h, "a", run_id="0" * 32) is None
    reply = query(h, "a", HISTORY_QUERY, "one")
    assert reply["outcome"] == "failed" and "from_seq" in reply["message"]
    assert h.dlq_reasons() == []


def test_a_workflow_cannot_name_a_query_like_a_builtin() -> None:
    from processor.exceptions import ConfigError

    with pytest.raises(ConfigError, match="'__history'.*processor's own"):
        @workflow.defn
        class Sneaky:
            @workflow.query(name="__history")
            def h(self) -> int:
                return 1

            @workflow.run
            async def run(self) -> None:
                return None
