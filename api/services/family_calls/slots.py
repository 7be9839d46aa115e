"""Free slots of a line: its opening intervals cut into slots, minus the booths its live calls hold.

A slot is ``slot_minutes`` long and the next one starts ``buffer_minutes`` after it ends; a slot must end by
the close of its interval (its buffer may run past it). A call holds its booth from its start until its end
plus the buffer (``blocked_until``), so a slot has as many booths free as the line's capacity minus the
booths of the live calls that overlap the slot and its buffer. Bookable slots start no earlier than ``now``
plus the minimum notice and no later than ``now`` plus the horizon.
"""

from bisect import bisect_left
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from api.services.family_calls.hours import Interval


@dataclass(frozen=True)
class LineTimes:
    slot_minutes: int
    buffer_minutes: int
    capacity: int
    min_notice_minutes: int
    horizon_days: int

    @property
    def slot(self) -> timedelta:
        return timedelta(minutes=self.slot_minutes)

    @property
    def step(self) -> timedelta:
        return timedelta(minutes=self.slot_minutes + self.buffer_minutes)


@dataclass(frozen=True)
class Held:
    """A live call's hold on a booth: ``[starts_at, blocked_until)``."""

    starts_at: datetime
    blocked_until: datetime
    booth: int


@dataclass(frozen=True)
class Slot:
    starts_at: datetime
    ends_at: datetime
    free: int


def slot_starts(
    intervals: Iterable[Interval], line: LineTimes, *, since: datetime | None = None, until: datetime | None = None
) -> list[tuple[datetime, datetime]]:
    """Every slot ``(start, end)`` of the intervals, in order; with ``since``/``until`` only those starting in
    ``[since, until]`` (the grid still starts where each interval opens)."""
    slot, step = line.slot, line.step
    out: list[tuple[datetime, datetime]] = []
    ordered = True
    for open_at, close_at in intervals:
        if (until is not None and open_at > until) or (since is not None and close_at - slot < since):
            continue
        start = open_at
        if since is not None and start < since:
            start += step * -((open_at - since) // step)  # the first start of the grid at or after since
        last_start = close_at - slot if until is None else min(close_at - slot, until)
        if out and start <= out[-1][0]:
            ordered = False  # a window past midnight reaching into the next day's first one
        while start <= last_start:
            out.append((start, start + slot))
            start += step
    return out if ordered else sorted(set(out))


def bookable_window(now: datetime, line: LineTimes) -> tuple[datetime, datetime]:
    """The earliest and the latest start a booking may have at ``now``."""
    return now + timedelta(minutes=line.min_notice_minutes), now + timedelta(days=line.horizon_days)


def free_slots(
    intervals: Iterable[Interval],
    held: Sequence[Held],
    line: LineTimes,
    *,
    now: datetime,
    since: datetime | None = None,
    until: datetime | None = None,
) -> list[Slot]:
    """The bookable slots with at least one booth free, starting in ``[since, until)`` if given."""
    earliest, latest = bookable_window(now, line)
    if since is not None:
        earliest = max(earliest, since)
    buffer, capacity = timedelta(minutes=line.buffer_minutes), line.capacity
    holds = sorted((h for h in held if h.booth <= capacity), key=lambda h: h.starts_at)
    hold_starts = [h.starts_at for h in holds]
    # A hold overlapping a slot starts less than its longest length before the slot: only those are looked at.
    reach = max((h.blocked_until - h.starts_at for h in holds), default=timedelta(0))
    out: list[Slot] = []
    for start, end in slot_starts(intervals, line, since=earliest, until=latest):
        if until is not None and start >= until:
            break
        blocked_until = end + buffer
        first, past = bisect_left(hold_starts, start - reach), bisect_left(hold_starts, blocked_until)
        if first == past:
            out.append(Slot(start, end, capacity))
            continue
        taken = {h.booth for h in holds[first:past] if start < h.blocked_until}
        if len(taken) < capacity:
            out.append(Slot(start, end, capacity - len(taken)))
    return out
