"""The care rhythm's rule in Python: periods from a school's calendar, done / due / overdue, strictness and the
to-do item — table-driven, no database (its SQL twin: tests/test_care_rhythm_agree.py)."""

from datetime import UTC, date, datetime

import pytest

from api.models.care_rhythm import Cadence
from api.services.care.calendar import Calendar, Period, Span, calendar_span, periods, term_thirds
from api.services.care.rules import Status, asked_periods, is_strict, judge, shanghai_date, todo_item

AUTUMN = Span(date(2026, 9, 1), date(2027, 1, 20))
NATIONAL_DAY = Span(date(2026, 10, 1), date(2026, 10, 7))
SPRING = Span(date(2027, 2, 22), date(2027, 7, 2))
SCHOOL = Calendar(terms=(AUTUMN, SPRING), holidays=(NATIONAL_DAY,))


def test_a_month_is_due_on_its_last_school_day():
    got = periods(Cadence.monthly, SCHOOL, date(2026, 9, 1), date(2026, 12, 31))
    assert [(p.label, p.starts_on, p.due_on) for p in got] == [
        ("2026-09", date(2026, 9, 1), date(2026, 9, 30)),
        ("2026-10", date(2026, 10, 1), date(2026, 10, 31)),
        ("2026-11", date(2026, 11, 1), date(2026, 11, 30)),
        ("2026-12", date(2026, 12, 1), date(2026, 12, 31)),
    ]


def test_the_winter_holiday_pauses_monthly_rules_and_shortens_january():
    got = periods(Cadence.monthly, SCHOOL, date(2027, 1, 1), date(2027, 3, 31))
    # January ends its term on the 20th; February has school days only from the 22nd; nothing is paused entirely
    assert [(p.label, p.due_on) for p in got] == [
        ("2027-01", date(2027, 1, 20)),
        ("2027-02", date(2027, 2, 28)),
        ("2027-03", date(2027, 3, 31)),
    ]
    summer = periods(Cadence.monthly, SCHOOL, date(2027, 7, 1), date(2027, 8, 31))
    assert [(p.label, p.due_on) for p in summer] == [("2027-07", date(2027, 7, 2))]  # August: no school day


def test_a_holiday_week_asks_nothing():
    got = periods(Cadence.weekly, SCHOOL, date(2026, 9, 28), date(2026, 10, 18))
    # week of 28 Sep: school Mon–Wed only (due Wed 30th); 5–11 Oct: school from the 8th; no week is lost
    assert [(p.label, p.starts_on, p.due_on) for p in got] == [
        ("2026-W40", date(2026, 9, 28), date(2026, 9, 30)),
        ("2026-W41", date(2026, 10, 5), date(2026, 10, 11)),
        ("2026-W42", date(2026, 10, 12), date(2026, 10, 18)),
    ]
    golden_week = Calendar(terms=(AUTUMN,), holidays=(Span(date(2026, 10, 1), date(2026, 10, 11)),))
    got = periods(Cadence.weekly, golden_week, date(2026, 10, 1), date(2026, 10, 18))
    assert [p.label for p in got] == ["2026-W42"]  # the week of 5–11 October is entirely holiday: paused


def test_without_a_calendar_every_day_is_a_school_day():
    got = periods(Cadence.monthly, Calendar(), date(2026, 7, 1), date(2026, 8, 31))
    assert [(p.label, p.due_on) for p in got] == [("2026-07", date(2026, 7, 31)), ("2026-08", date(2026, 8, 31))]
    assert periods(Cadence.term_points, Calendar(), date(2026, 1, 1), date(2026, 12, 31)) == []


def test_fortnights_are_fixed_to_the_calendar_not_to_the_question():
    a = calendar_span(Cadence.fortnightly, date(2026, 11, 24))
    b = calendar_span(Cadence.fortnightly, a[0])
    c = calendar_span(Cadence.fortnightly, a[1])
    assert a == b == c and (a[1] - a[0]).days == 13 and a[0].weekday() == 0


def test_a_term_has_a_start_a_middle_and_an_end():
    thirds = term_thirds(AUTUMN, "2026秋")
    assert [p.label for p in thirds] == ["2026秋 期初", "2026秋 期中", "2026秋 期末"]
    assert thirds[0].starts_on == AUTUMN.starts_on and thirds[-1].due_on == AUTUMN.ends_on
    assert all(a.ends_on + (b.starts_on - a.ends_on) == b.starts_on for a, b in zip(thirds, thirds[1:], strict=False))
    assert sum((p.ends_on - p.starts_on).days + 1 for p in thirds) == (AUTUMN.ends_on - AUTUMN.starts_on).days + 1
    # home visits keep their windows in holidays: the term cadence is not paused
    got = periods(Cadence.term_points, SCHOOL, date(2026, 9, 1), date(2027, 7, 31), term_names=("2026秋", "2027春"))
    assert len(got) == 6 and got[3].label == "2027春 期初"


@pytest.mark.parametrize(
    ("records", "today", "status", "days"),
    [
        ([], date(2026, 11, 20), Status.due, 10),
        ([], date(2026, 11, 30), Status.due, 0),  # due today is not late
        ([], date(2026, 12, 1), Status.overdue, 1),
        ([date(2026, 11, 1)], date(2026, 12, 9), Status.done, 0),
        ([date(2026, 10, 31)], date(2026, 12, 1), Status.overdue, 1),  # the day before does not count
        ([date(2026, 12, 1)], date(2026, 12, 2), Status.overdue, 2),  # nor the day after
    ],
)
def test_done_due_and_overdue(records, today, status, days):
    november = Period(date(2026, 11, 1), date(2026, 11, 30), date(2026, 11, 30), "2026-11")
    judged = judge(november, records, today)
    assert (judged.status, judged.days) == (status, days)


def test_the_date_that_counts_is_the_shanghai_date():
    # 31 Oct 16:30 UTC is 1 Nov 00:30 in Shanghai: a call then is November's
    assert shanghai_date(datetime(2026, 10, 31, 16, 30, tzinfo=UTC)) == date(2026, 11, 1)
    assert shanghai_date(datetime(2026, 10, 31, 15, 59, tzinfo=UTC)) == date(2026, 10, 31)


def test_strict_for_flags_and_for_a_recent_incident_in_shanghai_days():
    on = date(2026, 11, 30)
    assert is_strict(flagged=True, incident_times=[], judged_on=on, incident_days=30)
    assert not is_strict(flagged=False, incident_times=[], judged_on=on, incident_days=30)
    # 30 days before 30 Nov is 31 Oct (Shanghai): 30 Oct 16:00 UTC is 31 Oct 00:00 there — still recent
    assert is_strict(
        flagged=False, incident_times=[datetime(2026, 10, 30, 16, 0, tzinfo=UTC)], judged_on=on, incident_days=30
    )
    assert not is_strict(
        flagged=False, incident_times=[datetime(2026, 10, 30, 15, 59, tzinfo=UTC)], judged_on=on, incident_days=30
    )
    # an incident after the day judged does not reach back
    assert not is_strict(
        flagged=False, incident_times=[datetime(2026, 12, 1, 0, 0, tzinfo=UTC)], judged_on=on, incident_days=30
    )


MONTHS = periods(Cadence.monthly, Calendar(), date(2026, 8, 1), date(2026, 12, 31))


def test_the_todo_names_the_earliest_miss_since_the_last_done_period():
    item = todo_item(MONTHS, [date(2026, 9, 15)], date(2026, 12, 5))
    assert item is not None
    assert (item.status, item.period.label, item.days, item.missed) == (Status.overdue, "2026-10", 35, 2)
    # a miss before the latest done period is history, not a task
    assert todo_item(MONTHS, [date(2026, 11, 3), date(2026, 12, 2)], date(2026, 12, 5)) is None


def test_the_todo_shows_what_is_due_within_a_week_only():
    item = todo_item(MONTHS, [date(2026, 10, 15)], date(2026, 11, 24))
    assert item is not None and (item.status, item.days, item.period.label) == (Status.due, 6, "2026-11")
    assert todo_item(MONTHS, [date(2026, 10, 15)], date(2026, 11, 20)) is None  # 10 days left


def test_a_new_child_is_not_behind_for_months_before_the_file_existed():
    asked = asked_periods(MONTHS, since=date(2026, 11, 10))
    assert [p.label for p in asked] == ["2026-11", "2026-12"]
    assert todo_item(asked, [], date(2026, 11, 12)) is None
