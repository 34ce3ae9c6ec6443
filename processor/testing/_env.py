"""`WorkflowEnvironment`: the real engine and runtime with no broker, and a clock that skips.

What runs is what runs in a processor: the Engine (processor/_engine/engine.py) applies each batch
of commands in a transaction, keeps workflow state in RocksDB (in a temporary directory), fires
timers and dispatches activity tasks, and the runtime replays workflow code exactly as it does in
production. Only Kafka is replaced -- by the Bus (_bus.py), which routes what each committed
transaction produced: commands back to the engine, activity tasks to the activities registered
here (or the mocks given by name), replies and completions to the caller.

The clock starts at `start_time` (default: now) and stands still while anything can happen at the
current instant. Every call first lets everything happen that can without time passing -- commands
applied, activities run, due timers fired -- so after `start_workflow` returns the workflow has run
until it waits on a timer or on the outside. `result()` and `sleep()` then move the clock straight
to the next timer whenever nothing else can happen: a workflow that sleeps two days finishes in
milliseconds. Activities run in the calling thread, one at a time, on the environment's clock.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from processor import activity
from processor._answers import (
    _answer,
    _outcome,
    _refusal,
    _update_outcome,
    _update_record,
    history_events,
    summarize,
)
from processor._app import Worker
from processor._codec import default_codec
from processor._engine.engine import Engine
from processor._engine.runs import ALLOW_DUPLICATE, USE_EXISTING
from processor._engine.settings import Settings
from processor._engine.settle import (
    HEARTBEAT,
    HEARTBEAT_EVERY_S,
    STARTED,
    heartbeat_value,
    reports_start,
    settle_value,
    started_value,
)
from processor._engine.store import PartitionStore
from processor._payload import from_payload, from_payloads, to_payloads
from processor.exceptions import ActivityCancelledError, ConfigError, WorkflowNotFoundError
from processor.schedule import Schedules
from processor.testing._bus import Bus, Task

CMD = "wf.commands.v1."
PREFIX = "test"
RESULT_TIMEOUT_S = 60.0  # wall-clock seconds a result() may take (a workflow that loops on timers for ever)


def _ms(value: timedelta | float) -> int:
    return int((value.total_seconds() if isinstance(value, timedelta) else float(value)) * 1000)


class WorkflowEnvironment(Schedules):
    """Run workflows in memory, with the processor's own engine and a clock that skips ahead.

        with WorkflowEnvironment(app) as env:            # or workflows=[...], activities=[...]
            env.start_workflow(OrderWorkflow.run, order, id="order-1")
            env.signal("order-1", "approve", "ann")
            assert env.result("order-1").approved_by == "ann"

    `activity_mocks` replaces activities by name (`{"charge_card": fake_charge}`): a plain
    function or coroutine function taking the activity's arguments; `activity.info()` works in it.
    The calls mirror `Client`'s (start_workflow, signal, cancel, terminate, query, execute_update,
    result, describe, history), plus `now()`, `sleep()` and `dead_letters`.
    """

    def __init__(self, app: Worker | None = None, *, workflows: Sequence[type] = (),
                 activities: Sequence[Callable[..., Any]] = (),
                 activity_mocks: Mapping[str, Callable[..., Any]] | None = None,
                 start_time: datetime | None = None, partitions: int = 1,
                 state_dir: str | Path | None = None) -> None:
        if app is not None:
            workflows = [*app.workflows, *workflows]
            activities = [*app.activities, *activities]
        if not workflows:
            raise ConfigError("WorkflowEnvironment needs the workflows to run: WorkflowEnvironment(app) or "
                              "WorkflowEnvironment(workflows=[...], activities=[...])")
        if partitions < 1:
            raise ConfigError(f"partitions must be at least 1; got {partitions}")
        self._activities: dict[str, activity.ActivityDefinition] = {}
        for fn in activities:
            d = activity.ActivityDefinition.of(fn)
            self._activities[d.name] = d
        for name, fn in (activity_mocks or {}).items():
            if not callable(fn):
                raise ConfigError(f"activity_mocks[{name!r}] must be a function; got {fn!r}")
            self._activities[name] = activity.ActivityDefinition(name, fn, inspect.iscoroutinefunction(fn))
        self._own_dir = state_dir is None
        self._dir = Path(tempfile.mkdtemp(prefix="dp-testenv-")) if state_dir is None else Path(state_dir)
        self.settings = Settings(bootstrap="in-memory", prefix=PREFIX, state_dir=self._dir)
        self.codec = default_codec()
        self.bus = Bus(self.settings.topics, self.codec, partitions)
        self.engine = Engine(self.settings, list(workflows), self.codec, self.bus, partitions)
        for p in range(partitions):
            self.engine.open_partition(p, PartitionStore(self._dir / f"p{p:04d}"))
        start = start_time or datetime.now(UTC)
        if start.tzinfo is None:
            raise ConfigError("start_time must be timezone-aware (e.g. datetime(2026, 1, 1, tzinfo=UTC))")
        self.now_ms = int(start.timestamp() * 1000)
        self._offsets = [0] * partitions
        self._runs: dict[str, str] = {}  # workflow id -> the run this environment last started
        self.activity_runs: list[activity.ActivityInfo] = []  # every attempt run, in order
        self.heartbeats: dict[tuple[str, int, int], tuple[Any, ...]] = {}  # (id, seq, attempt) -> last details
        self._aio: asyncio.AbstractEventLoop | None = None
        self._closed = False

    # -- the clock -----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The environment's clock (what `workflow.now()` reads in the workflows it runs)."""
        return datetime.fromtimestamp(self.now_ms / 1000, UTC)

    def sleep(self, duration: timedelta | float) -> None:
        """Let `duration` (seconds, or a timedelta) pass: every timer due on the way fires in order."""
        until = self.now_ms + _ms(duration)
        self._run(lambda: False, skip_to=until)
        self.now_ms = max(self.now_ms, until)
        self._run(lambda: False)

    # -- commands ------------------------------------------------------------------------------

    def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                       task_queue: str = "default", execution_timeout: timedelta | float | None = None,
                       id_reuse_policy: str = ALLOW_DUPLICATE, if_exists: str = USE_EXISTING,
                       request_id: str | None = None, start_signal: str | None = None,
                       start_signal_args: Sequence[Any] = (), search_attributes: Mapping[str, Any] | None = None,
                       memo: Mapping[str, Any] | None = None) -> EnvHandle:
        """Start a run (or attach to the running one), as Client.start_workflow does; it runs until
        it waits on a timer or on the outside before this returns."""
        from processor.client import Client  # the one place that builds a start record

        rec = Client.start_record(workflow, args, task_queue, execution_timeout, id_reuse_policy, if_exists,
                                  request_id, start_signal, start_signal_args, search_attributes, memo)
        reply = self._ask("StartWorkflow", id, rec)
        error = _refusal("StartWorkflow", reply)
        if error is not None:
            raise error
        self._runs[id] = reply["run_id"]
        return EnvHandle(self, id, reply["run_id"], reply["outcome"])

    def signal(self, workflow_id: str, signal_name: str, *args: Any, run_id: str | None = None) -> None:
        self._command("SignalWorkflow", workflow_id, {"signal_name": signal_name, "args": to_payloads(args)}, run_id)

    def cancel(self, workflow_id: str, reason: str = "", *, run_id: str | None = None) -> None:
        self._command("CancelWorkflow", workflow_id, {"reason": reason}, run_id)

    def terminate(self, workflow_id: str, reason: str = "", *, run_id: str | None = None) -> None:
        self._command("TerminateWorkflow", workflow_id, {"reason": reason}, run_id)

    def query(self, workflow_id: str, query_name: str, *args: Any, run_id: str | None = None,
              result_type: object = None) -> Any:
        rec = {"query_name": query_name, "args": to_payloads(args), "run_id": run_id}
        return _answer(self._ask("QueryWorkflow", workflow_id, rec), result_type)

    def execute_update(self, workflow_id: str, update_name: str, *args: Any, run_id: str | None = None,
                       request_id: str | None = None, result_type: object = None,
                       timeout: float = RESULT_TIMEOUT_S) -> Any:
        """Run an update to its end -- the clock skips ahead if its handler waits on a timer."""
        rec = _update_record(update_name, args, run_id, request_id)
        return _update_outcome(self._ask("UpdateWorkflow", workflow_id, rec, skip_time=True, timeout=timeout),
                               result_type)

    # -- reads ---------------------------------------------------------------------------------

    def result(self, workflow_id: str, *, run_id: str | None = None, result_type: object = None,
               timeout: float = RESULT_TIMEOUT_S) -> Any:
        """The run's result (the run this environment last started, else the id's latest), or the
        WorkflowFailureError it closed with. Time skips ahead while the workflow waits on timers.
        Raises TimeoutError, saying what the workflow waits for, if it cannot close: nothing is
        left that could happen (it waits for a signal, an update or a cancel) -- or past
        `timeout` wall-clock seconds (a workflow that loops on timers for ever)."""
        run = run_id or self._runs.get(workflow_id)

        def closed() -> bool:
            done = self.bus.completions.get(workflow_id, {})
            return run in done if run is not None else workflow_id in self.bus.latest

        while True:  # a run that continued as new: follow the chain, as Client.result does
            if not self._run(closed, skip_to=None, skip=True, timeout=timeout):
                raise TimeoutError(self._why_open(workflow_id, timeout))
            completion = self.bus.completions[workflow_id][run] if run is not None else self.bus.latest[workflow_id]
            if completion[0] != "WorkflowContinuedAsNew":
                return _outcome(workflow_id, completion, result_type)
            run = completion[1]["new_run_id"]

    def history(self, workflow_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every event of one run (default: the latest), as Client.history returns them."""
        self._run(lambda: False)
        records: Iterable[tuple[bytes | None, bytes | None]] = self.bus.events.get(
            self.bus.home(workflow_id.encode()), [])
        return history_events(workflow_id, records, self.codec.decode_typed, run_id)

    def describe(self, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
        events = self.history(workflow_id, run_id)
        if not events:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return summarize(events)

    @property
    def dead_letters(self) -> list[tuple[bytes | None, bytes | None, list[tuple[str, bytes]] | None]]:
        """What the engine dead-lettered (key, value, headers): a test expects none, usually."""
        return list(self.bus.dead_letters)

    def get_handle(self, workflow_id: str, run_id: str | None = None) -> EnvHandle:
        return EnvHandle(self, workflow_id, run_id)

    # -- the mechanism -------------------------------------------------------------------------

    def _send(self, short_name: str, workflow_id: str, rec: dict[str, Any]) -> None:
        if not isinstance(workflow_id, str) or not workflow_id or "\x00" in workflow_id:
            raise ConfigError(f"workflow id must be a non-empty string without NUL characters; got {workflow_id!r}")
        self._check_open()
        name = CMD + short_name
        self.bus.send(workflow_id.encode(), self.codec.encode(name, {"workflow_id": workflow_id, **rec}),
                      self.codec.headers(name))

    def _ask(self, short_name: str, workflow_id: str, rec: dict[str, Any], *, skip_time: bool = False,
             timeout: float = RESULT_TIMEOUT_S) -> dict[str, Any]:
        """Send a command that asks for a reply; everything that can happen at this instant happens
        before it is applied, and after."""
        request_id = rec.get("request_id") or uuid.uuid4().hex
        self._check_open()
        self._run(lambda: False)
        self._send(short_name, workflow_id, {**rec, "request_id": request_id, "reply_partition": 0})
        if not self._run(lambda: request_id in self.bus.replies, skip=skip_time, timeout=timeout):
            raise TimeoutError(f"{short_name} for {workflow_id!r} was never answered: "
                               + self._why_open(workflow_id, timeout))
        reply = self.bus.replies.pop(request_id)
        self._run(lambda: False)
        return reply

    def _command(self, short_name: str, workflow_id: str, rec: dict[str, Any], run_id: str | None) -> None:
        error = _refusal(short_name, self._ask(short_name, workflow_id, {**rec, "run_id": run_id}))
        if error is not None:
            raise error

    def _run(self, done: Callable[[], bool], *, skip_to: int | None = None, skip: bool = False,
             timeout: float = RESULT_TIMEOUT_S) -> bool:
        """Let things happen until `done()`: commands, then activities, then due timers; when none
        is left, move the clock to the next timer if `skip` (or up to `skip_to`). False once
        nothing more can happen (or past `timeout` wall seconds)."""
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                return False
            if self.bus.commands:
                self._transaction()
            elif self.bus.tasks:
                self._run_activity(self.bus.tasks.popleft())
            elif self.engine.has_due(self.now_ms):
                self._transaction()
            else:
                due = self.engine.next_due_ms()
                if due is None or not (skip or skip_to is not None) or (skip_to is not None and due > skip_to):
                    return done()
                self.now_ms = max(self.now_ms, due)
        return True

    def _transaction(self) -> None:
        """One processor transaction: the commands waiting (as one batch), then the timers due."""
        waiting = self.bus.commands
        batch = [waiting.popleft() for _ in range(min(len(waiting), self.settings.max_batch))]
        self.engine.begin(self.now_ms)
        try:
            for c in batch:
                offset = self._offsets[c.partition]
                self._offsets[c.partition] += 1
                self.engine.handle_command(c.partition, c.key, c.value, c.headers, offset)
            self.engine.fire_due_timers(self.now_ms)
        except BaseException:
            self.engine.aborted()
            self.bus.abort()
            raise
        self.engine.committed()
        self.bus.commit()

    def _run_activity(self, task: Task) -> None:
        """What a worker does with one task: report the attempt's start if the processor needs it,
        run it, then report its result or failure. Time passes while it runs, as much as it really
        takes: its heartbeats are applied when they are sent, and a start-to-close or heartbeat
        timeout that falls due meanwhile fires before its result arrives -- as on a real worker."""
        t = task.record
        key = (t["workflow_id"], t.get("run_id", ""), t["activity_seq"], t["attempt"])
        wid = t["workflow_id"].encode()
        canceled = self.bus.canceled.pop(key, None)
        if canceled is not None:
            name, value = settle_value(self.codec, t, None, ActivityCancelledError(
                f"activity {t['activity_type']!r} was canceled before it started: {canceled}"))
            self.bus.send(wid, value, self.codec.headers(name))
            return
        definition = self._activities.get(t["activity_type"])
        if definition is None:
            names = ", ".join(sorted(self._activities)) or "none"
            raise ConfigError(f"workflow {t['workflow_id']!r} runs activity {t['activity_type']!r}, which this "
                              f"WorkflowEnvironment does not have (it has: {names}): pass it in activities=[...] "
                              "or a stand-in in activity_mocks={...}")
        info = activity.ActivityInfo(
            workflow_id=t["workflow_id"], workflow_type=t["workflow_type"], activity_seq=t["activity_seq"],
            activity_type=t["activity_type"], attempt=t["attempt"], task_queue=t["task_queue"],
            scheduled_time=datetime.fromtimestamp(t["scheduled_time_ms"] / 1000, UTC), run_id=t.get("run_id", ""),
            heartbeat_details=_details(t.get("heartbeat_details")))
        if reports_start(t):
            self.bus.send(wid, started_value(self.codec, t, "testing"), self.codec.headers(STARTED))
            self._transaction()
        began, began_ms = time.monotonic(), self.now_ms
        every = min(HEARTBEAT_EVERY_S, (t.get("heartbeat_timeout_ms") or 3_000) / 3_000)
        last = [began - every]

        def catch_up() -> None:
            """The clock to where the attempt's real time has brought it, firing what fell due."""
            self.now_ms = max(self.now_ms, began_ms + int((time.monotonic() - began) * 1000))
            self._transaction()
            reason = self.bus.canceled.pop(key, None)
            if reason is not None:
                ctx.cancel_reason.append(reason)
                ctx.cancelled.set()

        def beat(details: tuple[Any, ...]) -> None:
            self.heartbeats[(t["workflow_id"], t["activity_seq"], t["attempt"])] = details
            if time.monotonic() - last[0] < every:  # the worker's throttle
                return
            last[0] = time.monotonic()
            self.bus.send(wid, heartbeat_value(self.codec, t, details), self.codec.headers(HEARTBEAT))
            catch_up()

        ctx = activity.ActivityContext(info=info, heartbeat_fn=beat)
        self.activity_runs.append(info)
        result: Any = None
        error: BaseException | None = None
        try:
            args = from_payloads(t["args"], definition.param_hints)
            result = self._call(ctx, definition, args)
        except Exception as exc:  # noqa: BLE001 - the attempt's failure, reported as a worker does
            error = exc
        catch_up()
        name, value = settle_value(self.codec, t, result, error)
        self.bus.send(wid, value, self.codec.headers(name))

    def _call(self, ctx: activity.ActivityContext, definition: activity.ActivityDefinition, args: list[Any]) -> Any:
        token = activity._set_context(ctx)  # noqa: SLF001 - the environment plays the worker
        try:
            if not definition.is_async:
                return contextvars.copy_context().run(definition.fn, *args)
            if self._aio is None:
                self._aio = asyncio.new_event_loop()
            return self._aio.run_until_complete(definition.fn(*args))
        finally:
            activity._reset_context(token)  # noqa: SLF001

    def _why_open(self, workflow_id: str, timeout: float) -> str:
        try:
            d = self.describe(workflow_id)
        except WorkflowNotFoundError:
            return f"no workflow with id {workflow_id!r} was started"
        if d.get("held"):
            return f"workflow {workflow_id!r} is held: {d['held']}"
        due = self.engine.next_due_ms()
        if due is not None:
            return (f"workflow {workflow_id!r} was still {d['status']} after {timeout:g}s of wall time, with "
                    f"timers pending (the next at {datetime.fromtimestamp(due / 1000, UTC).isoformat()})")
        return (f"workflow {workflow_id!r} is {d['status']} and nothing more can happen: no timer or activity "
                "is pending, so it waits for a signal, an update or a cancel")

    def _check_open(self) -> None:
        if self._closed:
            raise ConfigError("this WorkflowEnvironment is closed")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for p in list(self.engine.stores):
            self.engine.close_partition(p)
        if self._aio is not None:
            self._aio.close()
        if self._own_dir:
            shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> WorkflowEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _details(payload: Any) -> tuple[Any, ...]:
    """The previous attempt's heartbeat details (a Payload of a JSON list), as the worker reads them."""
    if payload is None:
        return ()
    value = from_payload(payload)
    return tuple(value) if isinstance(value, list) else (value,)


class EnvHandle:
    """A workflow id (and run) in a WorkflowEnvironment, with WorkflowHandle's calls."""

    def __init__(self, env: WorkflowEnvironment, workflow_id: str, run_id: str | None = None,
                 outcome: str | None = None) -> None:
        self.env, self.id, self.run_id, self.outcome = env, workflow_id, run_id, outcome

    def result(self, timeout: float = RESULT_TIMEOUT_S, result_type: object = None) -> Any:
        return self.env.result(self.id, run_id=self.run_id, result_type=result_type, timeout=timeout)

    def signal(self, signal_name: str, *args: Any) -> None:
        self.env.signal(self.id, signal_name, *args, run_id=self.run_id)

    def cancel(self, reason: str = "") -> None:
        self.env.cancel(self.id, reason, run_id=self.run_id)

    def terminate(self, reason: str = "") -> None:
        self.env.terminate(self.id, reason, run_id=self.run_id)

    def query(self, query_name: str, *args: Any, result_type: object = None) -> Any:
        return self.env.query(self.id, query_name, *args, run_id=self.run_id, result_type=result_type)

    def execute_update(self, update_name: str, *args: Any, request_id: str | None = None,
                       result_type: object = None) -> Any:
        return self.env.execute_update(self.id, update_name, *args, run_id=self.run_id, request_id=request_id,
                                       result_type=result_type)

    def describe(self) -> dict[str, Any]:
        return self.env.describe(self.id, self.run_id)

    def history(self) -> list[dict[str, Any]]:
        return self.env.history(self.id, self.run_id)
