"""Activity attempts in the engine: starts, results, failures and heartbeats from workers, retries,
the task each attempt is dispatched as (and where), and cancelling running attempts. Part of the
Engine (engine.py inherits it); the retry rule itself is retry.py, the worker's side worker.py.
"""

from __future__ import annotations

from typing import Any

from processor import _tracing
from processor._codec.partitioner import partition_for
from processor._engine.core import EV, EngineParts, Live
from processor._engine.retry import next_retry_delay_ms
from processor._names import task_queue_problem
from processor._payload import Payload


class Activities(EngineParts):
    """ActivityStarted / ActivityCompleted / ActivityFailed / ActivityHeartbeat, dispatch, retry and cancel."""


    def _pending_activity(self, partition: int, rec: dict[str, Any],
                          what: str = "activity result") -> tuple[Live | None, str | None]:
        """The workflow and a DLQ reason; (None, None) means a duplicate or late result to ignore."""
        wid, seq = rec["workflow_id"], rec["activity_seq"]
        live = self._load(partition, wid)
        if live is None:
            return None, f"{what} for unknown workflow {wid!r}"
        run = rec.get("run_id")
        if run and run != live.summary.run_id:
            self.counters.duplicates += 1  # a late result of an earlier run of the id
            return None, None
        if seq < 1 or seq > live.summary.max_activity_seq:
            return None, f"{what} for activity_seq {seq} that workflow {wid!r} never scheduled"
        pending = live.summary.activities.get(seq)
        if pending is None or pending[0] != rec["attempt"] or not live.summary.running:
            self.counters.duplicates += 1
            return None, None
        return live, None

    def _on_activity_completed(self, partition: int, rec: dict[str, Any]) -> str | None:
        live, reason = self._pending_activity(partition, rec)
        if live is None:
            return reason
        wid = rec["workflow_id"]
        self._input(partition, wid, live, {"type": "ActivityCompleted", "activity_seq": rec["activity_seq"],
                                            "attempt": rec["attempt"], "result": rec["result"]})
        return None

    def _on_activity_failed(self, partition: int, rec: dict[str, Any]) -> str | None:
        live, reason = self._pending_activity(partition, rec)
        if live is None:
            return reason
        self._attempt_failed(partition, rec["workflow_id"], live, rec["activity_seq"], rec["attempt"], rec["failure"])
        return None

    def _on_activity_started(self, partition: int, rec: dict[str, Any]) -> str | None:
        """A worker starts an attempt: its start-to-close and heartbeat clocks start now, its
        schedule-to-start clock stops. The same attempt started again (Kafka redelivered its task
        to another worker after the first lost the partition without committing it) restarts
        them: the new runner gets the whole time. A start of an attempt that is no longer
        current (retried, finished, or of a closed run) is told at once it is canceled."""
        live, reason = self._pending_activity(partition, rec, "activity start")
        if live is None:
            if reason is None:
                self._cancel_stale_start(partition, rec)
            return reason
        self._attempt_started(partition, rec["workflow_id"], live, rec["activity_seq"], rec.get("elapsed_ms") or 0)
        return None

    def _attempt_started(self, partition: int, wid: str, live: Live, seq: int, elapsed_ms: int = 0) -> None:
        """The attempt's clocks count from its start, `elapsed_ms` before now (a worker holds the
        report of a young attempt back); one that has already run over is due at once."""
        scheduled = self._scheduled_event(partition, wid, live, seq)
        self._set_timer(partition, wid, f"q{seq}", None)
        began = self.now_ms - max(0, elapsed_ms)
        for kind, field in (("s", "start_to_close_timeout_ms"), ("h", "heartbeat_timeout_ms")):
            if scheduled.get(field):
                self._set_timer(partition, wid, f"{kind}{seq}", max(self.now_ms, began + scheduled[field]))

    def _cancel_stale_start(self, partition: int, rec: dict[str, Any]) -> None:
        queue = rec.get("task_queue") or ""
        if task_queue_problem(queue) is not None:
            return  # nowhere to tell it (a worker that does not say its queue, or a bad name)
        wid, seq, attempt = rec["workflow_id"], rec["activity_seq"], rec["attempt"]
        live = self._load(partition, wid)
        summary = live.summary if live is not None else None
        if summary is None or (rec.get("run_id") and rec["run_id"] != summary.run_id) or not summary.running:
            why = "its workflow run is closed"
        elif seq in summary.activities:
            why = f"attempt {summary.activities[seq][0]} is the current one"
        else:
            why = "the activity has finished"
        topic = self.sink.task_topic(queue)
        self.outbox.cancel_attempt(topic, self._task_partition(queue, wid, attempt), {
            "workflow_id": wid, "run_id": rec.get("run_id") or "", "activity_seq": seq, "attempt": attempt,
            "reason": f"activity {seq} attempt {attempt} of workflow {wid!r} is no longer current: {why}"})

    def _on_activity_heartbeat(self, partition: int, rec: dict[str, Any]) -> str | None:
        live, reason = self._pending_activity(partition, rec)
        if live is None:
            return reason
        wid, seq = rec["workflow_id"], rec["activity_seq"]
        if rec.get("details") is not None:
            self._beat_details[(wid, live.summary.run_id, seq)] = (rec["attempt"], rec["details"])
        store = self.stores[partition]
        # Only a started activity with a heartbeat timeout has an h-timer; the others need no decode.
        if store.timer_due(wid, f"h{seq}") is not None:
            timeout = self._scheduled_event(partition, wid, live, seq)["heartbeat_timeout_ms"]
            self._set_timer(partition, wid, f"h{seq}", self.now_ms + timeout)
        elif store.timer_due(wid, f"s{seq}") is None:
            # No clock runs yet: a worker that sends no ActivityStarted; its first beat starts the attempt.
            self._attempt_started(partition, wid, live, seq)
        return None

    def _attempt_failed(self, partition: int, wid: str, live: Live, seq: int, attempt: int,
                        failure: dict[str, Any]) -> None:
        scheduled = self._scheduled_event(partition, wid, live, seq)
        delay = next_retry_delay_ms(scheduled.get("retry_policy"), attempt, failure)
        beat = self._beat_details.pop((wid, live.summary.run_id, seq), None)
        # This attempt's last beat; if it sent none, what it was handed (the progress stands).
        details = beat[1] if beat is not None and beat[0] == attempt else \
            self._previous_details(partition, wid, live, seq, attempt)
        if delay is not None:
            self._append(partition, wid, live, {
                "type": "ActivityAttemptFailed", "activity_seq": seq, "attempt": attempt, "failure": failure,
                "next_attempt": attempt + 1, "retry_at_ms": self.now_ms + delay, "last_heartbeat_details": details})
            return
        self._input(partition, wid, live, {"type": "ActivityFailed", "activity_seq": seq, "attempt": attempt,
                                            "failure": failure})

    def _scheduled_event(self, partition: int, wid: str, live: Live, seq: int) -> dict[str, Any]:
        sched_seq = live.summary.activities[seq][1]
        raw = self.stores[partition].event(wid, live.summary.run_id, sched_seq)
        assert raw is not None, f"history of {wid} lacks its ActivityScheduled event seq {sched_seq}"
        return self.codec.decode_as(raw, EV + "ActivityScheduled")

    def _dispatch(self, partition: int, wid: str, live: Live, scheduled: dict[str, Any], attempt: int) -> None:
        queue = scheduled["task_queue"]
        task = {
            "workflow_id": wid, "activity_seq": scheduled["activity_seq"], "attempt": attempt,
            "activity_type": scheduled["activity_type"], "task_queue": queue, "args": scheduled["args"],
            "scheduled_time_ms": self.now_ms, "start_to_close_timeout_ms": scheduled.get("start_to_close_timeout_ms"),
            "heartbeat_timeout_ms": scheduled.get("heartbeat_timeout_ms"),
            "workflow_type": live.summary.workflow_type, "run_id": live.summary.run_id,
            "heartbeat_details": self._previous_details(partition, wid, live, scheduled["activity_seq"], attempt),
            "schedule_to_start_timeout_ms": scheduled.get("schedule_to_start_timeout_ms"),
        }
        name = "wf.tasks.v1.ActivityTask"
        headers = self.codec.headers(name)
        t = _tracing.tracer()
        if t is not None:  # StartActivity: the worker's RunActivity span is its child
            span = _tracing.start(t, f"StartActivity:{task['activity_type']}", self._trace_parent(live), {
                "workflow_id": wid, "run_id": live.summary.run_id, "activity_seq": task["activity_seq"],
                "attempt": attempt, "task_queue": queue}, kind="PRODUCER")
            headers = [*headers, _tracing.header(span)]
            span.end()
        self.sink.produce(self.sink.task_topic(queue), self._task_partition(queue, wid, attempt), wid.encode(),
                          self.codec.encode(name, task), headers)
        # Start-to-close and heartbeat clocks start with the attempt (ActivityStarted); the time
        # in the queue is schedule-to-start's.
        if scheduled.get("schedule_to_start_timeout_ms"):
            self._set_timer(partition, wid, f"q{scheduled['activity_seq']}",
                            self.now_ms + scheduled["schedule_to_start_timeout_ms"])

    def _task_partition(self, queue: str, wid: str, attempt: int) -> int | None:
        """Where an attempt's task goes. Attempt 1: where its key (the workflow id) puts it (None).
        A retry goes one partition further per attempt: the partition of the attempt that timed
        out may belong to a worker that died, and stays with it until the group's session
        timeout; there the retry would wait, and time out, again."""
        if attempt > 1:
            n = self.sink.task_partitions(queue)
            if n > 1:
                return (partition_for(wid.encode(), n) + attempt - 1) % n
        return None

    def _cancel_attempts(self, partition: int, wid: str, run_id: str, pending: dict[int, list[int]],
                         reason: str) -> None:
        """Tell the workers running these attempts (activity_seq -> [attempt, scheduled seq]) that
        they are canceled: an ActivityCancel on the partition each attempt's task went to."""
        for seq, (attempt, sched_seq) in pending.items():
            raw = self.stores[partition].event(wid, run_id, sched_seq)
            if raw is None:
                continue
            queue = self.codec.decode_as(raw, EV + "ActivityScheduled")["task_queue"]
            topic = self.sink.task_topic(queue)
            self.outbox.cancel_attempt(topic, self._task_partition(queue, wid, attempt), {
                "workflow_id": wid, "run_id": run_id, "activity_seq": seq, "attempt": attempt, "reason": reason})

    def _previous_details(self, partition: int, wid: str, live: Live, seq: int, attempt: int) -> Payload | None:
        """What the last heartbeat of the attempt before `attempt` reported (its ActivityAttemptFailed)."""
        failed_seq = live.summary.failed_attempts.get(seq) if attempt > 1 else None
        if failed_seq is None:
            return None
        raw = self.stores[partition].event(wid, live.summary.run_id, failed_seq)
        return self.codec.decode_as(raw, EV + "ActivityAttemptFailed").get("last_heartbeat_details") if raw else None
