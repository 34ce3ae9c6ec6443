"""Workflow definitions: the decorators (`@workflow.defn`, `run`, `signal`, `query`, `update`)
and what they find on a class (`WorkflowDefinition`). Definition time only -- nothing here runs
inside a workflow; `processor.workflow` re-exports it all beside the calls workflow code makes."""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import timedelta
from typing import Any, TypeVar, overload

from processor import _payload
from processor.exceptions import ConfigError

C = TypeVar("C", bound=type)
F = TypeVar("F", bound=Callable[..., Any])

_DEFN_ATTR = "__workflow_definition__"
_RUN_ATTR = "__workflow_run__"
_SIGNAL_ATTR = "__workflow_signal__"
_QUERY_ATTR = "__workflow_query__"
_UPDATE_ATTR = "__workflow_update__"
_VALIDATOR_ATTR = "__workflow_update_validator__"

@dataclass(frozen=True)
class WorkflowDefinition:
    """What `@workflow.defn` found on a class: its type name, run method and signal handlers."""

    name: str
    cls: type
    run_fn: Callable[..., Awaitable[Any]]
    signals: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    queries: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    updates: Mapping[str, Callable[..., Any]] = field(default_factory=dict)
    # Exception types that fail the workflow when its code raises them (beyond ApplicationError,
    # ActivityError and ChildWorkflowError); any other exception holds it (see the runtime).
    failure_exception_types: tuple[type[Exception], ...] = ()
    # Seconds one activation may block the event loop; None: the processor's setting.
    activation_deadline_s: float | None = None

    @property
    def run_param_hints(self) -> tuple[object, ...]:
        return _payload.param_hints(self.run_fn, skip_first=True)

    @staticmethod
    def of(cls: object) -> WorkflowDefinition:
        # vars(), not getattr(): a subclass of a workflow class is not that workflow.
        found = vars(cls).get(_DEFN_ATTR) if isinstance(cls, type) else None
        if not isinstance(found, WorkflowDefinition):
            raise ConfigError(
                f"{getattr(cls, '__qualname__', repr(cls))} is not a workflow: decorate the class with "
                "`@workflow.defn` (from processor import workflow)"
            )
        return found


# ---- decorators -------------------------------------------------------------------------------


@overload
def defn(cls: C, /) -> C: ...
@overload
def defn(*, name: str | None = None, failure_exception_types: Sequence[type[Exception]] = (),
         activation_deadline: float | timedelta | None = None) -> Callable[[C], C]: ...
def defn(cls: C | None = None, /, *, name: str | None = None, failure_exception_types: Sequence[type[Exception]] = (),
         activation_deadline: float | timedelta | None = None) -> C | Callable[[C], C]:
    """Mark a class as a workflow: `@workflow.defn` or `@workflow.defn(name="checkout")`.

    What workflow code raising does (as in Temporal): `ApplicationError` (and an `ActivityError`
    or `ChildWorkflowError` it lets through) fails the workflow; any other exception is a bug and
    *holds* it, with the reason in its history, until a fix is deployed -- then it resumes from
    history. `failure_exception_types` lists more types that fail it instead.
    `activation_deadline` (seconds or timedelta) overrides DP_ACTIVATION_DEADLINE_MS for this
    workflow: how long one step of its code may block the event loop before it is held.
    """
    _check_name(name, "@workflow.defn")
    failure_types = _failure_types(failure_exception_types)
    deadline_s = _deadline_s(activation_deadline)

    def decorate(target: C) -> C:
        setattr(target, _DEFN_ATTR, replace(_build_definition(target, name), failure_exception_types=failure_types,
                                            activation_deadline_s=deadline_s))
        return target

    return decorate(cls) if cls is not None else decorate


def run(fn: F) -> F:
    """Mark the workflow's entry point: exactly one `async def` method per class."""
    _check_method(fn, "@workflow.run")
    if not inspect.iscoroutinefunction(fn):
        raise ConfigError(f"@workflow.run method {fn.__qualname__} must be a coroutine: make it `async def`")
    fn.__dict__[_RUN_ATTR] = True
    return fn


@overload
def signal(fn: F, /) -> F: ...
@overload
def signal(*, name: str | None = None) -> Callable[[F], F]: ...
def signal(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark a signal handler (sync or async method); the signal name defaults to the method name."""
    _check_name(name, "@workflow.signal")

    def decorate(target: F) -> F:
        _check_method(target, "@workflow.signal")
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise ConfigError(f"signal handler {target.__qualname__} must not be a generator: use a plain method")
        target.__dict__[_SIGNAL_ATTR] = name or target.__name__
        return target

    return decorate(fn) if fn is not None else decorate


@overload
def query(fn: F, /) -> F: ...
@overload
def query(*, name: str | None = None) -> Callable[[F], F]: ...
def query(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark a query handler: a plain (not async) method that reads the workflow's state and returns
    a value. It runs on the processor that owns the workflow, on the live or replayed instance, and
    writes nothing: a handler that schedules work, sleeps or changes history fails the query."""
    _check_name(name, "@workflow.query")

    def decorate(target: F) -> F:
        _check_method(target, "@workflow.query")
        if inspect.iscoroutinefunction(target) or inspect.isasyncgenfunction(target) or \
                inspect.isgeneratorfunction(target):
            raise ConfigError(f"query handler {target.__qualname__} must be a plain `def` method: a query only "
                              "reads state and cannot wait")
        target.__dict__[_QUERY_ATTR] = name or target.__name__
        return target

    return decorate(fn) if fn is not None else decorate


@overload
def update(fn: F, /) -> F: ...
@overload
def update(*, name: str | None = None) -> Callable[[F], F]: ...
def update(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Mark an update handler (sync or async method): a request that changes the workflow's state
    and returns a value to the caller (`client.execute_update`). Optionally validated first::

        @workflow.update
        async def add_item(self, sku: str) -> int: ...

        @add_item.validator
        def check_item(self, sku: str) -> None:
            if not sku:
                raise ValueError("sku must not be empty")   # rejects: nothing is recorded

    The validator is a plain method with the handler's parameters that raises to reject the update;
    it runs read-only (like a query) and a rejected update leaves no trace in history. An accepted
    update is recorded and its handler runs exactly once; raising ApplicationError in it (or
    letting an ActivityError through) fails the update, not the workflow."""
    _check_name(name, "@workflow.update")

    def decorate(target: F) -> F:
        _check_method(target, "@workflow.update")
        if inspect.isasyncgenfunction(target) or inspect.isgeneratorfunction(target):
            raise ConfigError(f"update handler {target.__qualname__} must not be a generator: use a plain or "
                              "async method")
        target.__dict__[_UPDATE_ATTR] = name or target.__name__

        def validator(check: Callable[..., Any]) -> Callable[..., Any]:
            _check_method(check, f"@{target.__name__}.validator")
            if inspect.iscoroutinefunction(check) or inspect.isasyncgenfunction(check) or \
                    inspect.isgeneratorfunction(check):
                raise ConfigError(f"update validator {check.__qualname__} must be a plain `def` method: it only "
                                  "reads state and raises to reject")
            target.__dict__[_VALIDATOR_ATTR] = check
            return check

        target.__dict__["validator"] = validator
        return target

    return decorate(fn) if fn is not None else decorate


def update_validator(handler: Callable[..., Any]) -> Callable[..., Any] | None:
    """The validator given with `@<handler>.validator`, if any."""
    return handler.__dict__.get(_VALIDATOR_ATTR)


def _check_name(name: object, decorator: str) -> None:
    if name is not None and (not isinstance(name, str) or not name):
        raise ConfigError(f"{decorator}(name=...) needs a non-empty string; got {name!r}")


def _check_method(fn: object, decorator: str) -> None:
    if not inspect.isfunction(fn):
        raise ConfigError(
            f"{decorator} decorates a method defined with `def` in the class body; got {fn!r:.80} "
            "(put it directly above the method, below @staticmethod/@property if any - those are not allowed)"
        )


def _by_name(cls: type, handlers: dict[str, Callable[..., Any]], mark: str, kind: str) -> dict[str, Callable[..., Any]]:
    """Handlers (attribute -> method) keyed by the name their decorator gave; two for one name is an error."""
    out: dict[str, Callable[..., Any]] = {}
    for attr, handler in handlers.items():
        handler_name = handler.__dict__[mark]
        if handler_name in out:
            raise ConfigError(
                f"workflow class {cls.__qualname__} has two handlers for {kind} {handler_name!r} "
                f"({out[handler_name].__name__} and {attr}): rename one with @workflow.{kind}(name=...)"
            )
        out[handler_name] = handler
    return out


def _failure_types(types: Sequence[type[Exception]]) -> tuple[type[Exception], ...]:
    if isinstance(types, type) or not isinstance(types, Sequence):
        raise ConfigError(f"@workflow.defn(failure_exception_types=...) takes a list of exception classes, got "
                          f"{types!r:.80}: write failure_exception_types=[ValueError]")
    for t in types:
        if not (isinstance(t, type) and issubclass(t, Exception)):
            raise ConfigError(f"@workflow.defn(failure_exception_types=...): {t!r:.80} is not an Exception subclass")
    return tuple(types)


def _deadline_s(value: float | timedelta | None) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(seconds, bool) or not isinstance(seconds, (int, float)) or not seconds > 0:
        raise ConfigError(f"@workflow.defn(activation_deadline=...) must be a positive number of seconds or a "
                          f"timedelta, got {value!r:.80}")
    return float(seconds)


def _build_definition(cls: object, name: str | None) -> WorkflowDefinition:
    if not isinstance(cls, type):
        raise ConfigError(f"@workflow.defn decorates a class; got {cls!r:.80}: put it above `class ...:`")
    runs: dict[str, Callable[..., Any]] = {}
    handlers: dict[str, Callable[..., Any]] = {}
    query_handlers: dict[str, Callable[..., Any]] = {}
    update_handlers: dict[str, Callable[..., Any]] = {}
    # Walk the MRO base-first so an override in a subclass replaces (or un-marks) the base's method.
    for klass in reversed(cls.__mro__):
        for attr, member in vars(klass).items():
            marks = getattr(member, "__dict__", {}) if inspect.isfunction(member) else {}
            runs.pop(attr, None)
            handlers.pop(attr, None)
            query_handlers.pop(attr, None)
            update_handlers.pop(attr, None)
            if marks.get(_RUN_ATTR):
                runs[attr] = member
            if _SIGNAL_ATTR in marks:
                handlers[attr] = member
            if _QUERY_ATTR in marks:
                query_handlers[attr] = member
            if _UPDATE_ATTR in marks:
                update_handlers[attr] = member
    if not runs:
        raise ConfigError(
            f"workflow class {cls.__qualname__} has no @workflow.run method: add "
            "`@workflow.run async def run(self, ...) -> ...` as its entry point"
        )
    if len(runs) > 1:
        raise ConfigError(
            f"workflow class {cls.__qualname__} has several @workflow.run methods ({', '.join(sorted(runs))}): "
            "a workflow has exactly one entry point, keep one"
        )
    signals = _by_name(cls, handlers, _SIGNAL_ATTR, "signal")
    queries = _by_name(cls, query_handlers, _QUERY_ATTR, "query")
    reserved = sorted(q for q in queries if q.startswith("__"))
    if reserved:
        raise ConfigError(
            f"workflow class {cls.__qualname__} names a query {reserved[0]!r}: query names starting with '__' are "
            "the processor's own (e.g. __history, docs/protocol.md#built-in-queries); choose another name"
        )
    updates = _by_name(cls, update_handlers, _UPDATE_ATTR, "update")
    try:
        params = list(inspect.signature(cls).parameters.values())
    except ValueError:  # no introspectable signature (a C-level __init__): nothing to check
        params = []
    required = [p.name for p in params if p.default is p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
    if required:
        raise ConfigError(
            f"workflow class {cls.__qualname__}.__init__ requires {', '.join(required)}: the runtime creates "
            "the object with no arguments; take inputs as parameters of the @workflow.run method"
        )
    return WorkflowDefinition(name=name or cls.__name__, cls=cls, run_fn=next(iter(runs.values())), signals=signals,
                              queries=queries, updates=updates)
