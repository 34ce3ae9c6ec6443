"""`Worker`: what an application registers, and the processes that run it.

Registration is explicit and local (no global registry): `Worker(workflows=[...], activities=[...])`
is validated at construction, and `processor run --app module:attr` loads it by name in every
child process it starts.
"""

from __future__ import annotations

import importlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from processor.activity import ActivityDefinition
from processor.exceptions import ConfigError
from processor.workflow import WorkflowDefinition

log = logging.getLogger("processor.run")


@dataclass(frozen=True)
class Worker:
    """The workflows and activities of an application, and the task queue its activities serve."""

    workflows: Sequence[type] = ()
    activities: Sequence[Callable[..., Any]] = ()
    task_queue: str = "default"
    max_concurrent_activities: int = 100

    def __post_init__(self) -> None:
        if not self.workflows and not self.activities:
            raise ConfigError("Worker(workflows=[...], activities=[...]) needs at least one workflow or activity")
        names = [WorkflowDefinition.of(w).name for w in self.workflows]
        dupes = {n for n in names if names.count(n) > 1}
        if dupes:
            raise ConfigError(f"two workflows are registered under the name(s) {sorted(dupes)}: rename one "
                              "with @workflow.defn(name=...)")
        acts = [ActivityDefinition.of(a).name for a in self.activities]
        dupes = {n for n in acts if acts.count(n) > 1}
        if dupes:
            raise ConfigError(f"two activities are registered under the name(s) {sorted(dupes)}: rename one "
                              "with @activity.defn(name=...)")
        if self.max_concurrent_activities < 1:
            raise ConfigError("max_concurrent_activities must be at least 1")


def load_app(spec: str) -> Worker:
    """`package.module:attribute` -> the Worker it names."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--app takes module:attribute (e.g. examples.orders:app); got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import {module_name!r} for --app {spec}: {exc}") from exc
    app = getattr(module, attr, None)
    if not isinstance(app, Worker):
        raise ConfigError(f"{spec} is {type(app).__name__}, not a processor.Worker")
    return app


@dataclass
class Child:
    role: str
    index: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0


def supervise(children: list[Child], stop: Callable[[], bool], restart: bool = True) -> None:
    """Run the children; restart any that dies (fenced or crashed) with a short backoff."""
    for c in children:
        c.proc = subprocess.Popen(c.argv)
    try:
        while not stop():
            for c in children:
                assert c.proc is not None
                code = c.proc.poll()
                if code is not None and restart:
                    c.restarts += 1
                    log.warning("%s-%d exited with %s; restarting (restart %d)", c.role, c.index, code, c.restarts)
                    time.sleep(min(5.0, 0.2 * c.restarts))
                    c.proc = subprocess.Popen(c.argv)
            time.sleep(0.2)
    finally:
        for c in children:
            if c.proc is not None and c.proc.poll() is None:
                c.proc.send_signal(signal.SIGTERM)
        for c in children:
            if c.proc is not None:
                try:
                    c.proc.wait(30)
                except subprocess.TimeoutExpired:
                    c.proc.kill()


def child_argv(app: str, role: str, index: int, bootstrap: str, prefix: str, state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "processor.cli", "run", "--app", app, "--role", role, "--index", str(index),
            "--bootstrap", bootstrap, "--prefix", prefix, "--state-dir", str(state_dir)]
