"""The pytest plugin of processor.testing: loaded by its entry point (`pytest11`) wherever the
package is installed, or by `pytest -p processor.testing` (the package re-exports what is here).

Fixtures:
  `dp_app`             -- override it: your Worker (or "module:attribute") -- what the others run;
  `workflow_env`       -- a WorkflowEnvironment (in memory, time skipping) by default; with
                          `--dp-env kafka` (or DP_TEST_ENV=kafka, or a `dp_env` fixture of your
                          own) a KafkaWorkflowEnvironment on a real broker (time skips there
                          too), so the same test runs on both;
  `kafka_bootstrap`    -- a real broker for the session: KAFKA_BOOTSTRAP if set, else the local
                          broker this package runs (`processor kafka start`) in a temp dir;
  `replay_histories`   -- replay every history file (JSON lines, `processor.replayer`) in a
                          directory against dp_app's workflows; fails naming each that no longer
                          replays -- the "replay production histories in CI" habit.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from processor._app import Worker, load_app
from processor.exceptions import ProcessorError
from processor.replayer import Replayer
from processor.testing._env import WorkflowEnvironment
from processor.testing._kafka_env import KafkaWorkflowEnvironment

MODES = ("memory", "kafka")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("durable-processor")
    group.addoption("--dp-env", choices=MODES, default=None,
                    help="where workflow_env runs workflows: memory (default: time skips) or kafka (a real broker)")


def _app(dp_app: Worker | str) -> Worker:
    return load_app(dp_app) if isinstance(dp_app, str) else dp_app


@pytest.fixture
def dp_app() -> Worker | str:
    """Override in your conftest.py: `@pytest.fixture def dp_app(): return app`."""
    raise pytest.UsageError("define a `dp_app` fixture that returns your processor.Worker (or 'module:attribute') "
                            "for workflow_env and replay_histories to run")


@pytest.fixture(scope="session")
def kafka_bootstrap(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real broker: KAFKA_BOOTSTRAP, else the local one started for this session."""
    given = os.environ.get("KAFKA_BOOTSTRAP")
    if given:
        yield given
        return
    yield from local_broker(tmp_path_factory)


def local_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The local broker (`processor kafka start`) on free ports in a session temp dir, stopped after."""
    from processor._kafka import local

    home = tmp_path_factory.mktemp("kafka")
    info, _ = local.start(home, port=local.free_port(), controller_port=local.free_port())
    try:
        yield info.bootstrap
    finally:
        local.stop(home)


@pytest.fixture
def dp_env(request: pytest.FixtureRequest) -> str:
    """Where workflow_env runs: `--dp-env`, else DP_TEST_ENV, else "memory". Override it (e.g.
    `@pytest.fixture(params=["memory", "kafka"])`) to run the same tests on both."""
    return str(request.config.getoption("--dp-env") or os.environ.get("DP_TEST_ENV") or "memory")


@pytest.fixture
def workflow_env(request: pytest.FixtureRequest, dp_app: Worker | str, dp_env: str) -> Iterator[Any]:
    if dp_env not in MODES:
        raise pytest.UsageError(f"DP_TEST_ENV must be one of {', '.join(MODES)}; got {dp_env!r}")
    if dp_env == "memory":
        with WorkflowEnvironment(_app(dp_app)) as env:
            yield env
        return
    bootstrap = request.getfixturevalue("kafka_bootstrap")
    with KafkaWorkflowEnvironment(_app(dp_app), bootstrap) as kenv:
        yield kenv


@pytest.fixture
def replay_histories(dp_app: Worker | str) -> Callable[[str | Path], int]:
    """`replay_histories(directory)` -> how many histories replayed; AssertionError naming every
    file whose history the current code no longer replays (and why)."""
    replayer = Replayer(_app(dp_app).workflows)

    def replay(directory: str | Path) -> int:
        files = sorted(p for p in Path(directory).iterdir() if p.suffix in (".jsonl", ".json"))
        if not files:
            raise AssertionError(f"no history files (*.jsonl) in {directory}")
        failed = []
        for path in files:
            try:
                replayer.replay_json(path)
            except ProcessorError as exc:
                failed.append(f"{path.name}: {exc}")
        if failed:
            raise AssertionError(f"{len(failed)} of {len(files)} histories no longer replay:\n" + "\n".join(failed))
        return len(files)

    return replay
