"""Periods of the bureau's statistics: keys, labels, dates, the previous period, months, the current one."""

from datetime import UTC, date, datetime

import pytest

from api.errors import Invalid
from api.models.stats import PeriodKind
from api.services.stats import periods

M, Q, T, SY, Y = PeriodKind.month, PeriodKind.quarter, PeriodKind.term, PeriodKind.school_year, PeriodKind.year


@pytest.mark.parametrize(
    ("kind", "key", "label", "starts_on", "ends_on"),
    [
        (M, "2026-11", "2026年11月", date(2026, 11, 1), date(2026, 11, 30)),
        (M, "2028-02", "2028年2月", date(2028, 2, 1), date(2028, 2, 29)),  # leap year
        (M, "2026-12", "2026年12月", date(2026, 12, 1), date(2026, 12, 31)),
        (Q, "2026-Q4", "2026年第四季度", date(2026, 10, 1), date(2026, 12, 31)),
        (Q, "2026-Q1", "2026年第一季度", date(2026, 1, 1), date(2026, 3, 31)),
        (T, "2026-2027-1", "2026—2027学年第一学期", date(2026, 9, 1), date(2027, 1, 31)),
        (T, "2026-2027-2", "2026—2027学年第二学期", date(2027, 2, 1), date(2027, 8, 31)),
        (SY, "2026-2027", "2026—2027学年", date(2026, 9, 1), date(2027, 8, 31)),
        (Y, "2026", "2026年", date(2026, 1, 1), date(2026, 12, 31)),
    ],
)
def test_a_key_names_its_dates_and_chinese_label(kind, key, label, starts_on, ends_on):
    p = periods.parse(kind, key)
    assert (p.kind, p.key, p.label, p.starts_on, p.ends_on) == (kind, key, label, starts_on, ends_on)


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        (M, "2026-13"),
        (M, "2026-00"),
        (M, "2026-1"),
        (M, "26-11"),
        (M, "2026-11 "),
        (M, "２０２６-11"),  # full-width digits are not a year
        (Q, "2026-Q5"),
        (Q, "2026-4"),
        (T, "2026-2028-1"),  # the school year's two years follow each other
        (T, "2026-2027-3"),
        (SY, "2026-2026"),
        (SY, "2026"),
        (Y, "1999"),
        (Y, "2101"),
        (Y, "abcd"),
        (Y, ""),
    ],
)
def test_a_bad_key_is_a_422_with_a_stable_code(kind, key):
    with pytest.raises(Invalid) as caught:
        periods.parse(kind, key)
    assert caught.value.code == "period_invalid"
    assert caught.value.fields[0].loc == ["query", "key"]


@pytest.mark.parametrize(
    ("kind", "key", "previous"),
    [
        (M, "2026-01", "2025-12"),
        (M, "2026-11", "2026-10"),
        (Q, "2026-Q1", "2025-Q4"),
        (Q, "2026-Q4", "2026-Q3"),
        (T, "2026-2027-1", "2025-2026-2"),
        (T, "2026-2027-2", "2026-2027-1"),
        (SY, "2026-2027", "2025-2026"),
        (Y, "2026", "2025"),
    ],
)
def test_the_previous_period_is_of_the_same_kind(kind, key, previous):
    p = periods.previous(periods.parse(kind, key))
    assert (p.kind, p.key) == (kind, previous)


@pytest.mark.parametrize(
    ("kind", "key", "months"),
    [
        (M, "2026-11", ["2026-11"]),
        (Q, "2026-Q4", ["2026-10", "2026-11", "2026-12"]),
        (T, "2026-2027-1", ["2026-09", "2026-10", "2026-11", "2026-12", "2027-01"]),
        (T, "2026-2027-2", ["2027-02", "2027-03", "2027-04", "2027-05", "2027-06", "2027-07", "2027-08"]),
        (SY, "2026-2027", [f"2026-{m:02d}" for m in range(9, 13)] + [f"2027-{m:02d}" for m in range(1, 9)]),
        (Y, "2026", [f"2026-{m:02d}" for m in range(1, 13)]),
    ],
)
def test_the_months_of_a_period(kind, key, months):
    assert [m.key for m in periods.months_of(periods.parse(kind, key))] == months


@pytest.mark.parametrize(
    ("instant", "kind", "key"),
    [
        # 31 Oct 16:00 UTC is 1 Nov 00:00 in Shanghai: November already.
        (datetime(2026, 10, 31, 16, 0, tzinfo=UTC), M, "2026-11"),
        (datetime(2026, 10, 31, 15, 59, 59, tzinfo=UTC), M, "2026-10"),
        # New Year in Shanghai, still 2026 in UTC.
        (datetime(2026, 12, 31, 16, 30, tzinfo=UTC), Y, "2027"),
        (datetime(2026, 12, 31, 16, 30, tzinfo=UTC), Q, "2027-Q1"),
        (datetime(2026, 12, 31, 16, 30, tzinfo=UTC), T, "2026-2027-1"),  # January is still the autumn term
        (datetime(2027, 1, 31, 16, 0, tzinfo=UTC), T, "2026-2027-2"),  # 1 Feb in Shanghai: the spring term
        (datetime(2027, 8, 31, 15, 59, tzinfo=UTC), SY, "2026-2027"),
        (datetime(2027, 8, 31, 16, 0, tzinfo=UTC), SY, "2027-2028"),  # 1 Sep in Shanghai: a new school year
        (datetime(2027, 8, 31, 16, 0, tzinfo=UTC), T, "2027-2028-1"),
    ],
)
def test_the_current_period_follows_the_shanghai_calendar(instant, kind, key):
    assert periods.current(kind, instant).key == key


def test_every_day_of_two_years_lies_in_exactly_its_period_of_each_kind():
    day = date(2025, 1, 1)
    while day <= date(2027, 12, 31):
        for kind in PeriodKind:
            p = periods.containing(kind, day)
            assert p.starts_on <= day <= p.ends_on
            assert periods.parse(kind, p.key) == p
            assert periods.previous(p).ends_on.toordinal() + 1 == p.starts_on.toordinal()
        day = date.fromordinal(day.toordinal() + 1)


def test_a_trend_spans_consecutive_months_and_at_most_three_years():
    assert [m.key for m in periods.month_range("2025-11", "2026-02")] == ["2025-11", "2025-12", "2026-01", "2026-02"]
    assert len(periods.month_range("2024-01", "2026-12")) == 36
    for a, b, code in (("2024-01", "2027-01", "trend_too_long"), ("2026-02", "2026-01", "trend_reversed")):
        with pytest.raises(Invalid) as caught:
            periods.month_range(a, b)
        assert caught.value.code == code
    with pytest.raises(Invalid) as caught:
        periods.month_range("2026-1", "2026-02")
    assert caught.value.code == "period_invalid" and caught.value.fields[0].loc == ["query", "from"]
