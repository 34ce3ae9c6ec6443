"""The event vocabulary of docs/model.md as the runtime sees it, and the activation result.

Kinds decide what the runtime does with an event: input events are applied (they wake the
workflow), command events are matched against what the code emits, engine events are skipped
(except the ones that close the workflow or mark a failed task).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from processor.exceptions import ProcessorError

__all__ = [
    "CLOSING_COMMANDS",
    "COMMAND_TYPES",
    "ENGINE_CLOSING",
    "ENGINE_SKIPPED",
    "PATCH_MARKER",
    "SEARCH_ATTRIBUTES_UPSERTED",
    "LOCAL_ACTIVITY",
    "SIDE_EFFECT",
    "Completion",
    "WorkflowTaskError",
    "describe",
    "identity",
]

COMMAND_TYPES = frozenset(
    {
        "ActivityScheduled",
        "TimerStarted",
        "TimerCanceled",
        "ChildWorkflowStarted",
        "WorkflowCompleted",
        "WorkflowFailed",
        "WorkflowCanceled",
        "WorkflowContinuedAsNew",
        "PatchMarker",
        "SideEffectRecorded",
        "LocalActivityRecorded",
        "SearchAttributesUpserted",
        "ChildWorkflowSignaled",
        "ChildWorkflowCancelRequested",
        "WorkflowUpdateCompleted",
    }
)
CLOSING_COMMANDS = frozenset({"WorkflowCompleted", "WorkflowFailed", "WorkflowCanceled", "WorkflowContinuedAsNew"})
PATCH_MARKER = "PatchMarker"
SIDE_EFFECT = "SideEffectRecorded"
LOCAL_ACTIVITY = "LocalActivityRecorded"
SEARCH_ATTRIBUTES_UPSERTED = "SearchAttributesUpserted"
ENGINE_CLOSING = frozenset({"WorkflowTerminated", "WorkflowTimedOut"})
ENGINE_SKIPPED = frozenset({"ActivityAttemptFailed", "WorkflowTaskRecovered"})
TASK_FAILED = "WorkflowTaskFailed"

# The fields that make two commands "the same decision" (docs/model.md): payloads, timeouts and
# durations may legitimately change between deploys without changing what the workflow did.
# Input events list the fields that name them, for error messages only.
_KEY_FIELDS: dict[str, tuple[str, ...]] = {
    "ActivityScheduled": ("activity_seq", "activity_type"),
    "TimerStarted": ("timer_seq",),
    "TimerCanceled": ("timer_seq",),
    "ChildWorkflowStarted": ("child_seq", "workflow_type"),
    "WorkflowContinuedAsNew": ("workflow_type",),
    "PatchMarker": ("patch_id",),
    "SideEffectRecorded": ("side_effect_seq",),
    "LocalActivityRecorded": ("local_activity_seq", "activity_type"),
    "ChildWorkflowSignaled": ("child_seq", "signal_name"),
    "ChildWorkflowCancelRequested": ("child_seq",),
    "WorkflowStarted": ("workflow_type",),
    "SignalReceived": ("signal_name",),
    "ActivityCompleted": ("activity_seq",),
    "ActivityFailed": ("activity_seq",),
    "ActivityTimedOut": ("activity_seq", "timeout_type"),
    "TimerFired": ("timer_seq",),
    "ChildWorkflowCompleted": ("child_seq",),
    "WorkflowUpdateAccepted": ("update_id", "update_name"),
    "WorkflowUpdateCompleted": ("update_id",),
}


def identity(event: dict[str, Any]) -> tuple[Any, ...]:
    kind = event.get("type")
    return (kind, *(event.get(name) for name in _KEY_FIELDS.get(str(kind), ())))


def describe(event: dict[str, Any]) -> str:
    """`ActivityScheduled(activity_seq=2, activity_type='charge')`: what error messages show."""
    kind = str(event.get("type"))
    fields = ", ".join(f"{name}={event.get(name)!r}" for name in _KEY_FIELDS.get(kind, ()))
    return f"{kind}({fields})"


class WorkflowTaskError(ProcessorError):
    """The runtime could not apply history (an engine bug, or history this code cannot read).

    Like a nondeterminism, it fails the task, not the workflow: the workflow is held.
    """


class WorkflowCodeError(WorkflowTaskError):
    """Workflow code raised an exception that does not fail the workflow (not ApplicationError,
    nor a type in `failure_exception_types`): a bug, so the workflow is held, as in Temporal."""


@dataclass(frozen=True)
class Completion:
    """What one `activate` produced.

    `commands`: new command events ("type" + fields, no workflow_id/seq/time_ms), in order.
    `error`: set when the task failed (nondeterminism, engine error); then `commands` is empty and
    the instance must be discarded. `closed`: a closing command was emitted or is in history.
    """

    commands: list[dict[str, Any]] = field(default_factory=list)
    error: ProcessorError | None = None
    closed: bool = False
