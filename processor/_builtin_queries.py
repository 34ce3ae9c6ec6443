"""The processor's own queries (docs/protocol.md#built-in-queries): QueryWorkflow records whose
query_name starts with "__" are answered by the processor from its RocksDB state, never by
workflow code (a workflow may not name a query so).

    __history [from_seq, max_bytes]   one page of a run's events: the values as on wf.events
                                      (Confluent-framed Avro), base64, in a JSON answer
                                      {"run_id", "last_seq", "next_seq", "events"}; next_seq
                                      null = this page ends the run's history so far.
                                      from_seq -1: the run's last event only.

Both sides of the wire rule live here: `history_answer` (the processor's page) and
`history_page` (the client's reading of the reply). Pure.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from processor._engine.state import CLOSING_STATUS
from processor._payload import Payload, from_payload
from processor.exceptions import QueryFailedError, WorkflowNotFoundError

__all__ = ["HISTORY_PAGE_MAX_BYTES", "HISTORY_QUERY", "HistoryPage", "closing_completion", "history_answer",
           "history_page", "is_builtin", "last_event_answer", "last_event_only"]

HISTORY_QUERY = "__history"
# Raw event bytes per page: base64 in JSON stays under Kafka's default 1 MB message size.
HISTORY_PAGE_MAX_BYTES = 512 * 1024


def is_builtin(query_name: str) -> bool:
    return query_name.startswith("__")


def last_event_only(args: Sequence[Payload]) -> bool:
    """True if the args ask for the run's last event only ([-1])."""
    try:
        return len(args) >= 1 and from_payload(args[0]) == -1
    except Exception:  # noqa: BLE001 - bad args are history_answer's to explain
        return False


def history_answer(run_id: str, raws: Sequence[bytes], args: Sequence[Payload]) -> Payload:
    """The page `args` ask for of a run whose events (seq 1..n, in order) are `raws`. Raises
    ValueError if the args are not [from_seq] or [from_seq, max_bytes] (whole numbers)."""
    values = [from_payload(a) for a in args]
    if len(values) > 2 or not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
        raise ValueError(f"{HISTORY_QUERY} takes [from_seq] or [from_seq, max_bytes], whole numbers; got {values!r}")
    from_seq = values[0] if values else 1
    max_bytes = max(1, min(values[1], HISTORY_PAGE_MAX_BYTES)) if len(values) > 1 else HISTORY_PAGE_MAX_BYTES
    page: Sequence[bytes]
    next_seq = None
    if from_seq < 0:
        page = raws[-1:]
    else:
        page, size = [], 0
        for index in range(max(0, from_seq - 1), len(raws)):
            if page and size + len(raws[index]) > max_bytes:
                next_seq = index + 1
                break
            page.append(raws[index])
            size += len(raws[index])
    return _page(run_id, len(raws), next_seq, page)


def last_event_answer(run_id: str, last_seq: int, last: bytes) -> Payload:
    """The answer to [-1] when only the run's last event was read (seq `last_seq`)."""
    return _page(run_id, last_seq, None, [last])


def _page(run_id: str, last_seq: int, next_seq: int | None, events: Sequence[bytes]) -> Payload:
    answer = {"run_id": run_id, "last_seq": last_seq, "next_seq": next_seq,
              "events": [base64.b64encode(raw).decode() for raw in events]}
    return {"encoding": "json/plain", "data": json.dumps(answer, separators=(",", ":")).encode()}


@dataclass(frozen=True)
class HistoryPage:
    run_id: str
    last_seq: int
    next_seq: int | None
    events: list[dict[str, Any]]


def history_page(reply: dict[str, Any], decode: Callable[[bytes], dict[str, Any]]) -> HistoryPage | None:
    """A `__history` reply as a page of decoded events; None if the processor knows no such
    workflow or run. Raises QueryFailedError if it refused the query."""
    if reply["outcome"] == "not_found":
        return None
    if reply["outcome"] != "answered":
        raise QueryFailedError(reply["message"])
    answer = from_payload(reply["result"])
    if not isinstance(answer, dict) or "events" not in answer:
        raise WorkflowNotFoundError(f"the processor's answer to {HISTORY_QUERY} is not a history page")
    return HistoryPage(answer["run_id"], answer["last_seq"], answer["next_seq"],
                       [decode(base64.b64decode(e)) for e in answer["events"]])


def closing_completion(page: HistoryPage) -> tuple[str, dict[str, Any]] | None:
    """The completion record a run's last event stands for (as the completions topic carries it:
    the event's fields, its run_id and close_time_ms), or None while the run is open."""
    if not page.events:
        return None
    last = page.events[-1]
    if last["type"] not in CLOSING_STATUS:
        return None
    fields = {k: v for k, v in last.items() if k not in ("type", "seq", "time_ms")}
    return last["type"], {**fields, "run_id": page.run_id, "close_time_ms": last["time_ms"]}
