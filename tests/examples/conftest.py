"""The project's own example tests, written as a user writes them: on processor.testing's pytest
plugin (its fixtures), each run in memory and on the real broker."""

from __future__ import annotations

import pytest

from examples.orders import app
from processor import Worker


@pytest.fixture
def dp_app() -> Worker:
    return app


@pytest.fixture(params=["memory", "kafka"])
def dp_env(request: pytest.FixtureRequest) -> str:
    return str(request.param)
