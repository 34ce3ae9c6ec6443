"""A workflow of N sequential steps, run as local activities and as normal activities.

    python -m benchmarks.local_activities [--steps 100] [--runs 5]

One processor and one worker of tests/apps/local.py; each step is `bump` (returns its argument
plus one, no sleep). Prints, per mode, the wall time from start to result of each run and the
median, and the per-step cost. Uses KAFKA_BOOTSTRAP if set, else starts (or reuses) the local
broker. Exactly-once is on in both modes (the processor's transactions); a normal activity also
pays the task topic, the worker and the result command, a local one a LocalActivityRecorded in
the workflow task's transaction.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from processor._kafka import local  # noqa: E402
from processor._kafka.topics import ensure_topics, load_specs  # noqa: E402
from processor.client import Client  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    bootstrap = os.environ.get("KAFKA_BOOTSTRAP") or local.start()[0].bootstrap
    prefix = f"bla{uuid.uuid4().hex[:8]}"
    ensure_topics(bootstrap, load_specs(prefix, 4))
    state = Path(tempfile.mkdtemp(prefix="bench-local-"))
    procs = [subprocess.Popen([sys.executable, "-m", "processor.cli", "run", "--app", "tests.apps.local:app", "--role",
                               role, "--bootstrap", bootstrap, "--prefix", prefix, "--state-dir", str(state)],
                              cwd=REPO) for role in ("processor", "worker")]
    client = Client(bootstrap, prefix=prefix)
    try:
        client.start_workflow("RemoteSteps", 1, id="warm-remote").result(timeout=120)  # both processes up
        client.start_workflow("LocalSteps", 1, id="warm-local").result(timeout=120)
        figures: dict[str, list[float]] = {}
        for mode in ("LocalSteps", "RemoteSteps"):
            for run in range(args.runs):
                t0 = time.perf_counter()
                got = client.start_workflow(mode, args.steps, id=f"{mode}-{run}").result(timeout=600)
                took = time.perf_counter() - t0
                assert got == args.steps, got
                figures.setdefault(mode, []).append(took)
                print(f"{mode} run {run + 1}: {took * 1000:.0f} ms", flush=True)
        load = os.getloadavg()
        print(f"\n{args.steps} sequential steps, {args.runs} runs each (load average {load[0]:.2f} {load[1]:.2f} "
              f"{load[2]:.2f}, {os.cpu_count()} cores, broker on the same machine):")
        for mode, label in (("LocalSteps", "local activities"), ("RemoteSteps", "normal activities")):
            med = statistics.median(figures[mode])
            print(f"  {label:18s} median {med * 1000:7.0f} ms  ({med / args.steps * 1000:.2f} ms a step; "
                  f"runs {', '.join(f'{t * 1000:.0f}' for t in figures[mode])} ms)")
    finally:
        client.close()
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(60)


if __name__ == "__main__":
    main()
