"""When a line is open: its weekly windows, a date's override and the county's festival days → instants.

Everything here is Asia/Shanghai wall time (China keeps no daylight saving, so a wall time is one instant).
A window belongs to the date it starts on; one whose end is at or before its start runs past midnight into
the next day (``22:00–01:00``). For a date:

- an override of that date (the school's word: closed for exams, moved hours) replaces everything, festival
  hours included — ``[]`` means closed;
- otherwise the weekly windows of its weekday, plus the extra hours of a festival day declared by the county.

Overlapping windows are merged, so an interval is one stretch of open time.
"""

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta

from api.clock import SHANGHAI


@dataclass(frozen=True, order=True)
class Window:
    """A stretch of wall time starting on some date; ``ends <= starts`` means it ends the next day."""

    starts: time
    ends: time

    @classmethod
    def parse(cls, starts: str, ends: str) -> "Window":
        return cls(time.fromisoformat(starts), time.fromisoformat(ends))

    def on(self, day: date) -> tuple[datetime, datetime]:
        """The window on ``day`` as aware UTC instants."""
        start = datetime.combine(day, self.starts, SHANGHAI)
        end_day = day + timedelta(days=1) if self.ends <= self.starts else day
        end = datetime.combine(end_day, self.ends, SHANGHAI)
        return start.astimezone(UTC), end.astimezone(UTC)


@dataclass(frozen=True)
class Hours:
    """A line's hours: weekly windows by weekday (0 = Monday), per-date overrides, festival extra hours."""

    weekly: Mapping[int, Sequence[Window]]
    overrides: Mapping[date, Sequence[Window]]
    festivals: Mapping[date, Sequence[Window]]

    def windows_of(self, day: date) -> list[Window]:
        if day in self.overrides:
            return sorted(self.overrides[day])
        return sorted([*self.weekly.get(day.weekday(), ()), *self.festivals.get(day, ())])


Interval = tuple[datetime, datetime]


def merge(intervals: Iterable[Interval]) -> list[Interval]:
    """Overlapping or touching intervals as one."""
    out: list[Interval] = []
    for start, end in sorted(intervals):
        if out and start <= out[-1][1]:
            if end > out[-1][1]:
                out[-1] = (out[-1][0], end)
        else:
            out.append((start, end))
    return out


def windows_on(hours: Hours, day: date) -> list[Interval]:
    """The opening intervals that start on ``day`` (some may end the next day), merged."""
    return merge(w.on(day) for w in hours.windows_of(day))


def open_intervals(hours: Hours, first: date, last: date) -> list[Interval]:
    """The opening intervals starting on the dates ``first``..``last`` (Asia/Shanghai), in order. Each date's
    windows are merged on their own, not with the next date's: a slot grid starts where its day's interval
    starts, whatever range was asked for, so availability and booking always agree on the slots."""
    found: list[Interval] = []
    day = first
    while day <= last:
        found.extend(windows_on(hours, day))
        day += timedelta(days=1)
    return found


def shanghai_date(moment: datetime) -> date:
    return moment.astimezone(SHANGHAI).date()


def week_start(moment: datetime) -> date:
    """The Monday (Asia/Shanghai) of the week ``moment`` falls in: the quota's week."""
    day = shanghai_date(moment)
    return day - timedelta(days=day.weekday())
