"""The per-workflow summary and the one fold that derives it from history events.

The summary is derived state: the live path and restore both build it with `fold`, so a
processor that rebuilds RocksDB from wf.events ends in exactly the state the live path had.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

_dumps = json.JSONEncoder(separators=(",", ":")).encode
RUNNING = "running"
# Completed updates a run remembers, for answering a repeated request id with the first outcome;
# older ones are forgotten (the summary is rewritten with every event, so it must stay small).
UPDATES_KEPT = 1_000
CLOSING_STATUS = {
    "WorkflowCompleted": "completed",
    "WorkflowFailed": "failed",
    "WorkflowCanceled": "canceled",
    "WorkflowTerminated": "terminated",
    "WorkflowTimedOut": "timed_out",
    "WorkflowContinuedAsNew": "continued_as_new",
}
COMMAND_EVENTS = frozenset(
    {"ActivityScheduled", "TimerStarted", "TimerCanceled", "ChildWorkflowStarted",
     "WorkflowCompleted", "WorkflowFailed", "WorkflowCanceled", "WorkflowContinuedAsNew", "PatchMarker",
     "WorkflowUpdateCompleted", "SideEffectRecorded", "SearchAttributesUpserted", "LocalActivityRecorded"}
)


@dataclass
class Summary:
    workflow_id: str
    workflow_type: str
    task_queue: str
    status: str = RUNNING
    last_seq: int = 0
    start_ms: int = 0
    close_ms: int | None = None
    # activity_seq -> [current attempt, seq of its ActivityScheduled event]
    activities: dict[int, list[int]] = field(default_factory=dict)
    max_activity_seq: int = 0
    held: str | None = None
    cancel_requested: bool = False
    run_id: str = ""  # "" for a run started before runs existed
    request_id: str | None = None  # of the StartWorkflow that started the run: a retried start attaches
    # child_seq -> [child workflow id, parent_close_policy], while the child has not reported back
    children: dict[int, list[str]] = field(default_factory=dict)
    parent: list[Any] | None = None  # [parent workflow id, parent run id, child_seq] of a child workflow
    # activity_seq -> seq of its latest ActivityAttemptFailed (what the next attempt is handed)
    failed_attempts: dict[int, int] = field(default_factory=dict)
    # update_id -> [reply partition (-1: none), seq of its WorkflowUpdateCompleted (0: still running)]
    updates: dict[str, list[int]] = field(default_factory=dict)
    traceparent: str | None = None  # W3C trace context of the run (WorkflowStarted; processor/_tracing.py)

    @property
    def running(self) -> bool:
        return self.status == RUNNING

    def to_bytes(self) -> bytes:
        # Hand-built: dataclasses.asdict deep-copies recursively and was 10% of the processor's CPU.
        return _dumps({
            "workflow_id": self.workflow_id, "workflow_type": self.workflow_type, "task_queue": self.task_queue,
            "status": self.status, "last_seq": self.last_seq, "start_ms": self.start_ms, "close_ms": self.close_ms,
            "activities": self.activities, "max_activity_seq": self.max_activity_seq, "held": self.held,
            "cancel_requested": self.cancel_requested, "run_id": self.run_id, "request_id": self.request_id,
            "children": self.children, "parent": self.parent, "updates": self.updates,
            "failed_attempts": self.failed_attempts,
            **({"traceparent": self.traceparent} if self.traceparent else {}),
        }).encode()

    @classmethod
    def from_bytes(cls, data: bytes) -> Summary:
        raw = json.loads(data)
        raw["activities"] = {int(k): v for k, v in raw["activities"].items()}
        raw["children"] = {int(k): v for k, v in raw.get("children", {}).items()}
        raw["failed_attempts"] = {int(k): v for k, v in raw.get("failed_attempts", {}).items()}
        return cls(**raw)

    def describe(self) -> dict[str, Any]:
        out = asdict(self)
        out["pending_activities"] = {seq: {"attempt": a, "scheduled_seq": s} for seq, (a, s) in self.activities.items()}
        del out["activities"]
        return out


def fold(summary: Summary | None, event: dict[str, Any]) -> Summary:
    """Apply one history event of the summary's run (a new run starts from `summary=None`).
    Events at or below `last_seq` are already in: no change."""
    etype = event["type"]
    if summary is None:
        if etype != "WorkflowStarted":
            raise ValueError(f"history of {event['workflow_id']!r} starts with {etype}, not WorkflowStarted")
        summary = Summary(event["workflow_id"], event["workflow_type"], event["task_queue"], start_ms=event["time_ms"],
                          run_id=event.get("run_id") or "", request_id=event.get("request_id"),
                          traceparent=event.get("traceparent"))
        if event.get("parent_workflow_id") is not None:
            summary.parent = [event["parent_workflow_id"], event.get("parent_run_id") or "",
                              event.get("parent_child_seq")]
    elif event["seq"] <= summary.last_seq:
        return summary
    summary.last_seq = event["seq"]
    if etype == "ActivityScheduled":
        seq = event["activity_seq"]
        summary.activities[seq] = [1, event["seq"]]
        summary.max_activity_seq = max(summary.max_activity_seq, seq)
    elif etype in ("ActivityCompleted", "ActivityFailed", "ActivityTimedOut"):
        summary.activities.pop(event["activity_seq"], None)
        summary.failed_attempts.pop(event["activity_seq"], None)
    elif etype == "ActivityAttemptFailed":
        pending = summary.activities.get(event["activity_seq"])
        if pending is not None:
            pending[0] = event["next_attempt"]
            summary.failed_attempts[event["activity_seq"]] = event["seq"]
    elif etype == "ChildWorkflowStarted":
        summary.children[event["child_seq"]] = [event["child_workflow_id"], event.get("parent_close_policy")
                                                or "terminate"]
    elif etype == "ChildWorkflowCompleted":
        summary.children.pop(event["child_seq"], None)
    elif etype == "WorkflowUpdateAccepted":
        p = event.get("reply_partition")
        summary.updates[event["update_id"]] = [-1 if p is None else p, 0]
    elif etype == "WorkflowUpdateCompleted":
        known = summary.updates.get(event["update_id"])
        if known is not None:
            known[1] = event["seq"]
        if len(summary.updates) > UPDATES_KEPT:  # the ones that completed longest ago go first
            done = sorted((seq, u) for u, (_, seq) in summary.updates.items() if seq and u != event["update_id"])
            for _, uid in done[:len(summary.updates) - UPDATES_KEPT]:
                del summary.updates[uid]
    elif etype == "WorkflowCancelRequested":
        summary.cancel_requested = True
    elif etype == "WorkflowTaskFailed":
        summary.held = event["reason"]
    elif etype == "WorkflowTaskRecovered":
        summary.held = None
    elif etype in CLOSING_STATUS:
        summary.status = CLOSING_STATUS[etype]
        summary.close_ms = event["time_ms"]
        summary.activities.clear()
        summary.failed_attempts.clear()
        summary.held = None
    if summary.held is not None and etype in COMMAND_EVENTS:
        summary.held = None
    return summary
