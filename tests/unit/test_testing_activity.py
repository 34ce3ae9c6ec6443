"""processor.testing.ActivityEnvironment: one activity run as a worker runs an attempt (issue 11)."""

from __future__ import annotations

import asyncio

import pytest

from processor import activity
from processor.exceptions import ActivityCancelledError, ConfigError
from processor.testing import ActivityEnvironment


@activity.defn
def fetch_pages(count: int) -> int:
    info = activity.info()
    start = info.heartbeat_details[0] if info.heartbeat_details else 0
    for page in range(start, count):
        activity.heartbeat(page + 1)
    return count - start + info.attempt * 1000


@activity.defn(name="double")
async def double_it(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x + activity.info().activity_seq


def test_a_retried_attempt_resumes_from_its_heartbeat_details() -> None:
    env = ActivityEnvironment(attempt=2, heartbeat_details=(3,))
    assert env.run(fetch_pages, 5) == 2 + 2000
    assert env.heartbeats == [(4,), (5,)]
    assert env.info_for(fetch_pages).idempotency_key == "test-workflow/1"


def test_an_async_activity_sees_its_info() -> None:
    assert ActivityEnvironment(activity_seq=7).run(double_it, 4) == 15
    assert ActivityEnvironment().info_for(double_it).activity_type == "double"


def test_a_cancel_raises_at_the_next_heartbeat() -> None:
    env = ActivityEnvironment()
    env.on_heartbeat = lambda details: env.cancel("the order was withdrawn") if details == (2,) else None
    with pytest.raises(ActivityCancelledError, match="the order was withdrawn"):
        env.run(fetch_pages, 10)
    assert env.heartbeats == [(1,), (2,)], "it stopped at the heartbeat after the cancel"


def test_a_plain_function_is_refused() -> None:
    with pytest.raises(ConfigError, match="is not an activity"):
        ActivityEnvironment().run(lambda: 1)
