"""Refusing the clock, random, uuid and entropy calls inside workflow code, at the call.

A workflow that reads `time.time()` or `uuid.uuid4()` replays with different values; matching
commands by identity (the instance's `_match`) notices only if the value changes which command is
emitted. So the stdlib functions below are replaced, once, in their modules by thin wrappers. A
wrapper asks one question -- is workflow code of an activation running on this thread? -- and if
not, calls the original. Activities (threads of the same process), the engine between
activations and every other thread therefore see the unchanged function, plus one Python call:
measured ~40 ns on top of `time.time()`'s ~50 ns, ~80 ns while another thread is mid-activation.
An activation pays one dict store and restore.

Inside an activation a call is refused unless a `logging` frame is on the stack: each record of
`workflow.logger` is stamped with `time.time()`, and a Sentry or structlog handler may stamp and id
it too; none of that reaches history. A call that the stdlib or a library makes on the workflow's
behalf (`email.utils.formatdate()`, a TTL cache) is refused like a direct one: its result is just
as different on replay.

What happens at a refused call. The instance records it (first one wins) and the wrapper raises
`NondeterministicCall`, a BaseException, so `except Exception:` in workflow code does not swallow
it; a bare `except:` does, and the recorded call holds the activation all the same. The activation
then fails as a task (`NondeterministicCallError`), like a `NondeterminismError` or an activation
that overran its deadline: the workflow is neither failed nor advanced, and deploying code that
uses `workflow.now()` & co. resumes it. The refused event-loop operations (`_loop._not_allowed`)
raise a `ConfigError` that fails the workflow instead, which is right for them: they can never
work, on any replay. A banned call is a replay hazard in code that may already have run -- before
this guard existed, or swallowing it -- so failing would kill workflows that a hotfix can save.

`datetime.now()`, `utcnow()`, `today()` and `date.today()` are methods of C types that read the
clock in C (not through `time.time`), and the types themselves cannot be patched. They are caught
where workflow code names them: in the module that defines the workflow class, a global bound to
the `datetime` module, or to `datetime.datetime` / `datetime.date` (`import datetime`, `from
datetime import datetime, date`), is rebound to a stand-in whose clock methods are guarded like
the functions above and which is otherwise the real thing -- constructing it, its other class
methods, `isinstance`/`issubclass` and `match` patterns all give and accept real datetimes.

Not caught, and why (tried and rejected):
- the same datetime calls reached through another module (a helper module's `datetime.now()`,
  or `import datetime as dt` there): swapping `datetime.datetime` in its module breaks
  `isinstance` everywhere; writing into the static type's dict through `gc.get_referents` +
  `PyType_Modified` (forbiddenfruit) is unsupported CPython surgery that every `datetime.now()`
  of the process would pay for. `sys.setprofile` on the activating thread does see these C calls,
  however spelled, but made a 400-event replay 3x slower: too much for the hot path.
  `sys.addaudithook` has no event for any of them.
- names bound before the first WorkflowInstance existed, in modules other than the workflow's
  own (`from time import time` in a helper module keeps the original); in the module defining
  the workflow class such aliases are rebound to the wrappers (see `install`).
- `random.Random()` / `random.SystemRandom()` instances (an unseeded Random seeds from the OS in
  C); `time.localtime()`, `time.gmtime()`, `time.ctime()`, `time.strftime()` without arguments.
- anything called from workflow code's `finally:` blocks while the instance is being discarded
  (`WorkflowInstance.close`): that code decides nothing any more.
"""

from __future__ import annotations

import contextlib
import datetime as _dt
import functools
import inspect
import os
import random
import secrets
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from processor._runtime._history import WorkflowTaskError

__all__ = ["NondeterministicCall", "NondeterministicCallError", "Recorder", "enter", "install", "leave"]

# (api, fix, where) -> the message of the refused call, recorded on the instance (its _refuse_call).
Recorder = Callable[[str, str, str], str]

# Thread ident -> the recorder of the instance whose activation runs on that thread. Empty while
# no activation runs anywhere: the wrappers' fast path is one truth test of a global.
_RUNNING: dict[int, Recorder] = {}
_get_ident = threading.get_ident

_TIME_FIX = "use workflow.now() / workflow.now().timestamp() (or workflow.time()), which is history time"
_DURATION_FIX = "measure durations with workflow.time() (history time), or time the work inside an activity"
_BYTES_FIX = "use workflow.random().randbytes(n), which history seeds"
_SECRETS_FIX = (
    "draw the secret in an activity (workflow.random() replays identically, so what it draws is not secret)"
)

# Function -> its wrapper; also how `install` recognises an alias bound to an original.
_WRAPPERS: dict[Callable[..., Any], Callable[..., Any]] = {}
_installed = False
_seen: set[type] = set()
_lock = threading.Lock()


class NondeterministicCall(BaseException):  # noqa: N818 - engine control flow, not an error type
    """Raised at a refused call in workflow code. A BaseException so that `except Exception:` in
    workflow code does not swallow it; a bare `except:` does, but the call was recorded and the
    workflow is held at the end of the activation all the same."""


class NondeterministicCallError(WorkflowTaskError):
    """The activation failed because workflow code called the clock, random, uuid or the OS
    entropy source; the workflow is held until code that does not is deployed."""


def _targets() -> list[tuple[Any, str, str]]:
    """(module, attribute, fix) for every function refused in workflow code."""
    targets: list[tuple[Any, str, str]] = [
        (time, "time", _TIME_FIX),
        (time, "time_ns", _TIME_FIX),
        (time, "monotonic", _DURATION_FIX),
        (time, "monotonic_ns", _DURATION_FIX),
        (time, "perf_counter", _DURATION_FIX),
        (time, "perf_counter_ns", _DURATION_FIX),
        (time, "sleep", "use `await asyncio.sleep(seconds)`, which is a durable timer"),
        (uuid, "uuid1", "use workflow.uuid4(), which history seeds"),
        (uuid, "uuid4", "use workflow.uuid4(), which history seeds"),
        (os, "urandom", _BYTES_FIX),
        (os, "getrandom", _BYTES_FIX),
    ]
    # random's module-level functions are bound methods of one hidden Random (random() and
    # getrandbits() are C methods): take them all, whichever this Python has (binomialvariate: 3.12+).
    for name in random.__all__:
        member = getattr(random, name, None)
        if isinstance(getattr(member, "__self__", None), random.Random):
            targets.append((random, name, f"use workflow.random().{name}(...), which history seeds"))
    targets.extend(
        (secrets, name, _SECRETS_FIX)
        for name in ("choice", "randbelow", "randbits", "token_bytes", "token_hex", "token_urlsafe")
    )
    return [(module, name, fix) for module, name, fix in targets if hasattr(module, name)]


def _wrap(original: Callable[..., Any], api: str, fix: str) -> Callable[..., Any]:
    if _positional_only(original):
        # No **kwargs to pack: ~35 ns instead of ~60 on top of time.time() and the other C functions.
        def guarded_positional(*args: Any) -> Any:
            if _RUNNING:
                record = _RUNNING.get(_get_ident())
                if record is not None:
                    _refuse_unless_logging(record, api, fix)
            return original(*args)

        return functools.wraps(original)(guarded_positional)

    @functools.wraps(original)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        if _RUNNING:
            record = _RUNNING.get(_get_ident())
            if record is not None:
                _refuse_unless_logging(record, api, fix)
        return original(*args, **kwargs)

    return guarded


def _positional_only(fn: Callable[..., Any]) -> bool:
    """A C function taking no keyword arguments (time.time, time.sleep, os.urandom, random.random)."""
    if not isinstance(fn, types.BuiltinFunctionType):
        return False
    try:
        params = inspect.signature(fn).parameters.values()
    except ValueError:  # no text signature: the time module's functions, all positional
        return True
    return all(p.kind is p.POSITIONAL_ONLY for p in params)


def _refuse_unless_logging(record: Recorder, api: str, fix: str, depth: int = 2) -> None:
    """`depth`: frames from here up to the code that made the call (here <- wrapper <- caller)."""
    caller = inspect.currentframe()
    for _ in range(depth):
        caller = caller.f_back if caller is not None else None
    if caller is None:
        return
    outer: types.FrameType | None = caller
    while outer is not None:  # one step for LogRecord's time.time(): logging is the caller
        if _module_root(outer) == "logging":
            return
        outer = outer.f_back
    where = _location(caller)
    user: types.FrameType | None = caller
    while user is not None and _module_root(user) in sys.stdlib_module_names:
        user = user.f_back
    if user is not None and user is not caller:
        where += f" reached from {_location(user)}"  # the stdlib read the clock for this line
    raise NondeterministicCall(
        record(api, fix, where) + " (this exception is a BaseException: a bare `except:` swallows it, "
        "but not the hold)"
    )


def install(cls: type, namespaces: list[dict[str, Any]]) -> None:
    """Wrap the refused functions in their modules (once per process), and rebind names in
    `namespaces` (the workflow class's module globals, once per class) that still hold an
    original: `from uuid import uuid4` ran before any instance existed, so it holds the original.
    Rebinding keeps `uuid4 is uuid.uuid4` true, now for the wrapper."""
    global _installed
    if cls in _seen:
        return
    with _lock:
        if not _installed:
            for module, name, fix in _targets():
                original = getattr(module, name)
                wrapper = _wrap(original, f"{module.__name__}.{name}", fix)
                _WRAPPERS[original] = wrapper
                setattr(module, name, wrapper)
            _installed = True
        for namespace in namespaces:
            for name, value in list(namespace.items()):
                if type(value) in (types.BuiltinFunctionType, types.FunctionType, types.MethodType):
                    alias_of = _WRAPPERS.get(value)
                    if alias_of is not None:
                        namespace[name] = alias_of
                elif value is _dt:
                    namespace[name] = _DATETIME_MODULE
                elif value is _dt.datetime:
                    namespace[name] = _GuardedDatetime
                elif value is _dt.date:
                    namespace[name] = _GuardedDate
        _seen.add(cls)


def enter(record: Recorder) -> Recorder | None:
    """Mark workflow code of an activation as running on this thread; returns what to `leave` with."""
    ident = _get_ident()
    previous = _RUNNING.get(ident)
    _RUNNING[ident] = record
    return previous


def leave(previous: Recorder | None) -> None:
    ident = _get_ident()
    if previous is None:
        _RUNNING.pop(ident, None)
    else:
        _RUNNING[ident] = previous


@contextlib.contextmanager
def suspended() -> Iterator[None]:
    """Workflow code on this thread may call the clock and random for a moment: the function of
    `workflow.side_effect`, whose value is recorded in history and read back on replay."""
    ident = _get_ident()
    previous = _RUNNING.pop(ident, None)
    try:
        yield
    finally:
        if previous is not None:
            _RUNNING[ident] = previous


def _module_root(frame: types.FrameType) -> str:
    return str(frame.f_globals.get("__name__", "")).partition(".")[0]


def _location(frame: types.FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno}"


# ---- datetime: stand-ins for the names workflow modules bind -----------------------------------

_NOW_FIX = "use workflow.now(), which is history time (timezone-aware, UTC)"


def _check_clock(api: str) -> None:
    if _RUNNING:
        record = _RUNNING.get(_get_ident())
        if record is not None:  # frames: _refuse <- here <- the stand-in's method <- caller
            _refuse_unless_logging(record, api, _NOW_FIX, depth=3)


class _Standin(type):
    """Metaclass of the stand-ins: `isinstance(x, standin)` asks the real type, so real
    datetimes (from history, from libraries) pass every check the workflow module makes."""

    _real: type

    def __instancecheck__(cls, obj: object) -> bool:
        return isinstance(obj, cls._real)

    def __subclasscheck__(cls, sub: type) -> bool:
        return issubclass(sub, cls._real)


class _GuardedDatetime(_dt.datetime, metaclass=_Standin):
    _real = _dt.datetime

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _dt.datetime(*args, **kwargs)  # noqa: DTZ001 - a real datetime, never the stand-in

    @classmethod
    def now(cls, tz: _dt.tzinfo | None = None) -> Any:
        _check_clock("datetime.datetime.now")
        return _dt.datetime.now(tz)

    @classmethod
    def utcnow(cls) -> Any:
        _check_clock("datetime.datetime.utcnow")
        return _dt.datetime.utcnow()  # noqa: DTZ003 - what the caller asked for, outside workflow code

    @classmethod
    def today(cls) -> Any:
        _check_clock("datetime.datetime.today")
        return _dt.datetime.today()  # noqa: DTZ002 - what the caller asked for, outside workflow code


class _GuardedDate(_dt.date, metaclass=_Standin):
    _real = _dt.date

    def __new__(cls, *args: Any, **kwargs: Any) -> Any:
        return _dt.date(*args, **kwargs)

    @classmethod
    def today(cls) -> Any:
        _check_clock("datetime.date.today")
        return _dt.date.today()  # noqa: DTZ011 - what the caller asked for, outside workflow code


_DATETIME_MODULE = types.ModuleType("datetime", _dt.__doc__)
_DATETIME_MODULE.__dict__.update({k: v for k, v in vars(_dt).items() if k not in ("__name__", "__doc__")})
_DATETIME_MODULE.datetime = _GuardedDatetime  # type: ignore[attr-defined]
_DATETIME_MODULE.date = _GuardedDate  # type: ignore[attr-defined]
