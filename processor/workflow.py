"""The workflow SDK: decorators for workflow classes, and the calls workflow code makes.

```python
from processor import workflow

@workflow.defn
class Checkout:
    @workflow.run
    async def run(self, order: Order) -> Receipt:
        charge = await workflow.execute_activity(charge_card, order, start_to_close_timeout=30)
        await asyncio.sleep(3600)                      # a durable timer
        return Receipt(charge.id, workflow.now())
```

Workflow code runs on the deterministic event loop of `processor._runtime` and is replayed from
history, so it must take every nondeterministic input from this module: `now()`, `random()`,
`uuid4()` instead of the wall clock, `random` and `uuid`. The functions here find that loop as the
running asyncio loop; outside it they raise `ConfigError` saying so.

Nothing is registered globally: `@workflow.defn` attaches a `WorkflowDefinition` to the class and
`Worker(workflows=[...])` / `Replayer(workflows=[...])` read it back with `WorkflowDefinition.of`.
"""

from __future__ import annotations

import asyncio
import logging
import random as _random
import uuid
from abc import ABC, abstractmethod
from asyncio.events import _get_running_loop
from collections.abc import Callable, Mapping, MutableMapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, NoReturn, TypedDict, TypeVar, cast

from processor import _payload, _search
from processor._definition import (
    WorkflowDefinition,
    defn,
    query,
    run,
    signal,
    update,
)
from processor._names import task_queue_problem
from processor._payload import Payload
from processor._search import Text
from processor.activity import ActivityDefinition
from processor.exceptions import ConfigError

__all__ = [
    "ChildWorkflowHandle",
    "ContinueAsNewError",
    "RetryPolicy",
    "Text",
    "WorkflowDefinition",
    "WorkflowInfo",
    "defn",
    "continue_as_new",
    "deprecate_patch",
    "execute_activity",
    "execute_local_activity",
    "execute_child_workflow",
    "in_workflow",
    "info",
    "logger",
    "now",
    "patched",
    "query",
    "random",
    "run",
    "set_signal_handler",
    "signal",
    "start_child_workflow",
    "time",
    "update",
    "upsert_search_attributes",
    "uuid4",
    "wait_condition",
]

C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])
T = TypeVar("T")

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class RetryPolicyRecord(TypedDict):
    initial_interval_ms: int
    backoff_coefficient: float
    maximum_interval_ms: int
    maximum_attempts: int
    non_retryable_error_types: list[str]


@dataclass(frozen=True)
class RetryPolicy:
    """How an activity is retried. `maximum_interval` defaults to 100 x `initial_interval`;
    `maximum_attempts=0` means unlimited; errors whose type is listed are never retried."""

    initial_interval: timedelta = timedelta(seconds=1)
    backoff_coefficient: float = 2.0
    maximum_interval: timedelta | None = None
    maximum_attempts: int = 0
    non_retryable_error_types: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Seconds as a number are accepted too, as everywhere else a duration is taken.
        for name in ("initial_interval", "maximum_interval"):
            value = getattr(self, name)
            if isinstance(value, int | float) and not isinstance(value, bool):
                object.__setattr__(self, name, timedelta(seconds=value))
            elif value is not None and not isinstance(value, timedelta):
                raise ConfigError(f"RetryPolicy.{name} is a timedelta or seconds; got {type(value).__name__}")
        if self.initial_interval <= timedelta(0):
            raise ConfigError(f"RetryPolicy.initial_interval must be positive; got {self.initial_interval}")
        if self.backoff_coefficient < 1.0:
            raise ConfigError(f"RetryPolicy.backoff_coefficient must be >= 1.0; got {self.backoff_coefficient}")
        if self.maximum_attempts < 0:
            raise ConfigError(f"RetryPolicy.maximum_attempts must be >= 0 (0 = unlimited); got {self.maximum_attempts}")
        if isinstance(self.non_retryable_error_types, str):
            raise ConfigError("RetryPolicy.non_retryable_error_types is a tuple of type names, not one string")

    def to_record(self) -> RetryPolicyRecord:
        maximum = self.maximum_interval if self.maximum_interval is not None else self.initial_interval * 100
        return {
            "initial_interval_ms": _td_ms(self.initial_interval),
            "backoff_coefficient": float(self.backoff_coefficient),
            "maximum_interval_ms": _td_ms(maximum),
            "maximum_attempts": self.maximum_attempts,
            "non_retryable_error_types": list(self.non_retryable_error_types),
        }


@dataclass(frozen=True)
class WorkflowInfo:
    workflow_id: str
    workflow_type: str
    task_queue: str
    start_time: datetime
    execution_timeout: timedelta | None = None
    request_id: str | None = None
    run_id: str = ""  # "" for a run started before runs existed
    continued_from_run_id: str | None = None
    # As they stand now: set at start, changed by upsert_search_attributes (Python values).
    search_attributes: Mapping[str, Any] = field(default_factory=dict)
    memo: Mapping[str, Any] = field(default_factory=dict)


def _check_patch_id(patch_id: object, api: str) -> None:
    if not isinstance(patch_id, str) or not patch_id:
        raise ConfigError(f"workflow.{api}() needs a non-empty string patch id; got {patch_id!r}")



# ---- what the runtime provides ----------------------------------------------------------------


class _Runtime(ABC):
    """Implemented by the workflow event loop (processor._runtime); this module calls only these."""

    @abstractmethod
    def workflow_info(self) -> WorkflowInfo: ...

    @abstractmethod
    def workflow_now_ms(self) -> int: ...

    @abstractmethod
    def workflow_random(self) -> _random.Random: ...

    @abstractmethod
    def workflow_is_replaying(self) -> bool: ...

    @abstractmethod
    def workflow_schedule_activity(
        self,
        activity_type: str,
        args: list[Payload],
        task_queue: str | None,
        timeouts_ms: tuple[int | None, int | None, int | None, int | None],
        retry_policy: RetryPolicyRecord | None,
        result_hint: object,
    ) -> asyncio.Future[Any]: ...

    @abstractmethod
    def workflow_wait_condition(self, fn: Callable[[], bool]) -> asyncio.Future[None]: ...

    @abstractmethod
    def workflow_patched(self, patch_id: str, deprecated: bool) -> bool: ...

    @abstractmethod
    def workflow_side_effect(self, fn: Callable[[], Any], result_hint: object) -> Any: ...

    @abstractmethod
    def workflow_local_activity(self, fn: Callable[..., Any], activity_type: str, args: tuple[Any, ...],
                                attempt: int, timeout_s: float) -> Mapping[str, Any]: ...

    @abstractmethod
    def workflow_local_spent_ms(self) -> int: ...

    @abstractmethod
    def workflow_upsert_search_attributes(self, attributes: dict[str, _search.SearchAttributeValue]) -> None: ...

    @abstractmethod
    def workflow_set_signal_handler(self, name: str, handler: Callable[..., Any] | None) -> None: ...

    @abstractmethod
    def workflow_start_child(self, workflow_type: str, args: list[Payload], workflow_id: str, task_queue: str | None,
                             execution_timeout_ms: int | None, parent_close_policy: str,
                             result_hint: object) -> tuple[int, asyncio.Future[Any]]: ...

    @abstractmethod
    def workflow_signal_child(self, child_seq: int, workflow_id: str, signal_name: str,
                              args: list[Payload]) -> None: ...

    @abstractmethod
    def workflow_cancel_child(self, child_seq: int, workflow_id: str) -> None: ...


def _runtime(what: str) -> _Runtime:
    loop = _get_running_loop()
    if isinstance(loop, _Runtime):
        return loop
    raise ConfigError(
        f"workflow.{what}() was called outside workflow code: it only works inside the methods of a "
        "@workflow.defn class while a worker or Replayer runs them (outside, use the standard library)"
    )


def in_workflow() -> bool:
    return isinstance(_get_running_loop(), _Runtime)


def info() -> WorkflowInfo:
    return _runtime("info").workflow_info()


def now() -> datetime:
    """History time as an aware UTC datetime: the time of the event being applied, same on replay."""
    return _EPOCH + timedelta(milliseconds=_runtime("now").workflow_now_ms())


def time() -> float:
    """History time in seconds since the epoch (what `asyncio.get_running_loop().time()` returns)."""
    return _runtime("time").workflow_now_ms() / 1000.0


def random() -> _random.Random:
    """A `random.Random` seeded from history: the same numbers on every replay."""
    return _runtime("random").workflow_random()


def uuid4() -> uuid.UUID:
    """A version-4 UUID drawn from `random()`, hence the same on every replay."""
    return uuid.UUID(int=_runtime("uuid4").workflow_random().getrandbits(128), version=4)


class ContinueAsNewError(BaseException):  # noqa: N818 - Temporal's name, and control flow, not an error
    """Raised by `continue_as_new`. A BaseException so that `except Exception:` in workflow code
    does not swallow it; let it propagate out of the run method (or a signal handler)."""

    def __init__(self, args: tuple[Any, ...], workflow_type: str | None, task_queue: str | None,
                 execution_timeout_ms: int | None) -> None:
        super().__init__("continue as new")
        self.run_args = args
        self.workflow_type = workflow_type
        self.task_queue = task_queue
        self.execution_timeout_ms = execution_timeout_ms


def continue_as_new(*args: Any, workflow: type | str | None = None, task_queue: str | None = None,
                    execution_timeout: timedelta | float | None = None) -> NoReturn:
    """Close this run and start the next run of the same workflow id with `args` and a fresh
    history, atomically: the completion of this run (WorkflowContinuedAsNew) and the start of the
    next are one transaction, and input that arrives after it goes to the next run. State the next
    run needs must travel in `args`. `workflow` / `task_queue` / `execution_timeout` default to
    this run's."""
    _runtime("continue_as_new")
    name = workflow if isinstance(workflow, str) or workflow is None else WorkflowDefinition.of(workflow).name
    if task_queue is not None and (problem := task_queue_problem(task_queue)) is not None:
        raise ConfigError(problem)
    raise ContinueAsNewError(args, name, task_queue, _timeout_ms(execution_timeout, "execution_timeout"))


def set_signal_handler(name: str, handler: Callable[..., Any] | None) -> None:
    """Handle signal `name` with `handler(*args)` from now on (None: remove it). Signals of that
    name that arrived while the workflow had no handler for it were buffered: they are delivered
    now, in arrival order. Handlers declared with @workflow.signal need none of this."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"set_signal_handler needs a signal name; got {name!r}")
    if handler is not None and not callable(handler):
        raise ConfigError(f"set_signal_handler needs a callable (or None); got {handler!r}")
    _runtime("set_signal_handler").workflow_set_signal_handler(name, handler)


def patched(patch_id: str) -> bool:
    """True if this run takes the code path of patch `patch_id`. A run executing the call for the
    first time records a marker in history and gets True; a run replaying a step recorded before the
    patch was deployed finds no marker there and gets False, so it keeps the old path, and replays
    identically. Decided once per run and patch id (later calls return the same)."""
    _check_patch_id(patch_id, "patched")
    return _runtime("patched").workflow_patched(patch_id, False)


def upsert_search_attributes(attributes: Mapping[str, Any]) -> None:
    """Set or replace these search attributes of the run (a value of None removes one); the
    others stay. Recorded in history (`SearchAttributesUpserted`), so a replay sets the same, and
    the visibility projection indexes the new values. Types follow the values: str (keyword),
    `Text` (text), int, float, bool, an aware datetime, list of str (keyword_list)."""
    encoded = _search.encode_attributes(attributes, upsert=True)
    if not encoded:
        return
    _runtime("upsert_search_attributes").workflow_upsert_search_attributes(encoded)


def side_effect(fn: Callable[[], T]) -> T:
    """`fn()`, run once and recorded: the first execution calls it and records its value in
    history (a `SideEffectRecorded` event); a replay returns the recorded value without calling
    it. For small nondeterministic values workflow code may not compute itself -- an id from an
    outside generator, a feature flag, `time.time()` -- where an activity would be too much. `fn`
    may use the clock and random; it must be quick and must not fail (what it raises fails the
    workflow task, as a bug does) -- I/O that can fail belongs in an activity. The value must be
    a payload (JSON-serializable or a dataclass; decoded by `fn`'s return annotation)."""
    if not callable(fn):
        raise ConfigError(f"side_effect takes a function of no arguments; got {fn!r}")
    return cast(T, _runtime("side_effect").workflow_side_effect(fn, _payload.return_hint(fn)))


def deprecate_patch(patch_id: str) -> None:
    """Mark patch `patch_id` as the only path: deploy this once no run that predates the patch is
    left; runs whose history has the patch's marker still replay, runs without it are fine too.
    Afterwards the call itself can go."""
    _check_patch_id(patch_id, "deprecate_patch")
    _runtime("deprecate_patch").workflow_patched(patch_id, True)


async def execute_activity(
    activity: Callable[..., Any] | str,
    *args: Any,
    task_queue: str | None = None,
    start_to_close_timeout: timedelta | float | None = None,
    schedule_to_close_timeout: timedelta | float | None = None,
    heartbeat_timeout: timedelta | float | None = None,
    retry_policy: RetryPolicy | None = None,
    schedule_to_start_timeout: timedelta | float | None = None,
) -> Any:
    """Run an activity (an `@activity.defn` function, or its name) and return its result.

    The result is shaped by the function's return annotation (dataclasses are rebuilt). A final
    failure or timeout raises `ActivityError` whose `__cause__` is the activity's error.
    `task_queue` defaults to the workflow's; timeouts are timedeltas or seconds:

    - `start_to_close_timeout`: how long one attempt may run, counted from the moment a worker
      starts it (time waiting in the task queue does not count); a retryable attempt failure.
    - `heartbeat_timeout`: the longest gap between `activity.heartbeat()` calls, from the start.
    - `schedule_to_start_timeout`: how long one attempt may wait for a worker to start it. When it
      passes the activity times out for good (not retried: a retry would wait in the same queue).
    - `schedule_to_close_timeout`: all attempts together, from scheduling to the final result.
    """
    runtime = _runtime("execute_activity")
    if isinstance(activity, str):
        activity_type, hint = activity, None
    else:
        definition = ActivityDefinition.of(activity)
        activity_type, hint = definition.name, definition.return_hint
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise ConfigError(f"retry_policy must be a workflow.RetryPolicy; got {type(retry_policy).__name__}")
    if task_queue is not None and (problem := task_queue_problem(task_queue)) is not None:
        raise ConfigError(problem)
    future = runtime.workflow_schedule_activity(
        activity_type,
        _payload.to_payloads(args),
        task_queue,
        (
            _timeout_ms(start_to_close_timeout, "start_to_close_timeout"),
            _timeout_ms(schedule_to_close_timeout, "schedule_to_close_timeout"),
            _timeout_ms(heartbeat_timeout, "heartbeat_timeout"),
            _timeout_ms(schedule_to_start_timeout, "schedule_to_start_timeout"),
        ),
        retry_policy.to_record() if retry_policy is not None else None,
        hint,
    )
    return await future


async def execute_local_activity(
    activity: Callable[..., Any],
    *args: Any,
    start_to_close_timeout: timedelta | float | None = None,
    schedule_to_close_timeout: timedelta | float | None = None,
    retry_policy: RetryPolicy | None = None,
) -> Any:
    """Run `activity(*args)` here, in the processor, inside this workflow task, and return its
    result: for steps of milliseconds that should not pay a round trip through a task topic.

    Each attempt is recorded in history (`LocalActivityRecorded`): a replay, or a processor that
    took over after a crash, reads it and does not call the function again; an attempt under way
    when a processor crashes runs again (at least once, as an activity). A failed attempt is
    retried by `retry_policy` after a durable timer. `start_to_close_timeout` (default and at most
    5 s: the processor's transaction waits) bounds one attempt, `schedule_to_close_timeout` all of
    them. Local activities that run longer than 1 s together in one workflow task continue in the
    next one. A final failure raises `ActivityError` whose `__cause__` is the activity's error.
    """
    from processor._engine.retry import next_retry_delay_ms
    from processor._failure import exception_from_failure
    from processor._runtime._local import MAX_ATTEMPT_S, STEP_BUDGET_MS
    from processor.exceptions import ActivityError

    runtime = _runtime("execute_local_activity")
    if isinstance(activity, str) or not callable(activity):
        raise ConfigError("execute_local_activity runs a function here: pass the function (an @activity.defn "
                          f"function or any callable), not {activity!r}")
    definition = ActivityDefinition.of(activity) if hasattr(activity, "__activity_definition__") else None
    name = definition.name if definition is not None else getattr(activity, "__name__", "local_activity")
    hint = definition.return_hint if definition is not None else _payload.return_hint(activity)
    attempt_ms = _timeout_ms(start_to_close_timeout, "start_to_close_timeout")
    timeout_s = MAX_ATTEMPT_S if attempt_ms is None else attempt_ms / 1000
    if not 0 < timeout_s <= MAX_ATTEMPT_S:
        raise ConfigError(f"a local activity's start_to_close_timeout is at most {MAX_ATTEMPT_S:g} s (the processor's "
                          f"transaction waits for it); got {timeout_s:g} s: use execute_activity for longer work")
    total_ms = _timeout_ms(schedule_to_close_timeout, "schedule_to_close_timeout")
    if retry_policy is not None and not isinstance(retry_policy, RetryPolicy):
        raise ConfigError(f"retry_policy must be a workflow.RetryPolicy; got {type(retry_policy).__name__}")
    policy = (retry_policy or RetryPolicy()).to_record()
    began, attempt = runtime.workflow_now_ms(), 1
    while True:
        if runtime.workflow_local_spent_ms() >= STEP_BUDGET_MS:
            await asyncio.sleep(0.001)  # a durable timer: the rest runs in the next workflow task
        rec = runtime.workflow_local_activity(activity, name, args, attempt, timeout_s)
        if rec["failure"] is None:
            return _payload.from_payload(rec["result"], hint)
        delay = next_retry_delay_ms(dict(policy), attempt, rec["failure"])
        if delay is not None and total_ms is not None and runtime.workflow_now_ms() + delay - began > total_ms:
            delay = None
        if delay is None:
            cause = exception_from_failure(rec["failure"])
            error = ActivityError(f"local activity {name} failed on attempt {attempt}: {cause}", activity_type=name,
                                  activity_seq=rec["local_activity_seq"], attempt=attempt)
            raise error from cause
        await asyncio.sleep(delay / 1000)
        attempt += 1


PARENT_CLOSE_POLICIES = ("terminate", "request_cancel", "abandon")


class ChildWorkflowHandle:
    """A child workflow started by `start_child_workflow`: await `result()`, `signal` it, `cancel` it."""

    def __init__(self, runtime: _Runtime, seq: int, workflow_id: str, future: asyncio.Future[Any]) -> None:
        self._runtime = runtime
        self._seq = seq
        self.id = workflow_id
        self._future = future

    async def result(self) -> Any:
        """The child's result; ChildWorkflowError (cause: the child's failure) if it did not complete."""
        return await asyncio.shield(self._future)

    def signal(self, signal_name: str, *args: Any) -> None:
        """Send the child a signal (recorded in the parent's history, delivered once)."""
        self._runtime.workflow_signal_child(self._seq, self.id, signal_name, _payload.to_payloads(args))

    def cancel(self) -> None:
        """Ask the child to cancel; its result() then raises ChildWorkflowError (status canceled)."""
        self._runtime.workflow_cancel_child(self._seq, self.id)


def start_child_workflow(workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                         task_queue: str | None = None, execution_timeout: timedelta | float | None = None,
                         parent_close_policy: str = "terminate") -> ChildWorkflowHandle:
    """Start a child workflow, on whichever partition its id belongs to: the start is sent in the
    transaction that records this step, and the child's completion comes back the same way. If the
    parent closes first, `parent_close_policy` decides: terminate the child (default), request its
    cancellation, or abandon it. Cancelling the parent cancels its children (abandoned ones aside)."""
    runtime = _runtime("start_child_workflow")
    if isinstance(workflow, str):
        workflow_type, hint = workflow, None
    else:
        cls = workflow if isinstance(workflow, type) else _owner_class(workflow)
        definition = WorkflowDefinition.of(cls)
        workflow_type, hint = definition.name, _payload.return_hint(definition.run_fn)
    if not isinstance(id, str) or not id or "\x00" in id:
        raise ConfigError(f"a child workflow id must be a non-empty string without NUL characters; got {id!r}")
    if task_queue is not None and (problem := task_queue_problem(task_queue)) is not None:
        raise ConfigError(problem)
    if parent_close_policy not in PARENT_CLOSE_POLICIES:
        raise ConfigError(f"parent_close_policy {parent_close_policy!r} is not one of "
                          f"{', '.join(PARENT_CLOSE_POLICIES)}")
    seq, future = runtime.workflow_start_child(
        workflow_type, _payload.to_payloads(args), id, task_queue, _timeout_ms(execution_timeout, "execution_timeout"),
        parent_close_policy, hint)
    return ChildWorkflowHandle(runtime, seq, id, future)


async def execute_child_workflow(workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                                 task_queue: str | None = None, execution_timeout: timedelta | float | None = None,
                                 parent_close_policy: str = "terminate") -> Any:
    """`start_child_workflow(...)` and await its result."""
    handle = start_child_workflow(workflow, *args, id=id, task_queue=task_queue, execution_timeout=execution_timeout,
                                  parent_close_policy=parent_close_policy)
    return await handle.result()


def _owner_class(fn: object) -> object:
    """The class of a method given as `Child.run`."""
    import sys

    owner = getattr(fn, "__qualname__", "").rpartition(".")[0]
    module = sys.modules.get(getattr(fn, "__module__", "") or "")
    found = getattr(module, owner, None) if module is not None and owner else None
    if not isinstance(found, type):
        raise ConfigError(f"start a child workflow with its class, its run method (Child.run) or a type name; "
                          f"got {fn!r}")
    return found


async def wait_condition(
    fn: Callable[[], bool],
    timeout: timedelta | float | None = None,  # noqa: ASYNC109 - the Temporal-shaped API users expect
) -> None:
    """Wait until `fn()` is true (checked whenever the workflow wakes); `TimeoutError` after `timeout`."""
    runtime = _runtime("wait_condition")
    if fn():
        return
    future = runtime.workflow_wait_condition(fn)
    if timeout is None:
        await future
    else:
        ms = _timeout_ms(timeout, "timeout")
        await asyncio.wait_for(future, (ms or 0) / 1000.0)


def _timeout_ms(value: timedelta | float | None, what: str) -> int | None:
    if value is None:
        return None
    if isinstance(value, timedelta):
        ms = _td_ms(value)
    elif isinstance(value, int | float) and not isinstance(value, bool):
        ms = round(value * 1000)
    else:
        raise ConfigError(f"{what} must be a timedelta or a number of seconds; got {value!r}")
    if ms < 0:
        raise ConfigError(f"{what} must not be negative; got {value!r}")
    return ms


def _td_ms(value: timedelta) -> int:
    return value // timedelta(milliseconds=1)


class _WorkflowLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds workflow_id/run_id/workflow_type to records (fields of `--log-format json`); drops
    records while history is being replayed, so a replayed step does not log its messages a
    second time."""

    def isEnabledFor(self, level: int) -> bool:
        loop = _get_running_loop()
        if isinstance(loop, _Runtime) and loop.workflow_is_replaying():
            return False
        return self.logger.isEnabledFor(level)

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        loop = _get_running_loop()
        if isinstance(loop, _Runtime):
            wf = loop.workflow_info()
            kwargs["extra"] = {
                **(kwargs.get("extra") or {}),
                "workflow_id": wf.workflow_id,
                "run_id": wf.run_id,
                "workflow_type": wf.workflow_type,
            }
        return msg, kwargs


logger = _WorkflowLogger(logging.getLogger("processor.workflow"), {})
