"""The client's background reader: the completion partitions someone asked about, and the
client's own partition of the replies topic.

Completions are read from the beginning of each watched partition and kept per (workflow, run);
replies are read from where the client's partition ended when the client first needed it (a
reply is for the client that asked, never history), and handed to whoever waits on its
request_id. One consumer and one thread serve both, for every waiter of the client.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from typing import Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from processor._codec import default_codec
from processor._codec.partitioner import partition_for
from processor._kafka.config import client_config
from processor._kafka.messages import consume_available
from processor._kafka.topics import TopicNames
from processor.exceptions import DecodeError, KafkaUnavailableError

log = logging.getLogger("processor.client")

Completion = tuple[str, dict[str, Any]]  # (record short name, fields)
Reply = dict[str, Any]  # a wf.replies.v1.CommandReply


class Watcher:
    def __init__(self, bootstrap: str, topics: TopicNames) -> None:
        self.completions_topic = topics.completions
        self.replies_topic = topics.replies
        self.consumer = Consumer(client_config(
            "consumer", bootstrap, "client-watcher", {"fetch.wait.max.ms": 10, "log_level": 3},
            fixed={"group.id": f"{topics.prefix}.client-{uuid.uuid4().hex}", "isolation.level": "read_committed",
                   "enable.auto.commit": False}))
        self.partitions = self._count(self.completions_topic)
        # Replies: one partition of the topic, chosen at random (clients spread over them), read
        # from its end now -- before this client sends anything that asks for a reply.
        self.reply_partition = random.randrange(self._count(self.replies_topic))
        high = self._end_of(TopicPartition(self.replies_topic, self.reply_partition))
        self.consumer.incremental_assign([TopicPartition(self.replies_topic, self.reply_partition, high)])
        self.codec = default_codec()
        self.lock = threading.Lock()
        self.results: dict[str, dict[str, Completion]] = {}  # workflow id -> run id -> completion
        self.latest: dict[str, Completion] = {}  # workflow id -> its last completion read
        self.callbacks: dict[tuple[str, str | None], list[Callable[[Completion], None]]] = {}
        self.reply_callbacks: dict[str, Callable[[Reply], None]] = {}
        self._watched: set[int] = set()
        self._add: list[int] = []

        self._stop = False
        self._thread = threading.Thread(target=self._run, name="completions", daemon=True)
        self._thread.start()

    def _end_of(self, tp: TopicPartition, within_s: float = 30.0) -> int:
        """The partition's end offset; retried while the broker cannot say yet (a topic created a
        moment ago has no leader for a while)."""
        deadline = time.monotonic() + within_s
        while True:
            try:
                _, high = self.consumer.get_watermark_offsets(tp, timeout=max(1.0, deadline - time.monotonic()))
                return int(high)
            except KafkaException as exc:
                if time.monotonic() >= deadline or not exc.args[0].retriable() and exc.args[0].code() not in (
                        KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE,
                        KafkaError.UNKNOWN_TOPIC_OR_PART):
                    self.consumer.close()
                    raise KafkaUnavailableError(f"cannot read the end of {tp.topic}[{tp.partition}]: "
                                                f"{exc.args[0]}") from None
                time.sleep(0.1)

    def _count(self, topic: str) -> int:
        try:
            md = self.consumer.list_topics(topic, timeout=30)
        except KafkaException as exc:
            self.consumer.close()
            raise KafkaUnavailableError(f"cannot read {topic} from Kafka: {exc.args[0]}") from None
        if topic not in md.topics or md.topics[topic].error is not None:
            raise KafkaUnavailableError(f"topic {topic} does not exist: run `processor topics create` first")
        return len(md.topics[topic].partitions)

    # -- completions -----------------------------------------------------------------------------

    def watch(self, workflow_id: str) -> None:
        p = partition_for(workflow_id.encode(), self.partitions)
        with self.lock:
            if p not in self._watched:
                self._watched.add(p)
                self._add.append(p)

    def on_result(self, workflow_id: str, run_id: str | None,
                  fn: Callable[[Completion], None]) -> Callable[[Completion], None]:
        """Call `fn(completion)` from the watcher thread once run `run_id` of `workflow_id` has
        closed (now, if it has); run_id None: the id's latest completion, whichever run. A run
        that continued as new is followed to the run that continues it, and on to the last."""

        def follow(res: Completion) -> None:
            # Walks the runs already closed in a loop (a chain of thousands of runs must not
            # recurse), and waits on the first one not closed yet.
            while res[0] == "WorkflowContinuedAsNew":
                new_run = res[1]["new_run_id"]
                with self.lock:
                    ready = self.results.get(workflow_id, {}).get(new_run)
                    if ready is None:
                        self.callbacks.setdefault((workflow_id, new_run), []).append(follow)
                        return
                res = ready
            fn(res)

        self.watch(workflow_id)
        with self.lock:
            ready = self.latest.get(workflow_id) if run_id is None else self.results.get(workflow_id, {}).get(run_id)
            if ready is None:
                self.callbacks.setdefault((workflow_id, run_id), []).append(follow)
        if ready is not None:
            follow(ready)
        return follow  # what cancel() takes

    def wait(self, workflow_id: str, run_id: str | None, timeout: float | None) -> Completion:
        """Block until the completion arrives: `on_result` with an Event."""
        done = threading.Event()
        box: list[Completion] = []

        def arrived(res: Completion) -> None:
            box.append(res)
            done.set()

        registered = self.on_result(workflow_id, run_id, arrived)
        if not done.wait(timeout):
            self.cancel(workflow_id, run_id, registered)
            if not box:
                raise TimeoutError(f"workflow {workflow_id!r} did not complete within {timeout}s")
        return box[0]

    def cancel(self, workflow_id: str, run_id: str | None, registered: Callable[[Completion], None]) -> None:
        """Forget a callback on_result registered (a waiter that gave up), wherever along the
        id's chain of runs it waits now."""
        with self.lock:
            for key in [k for k in self.callbacks if k[0] == workflow_id]:
                waiting = self.callbacks[key]
                if registered in waiting:
                    waiting.remove(registered)
                if not waiting:
                    del self.callbacks[key]

    # -- replies ---------------------------------------------------------------------------------

    def expect_reply(self, request_id: str, fn: Callable[[Reply], None]) -> None:
        """Call `fn(reply)` from the watcher thread when the reply to `request_id` arrives.
        Register before sending the command."""
        with self.lock:
            self.reply_callbacks[request_id] = fn

    def forget_reply(self, request_id: str) -> None:
        with self.lock:
            self.reply_callbacks.pop(request_id, None)

    # -- the thread ------------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop:
            with self.lock:
                add, self._add = self._add, []
            if add:
                self.consumer.incremental_assign(
                    [TopicPartition(self.completions_topic, p, OFFSET_BEGINNING) for p in add])
            msgs = consume_available(self.consumer, 500, 0.05)
            if not msgs:
                if not self._watched and not self.reply_callbacks:
                    time.sleep(0.02)
                continue
            got: list[tuple[str, Completion]] = []
            replies: list[Reply] = []
            for m in msgs:
                value = m.value()
                if m.error() is not None or value is None:
                    continue
                try:
                    name, rec = self.codec.decode(value)
                except DecodeError as exc:  # e.g. a record of a newer schema: skip it, keep serving
                    log.warning("skipping a record on %s[%d]@%d: %s", m.topic(), m.partition(), m.offset(), exc)
                    continue
                if m.topic() == self.replies_topic:
                    replies.append(rec)
                else:
                    got.append((rec["workflow_id"], (name.rpartition(".")[2], rec)))
            fire: list[tuple[Callable[[Any], None], Any]] = []
            with self.lock:
                for wid, res in got:
                    run = res[1].get("run_id", "")
                    self.results.setdefault(wid, {})[run] = res
                    self.latest[wid] = res
                    fire.extend((fn, res) for fn in self.callbacks.pop((wid, run), ()))
                    fire.extend((fn, res) for fn in self.callbacks.pop((wid, None), ()))
                for reply in replies:
                    fn = self.reply_callbacks.pop(reply["request_id"], None)
                    if fn is not None:
                        fire.append((fn, reply))
            for fn, arg in fire:
                fn(arg)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.consumer.close()
