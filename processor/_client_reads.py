"""What a Client reads: results (the completion watcher, and the owning processor for a run that
closed before the client looked), histories and summaries (the processor's built-in __history
query; the events partition as the fallback), and lists from the visibility service.

A mixin of Client (client.py), which provides the mechanism it uses: the watcher, `_ask` and
`_send`, the codec, the starts this client made. Kept apart so that client.py is the commands
and this is the reads.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, TopicPartition

from processor._answers import _outcome, _refusal, history_events, summarize
from processor._builtin_queries import HISTORY_QUERY, closing_completion, history_page
from processor._codec import Codec
from processor._codec.partitioner import partition_for
from processor._engine.runs import REFUSED, STARTED
from processor._kafka.config import client_config
from processor._kafka.control import read_layout
from processor._kafka.messages import high_watermarks
from processor._kafka.topics import TopicNames
from processor._payload import to_payloads
from processor._watcher import Completion, Reply, Watcher
from processor.exceptions import KafkaUnavailableError, NoReplyError, ProcessorError, WorkflowNotFoundError

if TYPE_CHECKING:
    from processor.client import _Start

__all__ = ["Reads"]

log = logging.getLogger("processor.client")


class Reads:
    if TYPE_CHECKING:
        bootstrap: str
        topics: TopicNames
        codec: Codec
        visibility_url: str | None
        _starts: OrderedDict[str, _Start]

        def _completions(self) -> Watcher: ...
        def _ask(self, short_name: str, workflow_id: str, rec: dict[str, Any], timeout: float,
                 late: Callable[[Reply], None] | None = None) -> Reply: ...
        def _send(self, short_name: str, workflow_id: str, rec: dict[str, Any], wait: bool = True) -> None: ...

    def watch(self, workflow_id: str) -> None:
        """Start reading the partition of `workflow_id`'s completion now (result() does it too)."""
        self._completions().watch(workflow_id)

    def _run_to_wait_for(self, workflow_id: str, run_id: str | None, timeout: float | None) -> str | None:
        """The run whose completion `result()` waits for: the one asked for, else the one this
        client last started (waiting for the start's reply), else None (the latest completion)."""
        if run_id is not None:
            return run_id
        start = self._starts.get(workflow_id)
        if start is None:
            return None
        if not start.replied.wait(timeout):
            raise TimeoutError(f"no processor answered the start of workflow {workflow_id!r} within {timeout}s")
        assert start.reply is not None
        error = _refusal("StartWorkflow", start.reply)
        if error is not None:
            raise error
        run: str = start.reply["run_id"]
        return run

    def completion(self, workflow_id: str, timeout: float | None = None, run_id: str | None = None) -> Completion:
        """The raw completion record: (record short name, fields)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        run = self._run_to_wait_for(workflow_id, run_id, timeout)
        left = None if deadline is None else max(0.0, deadline - time.monotonic())
        done = threading.Event()
        box: list[Completion] = []

        def arrived(res: Completion) -> None:
            box.append(res)
            done.set()

        cancel = self._when_closed(workflow_id, run, arrived, ask=not self._own_new_run(workflow_id, run))
        if not done.wait(left):
            cancel()
            if not box:
                raise TimeoutError(f"workflow {workflow_id!r} did not complete within {timeout}s")
        return box[0]

    def result(self, workflow_id: str, timeout: float | None = None, result_type: object = None,
               run_id: str | None = None) -> Any:
        return _outcome(workflow_id, self.completion(workflow_id, timeout, run_id), result_type)

    def on_result(self, workflow_id: str, fn: Callable[[Completion], None],
                  run_id: str | None = None) -> Callable[[], None]:
        """Call `fn(completion)` on the client's reader thread once the run has closed (the run
        this client last started, once its start is answered, if `run_id` is None). A refused
        start calls `fn(("StartRefused", reply))`. Returns what forgets the waiter (a caller
        that gives up must call it, or the waiter stays)."""
        start = self._starts.get(workflow_id) if run_id is None else None
        if start is None:
            return self._when_closed(workflow_id, run_id, fn, ask=True)
        lock = threading.Lock()
        forgets: list[Callable[[], None]] = []
        gave_up = False

        def answered(reply: Reply) -> None:
            if reply["outcome"] == REFUSED:
                fn(("StartRefused", reply))
                return
            forget = self._when_closed(workflow_id, reply["run_id"], fn, ask=reply["outcome"] != STARTED)
            with lock:
                forgets.append(forget)
                late = gave_up
            if late:
                forget()

        def give_up() -> None:
            nonlocal gave_up
            with lock:
                gave_up = True
                registered = list(forgets)
            for forget in registered:
                forget()

        start.then(answered)
        return give_up

    def _own_new_run(self, workflow_id: str, run: str | None) -> bool:
        """True if `run` is a new run this client started: its completions partition was watched
        before the start was sent (start_workflow), so its completion cannot be missed."""
        start = self._starts.get(workflow_id)
        reply = start.reply if start is not None else None
        return reply is not None and reply["outcome"] == STARTED and reply["run_id"] == run

    def _when_closed(self, workflow_id: str, run: str | None, fn: Callable[[Completion], None],
                     ask: bool) -> Callable[[], None]:
        """Call `fn` once with the completion of `run` (None: the id's latest run), following
        continue-as-new to the last run. The watcher reads completions from when the partition was
        first watched; a run that closed before then is learned from the processor that owns the
        workflow (`ask`: the built-in __history query for the run's last event). Returns what
        forgets the waiter (a caller that gives up)."""
        watcher = self._completions()
        watcher.watch(workflow_id)
        lock = threading.Lock()
        fired = False
        waits: list[tuple[str | None, Callable[[Completion], None]]] = []
        asked: list[str] = []

        def forget() -> None:
            with lock:
                pending, queries = list(waits), list(asked)
            for r, registered in pending:
                watcher.cancel(workflow_id, r, registered)
            for request_id in queries:
                watcher.forget_reply(request_id)

        def once(res: Completion) -> None:
            nonlocal fired
            with lock:
                if fired:
                    return
                fired = True
            forget()
            fn(res)

        def wait_on(r: str | None) -> None:
            registered = watcher.on_result(workflow_id, r, once)
            with lock:
                waits.append((r, registered))

        def ask_about(r: str | None) -> None:
            request_id = uuid.uuid4().hex
            rec = {"query_name": HISTORY_QUERY, "args": to_payloads((-1,)), "run_id": r,
                   "request_id": request_id, "reply_partition": watcher.reply_partition}

            def answered(reply: Reply) -> None:
                try:
                    page = history_page(reply, self.codec.decode_typed)
                except ProcessorError as exc:
                    log.warning("the processor could not say whether %r closed: %s", workflow_id, exc)
                    return
                closed = closing_completion(page) if page is not None else None
                if closed is None:
                    return  # unknown or open: its completion is still to come, and the watcher reads it
                if closed[0] != "WorkflowContinuedAsNew":
                    once(closed)
                    return
                new_run = closed[1]["new_run_id"]  # closed before the watch began: follow it here
                wait_on(new_run)
                ask_about(new_run)

            with lock:
                if fired:
                    return
                asked.append(request_id)
            watcher.expect_reply(request_id, answered)
            self._send("QueryWorkflow", workflow_id, rec, wait=False)

        wait_on(run)
        if ask:
            ask_about(run)
        return forget

    def history(self, workflow_id: str, timeout: float = 30, run_id: str | None = None) -> list[dict[str, Any]]:
        """Every event of one run of the workflow (default: its latest), in order; [] for an id
        no processor knows. Asked of the processor that owns the workflow (the built-in
        `__history` query: pages read from its RocksDB, nothing scanned); if no processor
        answers within `timeout` (none running), read from the events topic instead."""
        _check_id(workflow_id)
        try:
            return self._history_from_processor(workflow_id, run_id, timeout)
        except NoReplyError:
            log.warning("no processor answered for the history of %r within %gs: reading its events partition "
                        "from the beginning instead", workflow_id, timeout)
            return self.history_from_log(workflow_id, timeout, run_id)

    def _history_from_processor(self, workflow_id: str, run_id: str | None, timeout: float) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        events: list[dict[str, Any]] = []
        seq, run = 1, run_id
        while True:
            rec = {"query_name": HISTORY_QUERY, "args": to_payloads((seq,)), "run_id": run,
                   "request_id": uuid.uuid4().hex}
            reply = self._ask("QueryWorkflow", workflow_id, rec, max(0.1, deadline - time.monotonic()))
            page = history_page(reply, self.codec.decode_typed)
            if page is None:
                return events
            run = page.run_id  # every page of the same run, even if a new run starts meanwhile
            events.extend(page.events)
            if page.next_seq is None:
                return events
            seq = page.next_seq

    def history_from_log(self, workflow_id: str, timeout: float = 30,
                         run_id: str | None = None) -> list[dict[str, Any]]:
        """`history`, read from the events topic: the workflow's partition from its beginning (no
        processor needed; slow once the partition holds much history)."""
        _check_id(workflow_id)
        _check_id(workflow_id)
        consumer = Consumer(client_config("consumer", self.bootstrap, "client-history", fixed={
            "group.id": f"{self.topics.prefix}.client-{uuid.uuid4().hex}", "isolation.level": "read_committed",
            "enable.auto.commit": False}))

        def records(tp: TopicPartition, high: int) -> Iterator[tuple[bytes | None, bytes | None]]:
            consumer.assign([TopicPartition(tp.topic, tp.partition, OFFSET_BEGINNING)])
            deadline = time.monotonic() + timeout
            while consumer.position([tp])[0].offset < high:
                if time.monotonic() > deadline:
                    raise KafkaUnavailableError(f"reading history of {workflow_id!r} timed out")
                yield from ((m.key(), m.value()) for m in consumer.consume(1000, timeout=0.2) if m.error() is None)

        def read(p: int) -> list[dict[str, Any]]:
            tp = TopicPartition(self.topics.events, p)
            high = high_watermarks(self.bootstrap, [tp], timeout)[(tp.topic, p)]
            if high == 0:
                return []
            return history_events(workflow_id, records(tp, high), self.codec.decode_typed, run_id)

        try:
            md = consumer.list_topics(self.topics.events, timeout=timeout)
            live = len(md.topics[self.topics.events].partitions)
            home = partition_for(workflow_id.encode(), live)
            events = read(home)
            if events:
                return events
            # Not home yet: the topics grew and the workflow is still on (or on its way from) its
            # partition under an earlier count. Its events stay there until the hand-off is done.
            for p in self._earlier_homes(workflow_id, live) - {home}:
                events = read(p)
                if events:
                    return events
            return []
        except KafkaException as exc:
            raise KafkaUnavailableError(f"reading history of {workflow_id!r} failed: {exc.args[0]}") from exc
        finally:
            consumer.close()

    def _earlier_homes(self, workflow_id: str, live: int) -> set[int]:
        """The workflow's partitions under the counts of the layout in the control topic (the
        one the processors work by, and the one before the last growth), other than `live`."""
        try:
            layout, _ = read_layout(self.bootstrap, self.topics.control)
        except (KafkaException, ProcessorError):
            return set()
        if layout is None:
            return set()
        return {partition_for(workflow_id.encode(), n) for n in (layout.partitions, layout.previous)
                if 0 < n < live}

    def describe(self, workflow_id: str, run_id: str | None = None, timeout: float = 30) -> dict[str, Any]:
        """The run's summary (status, type, pending activities, search attributes, ...), from its
        history (see `history`)."""
        events = self.history(workflow_id, timeout, run_id)
        if not events:
            raise WorkflowNotFoundError(f"no workflow with id {workflow_id!r}")
        return summarize(events)

    def list_workflows(self, query: str | None = None, *, page_size: int = 100,
                       limit: int | None = None) -> Iterator[dict[str, Any]]:
        """The runs a list query matches (`"WorkflowType = 'OrderWorkflow' AND ExecutionStatus =
        'Running' AND CustomerId = 'c1'"`, docs/visibility.md), newest first unless it says
        ORDER BY, fetched page by page from the visibility service. Each is a dict: workflow_id,
        run_id, workflow_type, status, start_time, close_time, search_attributes, memo, ..."""
        from processor._visibility.http import VisibilityClient

        return VisibilityClient(self.visibility_url).rows(query, page_size=page_size, limit=limit)

    def count_workflows(self, query: str | None = None) -> int:
        """How many runs the list query matches."""
        from processor._visibility.http import VisibilityClient

        return int(VisibilityClient(self.visibility_url).count(query)["count"])


def _check_id(workflow_id: str) -> bytes:
    from processor.client import _check_id as check

    return check(workflow_id)
