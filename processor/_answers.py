"""What a client makes of what Kafka tells it: pure rules, apart from the client's mechanism
(client.py: producing, waiting, watching). A completion record becomes a result or a
WorkflowFailureError; a CommandReply becomes a value or the error it stands for; history records
become events and a summary. Unit-tested without a broker."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable
from typing import Any

from processor._engine.keys import split_event_key
from processor._engine.runs import REFUSED
from processor._engine.state import Summary, fold
from processor._failure import exception_from_failure
from processor._payload import Payload, from_payload, to_payloads
from processor._search import SearchAttributeValue, apply_upsert, decode_attributes, decode_memo
from processor._watcher import Reply
from processor.exceptions import (
    CommandRejectedError,
    ConfigError,
    NoReplyError,
    ProcessorError,
    QueryFailedError,
    UpdateFailedError,
    UpdateRejectedError,
    WorkflowAlreadyStartedError,
    WorkflowFailureError,
    WorkflowNotFoundError,
)

_CLOSED = {
    "WorkflowCompleted": "completed", "WorkflowFailed": "failed", "WorkflowCanceled": "canceled",
    "WorkflowTerminated": "terminated", "WorkflowTimedOut": "timed out",
}


def _outcome(workflow_id: str, completion: tuple[str, dict[str, Any]], result_type: object) -> Any:
    """The workflow's result, or the WorkflowFailureError its completion stands for."""
    kind, rec = completion
    if kind == "StartRefused":
        raise WorkflowAlreadyStartedError(workflow_id, rec["run_id"], rec["message"])
    if kind == "WorkflowCompleted":
        return from_payload(rec["result"], result_type)
    status = _CLOSED[kind]
    if kind == "WorkflowFailed":
        cause = exception_from_failure(rec["failure"])
        raise WorkflowFailureError(workflow_id, status, str(cause)) from cause
    raise WorkflowFailureError(workflow_id, status, rec.get("reason") or "")


def history_events(workflow_id: str, records: Iterable[tuple[bytes | None, bytes | None]],
                   decode: Callable[[bytes], dict[str, Any]], run_id: str | None = None) -> list[dict[str, Any]]:
    """The events of one run of exactly `workflow_id` among (key, value) records of wf.events, in
    seq order: the run `run_id`, or (None) the id's latest run -- the one whose events come last
    in the log (the runs of one id never interleave: a run closes before the next one starts).

    Exact, not by key prefix: `col2` and `col2@000000000001` share a partition and a prefix, and
    a prefix match gave one the other's history. The key is parsed (keys.split_event_key) and the
    id compared whole; the decoded event must name the same workflow too.
    """
    runs: dict[str, dict[int, dict[str, Any]]] = {}
    for key, value in records:
        parsed = split_event_key(key or b"")
        if value is None or parsed is None:
            continue
        wid, run, seq = parsed
        if wid != workflow_id and run and key is not None and key.rpartition(b"@")[0] == workflow_id.encode():
            wid, run = workflow_id, ""  # an id ending in '@' + 32 hex digits, from before runs existed
        if wid != workflow_id or (run_id is not None and run != run_id):
            continue
        ev = decode(value)
        if ev.get("workflow_id") == workflow_id:
            runs.setdefault(run, {})[ev["seq"]] = ev
    if not runs:
        return []
    events = runs[next(reversed(runs))]
    return [events[s] for s in sorted(events)]


def summarize(events: list[dict[str, Any]]) -> dict[str, Any]:
    """What `describe` shows, from a history already read: the processors' own fold of it."""
    summary: Summary | None = None
    attributes: dict[str, SearchAttributeValue] = {}
    memo: dict[str, Payload] = {}
    for ev in events:
        summary = fold(summary, ev)
        if ev["type"] == "WorkflowStarted":
            attributes, memo = dict(ev.get("search_attributes") or {}), dict(ev.get("memo") or {})
        elif ev["type"] == "SearchAttributesUpserted":
            attributes = apply_upsert(attributes, ev["search_attributes"])
    assert summary is not None, "an empty history has no summary"
    out = summary.describe()
    out["history_length"] = len(events)
    out["search_attributes"] = decode_attributes(attributes)
    out["memo"] = decode_memo(memo)
    return out


def _answer(reply: Reply, result_type: object) -> Any:
    if reply["outcome"] == "answered":
        return from_payload(reply["result"], result_type)
    if reply["outcome"] == "not_found":
        raise WorkflowNotFoundError(reply["message"])
    raise QueryFailedError(reply["message"])


def _update_outcome(reply: Reply, result_type: object) -> Any:
    outcome, message = reply["outcome"], reply["message"]
    if outcome == "completed":
        return from_payload(reply["result"], result_type)
    if outcome == "not_found":
        raise WorkflowNotFoundError(message)
    if outcome == "failed":
        error = UpdateFailedError(f"update {reply['request_id']!r} of workflow {reply['workflow_id']!r} failed: "
                                  f"{message}")
        if reply.get("failure") is not None:
            error.__cause__ = exception_from_failure(reply["failure"])
        raise error
    raise UpdateRejectedError(message)


def _update_record(update_name: str, args: tuple[Any, ...], run_id: str | None,
                   request_id: str | None) -> dict[str, Any]:
    if not isinstance(update_name, str) or not update_name:
        raise ConfigError(f"update_name must be a non-empty string; got {update_name!r}")
    if request_id is not None and (not isinstance(request_id, str) or not request_id):
        raise ConfigError(f"request_id must be a non-empty string or None; got {request_id!r}")
    return {"update_name": update_name, "args": to_payloads(args), "run_id": run_id,
            "request_id": request_id or uuid.uuid4().hex}


def _no_update_reply(exc: NoReplyError, rec: dict[str, Any]) -> NoReplyError:
    return NoReplyError(f"{str(exc).split(';')[0]}; the update may still be applied: call execute_update again "
                        f"with request_id={rec['request_id']!r} to get its outcome (never applied twice within a run)")


def _refusal(short_name: str, reply: Reply) -> ProcessorError | None:
    """The error a CommandReply stands for, or None if the command was applied."""
    outcome, wid, run, message = reply["outcome"], reply["workflow_id"], reply["run_id"], reply["message"]
    if outcome == REFUSED:
        return WorkflowAlreadyStartedError(wid, run, message)
    if outcome == "not_found":
        return WorkflowNotFoundError(message)
    if outcome == "rejected":
        return CommandRejectedError(wid, run, message)
    return None
