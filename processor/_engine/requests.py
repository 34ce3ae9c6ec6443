"""Commands answered on the replies topic from a workflow's state: queries (read-only) and
updates (validated read-only, then recorded and run as workflow code). Part of the Engine
(engine.py inherits it); see docs/architecture.md, "Queries, updates, continue-as-new, patches".
"""

from __future__ import annotations

from typing import Any

from processor._builtin_queries import HISTORY_QUERY, history_answer, last_event_answer, last_event_only
from processor._engine.core import EngineParts, Live
from processor._engine.state import Summary
from processor._runtime import WorkflowInstance
from processor.exceptions import ProcessorError, QueryFailedError, UpdateRejectedError


class Requests(EngineParts):
    """QueryWorkflow and UpdateWorkflow."""


    def _on_query(self, partition: int, rec: dict[str, Any]) -> str | None:
        """Answer from the live instance, or from one replayed for the purpose (a closed or evicted
        run); nothing is appended. A query is never dead-lettered: its reply is the answer."""
        wid, run = rec["workflow_id"], rec.get("run_id")
        if rec["query_name"] == HISTORY_QUERY:  # from the store: no replay of an evicted run
            cached = self.cache.get(wid)
            known = cached.summary if cached is not None else self.stores[partition].summary(wid)
            if known is None:
                self.outbox.reply(rec, "QueryWorkflow", "not_found", "", f"QueryWorkflow for unknown workflow {wid!r}")
            else:
                self._answer_history(partition, rec, run or known.run_id, known)
            return None
        live = self._load(partition, wid)
        if live is None:
            self.outbox.reply(rec, "QueryWorkflow", "not_found", "", f"QueryWorkflow for unknown workflow {wid!r}")
            return None
        summary = live.summary
        if run and run != summary.run_id:
            self.outbox.reply(rec, "QueryWorkflow", "not_found", summary.run_id,
                        f"run {run} of workflow {wid!r} is not its latest run ({summary.run_id}): "
                        "only the latest run can be queried")
            return None
        instance, temporary = live.instance, False
        if instance is None:  # closed (or held): replay its history into a throw-away instance
            definition = self.definitions.get(summary.workflow_type)
            if definition is None:
                self.outbox.reply(rec, "QueryWorkflow", "failed", summary.run_id,
                            f"workflow type {summary.workflow_type!r} is not registered with this processor")
                return None
            instance, temporary = WorkflowInstance(definition, wid), True
            history = [self.codec.decode_typed(raw) for raw in self.stores[partition].history(wid, summary.run_id)]
            replayed = self._activate(wid, instance, history, replay=True)
            if replayed.error is not None:
                instance.close()
                self.outbox.reply(rec, "QueryWorkflow", "failed", summary.run_id, f"cannot replay the workflow to "
                            f"answer: {replayed.error}")
                return None
        query = instance.query
        try:
            answer, blocked = self.deadline.call(lambda: query(rec["query_name"], rec["args"]),
                                                 self._deadline_s(instance))
        except QueryFailedError as exc:
            self.outbox.reply(rec, "QueryWorkflow", "failed", summary.run_id, str(exc))
            return None
        finally:
            if temporary:
                instance.close()
        if blocked:
            self._interrupted(wid, live, temporary)
            self.outbox.reply(rec, "QueryWorkflow", "failed", summary.run_id,
                              self._blocked(wid, f"query handler {rec['query_name']!r}", instance))
            return None
        self.outbox.reply(rec, "QueryWorkflow", "answered", summary.run_id, "", answer)
        return None

    def _answer_history(self, partition: int, rec: dict[str, Any], run: str, summary: Summary) -> None:
        """The built-in `__history` query (_builtin_queries.py): one page of a run's events,
        straight from this processor's RocksDB -- no replay, no scan of wf.events. The last
        event of the latest run (a client asking whether it closed) is one read."""
        store, wid = self.stores[partition], rec["workflow_id"]
        if run == summary.run_id and summary.last_seq and last_event_only(rec["args"]):
            last = store.event(wid, run, summary.last_seq)
            if last is not None:
                self.outbox.reply(rec, "QueryWorkflow", "answered", run, "",
                                  last_event_answer(run, summary.last_seq, last))
                return
        raws = store.history(wid, run)
        if not raws:
            self.outbox.reply(rec, "QueryWorkflow", "not_found", run,
                              f"no run {run} of workflow {rec['workflow_id']!r} on this processor")
            return
        try:
            answer = history_answer(run, raws, rec["args"])
        except (ValueError, ProcessorError) as exc:
            self.outbox.reply(rec, "QueryWorkflow", "failed", run, str(exc))
            return
        self.outbox.reply(rec, "QueryWorkflow", "answered", run, "", answer)

    def _deadline_s(self, instance: WorkflowInstance) -> float:
        return instance.activation_deadline_s or self.settings.activation_deadline_ms / 1000

    def _blocked(self, wid: str, what: str, instance: WorkflowInstance) -> str:
        return (f"the {what} of workflow {wid!r} blocked the processor's event loop for more than "
                f"{self._deadline_s(instance):g}s (time.sleep, blocking I/O or a long computation?): it was "
                "interrupted; handlers must only read the workflow's state")

    def _interrupted(self, wid: str, live: Live, temporary: bool) -> None:
        """A handler interrupted halfway may leave its instance in any state: the cached one is
        dropped and rebuilt from history when next needed (the workflow itself goes on)."""
        if not temporary and live.instance is not None:
            self._evict(wid)
            live.instance = None

    def _on_update(self, partition: int, rec: dict[str, Any]) -> str | None:
        """Validate on the live instance (read-only) and, if accepted, record it: the handler runs
        as the workflow's code and its WorkflowUpdateCompleted is answered (_update_done). A
        rejected update leaves no trace; a repeated request id is answered, never applied again."""
        wid, uid = rec["workflow_id"], rec["request_id"]
        live = self._load(partition, wid)
        if live is None:
            self.outbox.reply(rec, "UpdateWorkflow", "not_found", "", f"UpdateWorkflow for unknown workflow {wid!r}")
            return None
        summary = live.summary
        reason = self._addressed(rec, live)
        known = summary.updates.get(uid) if reason is None else None
        if known is not None:  # the same update again: its outcome, now or when it completes
            self.counters.duplicates += 1
            if known[1]:
                self._answer_update(partition, wid, live, rec, known[1])
            elif summary.running:
                self._update_waiters.setdefault((wid, uid), []).append(rec)
            else:
                self.outbox.reply(rec, "UpdateWorkflow", "failed", summary.run_id,
                                  f"workflow {wid!r} closed ({summary.status}) before update {uid!r} completed")
            return None
        if reason is None and not summary.running:
            reason = f"workflow {wid!r} is {summary.status}: a closed workflow takes no updates"
        if reason is None and live.instance is None:
            reason = f"workflow {wid!r} is held ({summary.held}): updates wait for code that replays it"
        if reason is None:
            instance = live.instance
            assert instance is not None
            try:
                _, blocked = self.deadline.call(lambda: instance.validate_update(rec["update_name"], rec["args"]),
                                                self._deadline_s(instance))
            except UpdateRejectedError as exc:
                reason = str(exc)
            else:
                if blocked:
                    reason = self._blocked(wid, f"validator of update {rec['update_name']!r}", instance)
                    self._interrupted(wid, live, False)
        if reason is not None:
            self.outbox.reply(rec, "UpdateWorkflow", "rejected", summary.run_id, reason)
            return None
        self._input(partition, wid, live, {"type": "WorkflowUpdateAccepted", "update_id": uid,
                                           "update_name": rec["update_name"], "args": rec["args"],
                                           "reply_partition": rec["reply_partition"]})
        return None

    def _answer_update(self, partition: int, wid: str, live: Live, rec: dict[str, Any], seq: int) -> None:
        raw = self.stores[partition].event(wid, live.summary.run_id, seq)
        done = self.codec.decode_typed(raw) if raw is not None else {"failure": None, "result": None}
        failure = done.get("failure")
        if failure is not None:
            self.outbox.reply(rec, "UpdateWorkflow", "failed", live.summary.run_id, failure.get("message", ""),
                              failure=failure)
        else:
            self.outbox.reply(rec, "UpdateWorkflow", "completed", live.summary.run_id, "", done.get("result"))

    def _update_done(self, partition: int, wid: str, live: Live, event: dict[str, Any]) -> None:
        """An update's handler finished (WorkflowUpdateCompleted appended): answer its caller and
        whoever sent the same request id meanwhile."""
        uid = event["update_id"]
        known = live.summary.updates.get(uid)
        for rec in self._update_callers(wid, uid, known[0] if known is not None else -1):
            self._answer_update(partition, wid, live, rec, event["seq"])

    def _updates_orphaned(self, wid: str, live: Live, status: str) -> None:
        """The run closed with updates still running: their callers hear so."""
        for uid, (p, done) in live.summary.updates.items():
            if done:
                continue
            for rec in self._update_callers(wid, uid, p):
                self.outbox.reply(rec, "UpdateWorkflow", "failed", live.summary.run_id,
                                  f"workflow {wid!r} closed ({status}) before update {uid!r} completed")

    def _update_callers(self, wid: str, uid: str, reply_partition: int) -> list[dict[str, Any]]:
        """Who hears how update `uid` ended: the sender recorded with it (reply partition -1: none)
        and whoever repeated its request id while it ran."""
        callers = self._update_waiters.pop((wid, uid), [])
        if reply_partition >= 0:
            callers.insert(0, {"workflow_id": wid, "request_id": uid, "reply_partition": reply_partition})
        return callers
