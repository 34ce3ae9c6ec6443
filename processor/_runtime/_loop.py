"""A deterministic asyncio event loop: the part of the runtime that knows nothing about history.

Why a custom loop rather than coroutines driven by hand (Temporal's design, learned from
temporalio's `_WorkflowInstanceImpl`): users write plain `async` code and expect
`asyncio.gather`, `asyncio.sleep`, `asyncio.wait_for`, `asyncio.Event` and tasks to work. All of
those go through the running loop, so owning the loop gives every one of them deterministic
behaviour for free:

- `time()` is history time, set by the instance from the event being applied;
- `call_soon` appends to a FIFO deque and `run_until_quiescent` drains it; nothing else runs,
  so the interleaving of tasks depends only on the order of events;
- `call_later`/`call_at` become durable timers (the subclass emits TimerStarted), and
  cancelling the handle emits TimerCanceled;
- everything that would touch the OS (sockets, threads, subprocesses, signals, `run_forever`)
  raises `ConfigError` saying that it is not allowed in workflow code.

The loop is "running" only inside an activation: the instance installs it as the running loop
around each step and restores whatever was running before (the processor may itself be async).
"""

from __future__ import annotations

import asyncio
import collections
import contextvars
import logging
from collections.abc import Callable, Coroutine, Generator
from typing import Any, NoReturn, TypeVar, TypeVarTuple

from processor.exceptions import ConfigError

__all__ = ["DurableTimerHandle", "WorkflowEventLoop"]

_T = TypeVar("_T")
_Ts = TypeVarTuple("_Ts")
_log = logging.getLogger("processor.runtime")
ExceptionHandler = Callable[[asyncio.AbstractEventLoop, dict[str, Any]], object]


def _not_allowed(name: str) -> Callable[..., NoReturn]:
    def method(self: object, *args: object, **kwargs: object) -> NoReturn:
        raise ConfigError(
            f"event loop operation {name}() is not allowed in workflow code: workflow code must be "
            "deterministic and do no I/O. Do I/O in an activity (workflow.execute_activity), wait with "
            "asyncio.sleep / workflow.wait_condition"
        )

    method.__name__ = name
    return method


class DurableTimerHandle(asyncio.TimerHandle):
    """A timer handle that knows its timer_seq, so cancel and fire resolve by seq."""

    __slots__ = ("seq",)

    def __init__(
        self,
        seq: int,
        when: float,
        callback: Callable[..., object],
        args: tuple[Any, ...],
        loop: asyncio.AbstractEventLoop,
        context: contextvars.Context | None,
    ) -> None:
        super().__init__(when, callback, args, loop, context)
        self.seq = seq


class WorkflowEventLoop(asyncio.AbstractEventLoop):
    """The deterministic loop; `WorkflowInstance` supplies the timer hooks."""

    def __init__(self) -> None:
        self._ready: collections.deque[asyncio.Handle] = collections.deque()
        self._now_ms = 0
        # asyncio keeps only weak references to tasks; without these a pending workflow task
        # could be garbage-collected mid-wait.
        self._tasks: set[asyncio.Task[Any]] = set()
        self._conditions: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        self._exception_handler: ExceptionHandler | None = None
        # Set once the instance is discarded: GC of its still-pending tasks must stay silent.
        self._discarded = False

    # ---- the hooks the instance implements ------------------------------------------------

    def _start_timer(
        self, delay: float, callback: Callable[..., object], args: tuple[Any, ...], ctx: contextvars.Context | None
    ) -> asyncio.TimerHandle:
        raise NotImplementedError

    def _timer_handle_cancelled(self, handle: asyncio.TimerHandle) -> None:
        # Called by asyncio.TimerHandle.cancel(); the instance emits TimerCanceled.
        raise NotImplementedError

    # ---- running ----------------------------------------------------------------------------

    def run_until_quiescent(self) -> None:
        """Run ready callbacks until none is left and no wait_condition became true."""
        ready = self._ready
        while True:
            while ready:
                handle = ready.popleft()
                if not handle.cancelled():
                    handle._run()  # noqa: SLF001 - the one way to run an asyncio.Handle, as BaseEventLoop does
            if not self._conditions or not self._check_conditions():
                return

    def _check_conditions(self) -> bool:
        """Resolve the wait_condition futures whose predicate now holds; True if any did."""
        woke = False
        still_waiting: list[tuple[Callable[[], bool], asyncio.Future[None]]] = []
        for predicate, future in self._conditions:
            if future.done():  # e.g. cancelled by a wait_for timeout
                continue
            try:
                satisfied = predicate()
            except Exception as exc:  # noqa: BLE001 - the waiting workflow code receives it
                future.set_exception(exc)
                woke = True
                continue
            if satisfied:
                future.set_result(None)
                woke = True
            else:
                still_waiting.append((predicate, future))
        self._conditions = still_waiting
        return woke

    # ---- asyncio.AbstractEventLoop ----------------------------------------------------------

    def time(self) -> float:
        return self._now_ms / 1000.0

    def call_soon(
        self, callback: Callable[[*_Ts], object], *args: *_Ts, context: contextvars.Context | None = None
    ) -> asyncio.Handle:
        handle = asyncio.Handle(callback, args, self, context)
        self._ready.append(handle)
        return handle

    def call_later(
        self,
        delay: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        return self._start_timer(delay, callback, args, context)

    def call_at(
        self,
        when: float,
        callback: Callable[[*_Ts], object],
        *args: *_Ts,
        context: contextvars.Context | None = None,
    ) -> asyncio.TimerHandle:
        # asyncio.timeout() (and wait_for on 3.12+) computes `loop.time() + delay` and calls
        # call_at; turning it back into a delay keeps the durable timer's duration exact.
        return self._start_timer(when - self.time(), callback, args, context)

    def create_future(self) -> asyncio.Future[Any]:
        return asyncio.Future(loop=self)

    def create_task(
        self,
        coro: Generator[Any, None, _T] | Coroutine[Any, Any, _T],
        *,
        name: str | None = None,
        context: contextvars.Context | None = None,
    ) -> asyncio.Task[_T]:
        task: asyncio.Task[_T] = asyncio.Task(coro, loop=self, name=name, context=context)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def get_debug(self) -> bool:
        return False

    def is_running(self) -> bool:
        return True

    def is_closed(self) -> bool:
        return self._discarded

    def get_task_factory(self) -> None:
        return None

    def get_exception_handler(self) -> ExceptionHandler | None:
        return self._exception_handler

    def set_exception_handler(self, handler: ExceptionHandler | None) -> None:
        self._exception_handler = handler

    def default_exception_handler(self, context: dict[str, Any]) -> None:
        exc = context.get("exception")
        _log.warning(
            "workflow code: %s", context.get("message", "unhandled exception in a workflow task"), exc_info=exc
        )

    def call_exception_handler(self, context: dict[str, Any]) -> None:
        # Reached for errors nobody awaited (a fire-and-forget task that failed) and for tasks
        # destroyed while pending. After a discard the latter is expected, so say nothing.
        if self._discarded:
            return
        if self._exception_handler is not None:
            self._exception_handler(self, context)
        else:
            self.default_exception_handler(context)

    # ---- everything that would leave the deterministic world: a clear error, not NotImplemented --

    run_forever = _not_allowed("run_forever")
    run_until_complete = _not_allowed("run_until_complete")
    stop = _not_allowed("stop")
    shutdown_asyncgens = _not_allowed("shutdown_asyncgens")
    shutdown_default_executor = _not_allowed("shutdown_default_executor")
    call_soon_threadsafe = _not_allowed("call_soon_threadsafe")  # type: ignore[assignment]  # mypy: generic (*_Ts) base
    run_in_executor = _not_allowed("run_in_executor")  # type: ignore[assignment]  # mypy: generic (*_Ts) base
    set_default_executor = _not_allowed("set_default_executor")
    set_task_factory = _not_allowed("set_task_factory")
    set_debug = _not_allowed("set_debug")
    getaddrinfo = _not_allowed("getaddrinfo")
    getnameinfo = _not_allowed("getnameinfo")
    create_connection = _not_allowed("create_connection")
    create_server = _not_allowed("create_server")
    sendfile = _not_allowed("sendfile")
    start_tls = _not_allowed("start_tls")
    create_unix_connection = _not_allowed("create_unix_connection")
    create_unix_server = _not_allowed("create_unix_server")
    connect_accepted_socket = _not_allowed("connect_accepted_socket")
    create_datagram_endpoint = _not_allowed("create_datagram_endpoint")
    connect_read_pipe = _not_allowed("connect_read_pipe")
    connect_write_pipe = _not_allowed("connect_write_pipe")
    subprocess_shell = _not_allowed("subprocess_shell")
    subprocess_exec = _not_allowed("subprocess_exec")
    add_reader = _not_allowed("add_reader")  # type: ignore[assignment]  # mypy: generic (*_Ts) base
    remove_reader = _not_allowed("remove_reader")
    add_writer = _not_allowed("add_writer")  # type: ignore[assignment]  # mypy: generic (*_Ts) base
    remove_writer = _not_allowed("remove_writer")
    sock_recv = _not_allowed("sock_recv")
    sock_recv_into = _not_allowed("sock_recv_into")
    sock_recvfrom = _not_allowed("sock_recvfrom")
    sock_recvfrom_into = _not_allowed("sock_recvfrom_into")
    sock_sendall = _not_allowed("sock_sendall")
    sock_sendto = _not_allowed("sock_sendto")
    sock_connect = _not_allowed("sock_connect")
    sock_accept = _not_allowed("sock_accept")
    sock_sendfile = _not_allowed("sock_sendfile")
    add_signal_handler = _not_allowed("add_signal_handler")  # type: ignore[assignment]  # mypy: generic (*_Ts) base
    remove_signal_handler = _not_allowed("remove_signal_handler")
