from __future__ import annotations

import pytest


@pytest.fixture(params=["cached", "always_replay"])
def always_replay(request: pytest.FixtureRequest) -> bool:
    """Every scenario runs twice: one live instance, and rebuilt from history after each step."""
    return bool(request.param == "always_replay")
