"""Cron expressions, and when a schedule fires next: pure functions, no clock of their own.

Five fields, as in crontab(5): minute (0-59), hour (0-23), day of month (1-31), month (1-12 or
JAN-DEC), day of week (0-7 or SUN-SAT; 0 and 7 are Sunday). Each field is `*`, a number, a range
`a-b`, a step `*/n` or `a-b/n`, or a list of those (`1,15,30-45/5`). When both day fields are
restricted, a day matches if either does (crontab's rule). Also `@hourly`, `@daily`, `@weekly`,
`@monthly`, `@yearly`. Times are UTC.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from processor.exceptions import ConfigError

_MONTHS = {m: i + 1 for i, m in enumerate("JAN FEB MAR APR MAY JUN JUL AUG SEP OCT NOV DEC".split())}
_DAYS = {d: i for i, d in enumerate("SUN MON TUE WED THU FRI SAT".split())}
_ALIASES = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@weekly": "0 0 * * 0",
            "@monthly": "0 0 1 * *", "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *"}
_FIELDS: tuple[tuple[str, int, int, dict[str, int]], ...] = (
    ("minute", 0, 59, {}), ("hour", 0, 23, {}), ("day of month", 1, 31, {}), ("month", 1, 12, _MONTHS),
    ("day of week", 0, 7, _DAYS))
SEARCH_YEARS = 5  # an expression that matches no time within this many years is refused (e.g. 30 FEB)


@dataclass(frozen=True)
class Cron:
    text: str
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    any_day: bool  # day of month is `*`
    any_weekday: bool  # day of week is `*`

    def _day_matches(self, d: datetime) -> bool:
        if d.month not in self.months:
            return False
        dom, dow = d.day in self.days, (d.isoweekday() % 7) in self.weekdays
        if self.any_day and self.any_weekday:
            return True
        if self.any_day:
            return dow
        if self.any_weekday:
            return dom
        return dom or dow

    def next_after(self, t: datetime) -> datetime:
        """The first minute strictly after `t` (aware) that the expression matches."""
        t = t.astimezone(UTC).replace(second=0, microsecond=0) + timedelta(minutes=1)
        day = t.replace(hour=0, minute=0)
        for _ in range(366 * SEARCH_YEARS + 1):
            if self._day_matches(day):
                for h in sorted(self.hours):
                    for m in sorted(self.minutes):
                        candidate = day.replace(hour=h, minute=m)
                        if candidate >= t:
                            return candidate
            day += timedelta(days=1)
        raise ConfigError(f"cron {self.text!r} matches no time in {SEARCH_YEARS} years")


def _field(text: str, name: str, lo: int, hi: int, names: dict[str, int], whole: str) -> frozenset[int]:
    def number(token: str) -> int:
        token = token.upper()
        if token in names:
            return names[token]
        if not token.isdigit():
            raise ConfigError(f"cron {whole!r}: {name} {token!r} is not a number"
                              + (f" or one of {', '.join(names)}" if names else ""))
        value = int(token)
        if not lo <= value <= hi:
            raise ConfigError(f"cron {whole!r}: {name} {value} is outside {lo}-{hi}")
        return value

    out: set[int] = set()
    for part in text.split(","):
        span, _, step_text = part.partition("/")
        step = 1
        if step_text:
            if not step_text.isdigit() or int(step_text) < 1:
                raise ConfigError(f"cron {whole!r}: {name} step {step_text!r} must be a positive number")
            step = int(step_text)
        if span == "*":
            first, last = lo, hi
        elif "-" in span:
            a, _, b = span.partition("-")
            first, last = number(a), number(b)
            if first > last:
                raise ConfigError(f"cron {whole!r}: {name} range {span!r} runs backwards")
        else:
            first = number(span)
            last = hi if step_text else first
        out.update(range(first, last + 1, step))
    return frozenset(out)


@functools.lru_cache(maxsize=256)
def parse(text: str) -> Cron:
    """The Cron for `text`, or ConfigError saying which field is wrong and why. Cached: a
    schedule asks for its next firing on every turn of its loop, replays included."""
    if not isinstance(text, str) or not text.strip():
        raise ConfigError(f"a cron expression is five fields, e.g. '0 9 * * MON-FRI'; got {text!r}")
    expanded = _ALIASES.get(text.strip().lower(), text)
    parts = expanded.split()
    if len(parts) != 5:
        raise ConfigError(f"cron {text!r} has {len(parts)} field(s); it needs five: minute hour day-of-month "
                          "month day-of-week (e.g. '0 9 * * MON-FRI')")
    values = [_field(p, name, lo, hi, names, text) for p, (name, lo, hi, names) in zip(parts, _FIELDS, strict=True)]
    weekdays = frozenset(d % 7 for d in values[4])
    cron = Cron(text, values[0], values[1], values[2], values[3], weekdays, parts[2] == "*", parts[4] == "*")
    cron.next_after(datetime(2000, 1, 1, tzinfo=UTC))  # refuses one that never fires
    return cron


def next_interval(after: datetime, every: timedelta, offset: timedelta = timedelta(0)) -> datetime:
    """The first time strictly after `after` on the grid epoch + offset + k * every (Temporal's
    interval schedules: aligned to the epoch, so a restart or a replay computes the same times)."""
    step = every.total_seconds()
    base = datetime(1970, 1, 1, tzinfo=UTC) + offset
    k = int((after - base).total_seconds() // step) + 1
    return base + timedelta(seconds=k * step)
