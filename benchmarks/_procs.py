"""The processes a benchmark runs: one processor and one worker of benchmarks.app, and stopping them."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def processor_and_worker(bootstrap: str, prefix: str, state: Path,
                         env: Mapping[str, str] | None = None) -> list[subprocess.Popen[bytes]]:
    return [subprocess.Popen([sys.executable, "-m", "processor.cli", "run", "--app", "benchmarks.app:app", "--role",
                              role, "--bootstrap", bootstrap, "--prefix", prefix, "--state-dir", str(state)],
                             cwd=REPO, env=dict(env) if env is not None else None) for role in ("processor", "worker")]


def stop(procs: Iterable[subprocess.Popen[bytes]], within_s: float = 60) -> None:
    """SIGTERM them all, then wait for each."""
    procs = list(procs)
    for p in procs:
        p.terminate()
    for p in procs:
        p.wait(within_s)
