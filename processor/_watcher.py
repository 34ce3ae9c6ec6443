"""The client's background reader: the completion partitions someone asked about, and the
client's own partition of the replies topic.

Completions are read from where each watched partition ended when the client first watched it
(never from its beginning: a compacted completions partition holds every workflow ever closed),
handed to whoever waits on the run, and the last CACHE_MAX of them kept (a bounded cache: a
client that watches a million completions holds ten thousand). A run that closed before its
partition was watched is the client's to learn otherwise (client.py asks the processor).
Replies are read from where the client's partition ended when the client first needed it (a
reply is for the client that asked, never history), and handed to whoever waits on its
request_id. One consumer and one thread serve both, for every waiter of the client.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from processor._codec import default_codec
from processor._codec.partitioner import partition_for
from processor._kafka.config import client_config
from processor._kafka.messages import consume_available
from processor._kafka.topics import TopicNames
from processor.exceptions import DecodeError, KafkaUnavailableError

log = logging.getLogger("processor.client")

Completion = tuple[str, dict[str, Any]]  # (record short name, fields)
Reply = dict[str, Any]  # a wf.replies.v1.CommandReply
CACHE_MAX = 10_000  # completions kept after their waiters were served (per cache: by run, by id)


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
        self.results: OrderedDict[tuple[str, str], Completion] = OrderedDict()  # (id, run) -> completion
        self.latest: OrderedDict[str, Completion] = OrderedDict()  # workflow id -> its last completion read
        # The client's own starts (pin/unpin): their completions are kept apart, never evicted,
        # for as long as the client remembers the start -- result() waits on nothing else for them.
        self.pinned: set[str] = set()
        self.kept: dict[str, dict[str, Completion]] = {}  # workflow id -> run -> completion
        self.callbacks: dict[tuple[str, str | None], list[Callable[[Completion], None]]] = {}
        self.reply_callbacks: dict[str, Callable[[Reply], None]] = {}
        self._watched: dict[int, threading.Event] = {}  # partition -> set once it is read from its end
        self._add: list[int] = []  # partitions to start reading (the thread assigns them)

        self._stop = False
        self._thread = threading.Thread(target=self._run, name="completions", daemon=True)
        self._thread.start()

    def _end_of(self, tp: TopicPartition, within_s: float = 30.0, close_on_error: bool = True) -> int:
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
                    if close_on_error:
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

    def watching(self, workflow_id: str) -> bool:
        ready = self._watched.get(partition_for(workflow_id.encode(), self.partitions))
        return ready is not None and ready.is_set()

    def watch(self, workflow_id: str, within_s: float = 60.0) -> None:
        """Read the completions partition of `workflow_id` from its end now: when this returns,
        every completion written from here on reaches the waiters. The first watch of a partition
        waits for the reader thread to find the partition's end and assign it (the consumer is
        the thread's alone: a watermark query from another thread while it consumes hangs)."""
        p = partition_for(workflow_id.encode(), self.partitions)
        with self.lock:
            ready = self._watched.get(p)
            if ready is None:
                ready = self._watched[p] = threading.Event()
                self._add.append(p)
        if ready.is_set():
            return
        if threading.current_thread() is self._thread:  # a callback of the thread itself: assign here
            self._assign_new()
            return
        if not ready.wait(within_s):
            raise KafkaUnavailableError(f"cannot read the end of {self.completions_topic}[{p}] within {within_s:g}s")

    def _assign_new(self) -> None:
        """(The reader thread.) Start reading the partitions asked for, each from its end now."""
        with self.lock:
            add, self._add = self._add, []
        for p in add:
            try:
                end = self._end_of(TopicPartition(self.completions_topic, p), close_on_error=False)
            except KafkaUnavailableError as exc:
                log.warning("%s; trying again", exc)
                with self.lock:
                    self._add.append(p)
                continue
            self.consumer.incremental_assign([TopicPartition(self.completions_topic, p, end)])
            self._watched[p].set()

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
                    ready = self._cached(workflow_id, new_run)
                    if ready is None:
                        self.callbacks.setdefault((workflow_id, new_run), []).append(follow)
                        return
                res = ready
            fn(res)

        self.watch(workflow_id)
        with self.lock:
            ready = self.latest.get(workflow_id) if run_id is None else self._cached(workflow_id, run_id)
            if ready is None:
                self.callbacks.setdefault((workflow_id, run_id), []).append(follow)
        if ready is not None:
            follow(ready)
        return follow  # what cancel() takes

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
            if self._add:
                self._assign_new()
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
                    self._keep(wid, run, res)
                    fire.extend((fn, res) for fn in self.callbacks.pop((wid, run), ()))
                    fire.extend((fn, res) for fn in self.callbacks.pop((wid, None), ()))
                for reply in replies:
                    fn = self.reply_callbacks.pop(reply["request_id"], None)
                    if fn is not None:
                        fire.append((fn, reply))
            for fn, arg in fire:
                fn(arg)

    def pin(self, workflow_id: str) -> None:
        with self.lock:
            self.pinned.add(workflow_id)

    def unpin(self, workflow_id: str) -> None:
        with self.lock:
            self.pinned.discard(workflow_id)
            self.kept.pop(workflow_id, None)

    def _cached(self, wid: str, run: str) -> Completion | None:
        kept = self.kept.get(wid)
        return (kept.get(run) if kept is not None else None) or self.results.get((wid, run))

    def _keep(self, wid: str, run: str, res: Completion) -> None:
        """Cache a completion read (under the lock): a pinned id's apart, the others dropping the
        oldest past CACHE_MAX."""
        if wid in self.pinned:
            self.kept.setdefault(wid, {})[run] = res
        else:
            self.results[(wid, run)] = res
            self.results.move_to_end((wid, run))
        self.latest[wid] = res
        self.latest.move_to_end(wid)
        while len(self.results) > CACHE_MAX:
            self.results.popitem(last=False)
        while len(self.latest) > CACHE_MAX:
            self.latest.popitem(last=False)

    def close(self) -> None:
        self._stop = True
        self._thread.join(5)
        self.consumer.close()
