"""`KafkaWorkflowEnvironment`: WorkflowEnvironment's calls against a real broker -- `processor
run` (a supervisor with its processors and workers) started for the app, and a `Client`.

The same test can run on either (the `workflow_env` fixture of the pytest plugin picks by
`--dp-env`): here nothing is simulated, so time does not skip -- `sleep()` sleeps, and a test
that waits out a two-day timer only makes sense in memory. Activity mocks cannot reach worker
processes; pass an app whose activities are the ones to run.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from processor._app import Worker
from processor._kafka.topics import ensure_topics, load_specs
from processor.exceptions import ConfigError
from processor.schedule import Schedules

START_TIMEOUT_S = 120.0  # a start waits this long for the processors' first answer (they join the group first)


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
    """Processors and workers of `app` on the broker at `bootstrap`, under a prefix of their own."""

    def __init__(self, app: Worker | str, bootstrap: str, *, processors: int = 1, workers: int = 1,
                 prefix: str | None = None, state_dir: str | Path | None = None) -> None:
        from processor.client import Client

        self.app = app_spec(app)
        self.bootstrap = bootstrap
        self.prefix = prefix or f"test{uuid.uuid4().hex[:10]}"
        self._own_dir = state_dir is None
        self._dir = Path(tempfile.mkdtemp(prefix="dp-kafkaenv-")) if state_dir is None else Path(state_dir)
        self.log_path = self._dir / "processes.log"
        ensure_topics(bootstrap, load_specs(self.prefix))  # before the client reads completions and replies
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p), "PYTHONUNBUFFERED": "1"}
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [sys.executable, "-m", "processor.cli", "run", "--app", self.app, "--bootstrap", bootstrap,
                 "--prefix", self.prefix, "--state-dir", str(self._dir / "state"), "--processors", str(processors),
                 "--workers", str(workers), "-v"],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        self.client = Client(bootstrap, prefix=self.prefix)
        self._closed = False

    # -- the clock: the real one ------------------------------------------------------------

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, duration: timedelta | float) -> None:
        time.sleep(duration.total_seconds() if isinstance(duration, timedelta) else float(duration))

    # -- the client's calls -------------------------------------------------------------------

    def start_workflow(self, workflow: type | Callable[..., Any] | str, *args: Any, id: str,  # noqa: A002
                       **options: Any) -> Any:
        self._check_running()
        options.setdefault("timeout", START_TIMEOUT_S)
        return self.client.start_workflow(workflow, *args, id=id, **options)

    def signal(self, workflow_id: str, signal_name: str, *args: Any, run_id: str | None = None) -> None:
        self.client.signal(workflow_id, signal_name, *args, run_id=run_id)

    def cancel(self, workflow_id: str, reason: str = "", *, run_id: str | None = None) -> None:
        self.client.cancel(workflow_id, reason, run_id=run_id)

    def terminate(self, workflow_id: str, reason: str = "", *, run_id: str | None = None) -> None:
        self.client.terminate(workflow_id, reason, run_id=run_id)

    def query(self, workflow_id: str, query_name: str, *args: Any, run_id: str | None = None,
              result_type: object = None) -> Any:
        return self.client.query(workflow_id, query_name, *args, run_id=run_id, result_type=result_type)

    def execute_update(self, workflow_id: str, update_name: str, *args: Any, run_id: str | None = None,
                       request_id: str | None = None, result_type: object = None, timeout: float = 60.0) -> Any:
        return self.client.execute_update(workflow_id, update_name, *args, run_id=run_id, request_id=request_id,
                                          result_type=result_type, timeout=timeout)

    def result(self, workflow_id: str, *, run_id: str | None = None, result_type: object = None,
               timeout: float = 60.0) -> Any:
        self._check_running()
        return self.client.result(workflow_id, timeout=timeout, result_type=result_type, run_id=run_id)

    def history(self, workflow_id: str, run_id: str | None = None) -> list[dict[str, Any]]:
        return self.client.history(workflow_id, run_id=run_id)

    def describe(self, workflow_id: str, run_id: str | None = None) -> dict[str, Any]:
        return self.client.describe(workflow_id, run_id=run_id)

    def get_handle(self, workflow_id: str, run_id: str | None = None) -> Any:
        return self.client.get_handle(workflow_id, run_id)

    # -- the processes ------------------------------------------------------------------------

    def logs(self, last_chars: int = 6_000) -> str:
        """The tail of what the processors and workers printed (for a failing test's report)."""
        try:
            return self.log_path.read_text(errors="replace")[-last_chars:]
        except OSError:
            return ""

    def _check_running(self) -> None:
        if self._closed:
            raise ConfigError("this KafkaWorkflowEnvironment is closed")
        if self._proc.poll() is not None:
            raise ConfigError(f"`processor run --app {self.app}` exited ({self._proc.returncode}): "
                              f"{self.logs(2_000).strip()}")

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.client.close()
        finally:
            if self._proc.poll() is None:
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

