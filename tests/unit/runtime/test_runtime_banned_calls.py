"""The clock, random, uuid and entropy functions are refused at the call inside workflow code
(processor/_runtime/_guard.py): the workflow is held, not failed, and the reason names the call and
its fix. Outside workflow code -- other threads, the engine between activations, logging -- they work."""

from __future__ import annotations

import email.utils
import logging
import os
import random
import secrets
import sys
import threading
import time
import types
import uuid
from collections.abc import Callable

import pytest
from wf_harness import Sim
from wf_samples import cleanup

from processor import workflow
from processor._runtime._guard import NondeterministicCallError

# api -> a call of it, spelled the way workflow code spells it (looked up through the module).
TIME_CALLS: dict[str, Callable[[], object]] = {
    "time.time": lambda: time.time(),
    "time.time_ns": lambda: time.time_ns(),
    "time.monotonic": lambda: time.monotonic(),
    "time.monotonic_ns": lambda: time.monotonic_ns(),
    "time.perf_counter": lambda: time.perf_counter(),
    "time.perf_counter_ns": lambda: time.perf_counter_ns(),
    "time.sleep": lambda: time.sleep(0),
}
RANDOM_CALLS: dict[str, Callable[[], object]] = {
    "random.random": lambda: random.random(),
    "random.randint": lambda: random.randint(1, 6),
    "random.randrange": lambda: random.randrange(10),
    "random.choice": lambda: random.choice("ab"),
    "random.choices": lambda: random.choices("ab", k=2),
    "random.shuffle": lambda: random.shuffle([1, 2, 3]),
    "random.sample": lambda: random.sample("abc", 2),
    "random.uniform": lambda: random.uniform(0, 1),
    "random.gauss": lambda: random.gauss(0, 1),
    "random.getrandbits": lambda: random.getrandbits(8),
    "random.randbytes": lambda: random.randbytes(2),
}
UUID_CALLS: dict[str, Callable[[], object]] = {
    "uuid.uuid1": lambda: uuid.uuid1(),
    "uuid.uuid4": lambda: uuid.uuid4(),
}
OS_CALLS: dict[str, Callable[[], object]] = {
    "os.urandom": lambda: os.urandom(4),
    "os.getrandom": lambda: os.getrandom(4),
}
SECRETS_CALLS: dict[str, Callable[[], object]] = {
    "secrets.token_hex": lambda: secrets.token_hex(),
    "secrets.token_bytes": lambda: secrets.token_bytes(),
    "secrets.token_urlsafe": lambda: secrets.token_urlsafe(),
    "secrets.choice": lambda: secrets.choice("ab"),
    "secrets.randbelow": lambda: secrets.randbelow(5),
    "secrets.randbits": lambda: secrets.randbits(8),
}
CALLS = {**TIME_CALLS, **RANDOM_CALLS, **UUID_CALLS, **OS_CALLS, **SECRETS_CALLS}


@workflow.defn
class CallsApi:
    @workflow.run
    async def run(self, api: str) -> str:
        CALLS[api]()
        return "called"


def assert_held(sim: Sim, start: Callable[[], object], api: str, fix: str) -> str:
    with pytest.raises(NondeterministicCallError) as info:
        start()
    sim.close()  # as the engine does with the instance of a held workflow
    reason = str(info.value)
    assert f"{api}() inside workflow {sim.definition.name!r} is nondeterministic" in reason, reason
    assert fix in reason, reason
    assert ".py:" in reason, "the reason points at the call"
    assert "held until code without the call is deployed" in reason
    # Held: neither failed nor advanced (the engine appends WorkflowTaskFailed{reason} itself).
    assert [e["type"] for e in sim.history if e["type"] != "WorkflowStarted"] in ([], ["SignalReceived"])
    return reason


def assert_call_held(api: str, fix: str) -> None:
    sim = Sim(CallsApi)
    reason = assert_held(sim, lambda: sim.start(api), api, fix)
    assert "test_runtime_banned_calls.py:" in reason, "the reason points at the call"


@pytest.mark.parametrize("api", sorted(TIME_CALLS))
def test_clock_calls_hold_the_workflow(api: str) -> None:
    fix = "asyncio.sleep(seconds)`, which is a durable timer" if api == "time.sleep" else "workflow.time()"
    assert_call_held(api, fix)


def test_clock_reading_names_workflow_now_as_the_fix() -> None:
    assert_call_held("time.time", "use workflow.now() / workflow.now().timestamp()")


@pytest.mark.parametrize("api", sorted(RANDOM_CALLS))
def test_module_level_random_calls_hold_the_workflow(api: str) -> None:
    name = api.removeprefix("random.")
    assert_call_held(api, f"use workflow.random().{name}(...), which history seeds")


def test_every_module_level_random_function_is_guarded() -> None:
    Sim(CallsApi)  # the first instance installs the guard
    functions = {name: getattr(random, name) for name in random.__all__}
    originals = {name: getattr(f, "__wrapped__", f) for name, f in functions.items()}
    bound = [name for name, f in originals.items() if isinstance(getattr(f, "__self__", None), random.Random)]
    assert "random" in bound and "shuffle" in bound and "seed" in bound
    assert [name for name in bound if functions[name] is originals[name]] == [], "not guarded"


@pytest.mark.parametrize("api", sorted(UUID_CALLS))
def test_uuid1_and_uuid4_hold_the_workflow(api: str) -> None:
    assert_call_held(api, "use workflow.uuid4()")


@pytest.mark.parametrize("api", sorted(OS_CALLS))
def test_os_entropy_holds_the_workflow(api: str) -> None:
    assert_call_held(api, "use workflow.random().randbytes(n)")


@pytest.mark.parametrize("api", sorted(SECRETS_CALLS))
def test_secrets_calls_hold_the_workflow(api: str) -> None:
    assert_call_held(api, "draw the secret in an activity")


@workflow.defn
class FormatsADate:
    @workflow.run
    async def run(self) -> str:
        return email.utils.formatdate()  # reads time.time() on the workflow's behalf


def test_a_call_the_stdlib_makes_on_the_workflows_behalf_holds_too() -> None:
    sim = Sim(FormatsADate)
    reason = assert_held(sim, sim.start, "time.time", "workflow.time()")
    assert "email/utils.py:" in reason and "reached from " in reason, reason
    assert reason.split("reached from ")[1].startswith(__file__), "and at the workflow's line"


@workflow.defn
class SwallowsTheError:
    @workflow.run
    async def run(self, how: str) -> str:
        if how == "except Exception":
            try:
                random.random()
            except Exception:
                return "caught it"  # not reached: the refusal is a BaseException
        else:
            try:
                random.random()
            except BaseException:  # as a bare `except:` would
                pass
        await workflow.execute_activity(cleanup, "after the call")
        return "finished"


@pytest.mark.parametrize("how", ["except Exception", "except BaseException"])
def test_catching_the_error_does_not_release_the_workflow(how: str, always_replay: bool) -> None:
    sim = Sim(SwallowsTheError, always_replay=always_replay)
    assert_held(sim, lambda: sim.start(how), "random.random", "workflow.random().random(...)")
    assert sim.scheduled() == [], "commands of the held activation are dropped"


@workflow.defn
class CallsInHandlers:
    def __init__(self) -> None:
        self.ready = False

    @workflow.signal
    def go(self, where: str) -> None:
        if where == "handler":
            uuid.uuid4()
        self.ready = True

    @workflow.run
    async def run(self) -> str:
        # Re-checked by the loop itself once the signal sets `ready`: outside any task.
        await workflow.wait_condition(lambda: self.ready and uuid.uuid4() is not None)
        return "done"


@pytest.mark.parametrize("where", ["handler", "condition"])
def test_a_call_in_a_signal_handler_or_wait_condition_holds_too(where: str, always_replay: bool) -> None:
    sim = Sim(CallsInHandlers, always_replay=always_replay)
    sim.start()
    assert_held(sim, lambda: sim.signal("go", where), "uuid.uuid4", "use workflow.uuid4()")


def test_an_alias_bound_before_the_guard_in_the_workflow_module_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    # `from time import time` in a module imported before any instance existed holds the original.
    original = getattr(time.time, "__wrapped__", time.time)
    module = types.ModuleType("early_workflows")
    module.__dict__.update(workflow=workflow, clock=original)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(  # noqa: S102 - a module body, as import would run it
        "@workflow.defn\n"
        "class UsesAlias:\n"
        "    @workflow.run\n"
        "    async def run(self) -> float:\n"
        "        return clock()\n",
        module.__dict__,
    )
    sim = Sim(module.UsesAlias)
    with pytest.raises(NondeterministicCallError, match=r"time\.time\(\) inside workflow 'UsesAlias'"):
        sim.start()
    sim.close()
    assert module.clock is time.time, "rebound to the guarded function"


DATETIME_MODULE = """
import datetime
from datetime import date, datetime as DT, timezone

@workflow.defn
class ReadsDatetime:
    @workflow.run
    async def run(self, how: str) -> str:
        if how == "module":
            return str(datetime.datetime.now(timezone.utc))
        if how == "class":
            return str(DT.now())
        if how == "utcnow":
            return str(DT.utcnow())
        if how == "today":
            return str(date.today())
        # history time and plain construction stay usable, and give real datetimes
        made = DT(2026, 1, 2, tzinfo=timezone.utc)
        parsed = DT.fromisoformat("2026-01-02T00:00:00+00:00")
        now = workflow.now()  # a real datetime: the stand-in's constructors give the same type
        assert type(made) is type(now) and type(parsed) is type(now)
        assert isinstance(now, DT) and isinstance(now, datetime.datetime) and issubclass(type(now), DT)
        return made.isoformat()
"""


@pytest.fixture
def datetime_workflows(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("datetime_workflows")
    module.__dict__.update(workflow=workflow)
    monkeypatch.setitem(sys.modules, module.__name__, module)
    exec(DATETIME_MODULE, module.__dict__)  # noqa: S102 - a module body, as import would run it
    return module


@pytest.mark.parametrize(("how", "api"), [("module", "datetime.datetime.now"), ("class", "datetime.datetime.now"),
                                          ("utcnow", "datetime.datetime.utcnow"), ("today", "datetime.date.today")])
def test_datetime_clock_calls_in_the_workflow_module_hold_the_workflow(
        datetime_workflows: types.ModuleType, how: str, api: str) -> None:
    sim = Sim(datetime_workflows.ReadsDatetime)
    with pytest.raises(NondeterministicCallError) as info:
        sim.start(how)
    sim.close()
    reason = str(info.value)
    assert f"{api}() inside workflow 'ReadsDatetime' is nondeterministic" in reason, reason
    assert "use workflow.now(), which is history time" in reason
    assert "<string>:" in reason, "the reason points at the workflow's line, not at the guard"


def test_datetime_construction_and_checks_work_in_workflow_code(datetime_workflows: types.ModuleType) -> None:
    sim = Sim(datetime_workflows.ReadsDatetime)
    sim.start("construct")
    assert sim.result() == "2026-01-02T00:00:00+00:00"
    sim.close()


def test_datetime_names_work_outside_workflow_code(datetime_workflows: types.ModuleType) -> None:
    import datetime as real

    Sim(datetime_workflows.ReadsDatetime).close()  # the instance rebinds the module's names
    stand_in = datetime_workflows.DT
    assert stand_in is not real.datetime, "rebound"
    assert type(stand_in.now()) is real.datetime and type(datetime_workflows.date.today()) is real.date
    assert isinstance(real.datetime.now(), stand_in) and not isinstance(real.date.today(), stand_in)
    assert datetime_workflows.datetime.timedelta is real.timedelta


# ---- outside workflow code the same functions work ------------------------------------------

mid_activation = threading.Event()
other_thread_done = threading.Event()
OUTSIDE_CALLS = {api: call for api, call in CALLS.items() if api != "random.seed"}


@workflow.defn
class WaitsForAnotherThread:
    @workflow.run
    async def run(self) -> None:
        mid_activation.set()
        assert other_thread_done.wait(10)  # blocking, so the activation stays open meanwhile
        time.time()  # and the guard was on all along


def test_the_same_calls_work_in_other_threads_and_between_activations() -> None:
    mid_activation.clear()
    other_thread_done.clear()
    results: dict[str, object] = {}

    def activity_like() -> None:
        assert mid_activation.wait(10)
        for api, call in OUTSIDE_CALLS.items():
            try:
                call()
                results[api] = "ok"
            except BaseException as exc:  # noqa: B036 - the refusal is a BaseException
                results[api] = exc
        other_thread_done.set()

    thread = threading.Thread(target=activity_like)
    thread.start()
    sim = Sim(WaitsForAnotherThread)
    try:
        assert_held(sim, sim.start, "time.time", "workflow.time()")
    finally:
        thread.join(10)
    assert results == dict.fromkeys(OUTSIDE_CALLS, "ok")
    # The engine's thread, between activations: everything works again.
    for call in OUTSIDE_CALLS.values():
        call()


class StampingHandler(logging.Handler):
    """Like a Sentry or structlog handler: stamps and ids each record with the real clock."""

    def __init__(self) -> None:
        super().__init__()
        self.stamped: list[tuple[str, float, uuid.UUID]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.stamped.append((record.getMessage(), time.time(), uuid.uuid4()))


@workflow.defn
class LogsThenCallsTheClock:
    @workflow.run
    async def run(self) -> None:
        workflow.logger.warning("about to read the clock")  # LogRecord reads time.time() itself
        random.random()


def test_logging_from_workflow_code_may_read_the_clock() -> None:
    handler = StampingHandler()
    logger = logging.getLogger("processor.workflow")
    logger.addHandler(handler)
    try:
        sim = Sim(LogsThenCallsTheClock)
        assert_held(sim, sim.start, "random.random", "workflow.random().random(...)")
    finally:
        logger.removeHandler(handler)
    assert [message for message, _, _ in handler.stamped] == ["about to read the clock"]


def test_wrappers_keep_the_name_and_the_behaviour(always_replay: bool) -> None:
    Sim(CallsApi, always_replay=always_replay)
    assert time.time.__name__ == "time" and time.time.__wrapped__ is not time.time  # type: ignore[attr-defined]
    before = time.time()
    assert abs(time.time() - before) < 5 and isinstance(uuid.uuid4(), uuid.UUID)
    with pytest.raises(TypeError):
        time.time(1)  # type: ignore[call-arg]
