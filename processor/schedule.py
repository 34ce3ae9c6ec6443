"""Schedules: start a workflow on a cron expression or at a fixed interval, durably.

A schedule is itself a workflow (`ScheduleWorkflow`, type "dp.Schedule", id "schedule:<id>"),
which every processor runs as it runs any other: it sleeps on a durable timer until the next
firing and starts the target workflow as an abandoned child whose id is the schedule's id and the
firing's nominal time (`nightly-2026-01-05T09:00:00Z`). So a firing is exactly once for the same
reasons any step is: the child's start is sent in the transaction that records the firing, and a
processor killed mid-firing is replaced by one that replays to the same place. Pause, unpause,
trigger and delete are signals; `describe` is a query. Long-lived schedules continue-as-new every
`CONTINUE_EVERY` firings (when no firing is running), so their history stays short.

Policies (Temporal's): `overlap` -- what a firing does while an earlier one still runs: "skip"
(default), "buffer_one" (start it once the running one closes; at most one waits), "allow_all",
"cancel_other" (cancel the running one, wait for it to close, then start). `catchup_window` -- a
firing missed while no processor ran (its timer fired late) still starts if it is at most this
late, else it is counted as missed; of several missed firings each is judged on its own.
`jitter` -- each firing waits a random extra time below it (recorded, so replay agrees).
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from processor import _cron, workflow
from processor.exceptions import ChildWorkflowError, ConfigError

__all__ = ["OVERLAP_POLICIES", "ScheduleHandle", "ScheduleSpec", "ScheduleWorkflow", "Schedules",
           "schedule_workflow_id"]

WORKFLOW_TYPE = "dp.Schedule"
OVERLAP_POLICIES = ("skip", "buffer_one", "allow_all", "cancel_other")
CONTINUE_EVERY = 100  # firings per run before continue-as-new (once none is running)
RECENT_KEPT = 10  # firings `describe` lists
DEFAULT_CATCHUP = timedelta(minutes=1)


def schedule_workflow_id(schedule_id: str) -> str:
    return f"schedule:{schedule_id}"


def _iso(t: datetime) -> str:
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)


@dataclass
class ScheduleSpec:
    """What a schedule starts and when (all JSON: it is the schedule workflow's input)."""

    schedule_id: str
    workflow_type: str
    args: list[Any]
    task_queue: str = "default"
    cron: str | None = None
    every_s: float | None = None
    offset_s: float = 0.0
    jitter_s: float = 0.0
    overlap: str = "skip"
    catchup_window_s: float = DEFAULT_CATCHUP.total_seconds()
    execution_timeout_s: float | None = None
    paused: bool = False
    note: str = ""

    def check(self) -> None:
        """ConfigError saying what to fix; checked by the client before anything is sent."""
        if not isinstance(self.schedule_id, str) or not self.schedule_id or "\x00" in self.schedule_id:
            raise ConfigError(f"a schedule id must be a non-empty string without NUL; got {self.schedule_id!r}")
        if (self.cron is None) == (self.every_s is None):
            raise ConfigError("a schedule needs exactly one of cron='...' or every=timedelta(...)")
        if self.cron is not None:
            _cron.parse(self.cron)
        if self.every_s is not None and self.every_s < 1:
            raise ConfigError(f"every must be at least 1 second; got {self.every_s:g} s")
        if self.overlap not in OVERLAP_POLICIES:
            raise ConfigError(f"overlap {self.overlap!r} is not one of {', '.join(OVERLAP_POLICIES)}")
        if self.jitter_s < 0 or self.catchup_window_s < 0 or self.offset_s < 0:
            raise ConfigError("jitter, catchup_window and offset must not be negative")

    def next_after(self, t: datetime) -> datetime:
        if self.cron is not None:
            return _cron.parse(self.cron).next_after(t)
        assert self.every_s is not None
        return _cron.next_interval(t, timedelta(seconds=self.every_s), timedelta(seconds=self.offset_s))


@dataclass
class _State:
    """What a schedule carries from run to run (continue-as-new)."""

    last_nominal: str  # the nominal time of the last firing considered (ISO, UTC)
    fired: int = 0
    skipped: int = 0  # overlapping firings not started (overlap policy)
    missed: int = 0  # firings later than the catch-up window
    triggered: int = 0  # manual firings
    recent: list[dict[str, Any]] = field(default_factory=list)


@workflow.defn(name=WORKFLOW_TYPE)
class ScheduleWorkflow:
    def __init__(self) -> None:
        self.spec: ScheduleSpec | None = None
        self.state: _State | None = None
        self.paused = False
        self.note = ""
        self.deleted = False
        self.triggers = 0
        self.buffered: str | None = None  # a nominal time waiting for the running firing to close
        self.running: dict[str, workflow.ChildWorkflowHandle] = {}
        self.next_fire: str | None = None

    # -- outside input ----------------------------------------------------------------------

    @workflow.signal
    def pause(self, note: str = "") -> None:
        self.paused, self.note = True, note

    @workflow.signal
    def unpause(self, note: str = "") -> None:
        self.paused, self.note = False, note

    @workflow.signal
    def trigger(self) -> None:
        self.triggers += 1

    @workflow.signal
    def delete(self) -> None:
        self.deleted = True

    @workflow.query
    def describe(self) -> dict[str, Any]:
        assert self.spec is not None and self.state is not None
        return {"schedule_id": self.spec.schedule_id, "spec": asdict(self.spec) | {"paused": self.paused,
                                                                                   "note": self.note},
                "paused": self.paused, "note": self.note, "next_fire_time": None if self.paused else self.next_fire,
                "running": sorted(self.running), "buffered": self.buffered,
                "fired": self.state.fired, "skipped": self.state.skipped, "missed": self.state.missed,
                "triggered": self.state.triggered, "recent": list(self.state.recent)}

    # -- the loop ---------------------------------------------------------------------------

    @workflow.run
    async def run(self, spec: dict[str, Any], state: dict[str, Any] | None = None) -> dict[str, Any]:
        self.spec = s = ScheduleSpec(**spec)
        self.paused, self.note = s.paused, s.note
        self.state = st = _State(**state) if state else _State(last_nominal=_iso(workflow.now()))
        fired_here = 0
        while not self.deleted:
            if self.triggers:
                self.triggers -= 1
                st.triggered += 1
                fired_here += await self._fire(workflow.now(), manual=True)
                continue
            if self.buffered is not None and not self.running:
                held, self.buffered = self.buffered, None
                fired_here += await self._fire(_parse_iso(held))
                continue
            if fired_here >= CONTINUE_EVERY and not self.running:
                workflow.continue_as_new(asdict(s) | {"paused": self.paused, "note": self.note}, asdict(st))
            if self.paused:
                self.next_fire = None
                await workflow.wait_condition(lambda: not self.paused or self.deleted or self.triggers > 0)
                if not self.paused:  # the firings a pause skipped are not owed: go on from now
                    st.last_nominal = max(st.last_nominal, _iso(workflow.now()))
                continue
            nominal = s.next_after(_parse_iso(st.last_nominal))
            self.next_fire = _iso(nominal)
            due = nominal + timedelta(seconds=workflow.random().uniform(0, s.jitter_s) if s.jitter_s else 0)
            wait = (due - workflow.now()).total_seconds()
            if wait > 0:
                try:
                    await workflow.wait_condition(self._woken, timeout=wait)
                except TimeoutError:
                    pass
                else:
                    continue  # a signal or a closed firing: look again (the next time is the same)
            st.last_nominal = _iso(nominal)
            if (workflow.now() - nominal).total_seconds() > s.catchup_window_s:
                st.missed += 1
                self._remember({"workflow_id": None, "scheduled_time": _iso(nominal), "status": "missed"})
                continue
            fired_here += await self._fire(nominal)
        return self.describe()

    def _woken(self) -> bool:
        return self.deleted or self.paused or self.triggers > 0 or (self.buffered is not None and not self.running)

    async def _fire(self, nominal: datetime, manual: bool = False) -> int:
        """One firing under the overlap policy; 1 if a workflow was started."""
        s, st = self.spec, self.state
        assert s is not None and st is not None
        if self.running and not manual:
            if s.overlap == "skip":
                st.skipped += 1
                self._remember({"workflow_id": None, "scheduled_time": _iso(nominal), "status": "skipped"})
                return 0
            if s.overlap == "buffer_one":
                if self.buffered is not None:
                    st.skipped += 1
                self.buffered = _iso(nominal)
                return 0
            if s.overlap == "cancel_other":
                for handle in self.running.values():
                    handle.cancel()
                await workflow.wait_condition(lambda: not self.running)
        wid = f"{s.schedule_id}-{_iso(nominal)}"
        if manual:
            wid = f"{s.schedule_id}-manual-{_iso(nominal)}-{st.triggered}"
        handle = workflow.start_child_workflow(s.workflow_type, *s.args, id=wid, task_queue=s.task_queue,
                                               execution_timeout=s.execution_timeout_s, parent_close_policy="abandon")
        self.running[wid] = handle
        st.fired += 1
        entry = {"workflow_id": wid, "scheduled_time": _iso(nominal), "status": "running"}
        self._remember(entry)
        asyncio.get_running_loop().create_task(self._watch(wid, handle, entry))
        return 1

    async def _watch(self, wid: str, handle: workflow.ChildWorkflowHandle, entry: dict[str, Any]) -> None:
        try:
            await handle.result()
            entry["status"] = "completed"
        except ChildWorkflowError as err:
            entry["status"] = err.status
        finally:
            self.running.pop(wid, None)

    def _remember(self, entry: dict[str, Any]) -> None:
        assert self.state is not None
        self.state.recent.append(entry)
        del self.state.recent[:-RECENT_KEPT]


class ScheduleHandle:
    """A schedule, through a client (or a WorkflowEnvironment): pause, unpause, trigger, delete, describe."""

    def __init__(self, client: Any, schedule_id: str) -> None:
        self.client = client
        self.id = schedule_id
        self.workflow_id = schedule_workflow_id(schedule_id)

    def pause(self, note: str = "") -> None:
        self.client.signal(self.workflow_id, "pause", note)

    def unpause(self, note: str = "") -> None:
        self.client.signal(self.workflow_id, "unpause", note)

    def trigger(self) -> None:
        """Fire once now (the overlap policy does not hold a manual firing back)."""
        self.client.signal(self.workflow_id, "trigger")

    def delete(self) -> None:
        """Stop firing; workflows it started run on."""
        self.client.signal(self.workflow_id, "delete")

    def describe(self) -> dict[str, Any]:
        result: dict[str, Any] = self.client.query(self.workflow_id, "describe")
        return result


class AsyncScheduleHandle:
    """A schedule through an AsyncClient: the same calls as ScheduleHandle, awaited (nothing
    blocks the event loop)."""

    def __init__(self, client: Any, schedule_id: str) -> None:
        self.client = client
        self.id = schedule_id
        self.workflow_id = schedule_workflow_id(schedule_id)

    async def pause(self, note: str = "") -> None:
        await self.client.signal(self.workflow_id, "pause", note)

    async def unpause(self, note: str = "") -> None:
        await self.client.signal(self.workflow_id, "unpause", note)

    async def trigger(self) -> None:
        await self.client.signal(self.workflow_id, "trigger")

    async def delete(self) -> None:
        await self.client.signal(self.workflow_id, "delete")

    async def describe(self) -> dict[str, Any]:
        result: dict[str, Any] = await self.client.query(self.workflow_id, "describe")
        return result


def schedule_spec(schedule_id: str, workflow_type: str, args: tuple[Any, ...], *, cron: str | None,
                  every: timedelta | float | None, offset: timedelta | float, jitter: timedelta | float,
                  overlap: str, catchup_window: timedelta | float, task_queue: str,
                  execution_timeout: timedelta | float | None, paused: bool, note: str) -> ScheduleSpec:
    def secs(v: timedelta | float) -> float:
        return v.total_seconds() if isinstance(v, timedelta) else float(v)

    spec = ScheduleSpec(schedule_id, workflow_type, list(args), task_queue, cron,
                        None if every is None else secs(every), secs(offset), secs(jitter), overlap,
                        secs(catchup_window), None if execution_timeout is None else secs(execution_timeout),
                        paused, note)
    spec.check()
    return spec



class Schedules:
    """Schedule calls for anything that has `start_workflow`, `signal` and `query` with the
    client's signatures: Client and both test environments inherit them from here."""

    def create_schedule(self, schedule_id: str, workflow: Any, *args: Any, cron: str | None = None,
                        every: timedelta | float | None = None, offset: timedelta | float = 0.0,
                        jitter: timedelta | float = 0.0, overlap: str = "skip",
                        catchup_window: timedelta | float = DEFAULT_CATCHUP, task_queue: str = "default",
                        execution_timeout: timedelta | float | None = None, paused: bool = False,
                        note: str = "") -> ScheduleHandle:
        """Start `workflow(*args)` on `cron` ("0 9 * * MON-FRI", UTC) or `every` interval, as a
        durable schedule (overlap, catch-up window, jitter: this module's docstring). Each firing
        starts a workflow whose id is the schedule id and the firing's time. Raises
        WorkflowAlreadyStartedError if schedule `schedule_id` exists."""
        from processor.client import _workflow_type

        spec = schedule_spec(schedule_id, _workflow_type(workflow), args, cron=cron, every=every, offset=offset,
                             jitter=jitter, overlap=overlap, catchup_window=catchup_window, task_queue=task_queue,
                             execution_timeout=execution_timeout, paused=paused, note=note)
        self.start_workflow(WORKFLOW_TYPE, asdict(spec), id=schedule_workflow_id(schedule_id),  # type: ignore[attr-defined]
                            if_exists="fail")
        return ScheduleHandle(self, schedule_id)

    def get_schedule_handle(self, schedule_id: str) -> ScheduleHandle:
        return ScheduleHandle(self, schedule_id)

    def list_schedules(self) -> list[dict[str, Any]]:
        """The live schedules: the visibility service (`processor ui`) lists the running
        `dp.Schedule` workflows, and each one's processor answers its describe query. Each entry:
        schedule_id, workflow_type, cron, every_s, overlap, paused, note, next_fire_time, fired,
        running (firings open now) -- or, for one whose processor does not answer, schedule_id
        and `error`."""
        from processor.exceptions import ProcessorError

        out: list[dict[str, Any]] = []
        rows = self.list_workflows(f"WorkflowType = '{WORKFLOW_TYPE}' AND ExecutionStatus = 'Running' "  # type: ignore[attr-defined]
                                   "ORDER BY WorkflowId")
        for row in rows:
            schedule_id = str(row["workflow_id"]).removeprefix(f"{schedule_workflow_id('')}")
            try:
                d = self.query(row["workflow_id"], "describe")  # type: ignore[attr-defined]
            except ProcessorError as exc:  # held, or its partition between owners: say so, list the rest
                out.append({"schedule_id": schedule_id, "error": str(exc)})
                continue
            spec = d["spec"]
            out.append({"schedule_id": schedule_id, "workflow_type": spec["workflow_type"], "cron": spec.get("cron"),
                        "every_s": spec.get("every_s"), "overlap": spec.get("overlap"), "paused": d["paused"],
                        "note": d["note"], "next_fire_time": d["next_fire_time"], "fired": d["fired"],
                        "running": len(d["running"])})
        return out
