"""What the processor does with one command or one due timer, Kafka-free.

The Kafka loop (loop.py) feeds decoded input here and commits what this produces; everything in
here writes only to a `Sink` (records for the open transaction) and to the partition overlays
(PartitionStore.batch). That keeps the decision logic testable without a broker and keeps the
commit protocol in exactly one place (loop.py).

Every state change is an event appended through `_append`, which (1) gives it the next seq and
the batch clock, (2) encodes it once, (3) produces it to wf.events, (4) adds it to the overlay and
folds it into the summary, and (5) runs its side effects (tasks, timers, completions). Restore
rebuilds from the same events with the same fold, so live and restored state cannot drift.

The rules for activity attempts (activities.py), for commands answered from a workflow's state
-- queries and updates (requests.py) --, for durable timers (timers.py) and for the hand-offs
of a growth (handoff.py) live in their own modules that Engine inherits; what they share with
it is core.py.
"""

from __future__ import annotations

import logging
import os
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

from processor import _tracing
from processor._codec import Codec
from processor._engine import keys
from processor._engine.activities import Activities
from processor._engine.core import CMD, EV, Counters, Headers, Live, Sink
from processor._engine.deadline import Deadline
from processor._engine.growth import Layout, home
from processor._engine.handoff import DONE, HAND_OFF, META_KEY_PREFIX, HandOffs, LayoutBehind
from processor._engine.outbox import Outbox
from processor._engine.requests import Requests
from processor._engine.retention import Retention
from processor._engine.runs import (
    ALLOW_DUPLICATE,
    ATTACHED,
    REFUSED,
    USE_EXISTING,
    StartDecision,
    decide_start,
    policy_problem,
)
from processor._engine.settings import Settings
from processor._engine.state import CLOSING_STATUS, fold
from processor._engine.store import PartitionStore
from processor._engine.timers import Timers
from processor._kafka.messages import dlq_headers
from processor._limits import MAX_RECORD_BYTES, too_large
from processor._metrics import ProcessorMetrics
from processor._names import task_queue_problem
from processor._payload import Payload
from processor._runtime import Completion, WorkflowInstance
from processor._search import wire_problem
from processor.exceptions import DecodeError
from processor.workflow import WorkflowDefinition

log = logging.getLogger("processor.engine")
START_NAME = CMD + "StartWorkflow"


def builtin_workflows() -> tuple[type, ...]:
    """The workflows every processor runs besides the app's: schedules (processor/schedule.py).
    Their types begin with "dp." (not listed as the app's)."""
    from processor.schedule import ScheduleWorkflow

    return (ScheduleWorkflow,)

class Engine(Activities, Requests, HandOffs, Timers, Retention):
    def __init__(self, settings: Settings, workflows: Sequence[type], codec: Codec, sink: Sink,
                 partitions: int | Layout) -> None:
        self.settings = settings
        self.codec = codec
        self.sink = sink
        # The layout of the co-partitioned topics (growth.py): what homes are computed from.
        self.layout = partitions if isinstance(partitions, Layout) else Layout(partitions)
        self.partitions = self.layout.partitions
        partitions = self.partitions
        self.handing_off: set[int] = set()  # old partitions of the last growth not done handing off
        # Of those, the ones whose input the loop has not read to the end (handoff.py, `keeps`).
        self.behind: set[int] = set()
        self.waiting: set[int] = set()  # new partitions waiting for their hand-offs (parking)
        self._scan_after: dict[int, str] = {}  # where each partition's scan for movers goes on
        self.topics = settings.topics
        self.definitions: dict[str, WorkflowDefinition] = {}
        for cls in (*workflows, *builtin_workflows()):
            d = WorkflowDefinition.of(cls)
            self.definitions.setdefault(d.name, d)
        self.stores: dict[int, PartitionStore] = {}
        self.cache: OrderedDict[str, Live] = OrderedDict()
        self.touched: set[str] = set()
        self.counters = Counters()
        self._span: Any = None  # the workflow task being run, when tracing (processor/_tracing.py)
        self.metrics = ProcessorMetrics()  # histograms the rules observe; the loop serves them
        self.metrics.attach(self)
        self.now_ms = 0
        self.firing: tuple[int, str, str] | None = None  # the timer being fired, for quarantine
        self.deadline = Deadline()
        self.outbox = Outbox(sink, codec, settings.topics, partitions)
        # (workflow id, update id) -> repeated UpdateWorkflow requests waiting for that update to
        # complete. In memory only: after a crash a caller retries and gets the recorded outcome.
        self._update_waiters: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # (workflow id, run id, activity_seq) -> (attempt, the details of that attempt's last heartbeat).
        # In memory: recorded in ActivityAttemptFailed when the attempt fails. A beat applied by a
        # processor that then dies is lost only if the activity dies too (a live one beats again).
        self._beat_details: dict[tuple[str, str, int], tuple[int, Payload]] = {}
        self._handlers = {
            CMD + "StartWorkflow": self._on_start,
            CMD + "SignalWorkflow": self._on_signal,
            CMD + "CancelWorkflow": self._on_cancel,
            CMD + "TerminateWorkflow": self._on_terminate,
            CMD + "ActivityCompleted": self._on_activity_completed,
            CMD + "ActivityFailed": self._on_activity_failed,
            CMD + "ActivityHeartbeat": self._on_activity_heartbeat,
            CMD + "ActivityStarted": self._on_activity_started,
            CMD + "QueryWorkflow": self._on_query,
            CMD + "UpdateWorkflow": self._on_update,
            CMD + "ChildWorkflowResult": self._on_child_result,
            HAND_OFF: self._on_hand_off,
        }

    # -- partitions ------------------------------------------------------------------------

    def open_partition(self, partition: int, store: PartitionStore) -> None:
        self.stores[partition] = store

    def close_partition(self, partition: int) -> None:
        store = self.stores.pop(partition, None)
        if store is None:
            return
        self.handing_off.discard(partition)
        self.waiting.discard(partition)
        self._scan_after.pop(partition, None)
        previous = self.layout.previous
        for wid in [w for w in self.cache if home(w, self.partitions) == partition
                    or (previous and home(w, previous) == partition)]:
            self._evict(wid)
        store.close()

    def resume_held(self, partition: int) -> None:
        """A (re)assigned partition retries its held workflows: new code may replay them now."""
        for wid in self.stores[partition].held_workflows():
            if home(wid, self.partitions) == partition:  # a mover is resumed in its new home
                self._load(partition, wid)

    # -- input -------------------------------------------------------------------------------

    def handle_command(self, partition: int, key: bytes | None, value: bytes | None, headers: Headers | None,
                       offset: int) -> None:
        self.counters.commands += 1
        if value is None:
            self.dead_letter(key, value, headers, partition, offset, "empty value (tombstone) on the commands topic")
            return
        try:
            name, rec = self.codec.decode_checked(value, headers)
        except DecodeError as exc:
            self.dead_letter(key, value, headers, partition, offset, f"undecodable command: {exc}")
            return
        if name in (DONE, HAND_OFF) and rec["epoch"] > self.layout.epoch:
            # Another processor adopted a growth this one has not seen yet: it must adopt it
            # before it can place this record (the loop aborts, catches up, and reads it again).
            raise LayoutBehind(f"a {name.rsplit('.', 1)[-1]} of growth epoch {rec['epoch']} reached partition "
                               f"{partition}, whose layout is at epoch {self.layout.epoch}")
        if name == DONE:
            self._on_hand_off_done(partition, rec)
            return
        self.apply_decoded(partition, key, value, headers, offset, name, rec)

    def apply_decoded(self, partition: int, key: bytes | None, value: bytes, headers: Headers | None, offset: int,
                      name: str, rec: dict[str, Any]) -> None:
        handler = self._handlers.get(name)
        if handler is None:
            self.dead_letter(key, value, headers, partition, offset, f"{name} is not a command this processor accepts")
            return
        wid = rec["workflow_id"]
        if not wid or "\x00" in wid:
            self.dead_letter(key, value, headers, partition, offset, f"invalid workflow_id {wid!r}")
            return
        owner = home(wid, self.partitions)
        if owner != partition:
            # A producer with another partitioner (or a stale partition count) put it here:
            # forward it, in this transaction, to the partition that owns the workflow -- after
            # the workflow itself if the topics grew and it has not been handed off yet.
            if self.handing_off:
                if self.keeps(partition, wid):
                    owner = partition  # it still lives here, and this partition is behind: applied here
                else:
                    self.moved_away(partition, wid)
        if owner != partition:
            self.counters.forwarded += 1
            self.sink.produce(self.topics.commands, owner, key or wid.encode(), value, headers)
            return
        if partition in self.waiting and name != HAND_OFF and self.parks(partition, wid):
            self.park(partition, name, value, offset)  # until its hand-off (or the partition's last) arrives
            return
        if headers and name == START_NAME:
            parent = _tracing.header_value(headers)
            if parent is not None:  # the starter's trace: recorded in WorkflowStarted (processor/_tracing.py)
                rec["traceparent"] = parent
        reason = handler(partition, rec)
        if reason is not None:
            self.dead_letter(key, value, headers, partition, offset, reason)

    def _on_start(self, partition: int, rec: dict[str, Any]) -> str | None:
        wid = rec["workflow_id"]
        problem = policy_problem(rec.get("id_reuse_policy") or ALLOW_DUPLICATE, rec.get("if_exists") or USE_EXISTING)
        if problem is None:
            problem = task_queue_problem(rec.get("task_queue") or "default")
        if problem is None and rec.get("search_attributes"):
            problem = wire_problem(rec["search_attributes"])
        if problem is None:
            size = sum(len(a["data"]) for a in rec["args"])
            if size > MAX_RECORD_BYTES:
                problem = too_large(f"the input of workflow {wid!r}", size)
        if problem is not None:
            existing = self._load(partition, wid)
            existing_run = existing.summary.run_id if existing is not None else ""
            self.outbox.reply(rec, "StartWorkflow", REFUSED, existing_run, problem)
            return f"StartWorkflow of {wid!r}: {problem}"
        latest = self._load(partition, wid)
        decision: StartDecision = decide_start(latest.summary if latest is not None else None, rec)
        if latest is not None and decision.outcome != "started":
            self.counters.duplicates += decision.outcome == ATTACHED
            if decision.outcome == ATTACHED and rec.get("signal_name") and latest.summary.running:
                self._signal_with_start(partition, wid, latest, rec)
            self.outbox.reply(rec, "StartWorkflow", decision.outcome, latest.summary.run_id, decision.message)
            if decision.outcome == REFUSED and rec.get("parent_workflow_id") is not None:
                self.outbox.to_parent([rec["parent_workflow_id"], rec.get("parent_run_id") or "",
                                       rec["parent_child_seq"]], wid, "", "start_refused", None, {
                                    "type": "WorkflowAlreadyStarted", "message": decision.message, "stack_trace": "",
                                    "non_retryable": True, "cause": None})
            return None
        if latest is not None and decision.terminate_running:
            self._append(partition, wid, latest, {"type": "WorkflowTerminated",
                                                   "reason": "terminated by a new start (id_reuse_policy "
                                                             "terminate_if_running)"})
        if latest is not None:
            self._evict(wid)  # the closed run's cache entry; the new run gets its own
        run_id = keys.new_run_id()
        live = self._start_run(partition, wid, rec, run_id, None)
        if rec.get("signal_name") and live.summary.running:
            # Signal-with-start: the signal follows the start's first step, in the same transaction.
            self._signal_with_start(partition, wid, live, rec)
        self.outbox.reply(rec, "StartWorkflow", "started", run_id, "")
        return None

    def _signal_with_start(self, partition: int, wid: str, live: Live, rec: dict[str, Any]) -> None:
        self._input(partition, wid, live, _start_signal(rec))

    def _start_run(self, partition: int, wid: str, rec: dict[str, Any], run_id: str,
                   continued_from: str | None) -> Live:
        definition = self.definitions.get(rec["workflow_type"])
        started = {
            "type": "WorkflowStarted", "workflow_type": rec["workflow_type"], "args": rec["args"],
            "task_queue": rec.get("task_queue") or "default",
            "execution_timeout_ms": rec.get("execution_timeout_ms"),
            "random_seed": int.from_bytes(os.urandom(8), "big") >> 1, "request_id": rec.get("request_id"),
            "run_id": run_id, "continued_from_run_id": continued_from,
            "parent_workflow_id": rec.get("parent_workflow_id"), "parent_run_id": rec.get("parent_run_id"),
            "parent_child_seq": rec.get("parent_child_seq"),
            "search_attributes": rec.get("search_attributes") or {}, "memo": rec.get("memo") or {},
            "traceparent": rec.get("traceparent") or self._new_trace(wid, rec["workflow_type"], run_id),
        }
        live = Live(None, None)  # type: ignore[arg-type]  # summary is set by the first _append
        self._append(partition, wid, live, started)
        if definition is None:
            registered = ", ".join(sorted(n for n in self.definitions if not n.startswith("dp."))) or "none"
            self._append(partition, wid, live, {"type": "WorkflowFailed", "failure": {
                "type": "UnknownWorkflowType",
                "message": f"workflow type {rec['workflow_type']!r} is not registered with this processor "
                           f"(registered: {registered})",
                "stack_trace": "", "non_retryable": True, "cause": None}})
            return live
        live.instance = WorkflowInstance(definition, wid)
        self._cache_put(wid, live)
        self._run(partition, wid, live, [started])
        return live

    def _on_signal(self, partition: int, rec: dict[str, Any]) -> str | None:
        return self._deliver(partition, rec, {"type": "SignalReceived", "signal_name": rec["signal_name"],
                                              "args": rec["args"], "request_id": rec.get("request_id")})

    def _on_cancel(self, partition: int, rec: dict[str, Any]) -> str | None:
        live = self._load(partition, rec["workflow_id"])
        if live is not None and self._addressed(rec, live) is None and (
                live.summary.cancel_requested and live.summary.running or live.summary.status == "canceled"):
            self.counters.duplicates += 1  # a repeated cancel
            self.outbox.reply(rec, "CancelWorkflow", "delivered", live.summary.run_id, "")
            return None
        return self._deliver(partition, rec, {"type": "WorkflowCancelRequested", "reason": rec.get("reason", "")})

    def _on_terminate(self, partition: int, rec: dict[str, Any]) -> str | None:
        wid = rec["workflow_id"]
        live = self._load(partition, wid)
        if live is not None and live.summary.status == "terminated" and self._addressed(rec, live) is None:
            self.counters.duplicates += 1  # a repeated terminate
            self.outbox.reply(rec, "TerminateWorkflow", "delivered", live.summary.run_id, "")
            return None
        return self._deliver(partition, rec, {"type": "WorkflowTerminated", "reason": rec.get("reason", "")})

    def _addressed(self, rec: dict[str, Any], live: Live) -> str | None:
        """Why a command addressed to a run (run_id set), or sent by a parent to its child
        (parent_workflow_id set), may not apply to the id's current run."""
        run = rec.get("run_id")
        if run and run != live.summary.run_id:
            return (f"run {run} of workflow {rec['workflow_id']!r} is not its current run "
                    f"({live.summary.run_id or 'started before runs'}, {live.summary.status})")
        parent = rec.get("parent_workflow_id")
        if parent is not None and (live.summary.parent is None
                                   or live.summary.parent[:2] != [parent, rec.get("parent_run_id") or ""]):
            return (f"workflow {rec['workflow_id']!r} is not a child of run {rec.get('parent_run_id')} of "
                    f"{parent!r}: the child never started under this id")
        return None

    def _deliver(self, partition: int, rec: dict[str, Any], event: dict[str, Any]) -> str | None:
        """Append an input to the addressed run, or refuse: to the sender (reply) and the DLQ."""
        wid = rec["workflow_id"]
        command = _COMMAND_OF[event["type"]]
        live = self._load(partition, wid)
        reason: str | None
        if live is None:
            reason = f"{command} for unknown workflow {wid!r}"
        else:
            reason = self._addressed(rec, live)
            if reason is None and not live.summary.running:
                reason = f"{command} for workflow {wid!r} that is already {live.summary.status}"
        if reason is not None:
            if live is None:
                self.outbox.reply(rec, command, "not_found", "", reason)
            else:
                self.outbox.reply(rec, command, "rejected", live.summary.run_id, reason)
            return reason
        assert live is not None
        if event["type"] == "WorkflowTerminated":
            self._append(partition, wid, live, event)
        else:
            self._input(partition, wid, live, event)
        self.outbox.reply(rec, command, "delivered", live.summary.run_id, "")
        return None

    # -- the append path -------------------------------------------------------------------------

    def _append(self, partition: int, wid: str, live: Live, event: dict[str, Any]) -> None:
        summary = live.summary
        run_id = summary.run_id if summary is not None else event["run_id"]  # None: a WorkflowStarted
        event["workflow_id"] = wid
        event["seq"] = (summary.last_seq if summary is not None else 0) + 1
        event["time_ms"] = self.now_ms
        if event["type"] == "WorkflowContinuedAsNew":
            event.setdefault("new_run_id", keys.new_run_id())
        name = EV + event["type"]
        value = self.codec.encode(name, event)
        if len(value) > MAX_RECORD_BYTES:
            # Kafka would refuse the record and abort the whole transaction, again after every
            # restart. The workflow fails instead, once, saying which event and how large.
            value = self._oversized(wid, event, len(value))
            name = EV + event["type"]
        self.sink.produce(self.topics.events, partition, keys.event_key(wid, run_id, event["seq"]), value,
                          self.codec.headers(name))
        store = self.stores[partition]
        store.add_event(wid, run_id, event["seq"], value)
        if summary is not None and summary.activities and event["type"] in CLOSING_STATUS:
            self._cancel_attempts(partition, wid, run_id, dict(summary.activities),
                                  f"workflow {wid!r} closed ({CLOSING_STATUS[event['type']]})")
        live.summary = fold(summary, event)
        store.put_summary(live.summary)
        self.touched.add(wid)
        self.counters.events += 1
        self._side_effects(partition, wid, live, event)

    def _oversized(self, wid: str, event: dict[str, Any], size: int) -> bytes:
        """Turn an event too large for Kafka into the WorkflowFailed that replaces it (same seq)."""
        what = f"event {event['type']} (seq {event['seq']}) of workflow {wid!r}"
        log.error("%s", too_large(what, size))
        failed = {"type": "WorkflowFailed", "workflow_id": wid, "seq": event["seq"], "time_ms": event["time_ms"],
                  "failure": {"type": "PayloadTooLarge", "message": too_large(what, size), "stack_trace": "",
                              "non_retryable": True, "cause": None}}
        event.clear()
        event.update(failed)
        return self.codec.encode(EV + "WorkflowFailed", event)

    def _side_effects(self, partition: int, wid: str, live: Live, event: dict[str, Any]) -> None:
        etype = event["type"]
        if etype == "ActivityScheduled":
            self._dispatch(partition, wid, live, event, 1)
            if event.get("schedule_to_close_timeout_ms"):
                self._set_timer(partition, wid, f"c{event['activity_seq']}",
                                self.now_ms + event["schedule_to_close_timeout_ms"])
        elif etype == "WorkflowStarted" and event.get("execution_timeout_ms"):
            self._set_timer(partition, wid, "w0", self.now_ms + event["execution_timeout_ms"])
        elif etype == "TimerStarted":
            self._set_timer(partition, wid, f"u{event['timer_seq']}", event["fire_at_ms"])
        elif etype == "ChildWorkflowStarted":
            self.outbox.start_child(wid, live.summary.run_id, event, self._trace_parent(live))
        elif etype == "ChildWorkflowSignaled":
            self.outbox.signal_child(wid, live.summary.run_id, event)
        elif etype == "ChildWorkflowCancelRequested":
            self.outbox.cancel_child(wid, live.summary.run_id, event["child_workflow_id"],
                                     f"requested by parent workflow {wid!r}")
        elif etype == "WorkflowCancelRequested":
            if live.summary.activities:
                why = event.get("reason") or "no reason given"
                self._cancel_attempts(partition, wid, live.summary.run_id, live.summary.activities,
                                      f"workflow {wid!r} was asked to cancel: {why}")
            for child_id, policy in live.summary.children.values():
                if policy != "abandon":
                    self.outbox.cancel_child(wid, live.summary.run_id, child_id,
                                             f"parent workflow {wid!r} is canceled")
        elif etype == "TimerCanceled":
            self._set_timer(partition, wid, f"u{event['timer_seq']}", None)
        elif etype in ("ActivityCompleted", "ActivityFailed", "ActivityTimedOut"):
            self._beat_details.pop((wid, live.summary.run_id, event["activity_seq"]), None)
            for kind in "schrq":  # the activity is over: none of its timers may fire
                self._set_timer(partition, wid, f"{kind}{event['activity_seq']}", None)
        elif etype == "ActivityAttemptFailed":
            for kind in "shq":  # the attempt is over
                self._set_timer(partition, wid, f"{kind}{event['activity_seq']}", None)
            self._set_timer(partition, wid, f"r{event['activity_seq']}", event["retry_at_ms"])
        elif etype == "WorkflowUpdateCompleted":
            self._update_done(partition, wid, live, event)
        elif etype in CLOSING_STATUS:
            self._updates_orphaned(wid, live, CLOSING_STATUS[etype])
            self._close(partition, wid, live, event)
            if etype == "WorkflowContinuedAsNew":
                self._continue(partition, wid, live, event)

    def _close(self, partition: int, wid: str, live: Live, event: dict[str, Any]) -> None:
        if self._beat_details:
            for gone in [k for k in self._beat_details if k[0] == wid]:
                del self._beat_details[gone]
        for tkey in self.stores[partition].timer_keys(wid):
            self._set_timer(partition, wid, tkey, None)
        if event["type"] != "WorkflowContinuedAsNew":
            self._keep_until(partition, wid)
        self.outbox.close_children(wid, live.summary.run_id, live.summary.children)
        parent = live.summary.parent
        if parent is not None and event["type"] != "WorkflowContinuedAsNew":
            status = CLOSING_STATUS[event["type"]]
            failure = event.get("failure")
            if failure is None and status != "completed":
                failure = {"type": status.capitalize().replace("_", ""), "message": event.get("reason") or status,
                           "stack_trace": "", "non_retryable": True, "cause": None}
            self.outbox.to_parent(parent, wid, live.summary.run_id, status, event.get("result"), failure)
        rec: dict[str, Any] = {"workflow_id": wid, "workflow_type": live.summary.workflow_type,
                               "close_time_ms": self.now_ms, "run_id": live.summary.run_id}
        for field in ("result", "failure", "reason", "new_run_id"):
            if field in event:
                rec[field] = event[field]
        name = "wf.completions.v1." + event["type"]
        headers = self.codec.headers(name)
        t = _tracing.tracer()
        if t is not None:
            span = _tracing.start(t, f"CompleteWorkflow:{live.summary.workflow_type}", self._trace_parent(live),
                                  {"workflow_id": wid, "run_id": live.summary.run_id,
                                   "status": CLOSING_STATUS[event["type"]]})
            if event.get("failure"):
                _tracing.failed(span, str(event["failure"].get("message")))
            headers = [*headers, _tracing.header(span)]
            span.end()
        self.sink.produce(self.topics.completions, None, wid.encode(), self.codec.encode(name, rec), headers)
        if live.instance is not None:
            live.instance.close()
            live.instance = None

    # -- child workflows (the messages they exchange: outbox.py) ---------------------------------

    def _on_child_result(self, partition: int, rec: dict[str, Any]) -> str | None:
        wid = rec["workflow_id"]
        live = self._load(partition, wid)
        if live is None:
            return f"ChildWorkflowResult for unknown workflow {wid!r}"
        pending = live.summary.children.get(rec["child_seq"])
        if (not live.summary.running or rec["run_id"] != live.summary.run_id or pending is None
                or pending[0] != rec["child_workflow_id"]):
            self.counters.duplicates += 1  # its parent run closed, or the child reported already
            return None
        self._input(partition, wid, live, {
            "type": "ChildWorkflowCompleted", "child_seq": rec["child_seq"],
            "child_workflow_id": rec["child_workflow_id"],
            "result": rec.get("result"), "failure": rec.get("failure"), "child_run_id": rec["child_run_id"],
            "status": rec["status"]})
        return None

    def _continue(self, partition: int, wid: str, live: Live, event: dict[str, Any]) -> None:
        """The next run of a run that continued as new, in the same transaction; it keeps the
        request_id of the chain's first start (a retry of that start attaches to the chain)."""
        self._evict(wid)
        rec = {"workflow_id": wid, "workflow_type": event["workflow_type"], "args": event["args"],
               "task_queue": event["task_queue"], "execution_timeout_ms": event.get("execution_timeout_ms"),
               "request_id": live.summary.request_id,
               "search_attributes": event.get("search_attributes") or {}, "memo": event.get("memo") or {},
               "traceparent": live.summary.traceparent}  # the chain stays in its trace
        if live.summary.parent is not None:  # a child's chain reports to its parent at its end
            rec["parent_workflow_id"], rec["parent_run_id"], rec["parent_child_seq"] = live.summary.parent
        self._start_run(partition, wid, rec, event["new_run_id"], live.summary.run_id)

    def _input(self, partition: int, wid: str, live: Live, event: dict[str, Any]) -> None:
        """Append an input event and let the workflow react to it (`_append` fills in its seq)."""
        self._append(partition, wid, live, event)
        self._run(partition, wid, live, [event])

    def _run(self, partition: int, wid: str, live: Live, events: list[dict[str, Any]]) -> None:
        """Activate the workflow with new input events; append the commands it emits."""
        if live.instance is None:
            if not live.summary.running:
                return
            # Held (nondeterminism) or evicted mid-batch: replaying history includes `events`.
            self._evict(wid)
            self._load(partition, wid)
            return
        t = _tracing.tracer()
        outer = self._span  # a continue-as-new runs the next run's first task inside this one
        if t is not None:  # a RunWorkflow span: what this task dispatches and closes are its children
            self._span = _tracing.start(t, f"RunWorkflow:{live.summary.workflow_type}", live.summary.traceparent,
                                        {"workflow_id": wid, "run_id": live.summary.run_id,
                                         "events": len(events)})
        try:
            completion = self._activate(wid, live.instance, events, replay=False)
            if completion.error is not None:
                if self._span is not None:
                    _tracing.failed(self._span, completion.error)
                self._hold(partition, wid, live, completion.error)
                return
            for command in completion.commands:
                if not live.summary.running:
                    break  # a command closed it (e.g. an oversized result failed it): the rest is moot
                self._append(partition, wid, live, dict(command))
        finally:
            if self._span is not None and self._span is not outer:
                self._span.end()
            self._span = outer
        if self.settings.always_replay:
            self._evict(wid)

    def _new_trace(self, wid: str, workflow_type: str, run_id: str) -> str | None:
        """A run started untraced (a client without OpenTelemetry) gets a trace of its own here,
        when this processor traces: a StartWorkflow span, the root of the run's spans."""
        t = _tracing.tracer()
        if t is None:
            return None
        span = _tracing.start(t, f"StartWorkflow:{workflow_type}", None, {"workflow_id": wid, "run_id": run_id},
                              kind="CONSUMER")
        span.end()
        return _tracing.traceparent(span)

    def _trace_parent(self, live: Live) -> str | None:
        """The trace context a record produced now carries: the running workflow task's span,
        else the run's own (processor/_tracing.py); None when tracing is off or the run has none."""
        if self._span is not None:
            return _tracing.traceparent(self._span)
        return live.summary.traceparent

    def _hold(self, partition: int, wid: str, live: Live, error: Exception) -> None:
        log.error("workflow %s held: %s", wid, error, extra={
            "workflow_id": wid, "run_id": live.summary.run_id, "workflow_type": live.summary.workflow_type,
            "partition": partition})
        if live.instance is not None:
            live.instance.close()
            live.instance = None
        if live.summary.held is None:
            self._append(partition, wid, live, {"type": "WorkflowTaskFailed", "reason": str(error)})

    # -- cache -----------------------------------------------------------------------------------

    def _load(self, partition: int, wid: str) -> Live | None:
        live = self.cache.get(wid)
        if live is not None:
            self.cache.move_to_end(wid)
            self.counters.cache_hits += 1
            return live
        self.counters.cache_misses += 1
        store = self.stores[partition]
        summary = store.summary(wid)
        if summary is None:
            return None
        live = Live(summary, None)
        self._cache_put(wid, live)
        definition = self.definitions.get(summary.workflow_type)
        if summary.running and definition is not None:
            self.counters.replays += 1
            instance = WorkflowInstance(definition, wid)
            history = [self.codec.decode_typed(raw) for raw in store.history(wid, summary.run_id)]
            completion = self._activate(wid, instance, history, replay=True)
            if completion.error is not None:
                instance.close()
                self._hold(partition, wid, live, completion.error)
                return live
            live.instance = instance
            if summary.held is not None:  # the code deployed now replays it: release the hold
                self._append(partition, wid, live, {"type": "WorkflowTaskRecovered"})
            for command in completion.commands:  # commands a held workflow owed: now recorded
                if not live.summary.running:
                    break
                self._append(partition, wid, live, dict(command))
        return live

    def _activate(self, wid: str, instance: WorkflowInstance, events: list[dict[str, Any]], *,
                  replay: bool) -> Completion:
        """`instance.activate(events)` under the activation deadline (see deadline.py). A replay
        may take longer than one live step (it runs the whole history) but never long enough to
        overrun the transaction."""
        limit = instance.activation_deadline_s or self.settings.activation_deadline_ms / 1000
        if replay:
            limit = max(limit, self.settings.transaction_timeout_ms / 1000 * 0.4)
        return self.deadline.activate(instance, events, limit, f"workflow {wid!r}",
                                      "replaying" if replay else "running")

    def _cache_put(self, wid: str, live: Live) -> None:
        self.cache[wid] = live
        while len(self.cache) > self.settings.cache_size:
            old, evicted = self.cache.popitem(last=False)
            if evicted.instance is not None:
                evicted.instance.close()

    def _evict(self, wid: str) -> None:
        live = self.cache.pop(wid, None)
        if live is not None and live.instance is not None:
            live.instance.close()

    # -- transaction outcome ---------------------------------------------------------------------

    def begin(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def committed(self) -> None:
        """Step 3 of the commit protocol (loop.py): the overlays go to RocksDB."""
        for store in self.stores.values():
            store.flush()
        self.touched.clear()

    def aborted(self) -> None:
        """The transaction aborted: forget its overlay and every instance it advanced."""
        for store in self.stores.values():
            store.discard()
        for wid in self.touched:
            self._evict(wid)
        self.touched.clear()
        # The hand-off progress it made is undone too: recomputed from the committed state.
        self._scan_after.clear()
        for p in list(self.stores):
            self.partition_ready(p)

    # -- dead letters ----------------------------------------------------------------------------

    def dead_letter(self, key: bytes | None, value: bytes | None, headers: Headers | None, partition: int, offset: int,
                    reason: str, topic: str | None = None) -> None:
        topic = topic or self.topics.commands
        self.counters.dlq += 1
        log.warning("dead-lettered %s[%d]@%d: %s", topic, partition, offset, reason, extra={
            "partition": partition, "offset": offset,
            "workflow_id": key.decode(errors="replace").partition("@")[0] if key else None})
        out = dlq_headers(headers, reason, topic, partition, offset)
        self.sink.produce(self.topics.dlq, None, key or b"", value, out)

    # -- restore -------------------------------------------------------------------------------------

    def restore_events_record(self, partition: int, key: bytes | None, value: bytes | None) -> None:
        """One committed wf.events record, whatever it is: an event, a tombstone (a workflow
        handed off), or hand-off state (NUL-prefixed key; handoff.py)."""
        if key is not None and key.startswith(META_KEY_PREFIX):
            self.restore_meta(partition, key, value)
        elif value is None:
            if key is not None:
                self.restore_tombstone(partition, key)
        else:
            self.restore_event(partition, key, value)

    def restore_event(self, partition: int, key: bytes | None, value: bytes) -> None:
        """Apply one committed wf.events record to the partition overlay (idempotent). The run
        comes from the key; a WorkflowStarted of a run not yet seen begins the id's next run."""
        store = self.stores[partition]
        event = self.codec.decode_typed(value)
        wid = event["workflow_id"]
        parsed = keys.split_event_key(key or b"")
        run = parsed[1] if parsed is not None and parsed[0] == wid else event.get("run_id", "")
        summary = store.summary(wid)
        if summary is not None and run != summary.run_id:
            if event["type"] != "WorkflowStarted" or store.event(wid, run, event["seq"]) is not None:
                return  # an earlier run's record, already applied
            summary = None
        elif summary is not None and event["seq"] <= summary.last_seq:
            return
        store.add_event(wid, run, event["seq"], value)
        store.put_summary(fold(summary, event))

def _start_signal(rec: dict[str, Any]) -> dict[str, Any]:
    return {"type": "SignalReceived", "signal_name": rec["signal_name"], "args": rec.get("signal_args") or [],
            "request_id": rec.get("request_id")}


_COMMAND_OF = {"SignalReceived": "SignalWorkflow", "WorkflowCancelRequested": "CancelWorkflow",
               "WorkflowTerminated": "TerminateWorkflow"}
