"""A school's calendar and the periods a rule asks for — pure, no I/O.

School days: days inside a term and outside every holiday; a school with no terms entered has every day not
in a holiday. A weekly, fortnightly or monthly period with no school day is paused (nothing is asked), and
one that has some is due on its last school day. The term cadence (期初、期中、期末) splits every term into
three thirds, each due on its last day, holidays or not (a home visit may well happen in a holiday).
All dates are Asia/Shanghai calendar dates.
"""

import functools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from api.models.care_rhythm import Cadence

# Fortnights are counted from a fixed Monday, so a school's fortnights never depend on when it asked.
FORTNIGHT_EPOCH = date(2000, 1, 3)
_DAY = timedelta(days=1)


@dataclass(frozen=True, slots=True)
class Span:
    starts_on: date
    ends_on: date

    def __contains__(self, day: object) -> bool:
        return isinstance(day, date) and self.starts_on <= day <= self.ends_on


@dataclass(frozen=True, slots=True)
class Calendar:
    terms: tuple[Span, ...] = ()
    holidays: tuple[Span, ...] = ()

    def is_school_day(self, day: date) -> bool:
        if any(day in h for h in self.holidays):
            return False
        return not self.terms or any(day in t for t in self.terms)


@dataclass(frozen=True, slots=True)
class Period:
    """One stretch of time in which a rule asks for one thing done; ``label`` is what people read."""

    starts_on: date
    ends_on: date
    due_on: date
    label: str


def _days(lo: date, hi: date) -> Iterator[date]:
    day = lo
    while day <= hi:
        yield day
        day += _DAY


def _days_back(hi: date, lo: date) -> Iterator[date]:
    day = hi
    while day >= lo:
        yield day
        day -= _DAY


def _month_end(day: date) -> date:
    nxt = date(day.year + (day.month == 12), day.month % 12 + 1, 1)
    return nxt - _DAY


def calendar_span(cadence: Cadence, day: date) -> tuple[date, date, str]:
    """The week, fortnight or month holding ``day`` and its label."""
    if cadence == Cadence.weekly:
        start = day - timedelta(days=day.weekday())
        year, week, _ = start.isocalendar()
        return start, start + timedelta(days=6), f"{year}-W{week:02d}"
    if cadence == Cadence.fortnightly:
        index = (day - FORTNIGHT_EPOCH).days // 14
        start = FORTNIGHT_EPOCH + timedelta(days=14 * index)
        year, week, _ = start.isocalendar()
        return start, start + timedelta(days=13), f"{year}-W{week:02d}+2"
    if cadence == Cadence.monthly:
        start = day.replace(day=1)
        return start, _month_end(day), f"{day.year}-{day.month:02d}"
    raise ValueError(f"{cadence} is not a calendar cadence")


TERM_THIRDS = ("期初", "期中", "期末")


def term_thirds(term: Span, name: str) -> list[Period]:
    """期初, 期中, 期末: the term cut in three (the first third takes the remainder days last)."""
    length = (term.ends_on - term.starts_on).days + 1
    cut1 = term.starts_on + timedelta(days=length // 3)
    cut2 = term.starts_on + timedelta(days=(2 * length) // 3)
    bounds = [(term.starts_on, cut1 - _DAY), (cut1, cut2 - _DAY), (cut2, term.ends_on)]
    return [
        Period(start, end, end, f"{name} {third}")
        for (start, end), third in zip(bounds, TERM_THIRDS, strict=True)
        if start <= end
    ]


def periods(
    cadence: Cadence, calendar: Calendar, lo: date, hi: date, *, term_names: Sequence[str] = ()
) -> list[Period]:
    """The periods of ``cadence`` whose due date falls in ``[lo, hi]``, in order.

    ``term_names`` name the calendar's terms in the same order (for labels; default 第n学期). Every request
    of a school asks the same questions on the same day: the answers are kept (a calendar is immutable)."""
    return list(_periods(cadence, calendar, lo, hi, tuple(term_names)))


@functools.lru_cache(maxsize=512)
def _periods(
    cadence: Cadence, calendar: Calendar, lo: date, hi: date, term_names: tuple[str, ...]
) -> tuple[Period, ...]:
    if lo > hi:
        return ()
    if cadence == Cadence.term_points:
        out: list[Period] = []
        for i, term in enumerate(calendar.terms):
            name = term_names[i] if i < len(term_names) else f"第{i + 1}学期"
            out.extend(p for p in term_thirds(term, name) if lo <= p.due_on <= hi)
        return tuple(sorted(out, key=lambda p: p.due_on))
    found: list[Period] = []
    start, end, label = calendar_span(cadence, lo)
    # A period whose last school day is on or after lo may start weeks before it: begin at lo's own period.
    while start <= hi:
        last = next((d for d in _days_back(end, start) if calendar.is_school_day(d)), None)
        if last is not None and lo <= last <= hi:
            found.append(Period(start, end, last, label))
        start, end, label = calendar_span(cadence, end + _DAY)
    return tuple(found)
