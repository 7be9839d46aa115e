"""Periods of the bureau's statistics (pure): month, quarter, term, school year and calendar year.

A period is named by its kind and a key — ``2026-11``, ``2026-Q4``, ``2026-2027-1`` (the autumn term, from
1 September to 31 January), ``2026-2027-2`` (the spring term, from 1 February to 31 August, the summer
holidays included so that the terms cover the year), ``2026-2027`` (the school year, 1 September – 31 August)
and ``2026``. Dates are Asia/Shanghai calendar days; the caller turns an instant into one (``shanghai_date``).
"""

import re
from datetime import date, datetime, timedelta
from zoneinfo import ZoneInfo

from api.errors import Invalid, field_error
from api.models.stats import Period, PeriodKind

SHANGHAI = ZoneInfo("Asia/Shanghai")
MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_TREND_MONTHS = 36
_CN_NUMBERS = {1: "一", 2: "二", 3: "三", 4: "四"}

_PATTERNS = {
    PeriodKind.month: re.compile(r"(\d{4})-(\d{2})", re.ASCII),
    PeriodKind.quarter: re.compile(r"(\d{4})-Q([1-4])", re.ASCII),
    PeriodKind.term: re.compile(r"(\d{4})-(\d{4})-([12])", re.ASCII),
    PeriodKind.school_year: re.compile(r"(\d{4})-(\d{4})", re.ASCII),
    PeriodKind.year: re.compile(r"(\d{4})", re.ASCII),
}
_EXAMPLES = {
    PeriodKind.month: "2026-11",
    PeriodKind.quarter: "2026-Q4",
    PeriodKind.term: "2026-2027-1",
    PeriodKind.school_year: "2026-2027",
    PeriodKind.year: "2026",
}


def shanghai_date(instant: datetime) -> date:
    """The Asia/Shanghai calendar day of an aware instant."""
    return instant.astimezone(SHANGHAI).date()


def _bad(kind: PeriodKind, key: str, loc: str = "key", where: str = "query") -> Invalid:
    message = f"统计期 {key[:40]!r} 无效，{kind.value} 的写法如 {_EXAMPLES[kind]} (bad period key)"
    return Invalid(message, code="period_invalid", fields=[field_error([where, loc], message, "period_invalid")])


def _month_end(year: int, month: int) -> date:
    first_next = date(year + (month == 12), month % 12 + 1, 1)
    return first_next - timedelta(days=1)


def month(year: int, month_no: int) -> Period:
    return Period(
        kind=PeriodKind.month,
        key=f"{year:04d}-{month_no:02d}",
        label=f"{year}年{month_no}月",
        starts_on=date(year, month_no, 1),
        ends_on=_month_end(year, month_no),
    )


def quarter(year: int, q: int) -> Period:
    return Period(
        kind=PeriodKind.quarter,
        key=f"{year:04d}-Q{q}",
        label=f"{year}年第{_CN_NUMBERS[q]}季度",
        starts_on=date(year, 3 * q - 2, 1),
        ends_on=_month_end(year, 3 * q),
    )


def term(first_year: int, half: int) -> Period:
    """``half`` 1: autumn term of school year ``first_year``–``first_year + 1``; 2: its spring term."""
    if half == 1:
        starts_on, ends_on = date(first_year, 9, 1), date(first_year + 1, 1, 31)
    else:
        starts_on, ends_on = date(first_year + 1, 2, 1), date(first_year + 1, 8, 31)
    return Period(
        kind=PeriodKind.term,
        key=f"{first_year:04d}-{first_year + 1:04d}-{half}",
        label=f"{first_year}—{first_year + 1}学年第{_CN_NUMBERS[half]}学期",
        starts_on=starts_on,
        ends_on=ends_on,
    )


def school_year(first_year: int) -> Period:
    return Period(
        kind=PeriodKind.school_year,
        key=f"{first_year:04d}-{first_year + 1:04d}",
        label=f"{first_year}—{first_year + 1}学年",
        starts_on=date(first_year, 9, 1),
        ends_on=date(first_year + 1, 8, 31),
    )


def year(y: int) -> Period:
    return Period(
        kind=PeriodKind.year, key=f"{y:04d}", label=f"{y}年", starts_on=date(y, 1, 1), ends_on=date(y, 12, 31)
    )


def parse(kind: PeriodKind, key: str, *, loc: str = "key", where: str = "query") -> Period:
    """The period ``key`` names; 422 ``period_invalid`` (at ``[where, loc]``) for a key not one of ``kind``."""
    found = _PATTERNS[kind].fullmatch(key)
    if found is None:
        raise _bad(kind, key, loc, where)
    numbers = [int(g) for g in found.groups()]
    first = numbers[0]
    if not MIN_YEAR <= first <= MAX_YEAR:
        raise _bad(kind, key, loc, where)
    if kind == PeriodKind.month:
        if not 1 <= numbers[1] <= 12:
            raise _bad(kind, key, loc, where)
        return month(first, numbers[1])
    if kind == PeriodKind.quarter:
        return quarter(first, numbers[1])
    if kind in (PeriodKind.term, PeriodKind.school_year):
        if numbers[1] != first + 1:
            raise _bad(kind, key, loc, where)
        return term(first, numbers[2]) if kind == PeriodKind.term else school_year(first)
    return year(first)


def containing(kind: PeriodKind, day: date) -> Period:
    """The period of ``kind`` that ``day`` falls in."""
    if kind == PeriodKind.month:
        return month(day.year, day.month)
    if kind == PeriodKind.quarter:
        return quarter(day.year, (day.month - 1) // 3 + 1)
    school_first = day.year if day.month >= 9 else day.year - 1
    if kind == PeriodKind.term:
        return term(school_first, 1 if day.month >= 9 or day.month == 1 else 2)
    if kind == PeriodKind.school_year:
        return school_year(school_first)
    return year(day.year)


def current(kind: PeriodKind, now: datetime) -> Period:
    """The period of ``kind`` running at ``now`` (an aware instant), by the Shanghai calendar."""
    return containing(kind, shanghai_date(now))


def previous(period: Period) -> Period:
    """The period of the same kind just before."""
    return containing(period.kind, period.starts_on - timedelta(days=1))


def following(period: Period) -> Period:
    return containing(period.kind, period.ends_on + timedelta(days=1))


def months_of(period: Period) -> list[Period]:
    """The calendar months a period spans, in order."""
    out = [month(period.starts_on.year, period.starts_on.month)]
    while out[-1].ends_on < period.ends_on:
        out.append(following(out[-1]))
    return out


def month_range(from_key: str, to_key: str) -> list[Period]:
    """The months from ``from_key`` to ``to_key`` inclusive (a trend's axis): at most 36, in order."""
    first = parse(PeriodKind.month, from_key, loc="from")
    last = parse(PeriodKind.month, to_key, loc="to")
    if last.starts_on < first.starts_on:
        message = "结束月份早于开始月份 (to is before from)"
        raise Invalid(message, code="trend_reversed", fields=[field_error(["query", "to"], message, "trend_reversed")])
    count = (last.starts_on.year - first.starts_on.year) * 12 + last.starts_on.month - first.starts_on.month + 1
    if count > MAX_TREND_MONTHS:
        message = f"趋势最多 {MAX_TREND_MONTHS} 个月 (a trend spans at most {MAX_TREND_MONTHS} months)"
        raise Invalid(message, code="trend_too_long", fields=[field_error(["query", "to"], message, "trend_too_long")])
    out = [first]
    while out[-1].key != last.key:
        out.append(following(out[-1]))
    return out
