"""processor/_cron.py: cron expressions and interval grids, as schedules compute their firings."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from processor._cron import next_interval, parse
from processor.exceptions import ConfigError

MON = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)  # a Monday


def _run(expr: str, start: datetime, n: int) -> list[str]:
    cron, out, t = parse(expr), [], start
    for _ in range(n):
        t = cron.next_after(t)
        out.append(t.strftime("%a %d %H:%M"))
    return out


def test_weekdays_at_nine_skip_the_weekend() -> None:
    assert _run("0 9 * * MON-FRI", MON, 6) == ["Tue 06 09:00", "Wed 07 09:00", "Thu 08 09:00", "Fri 09 09:00",
                                              "Mon 12 09:00", "Tue 13 09:00"]


def test_steps_lists_and_ranges() -> None:
    assert _run("*/20 * * * *", MON, 4) == ["Mon 05 09:20", "Mon 05 09:40", "Mon 05 10:00", "Mon 05 10:20"]
    assert _run("5,35 8-9 * * *", MON, 3) == ["Mon 05 09:05", "Mon 05 09:35", "Tue 06 08:05"]
    assert _run("10-50/20 9 * * *", MON, 4) == ["Mon 05 09:10", "Mon 05 09:30", "Mon 05 09:50", "Tue 06 09:10"]


def test_both_day_fields_restricted_match_either() -> None:
    # the 1st of the month, or any Sunday (crontab's rule): Sun 11, Sun 18, Sun 25, Sun 1 Feb, ...
    assert _run("0 0 1 * 0", MON, 3) == ["Sun 11 00:00", "Sun 18 00:00", "Sun 25 00:00"]
    assert _run("0 0 1 * 7", datetime(2026, 1, 26, tzinfo=UTC), 2) == ["Sun 01 00:00", "Sun 08 00:00"]


def test_aliases_and_month_names() -> None:
    assert _run("@daily", MON, 1) == ["Tue 06 00:00"]
    assert parse("0 0 1 JAN,jul *").months == frozenset({1, 7})


def test_a_time_exactly_on_the_grid_is_not_its_own_next() -> None:
    assert parse("0 9 * * *").next_after(MON) == MON + timedelta(days=1)
    assert next_interval(MON, timedelta(seconds=2)) == MON + timedelta(seconds=2)
    assert next_interval(MON + timedelta(milliseconds=1), timedelta(seconds=2)) == MON + timedelta(seconds=2)


def test_intervals_are_aligned_to_the_epoch_and_an_offset() -> None:
    every = timedelta(hours=1)
    assert next_interval(MON + timedelta(minutes=10), every) == MON + every
    assert next_interval(MON + timedelta(minutes=10), every, timedelta(minutes=15)) == MON + timedelta(minutes=15)


@pytest.mark.parametrize(("expr", "says"), [
    ("0 9 * *", "has 4 field"),
    ("61 * * * *", "minute 61 is outside 0-59"),
    ("0 9 * * FUNDAY", "day of week 'FUNDAY' is not a number or one of SUN"),
    ("0 9 30 FEB *", "matches no time"),
    ("*/0 * * * *", "step '0' must be a positive number"),
    ("0 10-9 * * *", "runs backwards"),
    ("", "five fields"),
])
def test_a_bad_expression_says_what_to_fix(expr: str, says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        parse(expr)
