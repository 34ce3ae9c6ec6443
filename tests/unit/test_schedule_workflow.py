"""Schedules (processor/schedule.py, issue 11 item 4) on the in-memory environment: the real
engine runs the schedule workflow, and the skipping clock makes minutes of firings instant."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processor.exceptions import ConfigError, WorkflowAlreadyStartedError
from processor.testing import WorkflowEnvironment
from tests.apps.basic import app

T0 = datetime(2026, 1, 5, 9, 0, 0, tzinfo=UTC)


def _ids(env: WorkflowEnvironment, prefix: str) -> list[str]:
    return sorted(w for w in env.bus.latest if w.startswith(prefix))


@pytest.fixture
def env() -> WorkflowEnvironment:
    with WorkflowEnvironment(app, start_time=T0) as e:
        yield e


def test_every_two_seconds_for_twenty_seconds_starts_ten_workflows_named_by_their_time(
        env: WorkflowEnvironment) -> None:
    handle = env.create_schedule("tick", "ThreeSteps", 1, every=timedelta(seconds=2))
    env.sleep(20)
    assert _ids(env, "tick-") == [f"tick-2026-01-05T09:00:{s:02d}Z" for s in range(2, 21, 2)]
    assert all(env.result(w) == [2, 3, 4] for w in _ids(env, "tick-"))
    d = handle.describe()
    assert (d["fired"], d["skipped"], d["missed"], d["next_fire_time"]) == (10, 0, 0, "2026-01-05T09:00:22Z")


def test_a_paused_schedule_fires_none_and_unpaused_goes_on_from_now(env: WorkflowEnvironment) -> None:
    handle = env.create_schedule("tick", "ThreeSteps", 1, every=timedelta(seconds=2))
    env.sleep(4)
    handle.pause("deploy")
    env.sleep(60)
    assert len(_ids(env, "tick-")) == 2
    assert handle.describe()["paused"] and handle.describe()["note"] == "deploy"
    handle.unpause()
    env.sleep(4)
    assert _ids(env, "tick-")[2:] == ["tick-2026-01-05T09:01:06Z", "tick-2026-01-05T09:01:08Z"], \
        "the paused minute is not fired late"


def test_a_cron_schedule_fires_on_weekdays_only(env: WorkflowEnvironment) -> None:
    env.create_schedule("daily", "ThreeSteps", 1, cron="0 9 * * MON-FRI")
    env.sleep(timedelta(days=7))
    assert _ids(env, "daily-") == [f"daily-2026-01-{d:02d}T09:00:00Z" for d in (6, 7, 8, 9, 12)]


def test_overlap_skip_and_buffer_one(env: WorkflowEnvironment) -> None:
    skip = env.create_schedule("skip", "Approval", 0.0, every=timedelta(seconds=10))  # runs until approved
    buffer = env.create_schedule("buf", "Approval", 0.0, every=timedelta(seconds=10), overlap="buffer_one")
    env.sleep(35)
    assert _ids(env, "skip-") == [] and skip.describe()["running"] == ["skip-2026-01-05T09:00:10Z"]
    assert skip.describe()["skipped"] == 2
    assert buffer.describe()["buffered"] == "2026-01-05T09:00:30Z"
    env.signal("buf-2026-01-05T09:00:10Z", "approve", "ops")
    assert buffer.describe()["running"] == ["buf-2026-01-05T09:00:30Z"], "the buffered firing starts at once"
    assert buffer.describe()["skipped"] == 1, "only one waits: the 09:00:20 firing was dropped for 09:00:30"


def test_overlap_cancel_other_and_allow_all(env: WorkflowEnvironment) -> None:
    cancel = env.create_schedule("cancel", "Approval", 0.0, every=timedelta(seconds=10), overlap="cancel_other")
    allow = env.create_schedule("all", "Approval", 0.0, every=timedelta(seconds=10), overlap="allow_all")
    env.sleep(30)
    assert cancel.describe()["running"] == ["cancel-2026-01-05T09:00:30Z"]
    assert [r["status"] for r in cancel.describe()["recent"]] == ["canceled", "canceled", "running"]
    assert len(allow.describe()["running"]) == 3


def test_firings_missed_while_no_processor_ran_follow_the_catch_up_window(env: WorkflowEnvironment) -> None:
    handle = env.create_schedule("tick", "ThreeSteps", 1, every=timedelta(seconds=2), catchup_window=5,
                                 overlap="allow_all")  # the late ones start together: none is skipped as overlapping
    env.sleep(4)
    env.now_ms += 10_000  # ten seconds pass with nothing running (09:00:14): the timers fire late
    env.sleep(0)
    d = handle.describe()
    assert d["missed"] == 2, "09:00:06 and :08 were more than 5 s late"
    assert _ids(env, "tick-") == [f"tick-2026-01-05T09:00:{s:02d}Z" for s in (2, 4, 10, 12, 14)]


def test_trigger_delete_and_a_clear_error_for_a_bad_spec(env: WorkflowEnvironment) -> None:
    handle = env.create_schedule("rare", "ThreeSteps", 1, cron="0 0 1 1 *")
    handle.trigger()
    assert handle.describe()["triggered"] == 1
    assert env.result("rare-manual-2026-01-05T09:00:00Z-1") == [2, 3, 4]
    with pytest.raises(WorkflowAlreadyStartedError):
        env.create_schedule("rare", "ThreeSteps", 1, cron="0 0 1 1 *")
    handle.delete()
    assert env.describe("schedule:rare")["status"] == "completed"
    with pytest.raises(ConfigError, match="exactly one of cron"):
        env.create_schedule("bad", "ThreeSteps", 1)
    with pytest.raises(ConfigError, match="overlap 'sometimes'"):
        env.create_schedule("bad", "ThreeSteps", 1, every=60, overlap="sometimes")
    with pytest.raises(ConfigError, match="minute 99"):
        env.create_schedule("bad", "ThreeSteps", 1, cron="99 * * * *")


def test_a_long_lived_schedule_continues_as_new_and_keeps_its_counts(env: WorkflowEnvironment) -> None:
    handle = env.create_schedule("many", "ThreeSteps", 1, every=timedelta(seconds=1))
    env.sleep(230)
    d = handle.describe()
    assert d["fired"] == 230 and len(_ids(env, "many-")) == 230
    starts = [e for e in env.history("schedule:many") if e["type"] == "WorkflowStarted"]
    assert len(starts) == 1 and env.describe("schedule:many")["history_length"] < 2_000, \
        "a fresh run (continue-as-new) after 100 firings"
