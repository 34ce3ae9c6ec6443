"""What the engine sends to other workflows, to clients and to the workers running attempts, as
records of the open transaction.

Every message between a parent and its child is a command on wf.commands, produced in the
transaction of the step that causes it -- so each is sent exactly once with that step -- and
idempotent where it lands: a child start by its request id `<parent>/<run>/child/<seq>`, a child
result by the parent's pending child_seq, and what a parent sends its child only applies to the
child that parent run started (parent_workflow_id / parent_run_id). Replies to clients go to the
partition of wf.replies the command named.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from processor import _tracing
from processor._codec import Codec
from processor._codec.partitioner import partition_for
from processor._payload import Payload

if TYPE_CHECKING:
    from processor._engine.core import Sink
    from processor._kafka.topics import TopicNames

CMD = "wf.commands.v1."
REPLY = "wf.replies.v1.CommandReply"
CANCEL = "wf.tasks.v1.ActivityCancel"


class Outbox:
    def __init__(self, sink: Sink, codec: Codec, topics: TopicNames, partitions: int) -> None:
        self.sink = sink
        self.codec = codec
        self.topics = topics
        self.partitions = partitions
        self.replies = 0

    def reply(self, rec: dict[str, Any], command: str, outcome: str, run_id: str, message: str,
              result: Payload | None = None, failure: dict[str, Any] | None = None) -> None:
        """Answer a command that asked for it (reply_partition and request_id set), in this
        transaction: the reply is committed exactly when what it reports is."""
        p, request_id = rec.get("reply_partition"), rec.get("request_id")
        if p is None or not request_id:
            return
        self.replies += 1
        reply = {"request_id": request_id, "workflow_id": rec["workflow_id"], "run_id": run_id, "command": command,
                 "outcome": outcome, "message": message, "result": result, "failure": failure}
        self.sink.produce(self.topics.replies, p % self.sink.reply_partitions(), request_id.encode(),
                          self.codec.encode(REPLY, reply), self.codec.headers(REPLY))

    def cancel_attempt(self, task_topic: str, partition: int | None, rec: dict[str, Any]) -> None:
        """Tell the worker running an activity attempt that it is canceled: an ActivityCancel on
        the task partition the attempt's task went to (None: where its key puts it)."""
        self.sink.produce(task_topic, partition, rec["workflow_id"].encode(), self.codec.encode(CANCEL, rec),
                          self.codec.headers(CANCEL))

    def command(self, wid: str, short_name: str, rec: dict[str, Any], traceparent: str | None = None) -> None:
        """A command for workflow `wid`, on the partition that owns it."""
        name = CMD + short_name
        value = self.codec.encode(name, {"workflow_id": wid, **rec})
        headers = self.codec.headers(name)
        if traceparent:
            headers = [*headers, (_tracing.HEADER, traceparent.encode())]
        self.sink.produce(self.topics.commands, partition_for(wid.encode(), self.partitions), wid.encode(), value,
                          headers)

    # -- parent to child ---------------------------------------------------------------------------

    @staticmethod
    def _as_parent(wid: str, run_id: str) -> dict[str, Any]:
        return {"parent_workflow_id": wid, "parent_run_id": run_id}

    def start_child(self, wid: str, run_id: str, event: dict[str, Any], traceparent: str | None = None) -> None:
        """`traceparent`: the parent's trace, which the child's run joins."""
        self.command(event["child_workflow_id"], "StartWorkflow", {
            "workflow_type": event["workflow_type"], "args": event["args"], "task_queue": event["task_queue"],
            "execution_timeout_ms": event.get("execution_timeout_ms"),
            "request_id": f"{wid}/{run_id}/child/{event['child_seq']}", "if_exists": "fail",
            **self._as_parent(wid, run_id), "parent_child_seq": event["child_seq"]}, traceparent)

    def signal_child(self, wid: str, run_id: str, event: dict[str, Any]) -> None:
        self.command(event["child_workflow_id"], "SignalWorkflow", {
            "signal_name": event["signal_name"], "args": event["args"],
            "request_id": f"{wid}/{run_id}/signal/{event['seq']}", **self._as_parent(wid, run_id)})

    def cancel_child(self, wid: str, run_id: str, child_id: str, reason: str) -> None:
        self.command(child_id, "CancelWorkflow", {"reason": reason, **self._as_parent(wid, run_id)})

    def close_children(self, wid: str, run_id: str, children: dict[int, list[str]]) -> None:
        """The parent closed before these children: its parent_close_policy for each."""
        for child_id, policy in children.values():
            reason = f"parent workflow {wid!r} closed (parent_close_policy {policy})"
            if policy == "terminate":
                self.command(child_id, "TerminateWorkflow", {"reason": reason, **self._as_parent(wid, run_id)})
            elif policy == "request_cancel":
                self.cancel_child(wid, run_id, child_id, reason)

    # -- child to parent ---------------------------------------------------------------------------

    def to_parent(self, parent: list[Any], wid: str, run_id: str, status: str, result: Payload | None,
                  failure: dict[str, Any] | None) -> None:
        """`parent` = [parent workflow id, parent run id, child_seq]."""
        self.command(parent[0], "ChildWorkflowResult", {
            "run_id": parent[1], "child_seq": parent[2], "child_workflow_id": wid, "child_run_id": run_id,
            "status": status, "result": result, "failure": failure})
