"""The list query language (processor/_visibility/query.py): what each predicate matches, the
order, and errors that say where the query is wrong."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from processor._search import Text, encode_attributes
from processor._visibility.query import QueryError, compile_query


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def row(wid: str, wtype: str = "Order", status: str = "running", start: str = "2026-12-01T10:00:00",
        close: str | None = None, **attrs: Any) -> dict[str, Any]:
    return {"workflow_id": wid, "run_id": "r" + wid, "workflow_type": wtype, "status": status,
            "start_ms": _ms(start), "close_ms": _ms(close) if close else None, "task_queue": "default",
            "history_length": len(wid), "held": None, "search_attributes": encode_attributes(attrs)}


ROWS = [
    row("a", CustomerId="c1", Amount=150.0, Tags=["vip", "eu"], Notes=Text("Fragile box, handle with care"),
        Due=datetime(2026, 12, 5, tzinfo=UTC), Step=4),
    row("b", status="completed", start="2026-11-30T08:00:00", close="2026-11-30T09:00:00", CustomerId="c2",
        Amount=20.0, Step=2),
    row("c", wtype="Refund", status="timed_out", start="2026-12-02T00:00:00", CustomerId="c1", Step=4),
    row("d", wtype="Refund", status="failed", start="2026-11-29T00:00:00"),
]


def ids(query: str | None) -> list[str]:
    compiled = compile_query(query)
    return [r["workflow_id"] for r in compiled.sort([r for r in ROWS if compiled.matches(r)])]


@pytest.mark.parametrize(("query", "expected"), [
    (None, ["c", "a", "b", "d"]),  # every run, newest start first
    ("", ["c", "a", "b", "d"]),
    ("WorkflowType = 'Order' AND ExecutionStatus = 'Running' AND CustomerId = 'c1'", ["a"]),
    ("ExecutionStatus = 'TimedOut'", ["c"]),
    ("executionstatus = 'timed_out'", ["c"]),  # names and statuses in any case
    ("ExecutionStatus != 'Running'", ["c", "b", "d"]),
    ("CustomerId = 'c1' OR CustomerId = 'c2'", ["c", "a", "b"]),
    ("CustomerId IN ('c2', 'c9')", ["b"]),
    ("CustomerId NOT IN ('c2')", ["c", "a"]),  # d has no CustomerId: matches neither
    ("CustomerId IS NULL", ["d"]),
    ("CustomerId IS NOT NULL AND NOT Step = 4", ["b"]),
    ("Amount > 100", ["a"]),
    ("Amount >= 20 AND Amount < 150", ["b"]),
    ("Amount BETWEEN 10 AND 200", ["a", "b"]),
    ("Step = 4 AND (WorkflowType = 'Refund' OR Amount > 100)", ["c", "a"]),
    ("Tags = 'vip'", ["a"]),
    ("Tags = 'v'", []),
    ("Notes = 'handle FRAGILE'", ["a"]),
    ("Notes = 'glass'", []),
    ("WorkflowId STARTS_WITH 'b'", ["b"]),
    ("StartTime > '2026-12-01T00:00:00Z'", ["c", "a"]),
    ("StartTime BETWEEN '2026-11-29' AND '2026-11-30T12:00:00'", ["b", "d"]),
    ("CloseTime < '2026-12-01'", ["b"]),
    ("Due < '2026-12-06T00:00:00+00:00'", ["a"]),
    ("Amount = 'c1'", []),  # another kind: unequal, never an error at a run's attribute
    ("Amount > 'x'", []),
    ("HistoryLength = 1", ["c", "a", "b", "d"]),
    ("Held = false", ["c", "a", "b", "d"]),
    ("`Step` = 2", ["b"]),
])
def test_predicates_match_what_they_say(query: str | None, expected: list[str]) -> None:
    assert ids(query) == expected


def test_order_by_fields_each_way_with_missing_values_last() -> None:
    assert ids("ORDER BY Amount DESC") == ["a", "b", "c", "d"]  # c and d have no Amount: by id
    assert ids("ORDER BY Amount") == ["b", "a", "c", "d"]
    assert ids("ORDER BY Step DESC, StartTime ASC") == ["a", "c", "b", "d"]
    assert ids("WorkflowType = 'Refund' ORDER BY WorkflowId") == ["c", "d"]


@pytest.mark.parametrize(("query", "message"), [
    ("WorkflowType = ", "expected a value for WorkflowType (a 'string', a number, true or false) at character 15, "
                        "got the end of the query"),
    ("WorkflowType == 'x'", "expected a value for WorkflowType"),
    ("(Amount > 1", "expected ')' at character 12"),
    ("Amount 5", "expected an operator after Amount"),
    ("ExecutionStatus = 'Sleeping'", "ExecutionStatus is one of Running"),
    ("StartTime > 'yesterday'", "StartTime needs an ISO-8601 time"),
    ("StartTime > 5", "StartTime is a time"),
    ("HistoryLength > 'x'", "HistoryLength is a number"),
    ("Amount > 1 Amount < 2", "expected AND, OR, ORDER BY or the end of the query at character 12"),
    ("A = 'x' ORDER Amount", "expected BY"),
    ("A ~ 1", "unexpected '~ 1' at character 3"),
    ("A NOT = 1", "expected IN or BETWEEN after NOT"),
])
def test_a_bad_query_says_where_and_what(query: str, message: str) -> None:
    with pytest.raises(QueryError) as caught:
        compile_query(query)
    assert message in str(caught.value)


def test_quotes_inside_strings() -> None:
    rows = [row("x", CustomerId="o'brien"), row("y", CustomerId='say "hi"')]
    for query, expected in [("CustomerId = 'o''brien'", "x"), ("CustomerId = \"say \\\"hi\\\"\"", "y")]:
        compiled = compile_query(query)
        assert [r["workflow_id"] for r in rows if compiled.matches(r)] == [expected]
