"""Activity attempts in the engine: results, failures and heartbeats from workers, retries,
the task each attempt is dispatched as (and where), and cancelling running attempts. Part of the
Engine (engine.py inherits it); the retry rule itself is retry.py, the worker's side worker.py.
"""

from __future__ import annotations

from typing import Any

from processor._codec.partitioner import partition_for
from processor._engine.core import EV, EngineParts, Live
from processor._engine.retry import next_retry_delay_ms
from processor._payload import Payload


class Activities(EngineParts):
    """ActivityCompleted / ActivityFailed / ActivityHeartbeat, dispatch, retry and cancel."""


    def _pending_activity(self, partition: int, rec: dict[str, Any]) -> tuple[Live | None, str | None]:
        """The workflow and a DLQ reason; (None, None) means a duplicate or late result to ignore."""
        wid, seq = rec["workflow_id"], rec["activity_seq"]
        live = self._load(partition, wid)
        if live is None:
            return None, f"activity result for unknown workflow {wid!r}"
        run = rec.get("run_id")
        if run and run != live.summary.run_id:
            self.counters.duplicates += 1  # a late result of an earlier run of the id
            return None, None
        if seq < 1 or seq > live.summary.max_activity_seq:
            return None, f"activity result for activity_seq {seq} that workflow {wid!r} never scheduled"
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

    def _on_activity_heartbeat(self, partition: int, rec: dict[str, Any]) -> str | None:
        live, reason = self._pending_activity(partition, rec)
        seq = rec["activity_seq"]
        if live is not None and rec.get("details") is not None:
            self._beat_details[(rec["workflow_id"], live.summary.run_id, seq)] = (rec["attempt"], rec["details"])
        # Only an activity with a heartbeat timeout has an h-timer; the others need no decode.
        if live is not None and self.stores[partition].timer_due(rec["workflow_id"], f"h{seq}") is not None:
            timeout = self._scheduled_event(partition, rec["workflow_id"], live, seq)["heartbeat_timeout_ms"]
            self._set_timer(partition, rec["workflow_id"], f"h{seq}", self.now_ms + timeout)
        return reason

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
        }
        name = "wf.tasks.v1.ActivityTask"
        self.sink.produce(self.sink.task_topic(queue), self._task_partition(queue, wid, attempt), wid.encode(),
                          self.codec.encode(name, task), self.codec.headers(name))
        seq = scheduled["activity_seq"]
        if scheduled.get("start_to_close_timeout_ms"):
            self._set_timer(partition, wid, f"s{seq}", self.now_ms + scheduled["start_to_close_timeout_ms"])
        if scheduled.get("heartbeat_timeout_ms"):
            self._set_timer(partition, wid, f"h{seq}", self.now_ms + scheduled["heartbeat_timeout_ms"])

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
        name = "wf.tasks.v1.ActivityCancel"
        for seq, (attempt, sched_seq) in pending.items():
            raw = self.stores[partition].event(wid, run_id, sched_seq)
            if raw is None:
                continue
            queue = self.codec.decode_as(raw, EV + "ActivityScheduled")["task_queue"]
            rec = {"workflow_id": wid, "run_id": run_id, "activity_seq": seq, "attempt": attempt, "reason": reason}
            self.sink.produce(self.sink.task_topic(queue), self._task_partition(queue, wid, attempt), wid.encode(),
                              self.codec.encode(name, rec), self.codec.headers(name))

    def _previous_details(self, partition: int, wid: str, live: Live, seq: int, attempt: int) -> Payload | None:
        """What the last heartbeat of the attempt before `attempt` reported (its ActivityAttemptFailed)."""
        failed_seq = live.summary.failed_attempts.get(seq) if attempt > 1 else None
        if failed_seq is None:
            return None
        raw = self.stores[partition].event(wid, live.summary.run_id, failed_seq)
        return self.codec.decode_as(raw, EV + "ActivityAttemptFailed").get("last_heartbeat_details") if raw else None
