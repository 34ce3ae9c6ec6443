"""The activity SDK: `@activity.defn`, and `info()` / `heartbeat()` / `is_cancelled()` for code
running as an activity.

Activities are ordinary functions (sync or async) run by workers, at least once per attempt; they
do the I/O that workflow code may not. Nothing is registered globally: the decorator only attaches
an `ActivityDefinition` to the function, and `Worker(activities=[...])` reads it back.

The worker (not this module) sets the per-attempt context with `_set_context` before calling the
function and `_reset_context` after; sync activities run in a thread pool under a copy of that
context (`contextvars.copy_context().run`), which is why a ContextVar, not a thread-local, holds it.
"""

from __future__ import annotations

import contextvars
import inspect
import logging
import threading
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar, overload

from processor import _payload
from processor.exceptions import ActivityCancelledError, ConfigError

__all__ = [
    "ActivityContext",
    "ActivityDefinition",
    "ActivityInfo",
    "defn",
    "heartbeat",
    "in_activity",
    "info",
    "is_cancelled",
    "logger",
]

F = TypeVar("F", bound=Callable[..., Any])

# Stored on the function itself (no registry); looked up with vars() so a wrapper that merely
# copies __dict__ (functools.wraps) still carries it, on purpose.
_DEFN_ATTR = "__activity_definition__"


@dataclass(frozen=True)
class ActivityDefinition:
    name: str
    fn: Callable[..., Any]
    is_async: bool

    @property
    def return_hint(self) -> object:
        """The function's return annotation, resolved on first use (it may be a forward ref)."""
        return _payload.return_hint(self.fn)

    @property
    def param_hints(self) -> tuple[object, ...]:
        return _payload.param_hints(self.fn)

    @staticmethod
    def of(fn: object) -> ActivityDefinition:
        found = getattr(fn, "__dict__", {}).get(_DEFN_ATTR) if callable(fn) else None
        if not isinstance(found, ActivityDefinition):
            raise ConfigError(
                f"{_describe(fn)} is not an activity: decorate it with `@activity.defn` "
                "(from processor import activity)"
            )
        return found


@dataclass(frozen=True)
class ActivityInfo:
    workflow_id: str
    workflow_type: str
    activity_seq: int
    activity_type: str
    attempt: int
    task_queue: str
    scheduled_time: datetime
    # Stable across attempts ("<workflow_id>/<run_id>/<activity_seq>"; "<workflow_id>/<activity_seq>"
    # for a run started before runs existed): the key an activity hands to an external system so a
    # retried attempt is deduplicated there, and a later run of the same id is not. Filled in when
    # left empty.
    idempotency_key: str = ""
    run_id: str = ""
    # What the previous attempt last passed to activity.heartbeat(*details): resume from there.
    # () on the first attempt, or when the previous one sent no details.
    heartbeat_details: tuple[Any, ...] = ()

    def __post_init__(self) -> None:
        if not self.idempotency_key:
            run = f"{self.run_id}/" if self.run_id else ""
            object.__setattr__(self, "idempotency_key", f"{self.workflow_id}/{run}{self.activity_seq}")


@dataclass(frozen=True)
class ActivityContext:
    """What the worker sets around one attempt. `heartbeat_fn` receives the raw details tuple."""

    info: ActivityInfo
    heartbeat_fn: Callable[[tuple[Any, ...]], None]
    # Set by the worker when the processor cancels this attempt (its workflow was canceled or closed).
    cancelled: threading.Event = field(default_factory=threading.Event)
    cancel_reason: list[str] = field(default_factory=list)


_context: contextvars.ContextVar[ActivityContext] = contextvars.ContextVar("processor_activity_context")


@overload
def defn(fn: F, /) -> F: ...
@overload
def defn(*, name: str | None = None) -> Callable[[F], F]: ...
def defn(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark a function as an activity: `@activity.defn` or `@activity.defn(name="charge-card")`."""
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"@activity.defn(name=...) needs a non-empty string; got {name!r}")

    def decorate(target: F) -> F:
        definition = _make_definition(target, name)
        target.__dict__[_DEFN_ATTR] = definition
        return target

    return decorate(fn) if fn is not None else decorate


def _make_definition(fn: object, name: str | None) -> ActivityDefinition:
    if isinstance(fn, type):
        raise ConfigError(
            f"@activity.defn decorates a function, not the class {fn.__qualname__}: "
            "decorate a module-level function (or a method you pass bound to the worker)"
        )
    if not callable(fn) or not hasattr(fn, "__dict__"):
        raise ConfigError(f"@activity.defn decorates a function; got {_describe(fn)}")
    if inspect.isasyncgenfunction(fn) or inspect.isgeneratorfunction(fn):
        raise ConfigError(
            f"activity {_describe(fn)} is a generator: an activity returns one value, "
            "so return a list instead of yielding"
        )
    fn_name = getattr(fn, "__name__", "")
    if name is None and (not fn_name or fn_name == "<lambda>"):
        raise ConfigError(f'{_describe(fn)} has no usable name: pass one, e.g. `activity.defn(name="send-email")(fn)`')
    return ActivityDefinition(name=name or fn_name, fn=fn, is_async=inspect.iscoroutinefunction(fn))


def _describe(obj: object) -> str:
    return f"{getattr(obj, '__qualname__', None) or type(obj).__qualname__} ({type(obj).__name__})"


def _current(what: str) -> ActivityContext:
    try:
        return _context.get()
    except LookupError:
        raise ConfigError(
            f"activity.{what}() was called outside an activity: it only works in a function decorated "
            "with @activity.defn while a worker runs it (in tests, set a context with "
            "activity._set_context(ActivityContext(...)))"
        ) from None


def info() -> ActivityInfo:
    return _current("info").info


def heartbeat(*details: Any) -> None:
    """Report liveness (and progress details) so the heartbeat timeout does not fire; a retried
    attempt finds the last details in `info().heartbeat_details`. Raises ActivityCancelledError
    once the workflow was canceled or closed: stop, and let it propagate."""
    ctx = _current("heartbeat")
    if ctx.cancelled.is_set():
        raise ActivityCancelledError(f"activity {ctx.info.activity_type!r} (seq {ctx.info.activity_seq}, attempt "
                                     f"{ctx.info.attempt}) of workflow {ctx.info.workflow_id!r} was canceled: "
                                     f"{''.join(ctx.cancel_reason) or 'its workflow closed'}")
    ctx.heartbeat_fn(details)


def is_cancelled() -> bool:
    """Whether the processor canceled this attempt (for activities that do not heartbeat often)."""
    return _current("is_cancelled").cancelled.is_set()


def in_activity() -> bool:
    return _context.get(None) is not None


def _set_context(ctx: ActivityContext) -> contextvars.Token[ActivityContext]:
    """For the worker: make `ctx` current; pass the token to `_reset_context` when the attempt ends."""
    return _context.set(ctx)


def _reset_context(token: contextvars.Token[ActivityContext]) -> None:
    _context.reset(token)


class _ActivityLogger(logging.LoggerAdapter[logging.Logger]):
    """Adds the attempt's workflow_id, run_id, workflow_type, activity_type, activity_seq and
    attempt to records logged inside an activity (fields of `--log-format json`)."""

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        ctx = _context.get(None)
        if ctx is not None:
            i = ctx.info
            kwargs["extra"] = {
                **(kwargs.get("extra") or {}),
                "workflow_id": i.workflow_id, "run_id": i.run_id, "workflow_type": i.workflow_type,
                "activity_type": i.activity_type, "activity_seq": i.activity_seq, "attempt": i.attempt,
                "task_queue": i.task_queue,
            }
        return msg, kwargs


logger = _ActivityLogger(logging.getLogger("processor.activity"), {})
