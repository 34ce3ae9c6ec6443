"""`Replayer`: run workflow code against a recorded history, with no broker and no state.

Use it in tests ("does the new code still replay last month's histories?") and from the CLI
(`processor replay ID`). A history is the list of event dicts of docs/model.md, in seq order.

JSON form of a history (`history_to_json` / `history_from_json` / `Replayer.replay_json`): one
event per line, each a JSON object with exactly the fields of docs/model.md (`type` holds the short
record name). The model's only bytes field is `Payload.data`; in JSON it is a standard base64
string, so a Payload reads `{"encoding": "json/plain", "data": "eyJpZCI6MX0="}`. Any object with
exactly the keys `encoding` and `data` is taken as a Payload when reading.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor._runtime import WorkflowInstance
from processor.exceptions import ConfigError, DecodeError, ProcessorError
from processor.workflow import WorkflowDefinition

__all__ = ["ReplayResult", "Replayer", "history_from_json", "history_to_json"]


@dataclass(frozen=True)
class ReplayResult:
    workflow_id: str
    # Commands the code emits beyond the end of history (what the processor would record next).
    commands_pending: list[dict[str, Any]]
    closed: bool


class Replayer:
    """Replays histories against the given workflow classes (looked up by workflow type)."""

    def __init__(self, workflows: Sequence[type]) -> None:
        self._definitions: dict[str, WorkflowDefinition] = {}
        for cls in workflows:
            definition = WorkflowDefinition.of(cls)
            if definition.name in self._definitions:
                raise ConfigError(
                    f"two workflow classes are named {definition.name!r} "
                    f"({self._definitions[definition.name].cls.__qualname__} and {cls.__qualname__}): "
                    "pass one per workflow type"
                )
            self._definitions[definition.name] = definition
        from processor.schedule import ScheduleWorkflow  # every processor runs schedules too

        self._definitions.setdefault(WorkflowDefinition.of(ScheduleWorkflow).name,
                                     WorkflowDefinition.of(ScheduleWorkflow))

    def replay(self, history: Sequence[dict[str, Any]]) -> ReplayResult:
        """Replay one workflow's history; raises `NondeterminismError` if the code no longer matches."""
        if not history or history[0].get("type") != "WorkflowStarted":
            first = history[0].get("type") if history else "nothing"
            raise DecodeError(f"a history starts with WorkflowStarted; this one starts with {first}")
        workflow_id = history[0].get("workflow_id")
        workflow_type = history[0].get("workflow_type")
        if not isinstance(workflow_id, str) or not isinstance(workflow_type, str):
            raise DecodeError("the WorkflowStarted event needs string workflow_id and workflow_type fields")
        others = {e.get("workflow_id") for e in history} - {workflow_id}
        if others:
            raise DecodeError(f"history of {workflow_id!r} also holds events of {sorted(map(str, others))}")
        definition = self._definitions.get(workflow_type)
        if definition is None:
            raise ConfigError(
                f"no workflow class for type {workflow_type!r} (known: {', '.join(sorted(self._definitions))}): "
                "pass its class in Replayer(workflows=[...])"
            )
        instance = WorkflowInstance(definition, workflow_id)
        try:
            completion = instance.activate(history)
        finally:
            instance.close()
        if completion.error is not None:
            raise completion.error
        return ReplayResult(workflow_id, completion.commands, completion.closed)

    def replay_json(self, path: str | Path) -> ReplayResult:
        """Replay a JSON-lines history file (see the module docstring for the form)."""
        return self.replay(history_from_json(Path(path).read_text(encoding="utf-8")))


def history_to_json(history: Iterable[dict[str, Any]]) -> str:
    return "".join(json.dumps(_encode(event), separators=(",", ":")) + "\n" for event in history)


def history_from_json(text: str) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            event = _decode(json.loads(line))
        except (ValueError, ProcessorError) as exc:
            raise DecodeError(f"history line {number} is not a JSON event: {exc}") from exc
        if not isinstance(event, dict) or not isinstance(event.get("type"), str):
            raise DecodeError(f"history line {number} is not an event object with a string 'type'")
        events.append(event)
    return events


def _is_payload(value: dict[str, Any]) -> bool:
    return value.keys() == {"encoding", "data"}


def _encode(value: Any) -> Any:
    if isinstance(value, dict):
        if _is_payload(value) and isinstance(value["data"], bytes):
            return {"encoding": value["encoding"], "data": base64.b64encode(value["data"]).decode("ascii")}
        return {k: _encode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_encode(v) for v in value]
    if isinstance(value, bytes):
        raise DecodeError("bytes outside a Payload's data field: not part of the history model")
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict):
        if _is_payload(value) and isinstance(value["data"], str):
            return {"encoding": value["encoding"], "data": base64.b64decode(value["data"], validate=True)}
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value
