"""Drives the Kafka-free Engine the way processor/_engine/loop.py does, without Kafka.

- `ListSink` records every record the engine produces (what would go into the transaction).
- `EngineHarness` owns one Engine with real RocksDB `PartitionStore`s (one per partition, under a
  pytest tmp_path) and a fake clock. Each `transaction()` is one loop turn: `begin(now)`,
  `fire_due_timers(now)`, `handle_command(...)` per command, then `committed()` or `aborted()`.
- `run_activities()` plays the activity worker: it decodes the `wf.tasks.v1.ActivityTask` records
  produced so far and answers each with an `ActivityCompleted` / `ActivityFailed` command, one
  transaction per answer, until no unanswered task is left.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor import _payload
from processor._codec import default_codec
from processor._codec.partitioner import partition_for
from processor._engine import keys
from processor._engine.core import Headers
from processor._engine.engine import Engine
from processor._engine.settings import Settings
from processor._engine.settle import reports_start
from processor._engine.state import Summary
from processor._engine.store import PartitionStore
from processor._failure import failure_from_exception
from processor.exceptions import ApplicationError
from tests.apps.basic import Approval, Cart, Child, Failing, FanOut, Looper, Parent, Retrying, ThreeSteps, Timeouts

PREFIX = "t"
PARTITIONS = 2
START_MS = 1_700_000_000_000
WORKFLOWS: tuple[type, ...] = (ThreeSteps, FanOut, Retrying, Failing, Approval, Timeouts, Looper, Child, Parent,
                               Cart)
CODEC = default_codec()
CMD = "wf.commands.v1."
EVENTS = f"{PREFIX}.events"
TIMERS = f"{PREFIX}.timers"
COMMANDS = f"{PREFIX}.commands"
COMPLETIONS = f"{PREFIX}.completions"
DLQ = f"{PREFIX}.dlq"
REPLIES = f"{PREFIX}.replies"
TASKS_DEFAULT = f"{PREFIX}.tasks.default"
NEVER = 2**63 - 1
OPEN: list[EngineHarness] = []  # closed by the autouse fixture in conftest.py, even when a test fails


@dataclass
class Record:
    topic: str
    partition: int | None
    key: bytes
    value: bytes | None
    headers: Headers | None

    def header(self, name: str) -> str | None:
        for k, v in self.headers or ():
            if k == name:
                return v.decode()
        return None

    def decode(self) -> tuple[str, dict[str, Any]]:
        assert self.value is not None, f"tombstone on {self.topic} key {self.key!r}"
        return CODEC.decode(self.value)

    def event(self) -> dict[str, Any]:
        """A wf.events record as the runtime sees it: the fields plus "type" = short name."""
        assert self.value is not None, f"tombstone on {self.topic} key {self.key!r}"
        return CODEC.decode_typed(self.value)


class ListSink:
    """A Sink that keeps what was produced, in order."""

    def __init__(self) -> None:
        self.records: list[Record] = []

    def produce(
        self, topic: str, partition: int | None, key: bytes, value: bytes | None, headers: Headers | None = None
    ) -> None:
        self.records.append(Record(topic, partition, key, value, list(headers) if headers else None))

    def task_topic(self, queue: str) -> str:
        return f"{PREFIX}.tasks.{queue}"

    def task_partitions(self, queue: str) -> int:
        return self.task_partition_count

    task_partition_count = 1

    def reply_partitions(self) -> int:
        return self.reply_partition_count

    reply_partition_count = 4

    def on(self, topic: str, since: int = 0) -> list[Record]:
        return [r for r in self.records[since:] if r.topic == topic]


def partition_of(workflow_id: str, partitions: int = PARTITIONS) -> int:
    return partition_for(workflow_id.encode(), partitions)


def ids_on_partition(partition: int, count: int, stem: str = "wf", partitions: int = PARTITIONS) -> list[str]:
    """`count` workflow ids (stem-0, stem-1, ...) that all hash to `partition`."""
    out: list[str] = []
    i = 0
    while len(out) < count:
        wid = f"{stem}-{i}"
        if partition_of(wid, partitions) == partition:
            out.append(wid)
        i += 1
    return out


def encode_command(name: str, record: dict[str, Any]) -> bytes:
    return CODEC.encode(CMD + name, record)


def retryable(message: str = "boom", type_: str = "RuntimeError") -> dict[str, Any]:
    return {"type": type_, "message": message, "stack_trace": "", "non_retryable": False, "cause": None}


def non_retryable(message: str = "no", type_: str = "Rejected") -> dict[str, Any]:
    return {"type": type_, "message": message, "stack_trace": "", "non_retryable": True, "cause": None}


# -- the simulated activity worker -----------------------------------------------------------------

Outcome = tuple[str, Any]  # ("ok", value) or ("fail", Failure dict)


def default_activity(task: dict[str, Any]) -> Outcome:
    """What the activities of tests/apps/basic.py do, decided from the task alone."""
    args = _payload.from_payloads(task["args"])
    kind = task["activity_type"]
    if kind == "step":
        return "ok", args[1] + 1
    if kind == "async_step":
        return "ok", args[0] * 2
    if kind == "flaky":
        if task["attempt"] <= args[0]:
            return "fail", failure_from_exception(RuntimeError(f"transient failure on attempt {task['attempt']}"))
        return "ok", f"ok after {task['attempt']} attempts"
    if kind == "fail_hard":
        return "fail", failure_from_exception(ApplicationError(args[0], type="Rejected", non_retryable=True))
    if kind == "slow":
        return "ok", "finished"
    raise AssertionError(f"no simulated activity {kind!r}")


# -- the harness -----------------------------------------------------------------------------------


class EngineHarness:
    def __init__(
        self,
        root: Path,
        workflows: Sequence[type] = WORKFLOWS,
        *,
        cache_size: int = 100,
        always_replay: bool = False,
        partitions: int = PARTITIONS,
        now_ms: int = START_MS,
        timers_per_tick: int = 1_000,
        retention_ms: int = 0,
    ) -> None:
        self.root = root
        self.partitions = partitions
        self.settings = Settings(
            bootstrap="unused:9092",
            prefix=PREFIX,
            state_dir=root,
            cache_size=cache_size,
            always_replay=always_replay,
            timers_per_tick=timers_per_tick,
            retention_ms=retention_ms,
        )
        self.sink = ListSink()
        self.engine = Engine(self.settings, list(workflows), CODEC, self.sink, partitions)
        self.now_ms = now_ms
        self.offsets: dict[int, int] = defaultdict(int)
        self._answered = 0  # index into the task records already answered by run_activities
        self._pumped = 0  # index into the engine-produced commands already applied by pump
        OPEN.append(self)
        for p in range(partitions):
            self.engine.open_partition(p, PartitionStore(self.store_path(p)))

    # -- partitions / stores ---------------------------------------------------------------------

    def grow(self, partitions: int) -> None:
        """The topics grew to `partitions` and the loop adopted the layout (between transactions):
        the new partitions are assigned here too, empty, as after their (empty) restore."""
        layout = self.engine.layout.grown(partitions)
        for p in range(self.partitions, partitions):
            self.engine.open_partition(p, PartitionStore(self.store_path(p)))
        self.partitions = partitions
        self.engine.adopt(layout)

    def store_path(self, partition: int) -> Path:
        return self.root / f"p{partition}"

    def store(self, partition: int) -> PartitionStore:
        return self.engine.stores[partition]

    def partition_of(self, workflow_id: str) -> int:
        return partition_of(workflow_id, self.partitions)

    def close(self) -> None:
        """Close every store and every cached workflow instance (idempotent)."""
        for p in list(self.engine.stores):
            self.engine.close_partition(p)
        if self in OPEN:
            OPEN.remove(self)

    def reopen(self, partition: int) -> None:
        """Close the partition (drops its cached instances) and open a fresh store on the same path."""
        self.engine.close_partition(partition)
        self.engine.open_partition(partition, PartitionStore(self.store_path(partition)))

    # -- one loop turn ---------------------------------------------------------------------------

    def transaction(
        self,
        commands: Iterable[tuple[int, bytes | None, bytes | None, Headers | None]] = (),
        *,
        commit: bool = True,
        advance_ms: int = 0,
        resume: Sequence[int] = (),
        horizons: dict[int, int] | None = None,
    ) -> list[Record]:
        """One transaction, in loop.py's order: clock reading, resume held, apply commands, fire the
        timers due up to each partition's horizon (default: now), commit/abort.

        Returns the records produced in it."""
        self.now_ms += advance_ms
        mark = len(self.sink.records)
        self.engine.begin(self.now_ms)
        for p in resume:
            self.engine.resume_held(p)
        for partition, key, value, headers in commands:
            offset = self.offsets[partition]
            self.offsets[partition] += 1
            self.engine.handle_command(partition, key, value, headers, offset)
        if self.engine.handing_off:
            self.engine.hand_off_step()
        self.engine.fire_due_timers(self.now_ms, horizons)
        if commit:
            self.engine.committed()
        else:
            self.engine.aborted()
        return self.sink.records[mark:]

    def pump(self, *, activities: bool = True, max_rounds: int = 100) -> int:
        """Play Kafka and the other processors for commands the engine itself produced (child
        starts and results, signals and cancels to children): apply each, in produced order, one
        per transaction; answer activity tasks too. Returns how many commands were applied."""
        applied = 0
        for _ in range(max_rounds):
            produced = self.sink.on(COMMANDS)[self._pumped:]
            self._pumped += len(produced)
            answered = self.run_activities() if activities else 0
            if not produced and not answered:
                return applied
            for r in produced:
                assert r.partition is not None, "engine commands go to an explicit partition"
                self.transaction([(r.partition, r.key, r.value, r.headers)])
                applied += 1
        raise AssertionError("commands never settled")

    def tick(self, advance_ms: int = 0) -> list[Record]:
        """A loop turn with no command: only due timers fire."""
        return self.transaction((), advance_ms=advance_ms)

    def send(
        self,
        name: str,
        record: dict[str, Any],
        *,
        partition: int | None = None,
        commit: bool = True,
        advance_ms: int = 0,
    ) -> list[Record]:
        """One command, keyed by its workflow id, on its owner partition unless told otherwise."""
        wid = record["workflow_id"]
        p = self.partition_of(wid) if partition is None else partition
        value = encode_command(name, record)
        return self.transaction(
            [(p, wid.encode(), value, CODEC.headers(CMD + name))], commit=commit, advance_ms=advance_ms
        )

    def start(
        self, workflow_id: str, workflow_type: str, *args: Any, commit: bool = True, **fields: Any
    ) -> list[Record]:
        return self.send(
            "StartWorkflow",
            {"workflow_id": workflow_id, "workflow_type": workflow_type, "args": _payload.to_payloads(args), **fields},
            commit=commit,
        )

    def signal(self, workflow_id: str, name: str, *args: Any, commit: bool = True) -> list[Record]:
        return self.send(
            "SignalWorkflow",
            {"workflow_id": workflow_id, "signal_name": name, "args": _payload.to_payloads(args)},
            commit=commit,
        )

    def complete(self, task: dict[str, Any], value: Any, *, commit: bool = True, advance_ms: int = 0) -> list[Record]:
        return self.send(
            "ActivityCompleted",
            {
                "workflow_id": task["workflow_id"],
                "activity_seq": task["activity_seq"],
                "attempt": task["attempt"],
                "result": _payload.to_payload(value),
                "run_id": task.get("run_id", ""),
            },
            commit=commit,
            advance_ms=advance_ms,
        )

    def started(self, task: dict[str, Any], *, commit: bool = True, advance_ms: int = 0,
                elapsed_ms: int = 0) -> list[Record]:
        """The worker's ActivityStarted for `task` (what ours sends when reports_start(task))."""
        return self.send(
            "ActivityStarted",
            {"workflow_id": task["workflow_id"], "run_id": task.get("run_id", ""), "activity_seq": task["activity_seq"],
             "attempt": task["attempt"], "task_queue": task["task_queue"], "worker": "harness",
             "elapsed_ms": elapsed_ms},
            commit=commit,
            advance_ms=advance_ms,
        )

    def fail(
        self, task: dict[str, Any], failure: dict[str, Any], *, commit: bool = True, advance_ms: int = 0
    ) -> list[Record]:
        return self.send(
            "ActivityFailed",
            {
                "workflow_id": task["workflow_id"],
                "activity_seq": task["activity_seq"],
                "attempt": task["attempt"],
                "failure": failure,
                "run_id": task.get("run_id", ""),
            },
            commit=commit,
            advance_ms=advance_ms,
        )

    # -- the simulated worker --------------------------------------------------------------------

    def new_tasks(self) -> list[dict[str, Any]]:
        """Activity tasks produced since the last call (or run_activities), decoded."""
        records = [r for r in self.sink.records if r.topic.startswith(f"{PREFIX}.tasks.")
                   and r.header("type") == "wf.tasks.v1.ActivityTask"]
        fresh = records[self._answered :]
        self._answered = len(records)
        return [r.decode()[1] for r in fresh]

    def run_activities(
        self,
        activity: Callable[[dict[str, Any]], Outcome] = default_activity,
        *,
        advance_ms: int = 10,
        max_rounds: int = 100,
    ) -> int:
        """Answer every task (and the tasks those answers cause) in task order; returns how many."""
        answered = 0
        for _ in range(max_rounds):
            tasks = self.new_tasks()
            if not tasks:
                return answered
            for task in tasks:
                if reports_start(task):
                    self.started(task)
                outcome, value = activity(task)
                if outcome == "ok":
                    self.complete(task, value, advance_ms=advance_ms)
                else:
                    self.fail(task, value, advance_ms=advance_ms)
                answered += 1
        raise AssertionError("activities never settled")

    # -- reading the output ------------------------------------------------------------------------

    def records(self, topic: str) -> list[Record]:
        return self.sink.on(topic)

    def events(self, workflow_id: str | None = None) -> list[dict[str, Any]]:
        """Events produced, each once: a hand-off after a growth produces a mover's events again
        in its new partition; tombstones and hand-off state (NUL-prefixed keys) are left out."""
        first_in: dict[bytes, int | None] = {}
        out = []
        for r in self.sink.on(EVENTS):
            if r.value is None or r.key.startswith(b"\x00") or first_in.setdefault(r.key, r.partition) != r.partition:
                continue
            out.append(r.event())
        return [e for e in out if workflow_id is None or e["workflow_id"] == workflow_id]

    def event_types(self, workflow_id: str) -> list[str]:
        return [e["type"] for e in self.events(workflow_id)]

    def completions(self, workflow_id: str | None = None) -> list[tuple[str, dict[str, Any]]]:
        out = [r.decode() for r in self.sink.on(COMPLETIONS)]
        return [(name, rec) for name, rec in out if workflow_id is None or rec["workflow_id"] == workflow_id]

    def result(self, workflow_id: str) -> Any:
        ((name, rec),) = self.completions(workflow_id)
        assert name == "wf.completions.v1.WorkflowCompleted", (name, rec)
        return _payload.from_payload(rec["result"])

    def result_of_last(self, workflow_id: str) -> Any:
        """The result of the workflow's last completion record (a chain's last run)."""
        name, rec = self.completions(workflow_id)[-1]
        assert name == "wf.completions.v1.WorkflowCompleted", (name, rec)
        return _payload.from_payload(rec["result"])

    def replies(self) -> list[dict[str, Any]]:
        """Every CommandReply produced, decoded, in order."""
        return [r.decode()[1] for r in self.sink.on(REPLIES)]

    def dlq_reasons(self) -> list[str]:
        return [r.header("dlq.reason") or "" for r in self.sink.on(DLQ)]

    def summary(self, workflow_id: str) -> Summary | None:
        return self.store(self.partition_of(workflow_id)).summary(workflow_id)

    def stored_history(self, workflow_id: str) -> list[bytes]:
        return self.store(self.partition_of(workflow_id)).history(workflow_id, self.run_of(workflow_id))

    def run_of(self, workflow_id: str) -> str:
        """The run id of the workflow's current run."""
        summary = self.summary(workflow_id)
        assert summary is not None, f"no workflow {workflow_id!r}"
        return summary.run_id

    def event_key(self, workflow_id: str, seq: int) -> bytes:
        """The wf.events key of an event of the workflow's current run."""
        return keys.event_key(workflow_id, self.run_of(workflow_id), seq)

    def pending_timers(self, partition: int) -> list[tuple[int, str, str]]:
        """Every committed timer of the partition, in due order."""
        return self.store(partition).due_timers(NEVER, 1_000_000)


def without_run(key: bytes | None) -> tuple[str, int] | None:
    """(workflow id, seq) of a wf.events key: what stays equal when a start is redone as a new run."""
    parsed = keys.split_event_key(key or b"")
    return (parsed[0], parsed[2]) if parsed is not None else None


def without_random(event: dict[str, Any]) -> dict[str, Any]:
    """An event without what each start draws afresh (random seed, run id)."""
    return {k: v for k, v in event.items() if k not in ("random_seed", "run_id")}
