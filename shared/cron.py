"""NCRONTAB schedules (`{second} {minute} {hour} {day} {month} {day-of-week}`, UTC) for the worker's timer.

`Schedule.parse` is the one parser of ENFORCE_SCHEDULE: the settings (and so `exoprov doctor`) validate with it
and the worker runs what it returns. In Azure the Functions host reads the same text with NCrontab
(github.com/atifaziz/NCrontab, used by Azure/azure-webjobs-sdk-extensions CronSchedule.cs), so this parser
accepts only what NCrontab accepts and gives it the same meaning:

* 6 fields, or 5 without `{second}` (which then fires at second 0), separated by spaces;
* `*`, a value, a range `a-b`, a step `*/n`, `a-b/n` or `a/n` (from a to the field's maximum), lists with `,`;
* month names only in the month field, weekday names only in the day-of-week field, in English, any case,
  the full name or an abbreviation of at least three letters (`Jan`, `Sept`, `Mon`, `Thurs`);
* day-of-week is 0-6 with 0 for Sunday; NCrontab has no 7;
* the day and the day-of-week must both match (NCrontab ANDs them, unlike Vixie cron's OR).

It refuses, with the field and its allowed values, what NCrontab refuses and a few things NCrontab accepts but
silently reinterprets: a range written backwards (NCrontab swaps its ends), a step of 0 (NCrontab reads 1),
one- and two-letter names (NCrontab takes the first name they begin, so `Ju` is June), and a schedule that
never fires (31 February). A TimeSpan (`01:00:00`), which the host runs only on an App Service plan, is refused.
"""

from __future__ import annotations

import calendar
from bisect import bisect_left
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["Schedule"]

MAX_LENGTH = 1000
_QUARTZ = frozenset("LW#?")
_MONTH_NAMES = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)
_WEEKDAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_FIELD_ORDER = "{second} {minute} {hour} {day} {month} {day-of-week}"
# The longest each month can be: 29 February exists (in leap years), 30 February never does.
_LONGEST_MONTH = {month: 29 if month == 2 else calendar.monthrange(2001, month)[1] for month in range(1, 13)}


@dataclass(frozen=True)
class _Field:
    """One position of the expression: its name, its values and, for month and day-of-week, its names."""

    name: str
    low: int
    high: int
    allowed: str
    names: tuple[str, ...] = ()

    def refuse(self, text: str, problem: str) -> ValueError:
        return ValueError(f"{self.name} field {text!r}: {problem}")


_SECOND = _Field("second", 0, 59, "0-59")
_MINUTE = _Field("minute", 0, 59, "0-59")
_HOUR = _Field("hour", 0, 23, "0-23")
_DAY = _Field("day", 1, 31, "1-31")
_MONTH = _Field("month", 1, 12, "1-12 or Jan-Dec", _MONTH_NAMES)
_WEEKDAY = _Field("day-of-week", 0, 6, "0-6 (0 is Sunday) or Sun-Sat", _WEEKDAY_NAMES)
_FIELDS = (_SECOND, _MINUTE, _HOUR, _DAY, _MONTH, _WEEKDAY)


@dataclass(frozen=True)
class Schedule:
    """The sets of seconds, minutes, hours, days, months and weekdays (0 is Sunday) a schedule fires on."""

    expression: str
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]

    @classmethod
    def parse(cls, expression: str) -> Schedule:
        """The schedule `expression` describes; ValueError naming the field and its allowed values if it is not one."""
        if len(expression) > MAX_LENGTH:
            raise ValueError(f"longer than {MAX_LENGTH} characters")
        if any(c.isspace() and c != " " for c in expression):
            raise ValueError("separate the fields with spaces only (NCRONTAB does not split on tabs or line breaks)")
        fields = expression.split()
        if len(fields) == 1 and ":" in fields[0]:
            raise ValueError(
                f"{fields[0]!r} looks like a TimeSpan (hh:mm:ss), which exoprov does not run; write it as NCRONTAB "
                f"with 6 fields, {_FIELD_ORDER}, e.g. '0 0 * * * *' for every hour"
            )
        if len(fields) not in (5, 6):
            raise ValueError(
                f"expected NCRONTAB with 6 fields, {_FIELD_ORDER} (or 5, without {{second}}); found {len(fields)}"
            )
        texts = fields if len(fields) == 6 else ["0", *fields]  # the 5-field form fires at second 0
        seconds, minutes, hours, days, months, weekdays = (
            _parse_field(field, text) for field, text in zip(_FIELDS, texts, strict=True)
        )
        if not any(day <= _LONGEST_MONTH[month] for month in months for day in days):
            # Any other month and day falls on every weekday within 400 years (the Gregorian cycle), so it fires.
            raise ValueError(f"the schedule never fires: month(s) {_listing(months)} have no day {_listing(days)}")
        return cls(" ".join(fields), seconds, minutes, hours, days, months, weekdays)

    def matches_day(self, day: datetime) -> bool:
        """Whether the schedule fires on this date: its month, its day and its weekday must all match (NCrontab)."""
        return day.month in self.months and day.day in self.days and day.isoweekday() % 7 in self.weekdays

    def next_after(self, moment: datetime) -> datetime:
        """The first firing time strictly after `moment`, on the same clock (the worker passes naive UTC)."""
        start = moment.replace(microsecond=0) + timedelta(seconds=1)
        months, days = sorted(self.months), sorted(self.days)
        # 400 years is the Gregorian calendar's cycle: a day that exists falls on every weekday within it.
        for year in range(start.year, min(start.year + 401, datetime.max.year + 1)):
            for month in months:
                if (year, month) < (start.year, start.month):
                    continue
                last = calendar.monthrange(year, month)[1]
                for day_of_month in days:
                    if day_of_month > last:
                        break
                    day = start.replace(year=year, month=month, day=day_of_month, hour=0, minute=0, second=0)
                    if day.date() < start.date() or not self.matches_day(day):
                        continue
                    found = self._first_time(day, start)
                    if found is not None:
                        return found
        raise ValueError("the schedule does not fire before the year 10000")

    def _first_time(self, day: datetime, start: datetime) -> datetime | None:
        """The first firing time on `day` at or after `start` (None when the day's last one is earlier)."""
        hours, minutes, seconds = sorted(self.hours), sorted(self.minutes), sorted(self.seconds)
        if day.date() > start.date():
            return day.replace(hour=hours[0], minute=minutes[0], second=seconds[0])
        for hour in hours[bisect_left(hours, start.hour) :]:
            if hour > start.hour:
                return day.replace(hour=hour, minute=minutes[0], second=seconds[0])
            for minute in minutes[bisect_left(minutes, start.minute) :]:
                if minute > start.minute:
                    return day.replace(hour=hour, minute=minute, second=seconds[0])
                index = bisect_left(seconds, start.second)
                if index < len(seconds):
                    return day.replace(hour=hour, minute=minute, second=seconds[index])
        return None


def _parse_field(field: _Field, text: str) -> frozenset[int]:
    values: set[int] = set()
    for part in text.split(","):
        if not part:
            raise field.refuse(text, "an empty item in the list")
        body, slash, step_text = part.partition("/")
        step = _step(field, text, step_text) if slash else 1
        if body == "*":
            first, last = field.low, field.high
        elif "-" in body:
            low_text, _, high_text = body.partition("-")
            first, last = _value(field, text, low_text), _value(field, text, high_text)
            if first > last:
                raise field.refuse(text, f"the range {low_text}-{high_text} runs backwards; write it low-high")
        else:
            first = _value(field, text, body)
            last = field.high if slash else first  # `a/n` runs from a to the maximum, as in NCrontab
        values.update(range(first, last + 1, step))
    return frozenset(values)


def _step(field: _Field, text: str, step_text: str) -> int:
    count = field.high - field.low + 1
    if not (step_text.isascii() and step_text.isdigit() and 1 <= int(step_text) <= count):
        raise field.refuse(text, f"a step must be a whole number from 1 to {count}")
    return int(step_text)


def _value(field: _Field, text: str, token: str) -> int:
    takes = f"the {field.name} field takes {field.allowed}"
    if token.isascii() and token.isdigit():
        value = int(token)
        if not field.low <= value <= field.high:
            sunday = " (NCRONTAB has no 7 for Sunday: use 0 or Sun)" if field is _WEEKDAY and value == 7 else ""
            raise field.refuse(text, f"{value} is outside {field.low}-{field.high}{sunday}")
        return value
    if not token:
        raise field.refuse(text, f"a value is missing; {takes}")
    word = token.lower()
    if not (token.isascii() and token.isalpha()) or not field.names:
        other = _name_kind(word)
        said = f"{token!r} is a {other} name" if other else f"{token!r} is not a number"
        quartz = " (L, W, # and ? are not NCRONTAB)" if not other and _QUARTZ & set(token.upper()) else ""
        raise field.refuse(text, f"{said}; {takes}{quartz}")
    for index, name in enumerate(field.names):
        if name.startswith(word):
            if len(word) < 3:
                raise field.refuse(text, f"{token!r} is too short: write at least three letters, e.g. {name[:3]}")
            return field.low + index
    other = _name_kind(word)
    said = f"{token!r} is a {other} name" if other else f"{token!r} is not a {field.name} name"
    raise field.refuse(text, f"{said}; {takes}")


def _name_kind(word: str) -> str | None:
    """Which field a name of three letters or more belongs to, if any."""
    if len(word) >= 3 and any(name.startswith(word) for name in _MONTH_NAMES):
        return "month"
    if len(word) >= 3 and any(name.startswith(word) for name in _WEEKDAY_NAMES):
        return "day-of-week"
    return None


def _listing(values: frozenset[int]) -> str:
    return ",".join(str(v) for v in sorted(values))
