"""ENFORCE_SCHEDULE: one parser for the settings, the doctor and the worker, with NCrontab's meaning.

The expected firing times below are worked out by hand from the documented meaning, not from the code.
Evidence:
- Learn, "Timer trigger for Azure Functions", sections "NCRONTAB expressions" and "NCRONTAB examples"
  (https://learn.microsoft.com/azure/azure-functions/functions-bindings-timer; the same text in
  MicrosoftDocs/azure-docs articles/azure-functions/functions-bindings-timer.md): the field order, the
  documented examples, "for days ... 0 to 6 where 0 starts with Sunday", names "case-insensitive" and
  "can be abbreviated", and a TimeSpan ("hh:mm:ss") only on an App Service plan.
- atifaziz/NCrontab, the library the host uses: NCrontab/CrontabFieldImpl.cs (ranges 0-59, 0-59, 0-23, 1-31,
  1-12 with month names, 0-6 with weekday names; a name matches when it begins the English name, ignoring case),
  NCrontab/CrontabSchedule.cs (TryGetNextOccurrence finds a day and month, then returns it only
  `if (this.daysOfWeek.Contains((int)nextTime.DayOfWeek))`: day AND day-of-week, not cron's OR) and
  NCrontab.Tests/CrontabScheduleTests.cs (the cases marked "NCrontab test" below).
- Azure/azure-webjobs-sdk-extensions src/WebJobs.Extensions/Extensions/Timers/Scheduling/CronSchedule.cs
  (5 space-separated fields parse without seconds, anything else with them) and TimerSchedule.cs (a
  TimeSpan is tried only when the expression is not NCRONTAB).
"""

from __future__ import annotations

import io
from datetime import datetime

import pytest

from shared.cron import Schedule
from shared.errors import ConfigurationError
from shared.settings import Settings
from tests.conftest import APP_SETTINGS

THU = datetime(2026, 1, 1, 8, 57, 30)  # Thursday 1 January 2026, 08:57:30 UTC


def firings(expression: str, start: datetime, count: int) -> list[datetime]:
    """The next `count` firing times of `expression` after `start`."""
    schedule, times, moment = Schedule.parse(expression), [], start
    for _ in range(count):
        moment = schedule.next_after(moment)
        times.append(moment)
    return times


def at(day: int, hour: int, minute: int = 0, second: int = 0, month: int = 1, year: int = 2026) -> datetime:
    return datetime(year, month, day, hour, minute, second)


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # The Learn page's table of NCRONTAB examples.
        ("0 */5 * * * *", THU, [at(1, 9, 0), at(1, 9, 5), at(1, 9, 10)]),  # once every five minutes
        ("0 0 * * * *", THU, [at(1, 9), at(1, 10), at(1, 11)]),  # once at the top of every hour
        ("0 0 */2 * * *", THU, [at(1, 10), at(1, 12), at(1, 14)]),  # once every two hours
        ("0 0 9-17 * * *", at(1, 16, 30), [at(1, 17), at(2, 9), at(2, 10)]),  # every hour from 9 AM to 5 PM
        ("0 30 9 * * *", THU, [at(1, 9, 30), at(2, 9, 30), at(3, 9, 30)]),  # at 9:30 AM every day
        ("0 30 9 * * 1-5", THU, [at(1, 9, 30), at(2, 9, 30), at(5, 9, 30), at(6, 9, 30)]),  # every weekday
        (  # at 9:30 AM every Monday in January: the Mondays of January 2026, then 4 January 2027
            "0 30 9 * Jan Mon",
            THU,
            [at(5, 9, 30), at(12, 9, 30), at(19, 9, 30), at(26, 9, 30), at(4, 9, 30, year=2027)],
        ),
        # The Learn page's table of value types.
        ("0 5 * * * *", THU, [at(1, 9, 5), at(1, 10, 5), at(1, 11, 5)]),  # a specific value: hh:05:00
        ("0 * 5 * * *", THU, [at(2, 5, 0), at(2, 5, 1), at(2, 5, 2)]),  # all values: 5:mm:00
        ("5-7 * * * * *", THU, [at(1, 8, 58, 5), at(1, 8, 58, 6), at(1, 8, 58, 7), at(1, 8, 59, 5)]),  # a range
        ("5,8,10 * * * * *", THU, [at(1, 8, 58, 5), at(1, 8, 58, 8), at(1, 8, 58, 10), at(1, 8, 59, 5)]),  # a set
    ],
)
def test_documented_examples_fire_when_the_learn_page_says(
    expression: str, start: datetime, expected: list[datetime]
) -> None:
    """Each example of the Learn page fires at the times its description gives, from Thursday 1 January 2026."""
    assert firings(expression, start, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # NCrontab test: 5 fields, the 1st of the month that is a Monday (1 Sep 2003, 1 Dec 2003, 1 Mar 2004).
        (
            "45 16 1 * Mon",
            datetime(2003, 1, 1, 12),
            [datetime(2003, 9, 1, 16, 45), datetime(2003, 12, 1, 16, 45), datetime(2004, 3, 1, 16, 45)],
        ),
        # Friday the 13th: February, March and November 2026 (cron's OR would fire on Friday 2 January).
        ("0 0 0 13 * Fri", THU, [at(13, 0, month=2), at(13, 0, month=3), at(13, 0, month=11)]),
        # 29 February on a Monday: 2044, then 2072 (28 years on, no century in between).
        ("0 0 0 29 Feb Mon", THU, [datetime(2044, 2, 29), datetime(2072, 2, 29)]),
    ],
)
def test_day_and_day_of_week_must_both_match(expression: str, start: datetime, expected: list[datetime]) -> None:
    """As in NCrontab, a restricted day and a restricted day-of-week are ANDed, not ORed as in Vixie cron."""
    assert firings(expression, start, len(expected)) == expected


@pytest.mark.parametrize(
    ("expression", "start", "expected"),
    [
        # NCrontab test: leap days only.
        (
            "1 12 29 2 *",
            datetime(2000, 1, 1, 12),
            [datetime(2000, 2, 29, 12, 1), datetime(2004, 2, 29, 12, 1), datetime(2008, 2, 29, 12, 1)],
        ),
        # The 31st is skipped in months without one (the sequence of CrontabSchedule.cs's comment).
        (
            "0 0 0 15,31 * *",
            datetime(2000, 1, 1),
            [datetime(2000, m, d) for m, d in ((1, 15), (1, 31), (2, 15), (3, 15), (3, 31), (4, 15), (5, 15))],
        ),
        # NCrontab tests: a value with a step runs to the field's maximum; a list of a range and values.
        ("2/5 * * * * *", datetime(2003, 1, 1, 0, 0, 50), [datetime(2003, 1, 1, 0, 0, s) for s in (52, 57)]),
        ("45-47,48,49 * * * * *", datetime(2003, 1, 1, 0, 0, 48), [datetime(2003, 1, 1, 0, 0, 49)]),
        ("45-47,48,49 * * * * *", datetime(2003, 1, 1, 0, 0, 49), [datetime(2003, 1, 1, 0, 1, 45)]),
        # NCrontab tests: full names, any case, abbreviations of four or more letters.
        ("30 6 * * SUNDAY", datetime(2003, 6, 26, 10), [datetime(2003, 6, 29, 6, 30)]),
        ("10 * * February,April-Jun *", datetime(2002, 7, 1, 5), [datetime(2003, 2, 1, 0, 10)]),
        (
            "20 * * january,FeB,Mar,april,May,JuNE,July,Augu,SEPT-October,Nov,DECEM *",
            datetime(1988, 3, 11, 14, 23),
            [datetime(1988, 3, 11, 15, 20)],
        ),
    ],
)
def test_month_lengths_steps_and_names_follow_ncrontab(
    expression: str, start: datetime, expected: list[datetime]
) -> None:
    """Leap days, short months, `a/n` steps, lists and spelled-out names fire where NCrontab's tests say."""
    assert firings(expression, start, len(expected)) == expected


@pytest.mark.parametrize(
    ("written", "same_as"),
    [
        ("30 9 * * 1-5", "0 30 9 * * 1-5"),  # the 5-field form fires at second 0
        ("* * * Mar,Jan,Aug Fri,Mon-Tue", "* * * 1,3,8 1-2,5"),  # NCrontab test (Formatting)
        ("* * * */2 *", "* * * 1,3,5,7,9,11 *"),  # NCrontab test
        ("10-40/15 * * * *", "10,25,40 * * * *"),  # NCrontab test
        ("* 1-2,3 * * *", "* 1-3 * * *"),  # NCrontab test
        ("0 0 0 * * Sun,Sat", "0 0 0 * * 0,6"),  # 0 is Sunday
        ("0 0 0 * * */7", "0 0 0 * * 0"),
    ],
)
def test_equivalent_spellings_give_the_same_schedule(written: str, same_as: str) -> None:
    """Names, steps, ranges, lists and the 5-field form mean exactly their numeric spelling."""
    a, b = Schedule.parse(written), Schedule.parse(same_as)
    assert (a.seconds, a.minutes, a.hours, a.days, a.months, a.weekdays) == (
        b.seconds,
        b.minutes,
        b.hours,
        b.days,
        b.months,
        b.weekdays,
    )


@pytest.mark.parametrize(
    ("month", "number"),
    [("Jan", 1), ("jan", 1), ("JAN", 1), ("January", 1), ("Sept", 9), ("sep", 9), ("DECEM", 12)],
)
def test_month_names_are_case_insensitive_abbreviations_of_three_letters_or_more(month: str, number: int) -> None:
    """A month is its English name or any abbreviation of it of three letters or more, in any case."""
    assert Schedule.parse(f"0 0 0 1 {month} *").months == {number}


@pytest.mark.parametrize(
    ("weekday", "number"),
    [("Sun", 0), ("SUNDAY", 0), ("mon", 1), ("Tues", 2), ("Thurs", 4), ("fri", 5), ("Saturday", 6)],
)
def test_weekday_names_are_case_insensitive_and_count_from_sunday(weekday: str, number: int) -> None:
    """A weekday is its English name or an abbreviation of three letters or more; Sunday is 0."""
    assert Schedule.parse(f"0 0 0 * * {weekday}").weekdays == {number}


@pytest.mark.parametrize(
    ("expression", "says"),
    [
        ("99 * * * * *", "second field '99': 99 is outside 0-59"),
        ("0 60 * * * *", "minute field '60': 60 is outside 0-59"),
        ("0 0 24 * * *", "hour field '24': 24 is outside 0-23"),
        ("0 0 0 0 * *", "day field '0': 0 is outside 1-31"),
        ("0 0 0 32 * *", "day field '32': 32 is outside 1-31"),
        ("0 0 0 * 0 *", "month field '0': 0 is outside 1-12"),
        ("0 0 0 * 13 *", "month field '13': 13 is outside 1-12"),
        ("0 0 0 * * 7", "day-of-week field '7': 7 is outside 0-6 (NCRONTAB has no 7 for Sunday"),
        ("0 0 0 * * 5-7", "day-of-week field '5-7': 7 is outside 0-6"),
        ("0 30 9 * Mon Jan", "month field 'Mon': 'Mon' is a day-of-week name; the month field takes 1-12 or Jan-Dec"),
        ("0 0 0 * * jan", "day-of-week field 'jan': 'jan' is a month name; the day-of-week field takes 0-6"),
        ("0 0 0 * * mon-mar", "day-of-week field 'mon-mar': 'mar' is a month name"),
        ("0 0 jan * * *", "hour field 'jan': 'jan' is a month name; the hour field takes 0-23"),
        ("0 0 0 wed * *", "day field 'wed': 'wed' is a day-of-week name; the day field takes 1-31"),
        ("0 0 0 * Ju *", "month field 'Ju': 'Ju' is too short: write at least three letters"),
        ("0 0 0 * * M", "day-of-week field 'M': 'M' is too short"),
        ("0 0 0 * * Mondays", "'Mondays' is not a day-of-week name"),
        ("0 0 0 L * *", "day field 'L': 'L' is not a number; the day field takes 1-31 (L, W, # and ? are not"),
        ("0 0 0 ? * *", "day field '?'"),
        ("0 0 0 15W * *", "day field '15W'"),
        ("0 0 12 * * 5#3", "day-of-week field '5#3'"),
        ("0 0 \u0661 * * *", "hour field '\u0661': '\u0661' is not a number"),
        ("0 0 */0 * * *", "hour field '*/0': a step must be a whole number from 1 to 24"),
        ("0 5-1 * * * *", "minute field '5-1': the range 5-1 runs backwards"),
        ("0 0 0 * * Sat-Sun", "the range Sat-Sun runs backwards"),
        ("0 0 1,,2 * * *", "hour field '1,,2': an empty item in the list"),
        ("0 0 1- * * *", "hour field '1-': a value is missing"),
        ("0 0 0 31 2 *", "never fires"),
        ("0 0 0 30,31 Feb *", "never fires"),
        ("0 0 0 31 4,6,9,11 *", "never fires"),
        ("* * * *", "expected NCRONTAB with 6 fields"),
        ("0 0 0 * * * 2026", "expected NCRONTAB with 6 fields"),
        ("01:00:00", "looks like a TimeSpan"),
        ("0\t0 * * * *", "spaces only"),
    ],
)
def test_an_invalid_schedule_is_refused_naming_the_field_and_what_it_takes(expression: str, says: str) -> None:
    """Every refusal names the field and the problem, before anything runs."""
    with pytest.raises(ValueError) as refused:
        Schedule.parse(expression)
    assert says in str(refused.value)


def test_settings_refuse_a_schedule_the_worker_could_not_run() -> None:
    """`99 * * * * *` is refused when the settings are read, with the setting, the field and its range."""
    with pytest.raises(ConfigurationError) as refused:
        Settings.from_env({"ENFORCE_SCHEDULE": "99 * * * * *"})
    assert refused.value.setting == "ENFORCE_SCHEDULE"
    assert "second field '99': 99 is outside 0-59" in str(refused.value)


def test_settings_keep_what_the_worker_parses() -> None:
    """The settings accept a documented example as written, and the worker's parse of it is the same schedule."""
    settings = Settings.from_env({"ENFORCE_SCHEDULE": "  0 30 9 * Jan  Mon "})
    assert settings.enforce_schedule == "0 30 9 * Jan Mon"
    assert Schedule.parse(settings.enforce_schedule) == Schedule.parse("0 30 9 * Jan Mon")


def test_doctor_reports_an_invalid_schedule_without_going_further(monkeypatch) -> None:
    """`exoprov doctor` fails its settings check on the schedule and contacts nothing."""
    from shared.doctor import run_doctor

    for name in APP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENFORCE_SCHEDULE", "0 0 0 * * 7")
    out = io.StringIO()
    assert run_doctor(out) == 1
    report = out.getvalue()
    assert "FAIL  settings" in report and "ENFORCE_SCHEDULE" in report and "7 is outside 0-6" in report
    assert "exchange token" not in report


def test_worker_refuses_an_invalid_schedule_at_start(monkeypatch, capsys) -> None:
    """`exoprov worker` exits 1 naming ENFORCE_SCHEDULE before it touches a queue."""
    from shared.cli import main

    for name in APP_SETTINGS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("ENFORCE_SCHEDULE", "0 30 9 * Mon Jan")
    assert main(["worker", "--until-idle", "--timeout", "1"]) == 1
    err = capsys.readouterr().err
    assert "ENFORCE_SCHEDULE" in err and "'Mon' is a day-of-week name" in err and "Traceback" not in err
