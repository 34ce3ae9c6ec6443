from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from worker_twins import worker_factory

from processor._engine.worker import ActivityWorker


@pytest.fixture
def make_worker(monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., ActivityWorker]]:
    with worker_factory(monkeypatch, shutdown_grace_s=0.0, revoke_grace_s=0.0) as make:
        yield make
