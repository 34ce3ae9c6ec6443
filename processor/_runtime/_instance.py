"""`WorkflowInstance`: one workflow execution, driven by its history (docs/model.md, runtime contract).

`activate(events)` walks the events in order:

- an input event is applied by its `_apply_<event>` method (the one dispatcher; handles are found
  by seq) and the loop then runs to quiescence; the commands the code emits queue up in
  `_unmatched`;
- a command event must equal (by identity) the oldest unmatched command, else the code no longer
  matches history: NondeterminismError;
- an input event that arrives while commands are still unmatched means the code emitted commands
  that history never recorded (also nondeterminism), unless a WorkflowTaskFailed said that the
  step's commands were never recorded; then they stay queued and count as new;
- whatever is still unmatched when the events end is new and returned in `Completion.commands`.

The caller passes each event once: either the whole history to a fresh instance, or, to a cached
live instance, just the events recorded since. The commands returned are taken as recorded.
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import inspect
import random
import sys
import traceback
from asyncio.events import _get_running_loop, _set_running_loop
from collections.abc import Callable, Coroutine, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, ClassVar

from processor import _payload, workflow
from processor._definition import update_validator
from processor._failure import exception_from_failure, failure_from_exception
from processor._limits import MAX_RECORD_BYTES, PAYLOAD_TOO_LARGE, too_large
from processor._payload import Payload
from processor._runtime import _guard
from processor._runtime._calls import RuntimeCalls, _ActivityHandle, _ChildHandle
from processor._runtime._guard import NondeterministicCall, NondeterministicCallError
from processor._runtime._history import (
    CLOSING_COMMANDS,
    COMMAND_TYPES,
    ENGINE_CLOSING,
    ENGINE_SKIPPED,
    PATCH_MARKER,
    TASK_FAILED,
    Completion,
    WorkflowCodeError,
    WorkflowTaskError,
    describe,
    identity,
)
from processor._runtime._loop import DurableTimerHandle, WorkflowEventLoop
from processor._search import SearchAttributeValue, decode_attributes, decode_memo
from processor.exceptions import (
    ActivityError,
    ApplicationError,
    ChildWorkflowError,
    ConfigError,
    NondeterminismError,
    PayloadKeyError,
    ProcessorError,
    QueryFailedError,
    UpdateRejectedError,
)

__all__ = ["WorkflowInstance"]

_OUR_CODE = str(Path(__file__).resolve().parents[1])  # processor/: frames of ours are not the user's line
_EVENT_ROOM = 4_096  # what a WorkflowUpdateCompleted needs beside its result

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class WorkflowInstance(WorkflowEventLoop, RuntimeCalls):
    """A workflow execution replayed from, and advanced by, its history. Pure: no I/O, no clock."""

    def __init__(self, definition: workflow.WorkflowDefinition, workflow_id: str) -> None:
        super().__init__()
        # The workflow's own module first: its `from uuid import uuid4` aliases are rebound too.
        module = sys.modules.get(definition.cls.__module__)
        _guard.install(definition.cls, [vars(module)] if module is not None else [])
        self._definition = definition
        self._workflow_id = workflow_id
        self._info: workflow.WorkflowInfo | None = None
        self._search_attributes: dict[str, SearchAttributeValue] = {}  # as they stand, wire form
        self._memo: dict[str, Payload] = {}
        self._random = random.Random(0)  # reseeded from WorkflowStarted.random_seed
        # One allocator per command kind (docs/model.md); all 1-based.
        self._seqs = {"activity": 0, "timer": 0, "child": 0, "side_effect": 0, "local_activity": 0}
        self._inputs_applied = 0  # input events applied so far: which step this is, live or replayed
        self._local_step = (0, 0)  # (the step, ms its local activities ran): _calls.py
        self._activities: dict[int, _ActivityHandle] = {}
        self._children: dict[int, _ChildHandle] = {}
        self._timers: dict[int, DurableTimerHandle] = {}
        self._unmatched: collections.deque[dict[str, Any]] = collections.deque()
        self._carry_unmatched = False  # set by WorkflowTaskFailed
        self._closed = False
        self._replaying = False
        self._activating = False
        self._event_seq = 0  # history seq of the event being applied, for error messages
        self._error: ProcessorError | None = None
        self._refused_call: str | None = None  # the first clock/random/uuid call of workflow code
        self._internal_error: BaseException | None = None
        self._code_error: WorkflowCodeError | None = None  # workflow code raised a bug: the task fails
        self._cancel_reason: str | None = None
        self._object: Any = None
        self._primary: asyncio.Task[None] | None = None
        self._patches: dict[str, bool] = {}  # patch id -> what workflow.patched() decided for this run
        self._events: Sequence[Mapping[str, Any]] = ()  # the activation's events, for patch lookahead
        self._index = 0
        self._querying: str | None = None  # the query being answered: emitting anything is refused
        self._signal_handlers: dict[str, Callable[..., Any]] = {}  # workflow.set_signal_handler
        self._buffered_signals: dict[str, list[list[Payload]]] = {}  # name -> args of signals with no handler yet

    # ---- activation -------------------------------------------------------------------------

    def activate(self, events: Sequence[Mapping[str, Any]]) -> Completion:
        """Apply `events` (see the module docstring); never raises."""
        if self._error is None and self._discarded:
            self._error = WorkflowTaskError(
                f"workflow {self._workflow_id!r}: activate() after close(); build a new instance"
            )
        if self._error is not None:
            return Completion([], self._error, self._closed)
        previous = _get_running_loop()
        _set_running_loop(self)
        outer_guard = _guard.enter(self._refuse_call)
        self._activating = True
        try:
            last = len(events) - 1
            self._events = events
            for index, event in enumerate(events):
                # A step whose effects history already holds is a replay: logging is muted.
                self._replaying = index < last
                self._index = index
                self._step(event)
            commands = list(self._unmatched)
            self._unmatched.clear()
            return Completion(commands, None, self._closed)
        except ProcessorError as exc:
            self._error = exc
        except Exception as exc:  # noqa: BLE001 - activate never raises: a bug fails the task, not the worker
            error = WorkflowTaskError(
                f"workflow {self._workflow_id!r}: internal error applying history seq {self._event_seq}: "
                f"{type(exc).__name__}: {exc}"
            )
            error.__cause__ = exc
            self._error = error
        finally:
            self._activating = False
            self._replaying = False
            self._events = ()
            _guard.leave(outer_guard)
            _set_running_loop(previous)
        self._unmatched.clear()
        return Completion([], self._error, self._closed)

    @property
    def activation_deadline_s(self) -> float | None:
        """@workflow.defn(activation_deadline=...), or None for the processor's setting."""
        return self._definition.activation_deadline_s

    def query(self, name: str, args: list[Payload]) -> Payload:
        """Answer query `name` from the instance's current state, changing nothing (no command, no
        task, no timer). Raises QueryFailedError; never anything else."""
        handler = self._definition.queries.get(name)
        if handler is None:
            known = ", ".join(sorted(self._definition.queries)) or "none"
            raise QueryFailedError(f"workflow type {self._definition.name!r} has no query {name!r} (queries: {known})")
        answer = self._read_only(handler, args, f"query handler {name!r}", "a query")
        try:
            return _payload.to_payload(answer)
        except ProcessorError as exc:
            raise QueryFailedError(f"query handler {name!r} returned what cannot be sent: {exc}") from None

    def validate_update(self, name: str, args: list[Payload]) -> None:
        """Run update `name`'s validator (if any) on the current state, changing nothing. Raises
        UpdateRejectedError with the reason when the update must not be accepted."""
        handler = self._definition.updates.get(name)
        if handler is None:
            known = ", ".join(sorted(self._definition.updates)) or "none"
            raise UpdateRejectedError(f"workflow type {self._definition.name!r} has no update {name!r} "
                                      f"(updates: {known})")
        check = update_validator(handler)
        try:
            values = _payload.from_payloads(args, _payload.param_hints(handler, skip_first=True))
            inspect.signature(handler).bind(None, *values)
        except (ProcessorError, TypeError) as exc:
            raise UpdateRejectedError(f"update {name!r}: the arguments do not fit its handler "
                                      f"{handler.__qualname__}: {exc}") from None
        if check is None:
            return
        try:
            self._read_only(check, args, f"validator of update {name!r}", "a validator", values)
        except QueryFailedError as exc:
            raise UpdateRejectedError(f"update {name!r} rejected: {exc}") from None

    def _read_only(self, handler: Callable[..., Any], args: list[Payload], who: str, kind: str,
                   values: list[Any] | None = None) -> Any:
        """Call `handler` on the current state so that it changes nothing (queries, validators).
        Raises QueryFailedError with `who` in the message; never anything else."""
        if self._error is not None or self._discarded or self._object is None:
            raise QueryFailedError(f"workflow {self._workflow_id!r} has no state to read (not started, or its "
                                   "history does not replay)")
        previous = _get_running_loop()
        _set_running_loop(self)
        outer_guard = _guard.enter(self._refuse_call)
        ready, timers = len(self._ready), len(self._timers)
        # What a handler could touch before _emit refuses it: put back afterwards, so the next
        # real command gets the seq a replay gives it.
        saved = (dict(self._seqs), dict(self._children), dict(self._timers), dict(self._activities),
                 dict(self._patches))
        random_state = self._random.getstate()  # workflow.random()/uuid4() in a handler must not move it
        self._querying = who
        try:
            if values is None:
                values = _payload.from_payloads(args, _payload.param_hints(handler, skip_first=True))
            result = handler(self._object, *values)
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()
                raise QueryFailedError(f"{who} returned an awaitable: {kind} cannot wait")
            if len(self._ready) != ready or len(self._timers) != timers:
                raise QueryFailedError(f"{who} tried to start work (a task or timer): {kind} only reads state")
            return result
        except QueryFailedError:
            raise
        except NondeterministicCall as exc:
            raise QueryFailedError(str(exc)) from None
        except Exception as exc:  # noqa: BLE001 - a failing handler fails the request, never the workflow
            raise QueryFailedError(f"{who} raised {type(exc).__name__}: {exc}") from exc
        finally:
            self._querying = None
            self._seqs, self._children, self._timers, self._activities, self._patches = saved
            self._random.setstate(random_state)
            while len(self._ready) > ready:  # drop what the handler scheduled, so nothing of it ever runs
                self._ready.pop().cancel()
            self._refused_call = None
            _guard.leave(outer_guard)
            _set_running_loop(previous)

    def _step(self, event: Mapping[str, Any]) -> None:
        kind = event["type"]
        self._event_seq = event.get("seq", 0)
        applier = self._APPLIERS.get(kind)
        if applier is not None:
            # After WorkflowTaskFailed, commands were not recorded while the workflow was held;
            # inputs that arrived meanwhile pile more owed commands on top. The carry lasts until
            # history records commands again (_match empties the queue).
            if self._unmatched and not self._carry_unmatched:
                raise self._nondeterminism(describe(self._unmatched[0]), describe(dict(event)))
            if self._closed:
                return  # late input for a closed workflow: nothing can observe it
            self._now_ms = event["time_ms"]
            self._inputs_applied += 1  # a new workflow task (step): _calls.py counts its local activities
            applier(self, event)
            try:
                self.run_until_quiescent()
            except NondeterministicCall:
                pass  # raised in a wait_condition predicate, outside any task: recorded all the same
            # Checked even if workflow code swallowed the exception: see _guard's docstring.
            if self._refused_call is not None:
                raise NondeterministicCallError(self._refused_call)
            if self._internal_error is not None:
                raise self._internal_error
            if self._code_error is not None:
                raise self._code_error
        elif kind in COMMAND_TYPES:
            self._match(event)
        elif kind == TASK_FAILED:
            self._carry_unmatched = True
        elif kind in ENGINE_CLOSING:
            self._closed = True
        elif kind not in ENGINE_SKIPPED:
            raise WorkflowTaskError(
                f"workflow {self._workflow_id!r}: history seq {self._event_seq} has event type {kind!r}, "
                "which this runtime does not know: deploy the processor version that wrote it"
            )

    def _match(self, recorded: Mapping[str, Any]) -> None:
        if recorded["type"] == PATCH_MARKER and not (
                self._unmatched and identity(self._unmatched[0]) == identity(dict(recorded))):
            return  # a patch marker no code asks about any more (its call was removed): nothing to match
        if not self._unmatched:
            raise self._nondeterminism("no command at this point", describe(dict(recorded)))
        emitted = self._unmatched.popleft()
        if identity(emitted) != identity(dict(recorded)):
            raise self._nondeterminism(describe(emitted), describe(dict(recorded)))
        if not self._unmatched:
            self._carry_unmatched = False
        if recorded["type"] in CLOSING_COMMANDS:
            self._closed = True

    def _refuse_call(self, api: str, fix: str, where: str) -> str:
        message = (
            f"{api}() inside workflow {self._definition.name!r} is nondeterministic (workflow {self._workflow_id!r}, "
            f"called at {where}, history seq {self._event_seq}): {fix}. The workflow is held until code "
            "without the call is deployed."
        )
        if self._refused_call is None:
            self._refused_call = message
        return message

    def _nondeterminism(self, expected: str, recorded: str) -> NondeterminismError:
        return NondeterminismError(self._workflow_id, self._event_seq, expected, recorded)

    def _emit(self, command: dict[str, Any]) -> None:
        if self._querying is not None:
            raise QueryFailedError(f"{self._querying} tried to change the workflow ({describe(command)}): it only "
                                   "reads state")
        # After close, or once discarded, the code may still run (other tasks, finally blocks)
        # but decides nothing any more.
        if self._closed or self._discarded:
            return
        self._unmatched.append(command)
        if command["type"] in CLOSING_COMMANDS:
            self._closed = True

    def _next_seq(self, kind: str) -> int:
        seq = self._seqs[kind] + 1
        self._seqs[kind] = seq
        return seq

    # ---- _apply_<event>: the one dispatcher (see _APPLIERS) ---------------------------------

    def _apply_workflow_started(self, event: Mapping[str, Any]) -> None:
        if self._info is not None:
            raise WorkflowTaskError(
                f"workflow {self._workflow_id!r}: a second WorkflowStarted at seq {self._event_seq}"
            )
        if event["workflow_type"] != self._definition.name:
            raise WorkflowTaskError(
                f"workflow {self._workflow_id!r} has type {event['workflow_type']!r} but was given the "
                f"definition of {self._definition.name!r}: look the definition up by workflow_type"
            )
        timeout_ms = event.get("execution_timeout_ms")
        self._search_attributes = dict(event.get("search_attributes") or {})
        self._memo = dict(event.get("memo") or {})
        self._info = workflow.WorkflowInfo(
            workflow_id=self._workflow_id,
            workflow_type=event["workflow_type"],
            task_queue=event["task_queue"],
            start_time=_EPOCH + timedelta(milliseconds=event["time_ms"]),
            execution_timeout=timedelta(milliseconds=timeout_ms) if timeout_ms is not None else None,
            request_id=event.get("request_id"),
            run_id=event.get("run_id") or "",
            continued_from_run_id=event.get("continued_from_run_id"),
            search_attributes=decode_attributes(self._search_attributes),
            memo=decode_memo(self._memo),
        )
        self._random = random.Random(event["random_seed"])
        self._primary = self._spawn(self._run_workflow(event["args"]), "workflow run")

    def _apply_signal_received(self, event: Mapping[str, Any]) -> None:
        name = event["signal_name"]
        dynamic = self._signal_handlers.get(name)
        if dynamic is not None:
            self._spawn(self._run_signal(dynamic, event["args"], bound=True), f"signal {name}")
            return
        handler = self._definition.signals.get(name)
        if handler is None:
            # Buffered, as Temporal does: workflow.set_signal_handler(name, ...) later delivers it,
            # in arrival order. Logged (when not replaying) so a typo is visible.
            self._buffered_signals.setdefault(name, []).append(event["args"])
            workflow.logger.warning(
                "signal %r has no handler on workflow %s yet (known: %s); buffered until one is set",
                name,
                self._definition.name,
                ", ".join(sorted(self._definition.signals)) or "none",
            )
            return
        self._spawn(self._run_signal(handler, event["args"]), f"signal {name}")

    def _apply_workflow_update_accepted(self, event: Mapping[str, Any]) -> None:
        name = event["update_name"]
        handler = self._definition.updates.get(name)
        if handler is None:  # accepted by code that had the handler: this code cannot apply it
            raise WorkflowTaskError(
                f"workflow {self._workflow_id!r}: history seq {self._event_seq} accepted update {name!r}, which "
                f"workflow type {self._definition.name!r} no longer handles: deploy code with the handler"
            )
        self._spawn(self._run_update(handler, name, event["update_id"], event["args"]), f"update {name}")

    def _apply_workflow_cancel_requested(self, event: Mapping[str, Any]) -> None:
        self._cancel_reason = event.get("reason", "")
        if self._primary is not None:
            self._primary.cancel(self._cancel_reason)

    def _apply_activity_completed(self, event: Mapping[str, Any]) -> None:
        handle = self._activity(event)
        if handle is not None:
            try:
                result = _payload.from_payload(event["result"], handle.result_hint)
            except PayloadKeyError as exc:  # not the result's fault: held until this process has the key
                raise WorkflowTaskError(f"workflow {self._workflow_id!r}: {exc}") from exc
            except ProcessorError as exc:  # the workflow sees a result it cannot read
                handle.future.set_exception(exc)
                return
            handle.future.set_result(result)

    def _apply_activity_failed(self, event: Mapping[str, Any]) -> None:
        handle = self._activity(event)
        if handle is not None:
            self._fail_activity(handle, event, exception_from_failure(event["failure"]), "failed")

    def _apply_activity_timed_out(self, event: Mapping[str, Any]) -> None:
        handle = self._activity(event)
        if handle is not None:
            timeout_type = event.get("timeout_type", "")
            cause = ApplicationError(
                f"activity {handle.activity_type} timed out ({timeout_type})",
                type="ActivityTimeout",
                non_retryable=True,
                details=timeout_type,
            )
            self._fail_activity(handle, event, cause, f"timed out ({timeout_type})")

    def _apply_timer_fired(self, event: Mapping[str, Any]) -> None:
        seq = event["timer_seq"]
        handle = self._timers.pop(seq, None)
        if handle is None:
            self._check_known_seq("timer", seq, event)
        elif not handle.cancelled():
            self._ready.append(handle)

    def _apply_child_workflow_completed(self, event: Mapping[str, Any]) -> None:
        seq = event["child_seq"]
        handle = self._children.pop(seq, None)
        if handle is None:
            self._check_known_seq("child", seq, event)
            return
        if handle.future.done():
            return
        status = event.get("status") or "completed"
        if status == "completed":
            try:
                handle.future.set_result(_payload.from_payload(event["result"], handle.result_hint))
            except PayloadKeyError as exc:  # not the result's fault: held until this process has the key
                raise WorkflowTaskError(f"workflow {self._workflow_id!r}: {exc}") from exc
            except ProcessorError as exc:  # a result this code cannot read fails the await, not the task
                handle.future.set_exception(exc)
            return
        failure = event.get("failure")
        what = "could not start" if status == "start_refused" else status.replace("_", " ")
        error = ChildWorkflowError(
            f"child workflow {handle.workflow_type!r} (id {event['child_workflow_id']!r}) {what}",
            workflow_id=event["child_workflow_id"], run_id=event.get("child_run_id") or "", status=status)
        if failure is not None:
            error.__cause__ = exception_from_failure(failure)
        handle.future.set_exception(error)

    # The one dispatcher: event type -> _apply_<event>. Plain functions (class body scope), called
    # as applier(self, event); a dict lookup per event is the cheapest dispatch Python has.
    _APPLIERS: ClassVar[dict[str, Callable[[WorkflowInstance, Mapping[str, Any]], None]]] = {
        "WorkflowStarted": _apply_workflow_started,
        "SignalReceived": _apply_signal_received,
        "WorkflowUpdateAccepted": _apply_workflow_update_accepted,
        "WorkflowCancelRequested": _apply_workflow_cancel_requested,
        "ActivityCompleted": _apply_activity_completed,
        "ActivityFailed": _apply_activity_failed,
        "ActivityTimedOut": _apply_activity_timed_out,
        "TimerFired": _apply_timer_fired,
        "ChildWorkflowCompleted": _apply_child_workflow_completed,
    }

    # ---- handles ----------------------------------------------------------------------------

    def _activity(self, event: Mapping[str, Any]) -> _ActivityHandle | None:
        seq = event["activity_seq"]
        handle = self._activities.pop(seq, None)
        if handle is None:
            self._check_known_seq("activity", seq, event)
            return None
        # Cancelled (e.g. by wait_for) while the activity ran: the result has no one to go to.
        return None if handle.future.done() else handle

    def _check_known_seq(self, kind: str, seq: int, event: Mapping[str, Any]) -> None:
        # A resolution for a seq already resolved/cancelled is harmless; one for a seq never
        # allocated means history and code disagree in a way matching could not catch.
        if not 0 < seq <= self._seqs[kind]:
            raise WorkflowTaskError(
                f"workflow {self._workflow_id!r}: history seq {self._event_seq} has {describe(dict(event))}, "
                f"but the workflow never started {kind} {seq}"
            )

    def _fail_activity(self, handle: _ActivityHandle, event: Mapping[str, Any], cause: BaseException, how: str) -> None:
        error = ActivityError(
            f"activity {handle.activity_type} (activity_seq {event['activity_seq']}) {how}: {cause}",
            activity_type=handle.activity_type,
            activity_seq=event["activity_seq"],
            attempt=event.get("attempt", 0),
        )
        error.__cause__ = cause
        handle.future.set_exception(error)

    # ---- tasks running user code ------------------------------------------------------------

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> asyncio.Task[None]:
        task = self.create_task(coro, name=name)
        task.add_done_callback(self._on_engine_task_done)
        return task

    def _on_engine_task_done(self, task: asyncio.Task[Any]) -> None:
        # Our wrappers catch everything user code raises; an exception here is our own bug.
        if not task.cancelled() and task.exception() is not None and self._internal_error is None:
            self._internal_error = task.exception()

    async def _run_workflow(self, args: list[Payload]) -> None:
        definition = self._definition
        try:
            values = _payload.from_payloads(args, definition.run_param_hints)
            self._object = definition.cls()
            result = await definition.run_fn(self._object, *values)
            command: dict[str, Any] = {"type": "WorkflowCompleted", "result": _payload.to_payload(result)}
        except workflow.ContinueAsNewError as can:
            command = self._continued_as_new(can)
        except asyncio.CancelledError as exc:
            if self._cancel_reason is None:  # cancelled by its own code, not by a request
                command = {"type": "WorkflowFailed", "failure": failure_from_exception(exc)}
            else:
                command = {"type": "WorkflowCanceled", "reason": self._cancel_reason}
        except Exception as exc:  # noqa: BLE001 - user code raising fails the workflow or holds it
            failed = self._raised(exc, "its @workflow.run method")
            if failed is None:
                return
            command = failed
        self._emit(command)

    async def _run_signal(self, handler: Callable[..., Any], args: list[Payload], bound: bool = False) -> None:
        """`bound`: a handler given to workflow.set_signal_handler (no `self` to pass)."""
        try:
            values = _payload.from_payloads(args, _payload.param_hints(handler, skip_first=not bound))
            result = handler(*values) if bound else handler(self._object, *values)
            if inspect.isawaitable(result):
                await result
        except asyncio.CancelledError:
            return
        except workflow.ContinueAsNewError as can:
            self._emit(self._continued_as_new(can))
        except Exception as exc:  # noqa: BLE001 - a raising signal handler fails the workflow or holds it
            failed = self._raised(exc, f"signal handler {getattr(handler, '__name__', '?')!r}")
            if failed is not None:
                self._emit(failed)

    async def _run_update(self, handler: Callable[..., Any], name: str, update_id: str, args: list[Payload]) -> None:
        """Run an accepted update; its WorkflowUpdateCompleted carries the result, or the failure
        of an ApplicationError (the update fails, the workflow goes on). A bug holds the workflow."""
        done: dict[str, Any] = {"type": "WorkflowUpdateCompleted", "update_id": update_id, "result": None,
                                "failure": None}
        try:
            values = _payload.from_payloads(args, _payload.param_hints(handler, skip_first=True))
            result = handler(self._object, *values)
            if inspect.isawaitable(result):
                result = await result
            payload = _payload.to_payload(result)
            if len(payload["data"]) > MAX_RECORD_BYTES - _EVENT_ROOM:  # the update fails, not the workflow
                raise ApplicationError(too_large(f"the result of update {name!r}", len(payload["data"])),
                                       type=PAYLOAD_TOO_LARGE, non_retryable=True)
            done["result"] = payload
        except asyncio.CancelledError as exc:  # the workflow was cancelled while the update ran
            done["failure"] = failure_from_exception(ApplicationError(f"update {name!r} canceled: {exc}",
                                                                      type="Canceled"))
        except workflow.ContinueAsNewError as can:
            self._emit(self._continued_as_new(can))
            return
        except Exception as exc:  # noqa: BLE001 - a raising update handler fails the update or holds the workflow
            if self._raised(exc, f"update handler {name!r}") is None:
                return
            done["failure"] = failure_from_exception(exc)
        self._emit(done)

    _FAILS_WORKFLOW: ClassVar[tuple[type[Exception], ...]] = (ApplicationError, ActivityError, ChildWorkflowError)

    def _raised(self, exc: Exception, where: str) -> dict[str, Any] | None:
        """What workflow code raising `exc` does: the WorkflowFailed command for a failure type
        (ApplicationError, an ActivityError/ChildWorkflowError let through, or one listed in
        failure_exception_types), else None and the task fails (the workflow is held: a bug that
        a deployed fix resumes from history, as in Temporal)."""
        if isinstance(exc, self._FAILS_WORKFLOW + self._definition.failure_exception_types):
            return {"type": "WorkflowFailed", "failure": failure_from_exception(exc)}
        if self._code_error is None:
            frames = [f for f in traceback.extract_tb(exc.__traceback__) if not f.filename.startswith(_OUR_CODE)]
            at = f", at {frames[-1].filename}:{frames[-1].lineno} in {frames[-1].name}" if frames else ""
            self._code_error = WorkflowCodeError(
                f"workflow {self._workflow_id!r} ({self._definition.name}): {where} raised "
                f"{type(exc).__name__}: {str(exc).rstrip('.')} (history seq {self._event_seq}{at}). An "
                "exception that is not an ApplicationError is taken for a bug: the workflow is held until a fix is "
                "deployed, then resumes from its history. To fail the workflow on purpose raise ApplicationError, "
                "or list the type in @workflow.defn(failure_exception_types=[...])."
            )
            self._code_error.__cause__ = exc
        return None

    def _continued_as_new(self, can: workflow.ContinueAsNewError) -> dict[str, Any]:
        """The closing command of `workflow.continue_as_new` (the engine adds new_run_id)."""
        info = self.workflow_info()
        timeout = can.execution_timeout_ms
        if timeout is None and info.execution_timeout is not None:
            timeout = round(info.execution_timeout.total_seconds() * 1000)
        try:
            args = _payload.to_payloads(can.run_args)
        except ProcessorError as exc:
            return {"type": "WorkflowFailed", "failure": failure_from_exception(exc)}
        command: dict[str, Any] = {"type": "WorkflowContinuedAsNew",
                                   "workflow_type": can.workflow_type or info.workflow_type, "args": args,
                                   "task_queue": can.task_queue or info.task_queue, "execution_timeout_ms": timeout}
        if self._search_attributes:  # carried into the next run (the schema's default is none)
            command["search_attributes"] = self._search_attributes
        if self._memo:
            command["memo"] = self._memo
        return command

    # ---- timers (the loop's hooks) ----------------------------------------------------------

    def _start_timer(
        self, delay: float, callback: Callable[..., object], args: tuple[Any, ...], ctx: contextvars.Context | None
    ) -> asyncio.TimerHandle:
        seq = self._next_seq("timer")
        duration_ms = max(0, round(delay * 1000))
        handle = DurableTimerHandle(seq, (self._now_ms + duration_ms) / 1000.0, callback, args, self, ctx)
        self._timers[seq] = handle
        fire_at_ms = self._now_ms + duration_ms
        self._emit({"type": "TimerStarted", "timer_seq": seq, "duration_ms": duration_ms, "fire_at_ms": fire_at_ms})
        return handle

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        # Fired timers were already popped: cancelling one after it fired (wait_for does) is no command.
        if isinstance(handle, DurableTimerHandle) and self._timers.pop(handle.seq, None) is not None:
            self._emit({"type": "TimerCanceled", "timer_seq": handle.seq})

    # ---- discard ----------------------------------------------------------------------------

    def close(self) -> None:
        """Discard the instance: close every coroutine it runs, deterministically, now.

        Closing throws GeneratorExit into each suspended coroutine, so user `finally:` blocks run
        (Python guarantees that much) but any workflow call they make emits nothing. Doing it here,
        not leaving it to the garbage collector, keeps those finally blocks from running later, at
        a random point, on whatever loop happens to be running then.
        """
        if self._activating:
            raise ConfigError("loop.close() is not allowed in workflow code")
        if self._discarded:
            return
        self._discarded = True
        previous = _get_running_loop()
        _set_running_loop(self)
        try:
            for task in list(self._tasks):
                if not task.done():
                    try:
                        task.get_coro().close()
                    except Exception:  # noqa: BLE001, S110 - user code that refuses to stop: drop it
                        pass
        finally:
            _set_running_loop(previous)
            self._ready.clear()
            self._tasks.clear()
            self._conditions.clear()
            self._activities.clear()
            self._timers.clear()
