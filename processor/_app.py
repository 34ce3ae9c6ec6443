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
import threading
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
    """`package.module:attribute` -> the Worker it names. Every way this can fail is a ConfigError
    of one line that names the file and line at fault: `processor run` shows it instead of a
    traceback."""
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"--app takes module:attribute (e.g. examples.orders:app); got {spec!r}")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    try:
        module = importlib.import_module(module_name)
    except SyntaxError as exc:
        raise ConfigError(f"--app {spec}: syntax error in {exc.filename}:{exc.lineno}: {exc.msg}") from None
    except Exception as exc:  # noqa: BLE001 - any error of user code at import time, told in one line
        missing = exc.name if isinstance(exc, ModuleNotFoundError) else None
        if missing is not None and (module_name == missing or module_name.startswith(missing + ".")):
            raise ConfigError(f"--app {spec}: no module named {missing!r} (looked in {os.getcwd()} and "
                              "sys.path; run from the directory that holds it, or fix the module path)") from None
        raise ConfigError(f"--app {spec}: importing {module_name} failed at {_where(exc)}{type(exc).__name__}: "
                          f"{exc}") from None
    if not hasattr(module, attr):
        found = sorted(n for n, v in vars(module).items() if isinstance(v, Worker))
        hint = f"; the Worker(s) it defines: {', '.join(found)}" if found else "; it defines no processor.Worker"
        raise ConfigError(f"--app {spec}: {module.__file__} has no attribute {attr!r}{hint}")
    app = getattr(module, attr)
    if not isinstance(app, Worker):
        raise ConfigError(f"--app {spec}: {attr} is of type {type(app).__name__}, not a processor.Worker "
                          f"(e.g. {attr} = Worker(workflows=[...], activities=[...]))")
    return app


def _where(exc: BaseException) -> str:
    """'file:line: ' of the user's code that `exc` came from, or ''.

    That is the innermost frame outside the import machinery, this package, the standard library
    and installed packages (where the user's line called into one of them); failing that, the
    module's own top-level line."""
    ours = str(Path(__file__).resolve().parent)
    installed = tuple({sys.prefix, sys.base_prefix, sys.exec_prefix})
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        filename = tb.tb_frame.f_code.co_filename
        if not filename.startswith("<"):
            frames.append((filename, tb.tb_lineno))
        tb = tb.tb_next
    users = [f for f in frames if not str(Path(f[0]).resolve()).startswith((ours, *installed))]
    pick = users[-1] if users else frames[0] if frames else None
    return f"{pick[0]}:{pick[1]}: " if pick else ""


QUICK_DEATH_S = 15.0  # a child that exits sooner than this after its start "died quickly"
HINT_AFTER = 3  # quick deaths in a row before the supervisor says why and backs off
MAX_BACKOFF_S = 30.0
POLL_S = 0.05  # how often the supervisor looks at its children: a death costs at most this before the restart


# A processor whose loop has not touched its heartbeat file for this long is wedged (a call that
# never returns): it is killed and restarted like one that died.
STALL_TIMEOUT_S = float(os.environ.get("DP_STALL_TIMEOUT_S") or 60)


@dataclass
class Child:
    role: str
    index: int
    argv: list[str]
    proc: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    started: float = 0.0
    quick_deaths: int = 0  # in a row
    restart_at: float = 0.0
    last_line: str = ""  # the last line it wrote to stderr: what its last error said
    reader: threading.Thread | None = None
    heartbeat: Path | None = None  # touched by the child's loop (processor/_engine/loop.py)

    @property
    def name(self) -> str:
        return f"{self.role}-{self.index}"

    def stalled(self) -> float | None:
        """Seconds since the child last showed progress, if that is past STALL_TIMEOUT_S."""
        if self.heartbeat is None or time.monotonic() - self.started < STALL_TIMEOUT_S:
            return None
        try:
            idle = time.time() - self.heartbeat.stat().st_mtime
        except OSError:
            idle = time.monotonic() - self.started
        return idle if idle > STALL_TIMEOUT_S else None

    def spawn(self) -> None:
        # Its own process group: a Ctrl-C in the terminal reaches the supervisor only, which stops
        # the children with SIGTERM -- a SIGINT would reach a child that is still importing as a
        # KeyboardInterrupt traceback, while SIGTERM's default action ends it silently.
        self.proc = subprocess.Popen(self.argv, stderr=subprocess.PIPE, process_group=0)
        self.started = time.monotonic()
        self.last_line = ""
        self.reader = threading.Thread(target=self._relay, args=(self.proc,), name=f"{self.name}-stderr",
                                       daemon=True)
        self.reader.start()

    def _relay(self, proc: subprocess.Popen[bytes]) -> None:
        """Pass the child's stderr through, remembering its last non-empty line."""
        assert proc.stderr is not None
        out = sys.stderr.buffer if hasattr(sys.stderr, "buffer") else None
        for raw in proc.stderr:
            if out is not None:
                out.write(raw)
                out.flush()
            line = raw.decode(errors="replace").strip()
            if line:
                self.last_line = line


def supervise(children: list[Child], stop: Callable[[], bool], restart: bool = True, grace: float = 30.0) -> None:
    """Run the children; restart any that dies (fenced or crashed), with a backoff that grows
    while it keeps dying within QUICK_DEATH_S of its start. After HINT_AFTER such deaths in a
    row, each restart is logged with the child's last stderr line -- a child that cannot start
    (no broker, a broken app) says why instead of being restarted silently for ever. On stop:
    SIGTERM to every child, SIGKILL to those still alive `grace` seconds later."""
    for c in children:
        c.spawn()
    try:
        while not stop():
            now = time.monotonic()
            for c in children:
                if c.proc is None:
                    if now >= c.restart_at:
                        c.spawn()
                    continue
                code = c.proc.poll()
                idle = c.stalled() if code is None else None
                if idle is not None:  # alive but wedged: as good as dead
                    log.warning("%s made no progress for %.0fs; killing it to restart it", c.name, idle)
                    c.proc.kill()
                    code = c.proc.wait()
                if code is None or not restart:
                    continue
                _restart_later(c, code, now)
            time.sleep(POLL_S)
    finally:
        _stop_all(children, grace)


def _restart_later(c: Child, code: int, now: float) -> None:
    if c.reader is not None:
        c.reader.join(1.0)  # its last words
    c.restarts += 1
    c.quick_deaths = c.quick_deaths + 1 if now - c.started < QUICK_DEATH_S else 0
    # The first death is restarted at once: a crashed processor's partitions wait for it (it is a
    # static group member: nobody else takes them over until its session times out).
    delay = 0.0 if c.quick_deaths <= 1 else min(MAX_BACKOFF_S, 0.2 * 2 ** (c.quick_deaths - 1))
    c.proc, c.restart_at = None, now + delay
    if c.quick_deaths >= HINT_AFTER:
        log.warning("%s exited with %s %d times in a row within %.0fs of starting; restarting in %.0fs "
                    "(restart %d). Its last error: %s", c.name, code, c.quick_deaths, QUICK_DEATH_S, delay,
                    c.restarts, c.last_line or "(it wrote nothing to stderr)")
    else:
        log.warning("%s exited with %s; restarting (restart %d)", c.name, code, c.restarts)


def _stop_all(children: list[Child], grace: float) -> None:
    live = [c.proc for c in children if c.proc is not None and c.proc.poll() is None]
    for proc in live:
        proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for proc in live:
        try:
            proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    for c in children:
        if c.reader is not None:
            c.reader.join(1.0)


def child_argv(app: str, role: str, index: int, bootstrap: str, prefix: str, state_dir: Path,
               verbose: bool = False, extra: Sequence[str] = ()) -> list[str]:
    """What the supervisor runs for one child; `verbose`: the supervisor's own -v, passed on;
    `extra`: more of its options for this child (its metrics port, the log format)."""
    return [sys.executable, "-m", "processor.cli", "run", "--app", app, "--role", role, "--index", str(index),
            "--bootstrap", bootstrap, "--prefix", prefix, "--state-dir", str(state_dir), *(["-v"] if verbose else []),
            *extra]


def running_child(state_dir: Path, role: str, index: int) -> int | None:
    """The pid of the live `--role role --index index` process run on `state_dir` (what
    child_argv starts), found in /proc; None if there is none."""
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if b"--role" in argv and b"--index" in argv and argv[argv.index(b"--role") + 1] == role.encode() and \
                argv[argv.index(b"--index") + 1] == str(index).encode() and str(state_dir).encode() in argv:
            return int(proc.name)
    return None
