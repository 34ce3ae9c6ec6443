"""Time skipping on a real broker: a processor and an activity worker run in this process, on
threads, sharing a clock that KafkaWorkflowEnvironment moves ahead whenever nothing can happen
before the next timer.

"Nothing can happen" is decided from positions, never from a pause of some length:

  1. the worker, on its poll thread, has no task in hand (fetched, running, or its result,
     start report or retry not yet delivered) and owns every task partition;
  2. the processor, on its loop thread (between two transactions), owns and has restored every
     partition, has no timer due and no activity attempt outstanding (an attempt's timeout
     timers), and tells how far it has read each commands partition;
  3. then the high watermarks of both topics are read from the broker (read_uncommitted: a
     record of an open transaction counts), and each position must have reached them.

If (3) holds, nothing was in flight when (1) and (2) were taken and nothing was written since:
every activity result is applied, every task the processor wrote was taken and settled. The
clock may then jump to the next timer; it fires on the processor's next turn, and the next
check waits for what it set off. The test thread is the only other writer, and it is waiting.
"""

from __future__ import annotations

import inspect
import logging
import threading
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, TopicPartition

from processor import activity
from processor._app import Worker
from processor._engine.clock import wall_ms
from processor._engine.settings import Settings
from processor._kafka.config import client_config
from processor.exceptions import ConfigError

log = logging.getLogger("processor.testing")

CALL_TIMEOUT_S = 30.0  # a loop answers a call at its next turn (max_wait_ms); this only bounds a wedged one
PROBE_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Settled:
    """Nothing can happen before `next_due` (None: no timer at all). `next_awaited` is the next
    timer a workflow waits on: a closed workflow's retention is not one. A result or an update
    that is awaited skips only to those (and a result only while its workflow runs); `sleep()`
    passes every timer on its way."""

    next_due: int | None
    next_awaited: int | None


class SkippingClock:
    """Epoch milliseconds: the wall clock plus an offset that only grows."""

    def __init__(self, start_ms: int | None = None) -> None:
        self._offset = 0 if start_ms is None else start_ms - wall_ms()
        self._lock = threading.Lock()

    def __call__(self) -> int:
        return wall_ms() + self._offset

    def advance_to(self, ms: int) -> None:
        with self._lock:
            self._offset = max(self._offset, ms - wall_ms())


def definitions(app: Worker, mocks: Mapping[str, Callable[..., Any]]) -> list[activity.ActivityDefinition]:
    """The app's activities, with those named in `mocks` replaced (or added) by the mock."""
    out = {d.name: d for d in (activity.ActivityDefinition.of(fn) for fn in app.activities)}
    for name, fn in mocks.items():
        if not callable(fn):
            raise ConfigError(f"activity_mocks[{name!r}] must be a function; got {fn!r}")
        out[name] = activity.ActivityDefinition(name, fn, inspect.iscoroutinefunction(fn))
    return list(out.values())


class InProcess:
    """One ProcessorLoop and one ActivityWorker of `app` on threads, on `clock`."""

    def __init__(self, app: Worker, settings: Settings, clock: SkippingClock,
                 mocks: Mapping[str, Callable[..., Any]]) -> None:
        from processor._engine.loop import ProcessorLoop, state_dir_for
        from processor._engine.worker import ActivityWorker

        self.settings = settings
        self.clock = clock
        self.loop = ProcessorLoop(settings.with_state_dir(state_dir_for(settings.state_dir, 0)), app.workflows,
                                  clock=clock)
        self.worker = ActivityWorker(settings, definitions(app, mocks), app.task_queue,
                                     app.max_concurrent_activities, clock=clock)
        self.errors: list[BaseException] = []
        self._threads = [threading.Thread(target=self._guarded, args=(self.loop.run,), name="dp-test-processor",
                                          daemon=True),
                         threading.Thread(target=self._guarded, args=(self.worker.run,), name="dp-test-worker",
                                          daemon=True)]
        self._probe = Consumer(client_config("consumer", settings.bootstrap, "test-env-probe", {}, fixed={
            "group.id": f"{settings.prefix}.test-probe.{uuid.uuid4().hex[:8]}",  # never joined: only asks offsets
            "isolation.level": "read_uncommitted", "enable.auto.commit": False}))
        self._topics = {"commands": settings.topics.commands, "tasks": settings.topics.tasks(app.task_queue)}
        self._partitions: dict[str, list[int]] = {}
        for t in self._threads:
            t.start()

    def _guarded(self, run: Callable[[], None]) -> None:
        try:
            run()
        except BaseException as exc:  # noqa: BLE001 - reported by the environment's next call
            log.error("%s stopped: %s", threading.current_thread().name, exc)
            self.errors.append(exc)

    def alive(self) -> bool:
        return all(t.is_alive() for t in self._threads)

    # -- is anything left that can happen before the next timer? ------------------------------

    def settled(self) -> Settled | None:
        """When nothing can happen before the next timer (the module's docstring): that timer's
        due time, and that of the next one a workflow waits on; None while something can."""
        tasks = self.worker.calls.submit(self.worker.settled).result(CALL_TIMEOUT_S)
        if tasks is None:
            return None
        engine = self.loop.calls.submit(self.loop.settled).result(CALL_TIMEOUT_S)
        if engine is None:
            return None
        commands, due, awaited = engine
        for topic, read in ((self._topics["commands"], commands), (self._topics["tasks"], tasks)):
            for p, at in self._highs(topic).items():
                low, high = at
                if read.get(p, -1) < high and not (read.get(p, -1) < 0 and high == low):
                    return None
        return Settled(due, awaited)

    def is_open(self, workflow_id: str, run_id: str | None = None) -> bool:
        return bool(self.loop.calls.submit(lambda: self.loop.workflow_open(workflow_id, run_id))
                    .result(CALL_TIMEOUT_S))

    def commands_written(self) -> int:
        """How many records the commands topic holds, open transactions' included."""
        return sum(high for _, high in self._highs(self._topics["commands"]).values())

    def _highs(self, topic: str) -> dict[int, tuple[int, int]]:
        known = self._partitions.get(topic)
        if known is None:  # asked once: the environment's topics do not grow under it
            known = self._partitions[topic] = sorted(
                self._probe.list_topics(topic, timeout=PROBE_TIMEOUT_S).topics[topic].partitions)
        return {p: self._probe.get_watermark_offsets(TopicPartition(topic, p), timeout=PROBE_TIMEOUT_S, cached=False)
                for p in known}

    def close(self) -> None:
        self.worker.stop_event.set()
        self.loop.stop_event.set()
        for t in self._threads:
            t.join(60)
        self._probe.close()
