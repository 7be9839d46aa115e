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


def slot_starts(intervals: Iterable[Interval], line: LineTimes) -> list[tuple[datetime, datetime]]:
    """Every slot ``(start, end)`` of the intervals, in order."""
    out: list[tuple[datetime, datetime]] = []
    for open_at, close_at in intervals:
        start = open_at
        while start + line.slot <= close_at:
            out.append((start, start + line.slot))
            start += line.step
    return sorted(set(out))


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
    holds = sorted(held, key=lambda h: h.starts_at)
    hold_starts = [h.starts_at for h in holds]
    # A hold overlapping a slot starts less than its longest length before the slot: only those are looked at.
    reach = max((h.blocked_until - h.starts_at for h in holds), default=timedelta(0))
    out: list[Slot] = []
    for start, end in slot_starts(intervals, line):
        if start < earliest or start > latest or (until is not None and start >= until):
            continue
        blocked_until = end + timedelta(minutes=line.buffer_minutes)
        near = holds[bisect_left(hold_starts, start - reach) : bisect_left(hold_starts, blocked_until)]
        taken = {h.booth for h in near if start < h.blocked_until and h.booth <= line.capacity}
        free = line.capacity - len(taken)
        if free > 0:
            out.append(Slot(start, end, free))
    return out
