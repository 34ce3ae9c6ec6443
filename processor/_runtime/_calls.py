"""The calls workflow code makes (`workflow._Runtime`), as WorkflowInstance implements them:
each allocates its command's seq, emits the command, and returns what the workflow awaits.
Apart from the instance's mechanism (_instance.py: activation, matching, applying input) because
the two change for different reasons: a new workflow call lands here, a new history rule there.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, ClassVar

from processor import activity, workflow
from processor._payload import Payload, from_payload, to_payload
from processor._runtime import _guard, _local
from processor._runtime._history import (
    LOCAL_ACTIVITY,
    PATCH_MARKER,
    SEARCH_ATTRIBUTES_UPSERTED,
    SIDE_EFFECT,
    WorkflowTaskError,
)
from processor._search import SearchAttributeValue, apply_upsert, decode_attributes, wire_problem
from processor.exceptions import ConfigError
from processor.workflow import _Runtime


@dataclass(slots=True)
class _ActivityHandle:
    activity_type: str
    future: asyncio.Future[Any]
    result_hint: object


@dataclass
class _ChildHandle:
    workflow_type: str
    future: asyncio.Future[Any]
    result_hint: object


class RuntimeCalls(_Runtime):
    """WorkflowInstance's half that workflow code calls (see the module docstring)."""

    if TYPE_CHECKING:  # provided by WorkflowInstance
        _workflow_id: str
        _info: workflow.WorkflowInfo | None
        _now_ms: int
        _random: random.Random
        _replaying: bool
        _activities: dict[int, _ActivityHandle]
        _children: dict[int, _ChildHandle]
        _patches: dict[str, bool]
        _events: Sequence[Mapping[str, Any]]
        _index: int
        _local_step: tuple[int, int]
        _inputs_applied: int
        _signal_handlers: dict[str, Callable[..., Any]]
        _buffered_signals: dict[str, list[list[Payload]]]
        _conditions: list[tuple[Callable[[], bool], asyncio.Future[None]]]
        _APPLIERS: ClassVar[Mapping[str, Any]]
        _search_attributes: dict[str, SearchAttributeValue]

        def _next_seq(self, kind: str) -> int: ...
        def _emit(self, command: dict[str, Any]) -> None: ...
        def create_future(self) -> asyncio.Future[Any]: ...
        def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]: ...
        def _run_signal(self, handler: Callable[..., Any], args: list[Payload], *, bound: bool) -> Any: ...

    def workflow_info(self) -> workflow.WorkflowInfo:
        if self._info is None:
            raise WorkflowTaskError(f"workflow {self._workflow_id!r}: info() before WorkflowStarted")
        return self._info

    def workflow_now_ms(self) -> int:
        return self._now_ms

    def workflow_random(self) -> random.Random:
        return self._random

    def workflow_is_replaying(self) -> bool:
        return self._replaying

    def workflow_start_child(self, workflow_type: str, args: list[Payload], workflow_id: str, task_queue: str | None,
                             execution_timeout_ms: int | None, parent_close_policy: str,
                             result_hint: object) -> tuple[int, asyncio.Future[Any]]:
        seq = self._next_seq("child")
        future = self.create_future()
        self._children[seq] = _ChildHandle(workflow_type, future, result_hint)
        self._emit({"type": "ChildWorkflowStarted", "child_seq": seq, "child_workflow_id": workflow_id,
                    "workflow_type": workflow_type, "args": args,
                    "task_queue": task_queue or self.workflow_info().task_queue,
                    "parent_close_policy": parent_close_policy, "execution_timeout_ms": execution_timeout_ms})
        return seq, future

    def workflow_signal_child(self, child_seq: int, workflow_id: str, signal_name: str, args: list[Payload]) -> None:
        self._emit({"type": "ChildWorkflowSignaled", "child_seq": child_seq, "child_workflow_id": workflow_id,
                    "signal_name": signal_name, "args": args})

    def workflow_cancel_child(self, child_seq: int, workflow_id: str) -> None:
        self._emit({"type": "ChildWorkflowCancelRequested", "child_seq": child_seq, "child_workflow_id": workflow_id})

    def workflow_set_signal_handler(self, name: str, handler: Callable[..., Any] | None) -> None:
        if handler is None:
            self._signal_handlers.pop(name, None)
            return
        self._signal_handlers[name] = handler
        for args in self._buffered_signals.pop(name, []):  # what arrived before, in arrival order
            self._spawn(self._run_signal(handler, args, bound=True), f"signal {name}")

    def workflow_patched(self, patch_id: str, deprecated: bool) -> bool:
        """Patches (Temporal's model): a step executing for the first time takes the patch and
        records its marker; a recorded step takes it only if its recorded commands hold the marker."""
        decided = self._patches.get(patch_id)
        if decided is not None:
            return decided
        if self._replaying:
            decided = self._marker_recorded_in_this_step(patch_id)
        else:
            decided = True
        if decided:
            self._emit({"type": PATCH_MARKER, "patch_id": patch_id, "deprecated": deprecated})
        self._patches[patch_id] = decided
        return decided

    def _marker_recorded_in_this_step(self, patch_id: str) -> bool:
        """Is a PatchMarker for `patch_id` among the commands recorded after the input being
        applied (up to the next input event)?"""
        return self._recorded_in_this_step(PATCH_MARKER, "patch_id", patch_id) is not None

    def _recorded_in_this_step(self, kind: str, field: str, value: Any) -> Mapping[str, Any] | None:
        """The command of type `kind` with `field` == `value` among those recorded after the
        input being applied (up to the next input event), or None."""
        for event in self._events[self._index + 1:]:
            if event["type"] in self._APPLIERS:
                return None
            if event["type"] == kind and event.get(field) == value:
                return event
        return None

    def workflow_side_effect(self, fn: Callable[[], Any], result_hint: object) -> Any:
        """A step executing for the first time calls `fn` (the clock and random allowed) and
        records its value; a recorded step returns the value recorded at this point."""
        seq = self._next_seq("side_effect")
        recorded = self._recorded_in_this_step(SIDE_EFFECT, "side_effect_seq", seq) if self._replaying else None
        if recorded is not None:
            payload = recorded["value"]
        else:
            with _guard.suspended():
                value = fn()
            payload = to_payload(value)
        self._emit({"type": SIDE_EFFECT, "side_effect_seq": seq, "value": payload})
        return from_payload(payload, result_hint)

    def workflow_local_spent_ms(self) -> int:
        """How long the local activities of this workflow task ran (recorded durations on a
        replay), so the decision to start a new task is the same on every replay."""
        step, spent = self._local_step
        return spent if step == self._inputs_applied else 0

    def workflow_local_activity(self, fn: Callable[..., Any], activity_type: str, args: tuple[Any, ...],
                                attempt: int, timeout_s: float) -> Mapping[str, Any]:
        """One attempt of a local activity: run now (processor/_runtime/_local.py) and recorded as
        a LocalActivityRecorded command, or, on a replay, the attempt recorded at this point."""
        seq = self._next_seq("local_activity")
        recorded = self._recorded_in_this_step(LOCAL_ACTIVITY, "local_activity_seq", seq) if self._replaying else None
        if recorded is None:
            wf = self.workflow_info()
            info = activity.ActivityInfo(
                workflow_id=wf.workflow_id, workflow_type=wf.workflow_type, activity_seq=seq,
                activity_type=activity_type, attempt=attempt, task_queue=wf.task_queue,
                scheduled_time=datetime.fromtimestamp(self._now_ms / 1000, UTC), run_id=wf.run_id)
            result, failure, took_ms = _local.run_attempt(fn, args, info, timeout_s)
            command: dict[str, Any] = {"type": LOCAL_ACTIVITY, "local_activity_seq": seq,
                                       "activity_type": activity_type, "attempt": attempt, "result": result,
                                       "failure": failure, "duration_ms": took_ms}
        else:
            command = {k: v for k, v in recorded.items() if k not in ("workflow_id", "seq", "time_ms")}
        self._emit(command)
        step, spent = self._local_step
        now = self._inputs_applied
        self._local_step = (now, (spent if step == now else 0) + int(command["duration_ms"]))
        return command

    def workflow_upsert_search_attributes(self, attributes: dict[str, SearchAttributeValue]) -> None:
        merged = apply_upsert(self._search_attributes, attributes)
        problem = wire_problem(merged)
        if problem is not None:
            raise ConfigError(f"upsert_search_attributes: {problem}")
        self._search_attributes = merged
        self._info = dataclasses.replace(self.workflow_info(), search_attributes=decode_attributes(merged))
        self._emit({"type": SEARCH_ATTRIBUTES_UPSERTED, "search_attributes": attributes})

    def workflow_schedule_activity(
        self,
        activity_type: str,
        args: list[Payload],
        task_queue: str | None,
        timeouts_ms: tuple[int | None, int | None, int | None, int | None],
        retry_policy: workflow.RetryPolicyRecord | None,
        result_hint: object,
    ) -> asyncio.Future[Any]:
        seq = self._next_seq("activity")
        future = self.create_future()
        self._activities[seq] = _ActivityHandle(activity_type, future, result_hint)
        self._emit(
            {
                "type": "ActivityScheduled",
                "activity_seq": seq,
                "activity_type": activity_type,
                "task_queue": task_queue or self.workflow_info().task_queue,
                "args": args,
                "start_to_close_timeout_ms": timeouts_ms[0],
                "schedule_to_close_timeout_ms": timeouts_ms[1],
                "heartbeat_timeout_ms": timeouts_ms[2],
                "schedule_to_start_timeout_ms": timeouts_ms[3],
                "retry_policy": retry_policy,
            }
        )
        return future

    def workflow_wait_condition(self, fn: Callable[[], bool]) -> asyncio.Future[None]:
        future: asyncio.Future[None] = self.create_future()
        self._conditions.append((fn, future))
        return future
