"""Durable timers in the engine: firing what is due (in due order, within the per-tick budget
and each partition's input horizon), what each kind of timer does, and setting or removing one
-- in the overlay and in wf.timers, in the same transaction. Part of the Engine (engine.py
inherits it); the timer index itself is store.py.
"""

from __future__ import annotations

from collections.abc import Mapping

from processor._engine import keys
from processor._engine.core import EngineParts
from processor._engine.growth import home

# Timer keys: kind letter + seq. u = workflow sleep (timer_seq); r = activity retry backoff,
# s = start-to-close, h = heartbeat (both from the attempt's ActivityStarted), q = schedule-to-start
# (from dispatch to ActivityStarted), c = schedule-to-close (activity_seq); w0 = execution timeout;
# p0 = history retention of a closed workflow (retention.py).
_TIMER_KIND = {"u": "user", "r": "activity_retry", "s": "activity_timeout", "c": "activity_timeout",
               "h": "activity_timeout", "q": "activity_timeout", "w": "workflow_timeout", "p": "retention"}

_RETENTION = frozenset("p")
_ATTEMPT_TIMERS = frozenset(k for k, kind in _TIMER_KIND.items() if kind == "activity_timeout")

# While its partition takes part in a growth, a due heartbeat timeout is looked at again this much later.
GROWTH_HEARTBEAT_DEFER_MS = 1_000


class Timers(EngineParts):
    """Due timers and the timer records of the open transaction."""

    # -- timers --------------------------------------------------------------------------------

    def fire_due_timers(self, now_ms: int, horizons: Mapping[int, int] | None = None) -> int:
        """Fire committed timers that are due, in due order, within the per-tick budget.

        `horizons` bounds each partition's firing below `now_ms`: the loop passes how far that
        partition's input has been read (see ProcessorLoop._horizons), so a timer never fires
        ahead of a command that was already in the log when it fell due -- an activity result
        that arrived in time beats the timeout that fell due while the processor was down."""
        self.now_ms = now_ms
        fired = prunes = 0
        for partition, store in list(self.stores.items()):
            upto = now_ms if horizons is None else min(now_ms, horizons.get(partition, now_ms))
            for due, wid, tkey in store.due_timers(upto, self.settings.timers_per_tick - fired):
                # An earlier fire in this tick may have moved or removed this timer (a retry that
                # deleted its activity's other timers, a cancel): fire only what still stands.
                if store.timer_due(wid, tkey) != due:
                    continue
                if tkey[0] == "p":  # a prune tombstones a whole history: a few per transaction
                    if prunes >= self.settings.prunes_per_tick:
                        continue  # still due: the next tick prunes it
                    prunes += 1
                if self.handing_off and home(wid, self.partitions) != partition \
                        and not self.keeps(partition, wid):
                    self.moved_away(partition, wid)  # its timers go with it, to fire in its new home
                    continue
                if tkey[0] == "h" and (partition in self.waiting or partition in self.handing_off):
                    # A growth is under way here: the attempt's heartbeats may wait in another
                    # partition's input (sent to its old home and forwarded from there -- by a
                    # processor that may be dead until its partitions are taken over -- or parked
                    # here until its hand-off arrives). Not the worker's fault: look again later.
                    self._set_timer(partition, wid, tkey, now_ms + GROWTH_HEARTBEAT_DEFER_MS)
                    continue
                self.firing = (partition, wid, tkey)
                if tkey[0] != "p":  # a prune waits its turn on purpose (prunes_per_tick)
                    self.metrics.timer_lateness.observe(max(0, now_ms - due) / 1000)
                self._fire(partition, wid, tkey)
                self.firing = None
                fired += 1
        self.counters.timers_fired += fired
        return fired

    def quarantine_timer(self, partition: int, wid: str, tkey: str, reason: str) -> None:
        """Remove a timer whose firing raised, and dead-letter it with the reason, so one bad
        timer cannot abort every transaction of the process."""
        self._set_timer(partition, wid, tkey, None)
        self.dead_letter(keys.timer_topic_key(wid, tkey), None, None, partition, -1,
                         f"firing timer {tkey} of workflow {wid!r} raised: {reason}", topic=self.topics.timers)

    def next_due_ms(self) -> int | None:
        dues = [d for d in (s.next_due() for s in self.stores.values()) if d is not None]
        return min(dues) if dues else None

    def next_awaited_due_ms(self) -> int | None:
        """The next timer that something waits on: any but a closed workflow's retention."""
        dues = [d for d in (s.next_due_except(_RETENTION) for s in self.stores.values()) if d is not None]
        return min(dues) if dues else None

    def activity_outstanding(self) -> bool:
        """Whether an activity attempt is dispatched and not settled, as far as its timeout
        timers tell (an attempt without timeouts has none: the worker knows of it). An
        activity's schedule-to-close timer stands through its retry backoffs too: while a
        retry timer waits for it, no attempt of it is out."""
        for store in self.stores.values():
            timers = store.timer_keys_all()
            backoffs = {(wid, tkey[1:]) for wid, tkey in timers if tkey[0] == "r"}
            for wid, tkey in timers:
                if tkey[0] in _ATTEMPT_TIMERS and not (tkey[0] == "c" and (wid, tkey[1:]) in backoffs):
                    return True
        return False

    def is_open(self, workflow_id: str, run_id: str | None) -> bool:
        """Whether `workflow_id`'s run (`run_id`, else its latest) is still running here."""
        store = self.stores.get(home(workflow_id, self.partitions))
        summary = store.summary(workflow_id) if store is not None else None
        if summary is None:
            return False
        return summary.running and (run_id is None or summary.run_id == run_id)

    def has_due(self, now_ms: int, horizons: Mapping[int, int] | None = None) -> bool:
        """Whether fire_due_timers(now_ms, horizons) would find a timer to fire."""
        for partition, store in self.stores.items():
            due = store.next_due()
            upto = now_ms if horizons is None else min(now_ms, horizons.get(partition, now_ms))
            if due is not None and due <= upto:
                return True
        return False

    def _fire(self, partition: int, wid: str, tkey: str) -> None:
        self._set_timer(partition, wid, tkey, None)
        if tkey[0] == "p":
            self._prune(partition, wid)
            return
        live = self._load(partition, wid)
        if live is None or not live.summary.running:
            return
        kind, seq = tkey[0], int(tkey[1:])
        if kind == "u":
            self._input(partition, wid, live, {"type": "TimerFired", "timer_seq": seq})
            return
        if kind == "w":
            self._append(partition, wid, live, {"type": "WorkflowTimedOut"})
            return
        pending = live.summary.activities.get(seq)
        if pending is None:
            return
        if kind == "r":
            self._dispatch(partition, wid, live, self._scheduled_event(partition, wid, live, seq), pending[0])
            return
        which = {"c": "schedule_to_close", "q": "schedule_to_start", "s": "start_to_close", "h": "heartbeat"}[kind]
        message = f"activity {seq} attempt {pending[0]} exceeded its {which}_timeout"
        if self.stores[partition].timer_due(wid, f"r{seq}") is None:
            # The attempt's task is out (not waiting for a retry): whoever runs it, or takes it
            # from the queue later (a new owner of a dead worker's partition), drops it.
            self._cancel_attempts(partition, wid, live.summary.run_id, {seq: list(pending)}, message)
        if kind in ("c", "q"):  # for good: schedule-to-start is not retried (same queue, same wait)
            self._input(partition, wid, live, {"type": "ActivityTimedOut", "activity_seq": seq, "attempt": pending[0],
                                                "timeout_type": which})
        else:
            timeout = {"type": "StartToCloseTimeout" if kind == "s" else "HeartbeatTimeout", "non_retryable": False,
                       "cause": None, "stack_trace": "", "message": message}
            self._attempt_failed(partition, wid, live, seq, pending[0], timeout)

    def _set_timer(self, partition: int, wid: str, tkey: str, due_ms: int | None) -> None:
        store = self.stores[partition]
        if due_ms is None and store.timer_due(wid, tkey) is None:
            return
        store.set_timer(wid, tkey, due_ms)
        key = keys.timer_topic_key(wid, tkey)
        if due_ms is None:
            self.sink.produce(self.topics.timers, partition, key, None)
            return
        rec = {"workflow_id": wid, "timer_key": tkey, "fire_at_ms": due_ms, "kind": _TIMER_KIND[tkey[0]],
               "seq": int(tkey[1:])}
        name = "wf.timers.v1.TimerScheduled"
        self.sink.produce(self.topics.timers, partition, key, self.codec.encode(name, rec), self.codec.headers(name))

    # -- restore --------------------------------------------------------------------------------

    def restore_timer(self, partition: int, key: bytes, value: bytes | None) -> None:
        wid, tkey = keys.split_timer_topic_key(key)
        due = None if value is None else self.codec.decode_as(value, "wf.timers.v1.TimerScheduled")["fire_at_ms"]
        self.stores[partition].set_timer(wid, tkey, due)
