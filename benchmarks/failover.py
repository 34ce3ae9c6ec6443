"""Fail-over: SIGKILL one of two processors under steady load; how long until its partitions
complete work again, and how long the survivor's own partitions stalled meanwhile.

    python -m benchmarks.failover [--runs 5] [--mode restart|takeover] [--partitions 8]

`restart`: `processor run --processors 2` (the supervisor restarts the killed child; its state
dir survives). `takeover`: two processors started on their own, nobody restarts the killed one:
the survivor takes its partitions over (the dead one is started again, fresh, between runs).

Load: one client task per partition, each starting a 3-activity workflow on its partition,
awaiting its result and starting the next -- every partition completes work continuously, so
a partition's first completion after the kill says when it serves again. The killed process
and its partitions come from the group's own description (describe_consumer_groups: member
client.id ends in the pid). Uses KAFKA_BOOTSTRAP if set, else the local broker. Prints one line
per run and a summary; --json FILE writes the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from confluent_kafka import ConsumerGroupState, KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from processor._app import running_child
from processor._codec.partitioner import partition_for
from processor._engine.identity import ID_FILE
from processor._kafka import local
from processor._kafka.config import client_config
from processor._kafka.topics import ensure_topics, load_specs
from processor.client import AsyncClient

REPO = Path(__file__).resolve().parent.parent


@dataclass
class Run:
    killed_pid: int
    killed_partitions: list[int]
    recovery_s: float  # kill -> every killed partition completed a workflow again
    survivor_stall_s: float  # the longest gap in completions on a survivor partition across the kill
    per_partition_s: dict[int, float] = field(default_factory=dict)
    load1: float = 0.0


def _ids_by_partition(partitions: int, per: int) -> dict[int, list[str]]:
    out: dict[int, list[str]] = {p: [] for p in range(partitions)}
    i = 0
    while min(len(v) for v in out.values()) < per:
        wid = f"fo-{i}"
        p = partition_for(wid.encode(), partitions)
        if len(out[p]) < per:
            out[p].append(wid)
        i += 1
    return out


_COORDINATOR_BUSY = {KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.COORDINATOR_NOT_AVAILABLE,
                     KafkaError.NOT_COORDINATOR, KafkaError._TIMED_OUT, KafkaError._TRANSPORT}  # noqa: SLF001


def _members(bootstrap: str, group: str) -> dict[str, list[int]]:
    """group.instance.id -> partitions of each member of a stable group (empty while it rebalances)."""
    admin = AdminClient(client_config("admin", bootstrap, "bench"))
    try:
        desc = admin.describe_consumer_groups([group], request_timeout=3600)[group].result(timeout=10)  # coverage.py
    except KafkaException as exc:  # e.g. COORDINATOR_LOAD_IN_PROGRESS on a broker just started: ask again
        err = exc.args[0]
        if not (err.retriable() or err.code() in _COORDINATOR_BUSY):
            raise
        return {}
    if desc.state != ConsumerGroupState.STABLE:
        return {}
    return {m.group_instance_id or m.member_id: sorted(tp.partition for tp in m.assignment.topic_partitions)
            for m in desc.members}


def _pid_of(state: Path, instance_id: str) -> int:
    """The live processor process whose state dir holds this transactional.id (= group.instance.id)."""
    for d in state.glob("processor-*"):
        f = d / ID_FILE
        if f.exists() and f.read_text().strip() == instance_id:
            return _child_pid(state, "processor", int(d.name.split("-")[1]))
    raise SystemExit(f"no live processor has group.instance.id {instance_id}")


def _child_pid(state: Path, role: str, index: int) -> int:
    pid = running_child(state, role, index)
    if pid is None:
        raise SystemExit(f"no live {role}-{index}")
    return pid


class Load:
    """One task per partition: start, await the result, repeat. Records (time, partition) of each completion."""

    def __init__(self, bootstrap: str, prefix: str, partitions: int) -> None:
        self.client = AsyncClient(bootstrap, prefix=prefix)
        self.done: list[tuple[float, int]] = []  # (completion received, partition), in order
        self.started: list[float] = []  # when each of `done` was started
        self.stop = False
        self.ids = _ids_by_partition(partitions, 100_000 // partitions)
        self.errors: list[str] = []

    async def _one(self, p: int) -> None:
        n = 0
        while not self.stop:
            wid = f"{self.ids[p][n]}"
            n += 1
            try:
                began = time.monotonic()
                await self.client.start_workflow("ThreeNoops", n, id=wid)
                got = await self.client.result(wid, timeout=120)
            except Exception as exc:  # noqa: BLE001 - reported, and the load goes on
                self.errors.append(f"{wid}: {exc}")
                continue
            if got != n + 3:
                self.errors.append(f"{wid}: result {got}, expected {n + 3}")
            self.started.append(began)
            self.done.append((time.monotonic(), p))

    async def run(self, partitions: int) -> None:
        await asyncio.gather(*(self._one(p) for p in range(partitions)))
        await self.client.close()


def _serving_since(load: Load, p: int, since: float) -> float | None:
    """When partition p first completed a workflow started after `since` (a completion already
    on its way at `since` says nothing about the partition being served)."""
    for (t, q), began in zip(load.done, load.started, strict=True):
        if q == p and began > since:
            return t
    return None


def _longest_gap(done: list[tuple[float, int]], p: int, lo: float, hi: float) -> float:
    ts = [lo] + [t for t, q in done if q == p and lo <= t <= hi] + [hi]
    return max(b - a for a, b in zip(ts, ts[1:], strict=False))


def _start(argv: list[str], log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(argv, cwd=REPO, stdout=log.open("ab"), stderr=subprocess.STDOUT,
                            process_group=0)


async def bench(args: argparse.Namespace) -> list[Run]:
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or local.start()[0].bootstrap
    prefix = f"fo{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, load_specs(prefix, args.partitions))
    state = Path(tempfile.mkdtemp(prefix="dp-failover-"))
    logs = state / "logs"
    logs.mkdir()
    cli = [sys.executable, "-m", "processor.cli", "run", "--app", "benchmarks.app:app", "--bootstrap", bootstrap,
           "--prefix", prefix, "--state-dir", str(state)]
    procs: dict[str, subprocess.Popen[bytes]] = {}
    if args.mode == "restart":
        procs["supervisor"] = _start([*cli, "--processors", "2", "--workers", "1", "-v"], logs / "supervisor.log")
    else:
        for i in (0, 1):
            procs[f"p{i}"] = _start([*cli, "--role", "processor", "--index", str(i), "-v"], logs / f"p{i}.log")
        procs["worker"] = _start([*cli, "--role", "worker"], logs / "worker.log")
    group = f"{prefix}.processor"
    load = Load(bootstrap, prefix, args.partitions)
    load_task = asyncio.ensure_future(load.run(args.partitions))
    runs: list[Run] = []
    try:
        last = 0.0
        for n in range(args.runs):
            members = await _settled(bootstrap, group, load, args.partitions)
            # Each process is killed every other run, so at least 2 x gap after its restart: the
            # supervisor backs off a child that dies within 15 s of its start (QUICK_DEATH_S).
            await asyncio.sleep(max(0.0, last + args.gap - time.monotonic()))
            if args.target == "worker":  # every partition's activities stop until the worker is back
                member, parts = "worker-0", list(range(args.partitions))
                pid = _child_pid(state, "worker", 0)
            else:
                member, parts = sorted(members.items())[n % 2]
                pid = _pid_of(state, member)
            load1 = os.getloadavg()[0]
            t0 = last = time.monotonic()
            os.kill(pid, signal.SIGKILL)
            deadline = t0 + args.timeout
            while any(_serving_since(load, p, t0) is None for p in range(args.partitions)):
                if time.monotonic() > deadline:
                    raise SystemExit(f"run {n + 1}: partitions not serving {args.timeout:.0f} s after the kill")
                await asyncio.sleep(0.05)
            back = {p: _serving_since(load, p, t0) - t0 for p in range(args.partitions)}  # type: ignore[operator]
            if os.environ.get("FO_TRACE"):
                for p in parts:
                    seq = [(round(b - t0, 3), round(t - t0, 3))
                           for (t, q), b in zip(load.done, load.started, strict=True) if q == p and t > t0 - 0.2][:4]
                    print(f"  partition {p}: (started, done) after the kill: {seq}", flush=True)
            end = max(back.values()) + t0
            survivors = [p for p in range(args.partitions) if p not in parts]
            run = Run(pid, parts, round(max(back[p] for p in parts), 3),
                      round(max((_longest_gap(load.done, p, t0, end) for p in survivors), default=0.0), 3),
                      {p: round(s, 3) for p, s in back.items()}, load1)
            runs.append(run)
            print(f"run {n + 1}: killed {args.target} pid {pid} (partitions {parts}): its partitions served "
                  f"again after "
                  f"{run.recovery_s:.2f} s; survivor partitions' longest stall {run.survivor_stall_s:.2f} s "
                  f"(load1 {load1:.1f})", flush=True)
            if args.mode == "takeover":
                name = next(k for k, v in procs.items() if v.pid == pid)
                procs[name].wait()
                i = int(name[1:])
                shutil.rmtree(state / f"processor-{i}", ignore_errors=True)  # a replacement machine
                procs[name] = _start([*cli, "--role", "processor", "--index", str(i), "-v"], logs / f"{name}.log")
    finally:
        load.stop = True
        try:
            await asyncio.wait_for(load_task, 130)
        finally:
            for proc in procs.values():
                proc.send_signal(signal.SIGTERM)
            for proc in procs.values():
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
            if not args.keep:
                shutil.rmtree(state, ignore_errors=True)
    if load.errors:
        raise SystemExit(f"{len(load.errors)} workflows failed, e.g. {load.errors[:3]}")
    return runs


async def _settled(bootstrap: str, group: str, load: Load, partitions: int) -> dict[str, list[int]]:
    """Two members with partitions, and every partition completing work in the last second."""
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        members = _members(bootstrap, group)
        now = time.monotonic()
        if len(members) == 2 and all(members.values()) and \
                all(_serving_since(load, p, now - 1.0) is not None for p in range(partitions)):
            await asyncio.sleep(1.0)
            if _members(bootstrap, group) == members:
                return members
        await asyncio.sleep(0.25)
    raise SystemExit("the two processors did not settle within 180 s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--mode", choices=("restart", "takeover"), default="restart")
    ap.add_argument("--partitions", type=int, default=8)
    ap.add_argument("--target", choices=("processor", "worker"), default="processor",
                    help="what to kill (worker: restart mode only; the one worker)")
    ap.add_argument("--gap", type=float, default=8.5, help="seconds between kills")
    ap.add_argument("--timeout", type=float, default=90.0, help="seconds a run may take to recover")
    ap.add_argument("--json", type=Path, help="write the figures here")
    ap.add_argument("--keep", action="store_true", help="keep the state dir and logs")
    args = ap.parse_args()
    runs = asyncio.run(bench(args))
    rec = [r.recovery_s for r in runs]
    stall = [r.survivor_stall_s for r in runs]
    env = {"machine": f"{platform.machine()} {os.cpu_count()} cpus", "python": platform.python_version(),
           "mode": args.mode, "target": args.target, "partitions": args.partitions,
           "session_timeout_ms": int(os.environ.get("DP_SESSION_TIMEOUT_MS") or 6000),
           "transaction_timeout_ms": int(os.environ.get("DP_TRANSACTION_TIMEOUT_MS") or 10000)}
    print(f"fail-over of a {args.target} ({args.mode}, {len(runs)} runs, {args.partitions} partitions): "
          f"killed partitions back after "
          f"p50 {statistics.median(rec):.2f} s, max {max(rec):.2f} s; survivor partitions' longest stall "
          f"p50 {statistics.median(stall):.2f} s, max {max(stall):.2f} s; {env}", flush=True)
    if args.json:
        args.json.write_text(json.dumps({"env": env, "runs": [asdict(r) for r in runs]}, indent=2))


if __name__ == "__main__":
    main()
