"""Plays the processor for runtime tests: keeps a history, feeds the instance, records commands.

`Sim(..., always_replay=True)` discards the instance after every activation and rebuilds it from
the full history (STYLE.md point 10): every scenario then also proves that replay reproduces the
live run, which is where replay bugs hide.
"""

from __future__ import annotations

from typing import Any

from processor import _payload
from processor._failure import failure_from_exception
from processor._runtime import Completion, WorkflowInstance
from processor.workflow import WorkflowDefinition

START_MS = 1_700_000_000_000


class Sim:
    def __init__(self, cls: type, workflow_id: str = "wf-1", *, always_replay: bool = False) -> None:
        self.definition = WorkflowDefinition.of(cls)
        self.workflow_id = workflow_id
        self.always_replay = always_replay
        self.history: list[dict[str, Any]] = []
        self.now_ms = START_MS
        self.instance = WorkflowInstance(self.definition, workflow_id)
        self.last = Completion()

    def _append(self, event: dict[str, Any]) -> dict[str, Any]:
        # Like the processor: common fields first, seq contiguous, time = the clock now.
        full = {"workflow_id": self.workflow_id, "seq": len(self.history) + 1, "time_ms": self.now_ms, **event}
        self.history.append(full)
        return full

    def feed(self, event_type: str, **fields: Any) -> Completion:
        event = self._append({"type": event_type, **fields})
        if self.always_replay:
            self.instance.close()
            self.instance = WorkflowInstance(self.definition, self.workflow_id)
            completion = self.instance.activate(self.history)
        else:
            completion = self.instance.activate([event])
        if completion.error is not None:
            raise completion.error
        for command in completion.commands:
            assert "workflow_id" not in command and "seq" not in command and "time_ms" not in command
            self._append(command)
        self.last = completion
        return completion

    # ---- input events -------------------------------------------------------------------------

    def start(self, *args: Any, seed: int = 42, task_queue: str = "default") -> Completion:
        return self.feed(
            "WorkflowStarted",
            workflow_type=self.definition.name,
            args=_payload.to_payloads(args),
            task_queue=task_queue,
            execution_timeout_ms=None,
            random_seed=seed,
            request_id=None,
        )

    def complete(self, activity_seq: int, result: Any, attempt: int = 1) -> Completion:
        return self.feed(
            "ActivityCompleted", activity_seq=activity_seq, attempt=attempt, result=_payload.to_payload(result)
        )

    def fail(self, activity_seq: int, exc: BaseException, attempt: int = 3) -> Completion:
        return self.feed(
            "ActivityFailed", activity_seq=activity_seq, attempt=attempt, failure=failure_from_exception(exc)
        )

    def fire(self, timer_seq: int) -> Completion:
        return self.feed("TimerFired", timer_seq=timer_seq)

    def signal(self, name: str, *args: Any) -> Completion:
        return self.feed("SignalReceived", signal_name=name, args=_payload.to_payloads(args), request_id=None)

    def cancel(self, reason: str = "user asked") -> Completion:
        return self.feed("WorkflowCancelRequested", reason=reason)

    def advance(self, ms: int) -> None:
        self.now_ms += ms

    # ---- reading history ----------------------------------------------------------------------

    def commands(self, event_type: str) -> list[dict[str, Any]]:
        return [e for e in self.history if e["type"] == event_type]

    def scheduled(self) -> list[dict[str, Any]]:
        return self.commands("ActivityScheduled")

    def closing(self) -> dict[str, Any]:
        closing = [e for e in self.history if e["type"] in ("WorkflowCompleted", "WorkflowFailed", "WorkflowCanceled")]
        assert len(closing) == 1, [e["type"] for e in self.history]
        return closing[0]

    def result(self) -> Any:
        event = self.closing()
        assert event["type"] == "WorkflowCompleted", event
        return _payload.from_payload(event["result"])

    def close(self) -> None:
        self.instance.close()


def replay(definition_cls: type, history: list[dict[str, Any]], workflow_id: str = "wf-1") -> Completion:
    instance = WorkflowInstance(WorkflowDefinition.of(definition_cls), workflow_id)
    try:
        return instance.activate(history)
    finally:
        instance.close()


def assert_replays(definition_cls: type, history: list[dict[str, Any]]) -> None:
    """Every prefix ending at an input event replays to exactly the commands history recorded next."""
    input_types = {
        "WorkflowStarted",
        "SignalReceived",
        "WorkflowCancelRequested",
        "ActivityCompleted",
        "ActivityFailed",
        "ActivityTimedOut",
        "TimerFired",
        "ChildWorkflowCompleted",
        "WorkflowUpdateAccepted",
    }
    for index, event in enumerate(history):
        if event["type"] not in input_types:
            continue
        completion = replay(definition_cls, history[: index + 1], event["workflow_id"])
        assert completion.error is None, completion.error
        recorded = []
        for following in history[index + 1 :]:
            if following["type"] in input_types:
                break
            recorded.append({k: v for k, v in following.items() if k not in ("workflow_id", "seq", "time_ms")})
        assert completion.commands == recorded, f"prefix ending at seq {event['seq']}"
    full = replay(definition_cls, history, history[0]["workflow_id"])
    assert full.error is None and full.commands == []
