"""`KafkaWorkflowEnvironment`: WorkflowEnvironment's calls against a real broker, so the same
test runs on either (the `workflow_env` fixture of the pytest plugin picks by `--dp-env`).

By default a processor and an activity worker of the app run in this process, on threads, on a
clock that skips (_skipping.py): `result()`, `execute_update()` and `sleep()` move it straight
to the next timer whenever nothing else can happen -- a workflow that waits two days for an
approval finishes in seconds, through real Kafka transactions, RocksDB and the task topic --
and `activity_mocks` replace activities by name, as in memory. Each call that changes a
workflow (start, signal, cancel, terminate, update) returns once nothing more can happen
without time passing, as in memory, so what follows it sees the workflow where it waits.

`processes=True` runs `processor run` (a supervisor with its processor and worker processes)
instead: nothing is simulated there, so time does not skip and activities cannot be mocked.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from processor._app import Worker, load_app
from processor._kafka.topics import ensure_topics, load_specs
from processor.exceptions import ConfigError
from processor.schedule import Schedules
from processor.testing._skipping import Settled

START_TIMEOUT_S = 120.0  # a start waits this long for the processors' first answer (they join the group first)
SLEEP_LIMIT_S = 300.0  # wall-clock seconds a sleep() may take
SETTLE_LIMIT_S = 30.0  # a changing call waits at most this long for the workflows to settle (a slow activity)
POLL_S = 0.02  # between two looks at whether everything has settled
CALL_JOIN_S = 60.0  # the skipping thread ends within one look (bounded by the probes' timeouts)


def app_spec(app: Worker | str) -> str:
    """`module:attribute` of an app: given as such, or found among the loaded modules."""
    if isinstance(app, str):
        return app
    for name, module in list(sys.modules.items()):
        if module is None or name == "__main__":
            continue
        for attr, value in list(vars(module).items()):
            if value is app:
                return f"{name}:{attr}"
    raise ConfigError("the app is not a module-level attribute of an imported module, so worker processes cannot "
                      "import it: pass it as 'module:attribute'")


class KafkaWorkflowEnvironment(Schedules):
    """Processors and workers of `app` on the broker at `bootstrap`, under a prefix of their own.

        with KafkaWorkflowEnvironment(app, "localhost:9092") as env:
            env.start_workflow(OrderWorkflow.run, order, id="order-1")
            with pytest.raises(WorkflowFailureError, match="not approved"):
                env.result("order-1")                   # two days skipped
    """

    def __init__(self, app: Worker | str, bootstrap: str, *,
                 activity_mocks: Mapping[str, Callable[..., Any]] | None = None,
                 start_time: datetime | None = None, processes: bool = False, processors: int = 1,
                 workers: int = 1, prefix: str | None = None, state_dir: str | Path | None = None) -> None:
        from processor._engine.settings import Settings
        from processor.client import Client
        from processor.testing._skipping import InProcess, SkippingClock

        if processes and (activity_mocks or start_time is not None):
            raise ConfigError("activity_mocks and start_time need the in-process environment (processes=False): "
                              "worker processes run the app's own activities on the wall clock")
        if not processes and (processors, workers) != (1, 1):
            raise ConfigError("the in-process environment runs one processor and one worker; pass processes=True "
                              "for more")
        if start_time is not None and start_time.tzinfo is None:
            raise ConfigError("start_time must be timezone-aware (e.g. datetime(2026, 1, 1, tzinfo=UTC))")
        self.app = app_spec(app) if processes else app
        self.bootstrap = bootstrap
        self.prefix = prefix or f"test{uuid.uuid4().hex[:10]}"
        self._own_dir = state_dir is None
        self._dir = Path(tempfile.mkdtemp(prefix="dp-kafkaenv-")) if state_dir is None else Path(state_dir)
        self.log_path = self._dir / "processes.log"
        ensure_topics(bootstrap, load_specs(self.prefix))  # before the client reads completions and replies
        self._closed = False
        self._proc: subprocess.Popen[bytes] | None = None
        self._inproc: InProcess | None = None
        self.clock = SkippingClock(int(start_time.timestamp() * 1000) if start_time is not None else None)
        if processes:
            env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PYTHONUNBUFFERED": "1"}
            with open(self.log_path, "ab") as log:
                self._proc = subprocess.Popen(
                    [sys.executable, "-m", "processor.cli", "run", "--app", str(self.app), "--bootstrap", bootstrap,
                     "--prefix", self.prefix, "--state-dir", str(self._dir / "state"), "--processors",
                     str(processors), "--workers", str(workers), "-v"],
                    stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        else:
            worker = load_app(app) if isinstance(app, str) else app
            settings = Settings(bootstrap=bootstrap, prefix=self.prefix, state_dir=self._dir / "state",
                                max_wait_ms=20, metrics_port=None)
            self._inproc = InProcess(worker, settings, self.clock, activity_mocks or {})
        self.client = Client(bootstrap, prefix=self.prefix)

    @property
    def time_skipping(self) -> bool:
        return self._inproc is not None

    # -- the clock ----------------------------------------------------------------------------

    def now(self) -> datetime:
        """The processors' clock (what `workflow.now()` reads): the wall clock, plus every skip."""
        return datetime.fromtimestamp(self.clock() / 1000, UTC)

    def sleep(self, duration: timedelta | float) -> None:
        """Let `duration` (seconds, or a timedelta) pass: skipped when in process -- every timer
        due on the way fires, in order, each with what it sets off -- else slept."""
        seconds = duration.total_seconds() if isinstance(duration, timedelta) else float(duration)
        if self._inproc is None:
            time.sleep(seconds)
            return
        self._check_running()
        until = self.clock() + int(seconds * 1000)
        deadline = time.monotonic() + SLEEP_LIMIT_S
        while self.clock() < until:
            self._check_running()
            if time.monotonic() > deadline:
                raise TimeoutError(f"sleep() could not pass its {seconds:g} s within {SLEEP_LIMIT_S:.0f} s of "
                                   "wall time: something kept running (an activity, a loop of timers)")
            settled = self._settled()
            if settled is not None:
                due = settled.next_due
                self.clock.advance_to(until if due is None else min(due, until))
            else:
                time.sleep(POLL_S)
        self._settle()

    # -- the client's calls -------------------------------------------------------------------

    def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                       **options: Any) -> Any:
        from processor.testing._env import EnvHandle

        self._check_running()
        options.setdefault("timeout", START_TIMEOUT_S)
        handle = self.client.start_workflow(workflow, *args, id=id, **options)
        self._settle()
        return EnvHandle(self, handle.id, handle.run_id, handle.outcome)  # type: ignore[arg-type]

    def signal(self, workflow_id: str, signal_name: str, *args: Any, run_id: str | None = None) -> None:
        self.client.signal(workflow_id, signal_name, *args, run_id=run_id)
        self._settle()

    def cancel(self, workflow_id: str, reason: str = "", *, run_id: str | None = None) -> None:
        self.client.cancel(workflow_id, reason, run_id=run_id)
        self._settle()

    def terminate(self, workflow_id: str, reason: str = "", *, run_id: str | None = None) -> None:
        self.client.terminate(workflow_id, reason, run_id=run_id)
        self._settle()

    def query(self, workflow_id: str, query_name: str, *args: Any, run_id: str | None = None,
              result_type: object = None) -> Any:
        return self.client.query(workflow_id, query_name, *args, run_id=run_id, result_type=result_type)

    def execute_update(self, workflow_id: str, update_name: str, *args: Any, run_id: str | None = None,
                       request_id: str | None = None, result_type: object = None, timeout: float = 60.0) -> Any:
        """Run an update to its end -- the clock skips ahead if its handler waits on a timer."""
        written = self._inproc.commands_written() if self._inproc is not None else 0
        with self._skipping(after_commands=written):  # not before the update itself is in the log
            out = self.client.execute_update(workflow_id, update_name, *args, run_id=run_id, request_id=request_id,
                                             result_type=result_type, timeout=timeout)
        self._settle()
        return out

    def result(self, workflow_id: str, *, run_id: str | None = None, result_type: object = None,
               timeout: float = 60.0) -> Any:
        """The run's result, or the WorkflowFailureError it closed with; the clock skips ahead
        while the workflow waits on timers. TimeoutError past `timeout` wall-clock seconds."""
        self._check_running()
        with self._skipping(awaited=workflow_id):
            out = self.client.result(workflow_id, timeout=timeout, result_type=result_type, run_id=run_id)
        self._settle()
        return out

    def history(self, workflow_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        return self.client.history(workflow_id, run_id=run_id)

    def describe(self, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
        return self.client.describe(workflow_id, run_id=run_id)

    def get_handle(self, workflow_id: str, run_id: str | None = None) -> Any:
        from processor.testing._env import EnvHandle

        return EnvHandle(self, workflow_id, run_id)  # type: ignore[arg-type]

    # -- skipping -----------------------------------------------------------------------------

    def _settled(self) -> Settled | None:
        assert self._inproc is not None
        try:
            return self._inproc.settled()
        except Exception:  # noqa: BLE001 - a probe the broker did not answer: not settled, look again
            return None

    def _settle(self) -> None:
        """Wait (at most SETTLE_LIMIT_S) until nothing more can happen without time passing."""
        if self._inproc is None:
            return
        deadline = time.monotonic() + SETTLE_LIMIT_S
        while time.monotonic() < deadline and self._settled() is None:
            self._check_running()
            time.sleep(POLL_S)

    @contextmanager
    def _skipping(self, awaited: str | None = None, after_commands: int | None = None) -> Iterator[None]:
        """While the body waits on the broker, a thread skips time (in process only): for
        `awaited`, only while that workflow runs (never past its close, so never to another
        workflow's timer or a retention prune); after `after_commands`, only once the commands
        topic holds more records than that (the body's own command is in the log)."""
        if self._inproc is None:
            yield
            return
        stop = threading.Event()
        thread = threading.Thread(target=self._skip_until, args=(stop, awaited, after_commands), name="dp-test-skip",
                                  daemon=True)
        thread.start()
        try:
            yield
        finally:
            stop.set()
            thread.join(CALL_JOIN_S)

    def _skip_until(self, stop: threading.Event, awaited: str | None, after_commands: int | None) -> None:
        """While the test thread waits: jump to each next timer once nothing else can happen."""
        inproc = self._inproc
        assert inproc is not None
        while not stop.is_set() and inproc.alive():
            try:
                if after_commands is not None:
                    if inproc.commands_written() <= after_commands:
                        stop.wait(POLL_S)
                        continue
                    after_commands = None
                if awaited is not None and not inproc.is_open(awaited):
                    return  # closed (or not started): nothing to skip for
                settled = inproc.settled()
            except Exception:  # noqa: BLE001 - a probe the broker did not answer: look again
                settled = None
            due = settled.next_awaited if settled is not None else None
            if due is not None and due > self.clock() and not stop.is_set():
                self.clock.advance_to(due)
            else:
                stop.wait(POLL_S)

    # -- the processes ------------------------------------------------------------------------

    def logs(self, last_chars: int = 6_000) -> str:
        """The tail of what `processor run` printed (processes=True; in process they log here)."""
        try:
            return self.log_path.read_text(errors="replace")[-last_chars:]
        except OSError:
            return ""

    def _check_running(self) -> None:
        if self._closed:
            raise ConfigError("this KafkaWorkflowEnvironment is closed")
        if self._proc is not None and self._proc.poll() is not None:
            raise ConfigError(f"`processor run --app {self.app}` exited ({self._proc.returncode}): "
                              f"{self.logs(2_000).strip()}")
        if self._inproc is not None and not self._inproc.alive():
            errors = "; ".join(str(e) for e in self._inproc.errors) or "stopped"
            raise ConfigError(f"the environment's processor or worker stopped: {errors}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        finally:
            if self._inproc is not None:
                self._inproc.close()
            if self._proc is not None and self._proc.poll() is None:
                os.killpg(self._proc.pid, signal.SIGTERM)
                try:
                    self._proc.wait(60)
                except subprocess.TimeoutExpired:
                    os.killpg(self._proc.pid, signal.SIGKILL)
                    self._proc.wait(10)
            if self._own_dir:
                shutil.rmtree(self._dir, ignore_errors=True)

    def __enter__(self) -> KafkaWorkflowEnvironment:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
