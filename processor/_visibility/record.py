"""The visibility record of one run, and the one fold that derives it from the run's events.

Pure: the projection (projection.py) feeds it decoded `wf.events` records in log order; it also
serves the UI and the JSON API as is, so everything in it is JSON (payloads as `jsonable_payload`
shows them, maps keyed by strings). Idempotent by (run, seq): an event at or below the record's
`last_seq` -- a redelivery after the projection restarts -- changes nothing.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from processor import payloads
from processor._engine.state import CLOSING_STATUS
from processor._search import apply_upsert

__all__ = ["fold", "jsonable_event", "jsonable_payload", "run_key"]

Record = dict[str, Any]

# Commands the workflow emitted: a held workflow that records one again has been released.
_COMMANDS = frozenset({"ActivityScheduled", "TimerStarted", "TimerCanceled", "ChildWorkflowStarted", "PatchMarker",
                       "SideEffectRecorded", "SearchAttributesUpserted", "WorkflowUpdateCompleted",
                       "ChildWorkflowSignaled", "ChildWorkflowCancelRequested", "LocalActivityRecorded"})


def run_key(workflow_id: str, run_id: str) -> str:
    """The projection's key of one run: ids never hold NUL (the client refuses them)."""
    return f"{workflow_id}\x00{run_id}"


def jsonable_payload(payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """A Payload as JSON: `{"encoding", "json": value}` when it is JSON, else base64 `data`."""
    if payload is None:
        return None
    plain, unopened = payloads.opened(payload)  # type: ignore[arg-type]
    if unopened is not None:
        return {"encoding": payload["encoding"], "base64": base64.b64encode(payload["data"]).decode(),
                "unopened": unopened, "summary": payloads.describe(payload)}  # type: ignore[arg-type]
    encoding, data = plain["encoding"], plain["data"]
    if encoding == "json/plain":
        try:
            return {"encoding": encoding, "json": json.loads(data)}
        except ValueError:
            pass
    if encoding == "binary/null":
        return {"encoding": encoding, "json": None}
    return {"encoding": encoding, "base64": base64.b64encode(data).decode()}


def jsonable_event(value: Any) -> Any:
    """A decoded event (or any part of it) as JSON: payloads by jsonable_payload, bytes as base64."""
    if isinstance(value, dict):
        if set(value) == {"encoding", "data"} and isinstance(value.get("data"), bytes):
            return jsonable_payload(value)
        return {k: jsonable_event(v) for k, v in value.items()}
    if isinstance(value, list):
        return [jsonable_event(v) for v in value]
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value


def _new_record(event: dict[str, Any], partition: int, offset: int) -> Record:
    return {
        "workflow_id": event["workflow_id"], "run_id": event.get("run_id") or "",
        "workflow_type": event["workflow_type"], "task_queue": event["task_queue"], "status": "running",
        "start_ms": event["time_ms"], "close_ms": None, "duration_ms": None, "updated_ms": event["time_ms"],
        "last_seq": 0, "history_length": 0, "held": None, "cancel_requested": False,
        "parent_workflow_id": event.get("parent_workflow_id"), "parent_run_id": event.get("parent_run_id"),
        "continued_from_run_id": event.get("continued_from_run_id"), "new_run_id": None,
        "search_attributes": dict(event.get("search_attributes") or {}),
        "memo": {k: jsonable_payload(v) for k, v in (event.get("memo") or {}).items()},
        "input": [jsonable_payload(a) for a in event.get("args") or []],
        "result": None, "failure": None, "close_reason": None,
        "activities": {}, "timers": {}, "children": {}, "signals": 0,
        "partition": partition, "first_offset": offset,
    }


def fold(record: Record | None, event: dict[str, Any], partition: int = -1, offset: int = -1) -> Record | None:
    """The record after `event` (a run's first event starts it from None); None when the event
    is already in (seq at or below last_seq) or cannot start a record (the run's WorkflowStarted
    was pruned before the projection saw it)."""
    etype = event["type"]
    if record is None:
        if etype != "WorkflowStarted":
            return None
        record = _new_record(event, partition, offset)
    elif event["seq"] <= record["last_seq"]:
        return None
    record["last_seq"] = record["history_length"] = event["seq"]
    record["updated_ms"] = event["time_ms"]
    if etype == "ActivityScheduled":
        record["activities"][str(event["activity_seq"])] = {
            "activity_type": event["activity_type"], "task_queue": event["task_queue"], "attempt": 1,
            "scheduled_ms": event["time_ms"], "last_failure": None, "next_retry_ms": None}
    elif etype == "ActivityAttemptFailed":
        pending = record["activities"].get(str(event["activity_seq"]))
        if pending is not None:
            pending["attempt"] = event["next_attempt"]
            pending["last_failure"] = jsonable_event(event["failure"])
            pending["next_retry_ms"] = event["retry_at_ms"]
    elif etype in ("ActivityCompleted", "ActivityFailed", "ActivityTimedOut"):
        record["activities"].pop(str(event["activity_seq"]), None)
    elif etype == "TimerStarted":
        record["timers"][str(event["timer_seq"])] = event["fire_at_ms"]
    elif etype in ("TimerFired", "TimerCanceled"):
        record["timers"].pop(str(event["timer_seq"]), None)
    elif etype == "ChildWorkflowStarted":
        record["children"][str(event["child_seq"])] = event["child_workflow_id"]
    elif etype == "ChildWorkflowCompleted":
        record["children"].pop(str(event["child_seq"]), None)
    elif etype == "SignalReceived":
        record["signals"] += 1
    elif etype == "SearchAttributesUpserted":
        record["search_attributes"] = apply_upsert(record["search_attributes"], event["search_attributes"])
    elif etype == "WorkflowCancelRequested":
        record["cancel_requested"] = True
    elif etype == "WorkflowTaskFailed":
        record["held"] = event["reason"]
    elif etype == "WorkflowTaskRecovered":
        record["held"] = None
    elif etype in CLOSING_STATUS:
        record["status"] = CLOSING_STATUS[etype]
        record["close_ms"] = event["time_ms"]
        record["duration_ms"] = event["time_ms"] - record["start_ms"]
        record["activities"], record["timers"], record["held"] = {}, {}, None
        if etype == "WorkflowCompleted":
            record["result"] = jsonable_payload(event["result"])
        elif event.get("failure") is not None:
            record["failure"] = jsonable_event(event["failure"])
        record["close_reason"] = event.get("reason")
        record["new_run_id"] = event.get("new_run_id")
    if record["held"] is not None and etype in _COMMANDS:
        record["held"] = None
    return record
