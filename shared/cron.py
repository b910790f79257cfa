"""NCRONTAB schedules (`{second} {minute} {hour} {day} {month} {day-of-week}`, UTC) for the worker's timer."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

_NAMES = {
    "jan": 1,
    "feb": 2,
    "mar": 3,
    "apr": 4,
    "may": 5,
    "jun": 6,
    "jul": 7,
    "aug": 8,
    "sep": 9,
    "oct": 10,
    "nov": 11,
    "dec": 12,
    "sun": 0,
    "mon": 1,
    "tue": 2,
    "wed": 3,
    "thu": 4,
    "fri": 5,
    "sat": 6,
}
_RANGES = ((0, 59), (0, 59), (0, 23), (1, 31), (1, 12), (0, 6))


@dataclass(frozen=True)
class Schedule:
    """The sets of seconds, minutes, hours, days, months and weekdays a schedule fires on."""

    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]
    any_day: bool
    any_weekday: bool

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        fields = expression.split()
        if len(fields) == 5:
            fields = ["0", *fields]  # the 5-field form fires at second 0
        if len(fields) != 6:
            raise ValueError(f"{expression!r}: expected 6 fields (second minute hour day month day-of-week)")
        sets = [_field(text, low, high) for text, (low, high) in zip(fields, _RANGES, strict=True)]
        weekdays = frozenset(d % 7 for d in sets[5])  # 7 is Sunday too
        return cls(sets[0], sets[1], sets[2], sets[3], sets[4], weekdays, fields[3] == "*", fields[5] == "*")

    def matches_day(self, day: datetime) -> bool:
        if day.month not in self.months:
            return False
        in_month, in_week = day.day in self.days, (day.isoweekday() % 7) in self.weekdays
        # As in cron: when both day fields are restricted, either one matching is enough.
        if self.any_day or self.any_weekday:
            return in_month and in_week
        return in_month or in_week

    def next_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after `moment` (looked for within the next eight years)."""
        start = moment.replace(microsecond=0) + timedelta(seconds=1)
        day = start.replace(hour=0, minute=0, second=0)
        for _ in range(366 * 8):
            if self.matches_day(day):
                for hour in sorted(self.hours):
                    for minute in sorted(self.minutes):
                        for second in sorted(self.seconds):
                            candidate = day.replace(hour=hour, minute=minute, second=second)
                            if candidate >= start:
                                return candidate
            day += timedelta(days=1)
        raise ValueError("the schedule never fires")


def _field(text: str, low: int, high: int) -> frozenset[int]:
    values: set[int] = set()
    for part in text.lower().split(","):
        body, _, step_text = part.partition("/")
        step = _value(step_text) if step_text else 1
        if body == "*":
            first, last = low, high
        elif "-" in body:
            a, b = body.split("-", 1)
            first, last = _value(a), _value(b)
        else:
            first = _value(body)
            last = high if step_text else first
        if step < 1:
            raise ValueError(f"{text!r}: a step must be 1 or more")
        if first > last:
            raise ValueError(f"{text!r}: the range {first}-{last} runs backwards")
        if not (low <= first and last <= high + (1 if high == 6 else 0)):
            raise ValueError(f"{text!r} is outside {low}-{high}")
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _value(text: str) -> int:
    if text in _NAMES:
        return _NAMES[text]
    if not (text.isascii() and text.isdigit()):
        raise ValueError(f"{text!r} is not a number or a month or weekday name (L, W and # are not supported)")
    return int(text)
