"""One benchmark command: every scenario of issue 12 on real processes and a real broker.

    python -m benchmarks [--smoke] [--only latency,throughput,timers,restore,failover]
                         [--out DIR] [--partitions 8]

Uses KAFKA_BOOTSTRAP if set, else starts (or reuses) the local broker (`processor kafka start`).
Prints a line per scenario as it runs and a table at the end; writes DIR/results.json (every
figure, with the machine, load average, durability settings and commit cadence) and, when
matplotlib is installed (`pip install -e '.[bench]'`), DIR/latency_cdf.png,
DIR/throughput.png and DIR/timer_lateness.png. `--smoke` runs every scenario small (seconds
each): the CI check that the command works, not a measurement.

Scenarios (the workload is benchmarks/app.py: a workflow of 3 sequential no-op activities):
  latency     concurrency 1: start, await the result, repeat (p50/p99)
  throughput  at each concurrency: N workflows, each task starting the next once one completes
  timers      N workflows started together, each sleeping 1 s: how late the timer fired (each
              history's TimerFired time against TimerStarted's fire_at_ms, up to 200 histories),
              and how late the client saw it end (its completion, minus when it sent the start,
              minus 1 s: the start path, the fire, the task after it and the completion path)
  restore     the processor stopped, its state dir deleted, started again: wf.events +
              wf.timers records restored per second (from its own `restored` log line)
  failover    benchmarks/failover.py: two processors, one SIGKILLed under load, restarted by the
              supervisor (restart) or taken over by the survivor (takeover)
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from processor._kafka import local
from processor._kafka.topics import ensure_topics, load_specs
from processor.client import AsyncClient, Client

REPO = Path(__file__).resolve().parent.parent
SCENARIOS = ("latency", "throughput", "timers", "restore", "failover")


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 3) if ordered else float("nan")


def say(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


class Processes:
    """One processor and one worker of benchmarks.app (`processor run --role ...`) on a prefix."""

    def __init__(self, bootstrap: str, prefix: str, state: Path) -> None:
        self.bootstrap, self.prefix, self.state = bootstrap, prefix, state
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs = state / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)

    def start(self, role: str) -> None:
        with (self.logs / f"{role}.log").open("ab") as log:
            self.procs[role] = subprocess.Popen(
                [sys.executable, "-m", "processor.cli", "run", "--app", "benchmarks.app:app", "--role", role,
                 "--bootstrap", self.bootstrap, "--prefix", self.prefix, "--state-dir", str(self.state), "-v"],
                cwd=REPO, stdout=log, stderr=subprocess.STDOUT)

    def stop(self, role: str) -> None:
        proc = self.procs.pop(role)
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)

    def close(self) -> None:
        for role in list(self.procs):
            self.stop(role)


async def _closed_loop(client: AsyncClient, ids: list[str], concurrency: int,
                       done: list[tuple[float, float]]) -> None:
    """`concurrency` tasks, each starting a ThreeNoops and awaiting it, until `ids` are used up."""
    queue = list(reversed(ids))

    async def runner() -> None:
        while queue:
            wid = queue.pop()
            began = time.perf_counter()
            await client.start_workflow("ThreeNoops", 1, id=wid)
            got = await client.result(wid, timeout=300)
            if got != 4:
                raise SystemExit(f"{wid}: result {got}, expected 4")
            done.append((time.perf_counter(), (time.perf_counter() - began) * 1000))

    await asyncio.gather(*(runner() for _ in range(concurrency)))


def latency(ctx: Context) -> dict[str, Any]:
    client = Client(ctx.bootstrap, prefix=ctx.prefix)
    samples = []
    try:
        for i in range(ctx.n(300, 20)):
            wid = f"lat-{i}"
            began = time.perf_counter()
            client.start_workflow("ThreeNoops", 1, id=wid)
            if client.result(wid, timeout=60) != 4:
                raise SystemExit(f"{wid}: a wrong result")
            samples.append((time.perf_counter() - began) * 1000)
    finally:
        client.close()
    return {"runs": len(samples), "p50_ms": pct(samples, 0.5), "p99_ms": pct(samples, 0.99),
            "max_ms": round(max(samples), 3), "samples_ms": [round(s, 3) for s in samples]}


def throughput(ctx: Context) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for conc in ctx.concurrencies:
        n = ctx.n(5000, 200)
        done: list[tuple[float, float]] = []

        async def run(conc: int = conc, n: int = n, done: list[tuple[float, float]] = done) -> float:
            client = AsyncClient(ctx.bootstrap, prefix=ctx.prefix)
            began = time.perf_counter()
            try:
                await _closed_loop(client, [f"thr{conc}-{i}" for i in range(n)], conc, done)
            finally:
                await client.close()
            for k, (t, lat) in enumerate(done):
                done[k] = (t - began, lat)
            return max(t for t, _ in done)  # the last completion, not the client's close

        elapsed = asyncio.run(run())
        lat = [d[1] for d in done]
        out[str(conc)] = {"workflows": n, "seconds": round(elapsed, 3), "per_s": round(n / elapsed, 1),
                          "p50_ms": pct(lat, 0.5), "p99_ms": pct(lat, 0.99),
                          "completed_at_s": [round(d[0], 3) for d in done]}
        say(f"  throughput at concurrency {conc}: {n / elapsed:.1f} workflows/s")
    return out


def timers(ctx: Context) -> dict[str, Any]:
    n = ctx.n(2000, 100)
    ids = [f"tmr-{i}" for i in range(n)]

    async def run() -> list[float]:
        client = AsyncClient(ctx.bootstrap, prefix=ctx.prefix)
        try:
            async def one(wid: str) -> float:
                sent = time.perf_counter()
                await client.start_workflow("Sleeper", 1.0, id=wid)
                await client.result(wid, timeout=300)
                return (time.perf_counter() - sent - 1.0) * 1000

            return list(await asyncio.gather(*(one(wid) for wid in ids)))
        finally:
            await client.close()

    wake = asyncio.run(run())
    # The fire itself, from each history: TimerFired's batch clock against TimerStarted's fire_at_ms.
    client = Client(ctx.bootstrap, prefix=ctx.prefix)
    fire = []
    try:
        for wid in ids[:: max(1, n // 200)]:
            events = client.history(wid)
            due = next(e["fire_at_ms"] for e in events if e["type"] == "TimerStarted")
            fired = next(e["time_ms"] for e in events if e["type"] == "TimerFired")
            fire.append(float(fired - due))
    finally:
        client.close()
    return {"workflows": n, "fire_histories": len(fire), "fire_p50_ms": pct(fire, 0.5),
            "fire_p99_ms": pct(fire, 0.99), "fire_max_ms": max(fire), "wake_p50_ms": pct(wake, 0.5),
            "wake_p99_ms": pct(wake, 0.99), "wake_max_ms": round(max(wake), 3),
            "fire_samples_ms": fire, "wake_samples_ms": [round(v, 3) for v in wake]}


def restore(ctx: Context) -> dict[str, Any]:
    ctx.procs.stop("processor")
    shutil.rmtree(ctx.state / "processor-0", ignore_errors=True)
    log = ctx.procs.logs / "processor.log"
    before = log.read_text(errors="replace").count("restored partitions")
    ctx.procs.start("processor")
    deadline = time.monotonic() + 300
    pattern = re.compile(r"restored partitions \[([^\]]*)\]: (\d+) records in ([\d.]+)s \(.*read (\d+) ms")
    found: list[tuple[set[int], int, float, float]] = []
    while time.monotonic() < deadline:  # until every partition is restored (in one go or several)
        text = log.read_text(errors="replace")
        found = [({int(p) for p in ps.split(",") if p.strip()}, int(n), float(t), int(r) / 1000)
                 for ps, n, t, r in pattern.findall(text)][before:]
        if set().union(*(ps for ps, _, _, _ in found)) >= set(range(ctx.partitions)):
            break
        time.sleep(0.2)
    else:
        raise SystemExit("the restarted processor did not restore every partition within 300 s")
    records, seconds = sum(n for _, n, _, _ in found), sum(t for _, _, t, _ in found)
    reading = sum(r for _, _, _, r in found)
    ctx.warm()  # serving again before the next scenario
    return {"records": records, "seconds": round(seconds, 3), "per_s": round(records / seconds, 1) if seconds else None,
            "read_seconds": round(reading, 3), "read_per_s": round(records / reading, 1) if reading else None}


def failover(ctx: Context) -> dict[str, Any]:
    from benchmarks import failover as fo

    out: dict[str, Any] = {}
    os.environ["KAFKA_BOOTSTRAP"] = ctx.bootstrap
    for mode in ("restart", "takeover"):
        args = argparse.Namespace(runs=ctx.n(5, 1), mode=mode, partitions=ctx.partitions, target="processor",
                                  gap=8.5, timeout=90.0, keep=False)
        runs = asyncio.run(fo.bench(args))
        rec = [r.recovery_s for r in runs]
        stall = [r.survivor_stall_s for r in runs]
        out[mode] = {"runs": len(runs), "recovery_p50_s": round(statistics.median(rec), 3),
                     "recovery_max_s": max(rec), "survivor_stall_max_s": max(stall), "recovery_s": rec}
        say(f"  fail-over ({mode}): back after p50 {statistics.median(rec):.2f} s, max {max(rec):.2f} s")
    return out


class Context:
    def __init__(self, args: argparse.Namespace, bootstrap: str) -> None:
        self.smoke, self.partitions, self.bootstrap = args.smoke, args.partitions, bootstrap
        self.concurrencies = [16] if args.smoke else [128, 1000]
        self.prefix = f"bench{uuid.uuid4().hex[:8]}"
        self.state = Path(tempfile.mkdtemp(prefix="dp-bench-"))
        ensure_topics(bootstrap, load_specs(self.prefix, self.partitions))
        self.procs = Processes(bootstrap, self.prefix, self.state)

    def n(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def warm(self) -> None:
        """Group joins, assignment and first transactions done: five workflows through."""
        client = Client(self.bootstrap, prefix=self.prefix)
        try:
            for _ in range(5):
                wid = f"warm-{uuid.uuid4().hex[:8]}"
                client.start_workflow("ThreeNoops", 1, id=wid, timeout=120)
                client.result(wid, timeout=120)
        finally:
            client.close()


def environment(bootstrap: str, given: str | None) -> dict[str, Any]:
    from processor._engine.settings import Settings

    s = Settings(bootstrap=bootstrap)
    return {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.system()} {platform.release()}",
        "python": platform.python_version(),
        "broker": f"KAFKA_BOOTSTRAP={given}" if given else f"local (processor kafka start) at {bootstrap}, on "
                                                           "this machine",
        "durability": "exactly-once (Kafka transactions, EOS v2); producer acks=all with idempotence; the broker "
                      "does not fsync each commit (log.flush.* defaults: the OS page cache, as Kafka runs in "
                      "production) -- Restate and PostgreSQL fsync, so this is not like for like",
        "commit_cadence": f"one transaction per consumed batch (up to {s.max_batch} commands, consume waits up to "
                          f"{s.max_wait_ms} ms when idle)",
        "session_timeout_ms": s.session_timeout_ms, "transaction_timeout_ms": s.transaction_timeout_ms,
    }


def plots(results: dict[str, Any], out: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return []
    made = []
    sc = results["scenarios"]
    if "latency" in sc:
        xs = sorted(sc["latency"]["samples_ms"])
        fig, ax = plt.subplots()
        ax.plot(xs, [(i + 1) / len(xs) for i in range(len(xs))])
        ax.set(xlabel="ms, start to result (3 activities)", ylabel="fraction", title="latency at concurrency 1")
        fig.savefig(out / "latency_cdf.png")
        made.append("latency_cdf.png")
    if "throughput" in sc:
        fig, ax = plt.subplots()
        for conc, r in sc["throughput"].items():
            ts = r["completed_at_s"]
            if not ts:
                continue
            edges = range(int(max(ts)) + 2)
            counts = [sum(1 for t in ts if lo <= t < lo + 1) for lo in edges[:-1]]
            ax.plot(list(edges[:-1]), counts, label=f"concurrency {conc}")
        ax.set(xlabel="s", ylabel="workflows completed per second", title="throughput over time")
        ax.legend()
        fig.savefig(out / "throughput.png")
        made.append("throughput.png")
    if "timers" in sc:
        fig, ax = plt.subplots()
        ax.hist(sc["timers"]["fire_samples_ms"], bins=40, alpha=0.7, label="timer fired (history)")
        ax.hist(sc["timers"]["wake_samples_ms"], bins=40, alpha=0.7, label="workflow ended (client)")
        ax.set(xlabel="ms after the 1 s sleep was due", ylabel="workflows", title="timer lateness")
        ax.legend()
        fig.savefig(out / "timer_lateness.png")
        made.append("timer_lateness.png")
    return made


def table(results: dict[str, Any]) -> str:
    sc = results["scenarios"]
    rows = []
    if "latency" in sc:
        r = sc["latency"]
        rows.append(("latency, concurrency 1", f"p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms ({r['runs']} runs)",
                     "p50 <= 15 ms, p99 <= 50 ms"))
    for conc, r in sc.get("throughput", {}).items():
        rows.append((f"throughput, concurrency {conc}",
                     f"{r['per_s']:.1f} wf/s; p50 {r['p50_ms']:.0f} ms, p99 {r['p99_ms']:.0f} ms ({r['workflows']} wf)",
                     ">= 1,000 wf/s"))
    if "timers" in sc:
        r = sc["timers"]
        rows.append(("timers, 1 s sleep: fire", f"late p50 {r['fire_p50_ms']:.0f} ms, p99 {r['fire_p99_ms']:.0f} ms, "
                     f"max {r['fire_max_ms']:.0f} ms ({r['fire_histories']} of {r['workflows']} wf)", "p99 <= 50 ms"))
        rows.append(("timers, 1 s sleep: wake", f"late p50 {r['wake_p50_ms']:.0f} ms, p99 {r['wake_p99_ms']:.0f} ms, "
                     f"max {r['wake_max_ms']:.0f} ms (start to end, less 1 s)", ""))
    if "restore" in sc:
        r = sc["restore"]
        rows.append(("restore", f"{r['per_s']} records/s ({r['records']} in {r['seconds']} s; reading alone "
                     f"{r['read_per_s']}/s)", ">= 100,000/s"))
    for mode, r in sc.get("failover", {}).items():
        rows.append((f"failover ({mode})", f"p50 {r['recovery_p50_s']:.2f} s, max of {r['runs']} runs "
                     f"{r['recovery_max_s']:.2f} s", "<= 2 s p99"))
    width = max(len(a) for a, _, _ in rows) if rows else 10
    lines = [f"{'scenario':<{width}}  {'figure':<60}  target"]
    lines += [f"{a:<{width}}  {b:<60}  {c}" for a, b, c in rows]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.split("\n\n")[0])
    ap.add_argument("--smoke", action="store_true", help="every scenario small: does the command work (CI)")
    ap.add_argument("--only", default=",".join(SCENARIOS), help=f"comma-separated, of: {', '.join(SCENARIOS)}")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/latest"))
    ap.add_argument("--partitions", type=int, default=8)
    args = ap.parse_args()
    asked = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in asked if s not in SCENARIOS]
    chosen = [s for s in SCENARIOS if s in asked]  # failover last: it stops the processes the others use
    if unknown:
        raise SystemExit(f"python -m benchmarks: unknown scenario(s) {', '.join(unknown)}; "
                         f"choose from {', '.join(SCENARIOS)}")
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        bootstrap = given
    else:
        say("starting the local broker (processor kafka start)")
        bootstrap = local.start()[0].bootstrap
    ctx = Context(args, bootstrap)
    args.out.mkdir(parents=True, exist_ok=True)
    results: dict[str, Any] = {"env": environment(bootstrap, given), "smoke": args.smoke, "scenarios": {},
                               "load_average": {}}
    runners: dict[str, Callable[[Context], dict[str, Any]]] = {
        "latency": latency, "throughput": throughput, "timers": timers, "restore": restore, "failover": failover}
    try:
        if any(s != "failover" for s in chosen):
            ctx.procs.start("processor")
            ctx.procs.start("worker")
            say("warming up (group joins, first transactions)")
            ctx.warm()
        for name in chosen:
            if name == "failover":
                ctx.procs.close()  # it runs processes of its own
            say(f"{name} ...")
            before = os.getloadavg()[0]
            began = time.monotonic()
            results["scenarios"][name] = runners[name](ctx)
            results["load_average"][name] = {"before": round(before, 2), "after": round(os.getloadavg()[0], 2)}
            say(f"{name} done in {time.monotonic() - began:.1f} s (load average {before:.2f} -> "
                f"{os.getloadavg()[0]:.2f})")
    finally:
        ctx.procs.close()
        shutil.rmtree(ctx.state, ignore_errors=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=2))
    made = plots(results, args.out)
    print()
    print(table(results))
    print()
    print(f"environment: {json.dumps(results['env'], indent=None)}")
    print(f"written: {args.out / 'results.json'}" + (f", {', '.join(made)}" if made else
                                                     " (no plots: pip install -e '.[bench]' for matplotlib)"))


if __name__ == "__main__":
    main()
