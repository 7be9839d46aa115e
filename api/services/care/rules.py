"""The care rhythm's one rule, in Python — pure, no I/O. Its SQL twin is :mod:`api.services.care.due`, and
``tests/test_care_rhythm_agree.py`` holds the two together over generated cases.

For one child, one rule and one period (:class:`~api.services.care.calendar.Period`):

* **done** — a matching record is dated inside the period (Asia/Shanghai date);
* **overdue** — not done and its due date has passed: overdue by ``today - due_on`` days;
* **due** — not done, due today or later (``due_on - today`` days left).

The rule is strict for a child flagged special (特困, 单亲, 需个别教育管理方案) or with an incident in the
rule's ``incident_days`` before the day it is judged on; a strict child follows the rule's strict cadence.
A child is asked nothing for periods due before their file was created.

The to-do for one child and rule (:func:`todo_item`): the missed periods *since the latest done one* (those
before it are history, counted by compliance, not a task any more) — overdue since the earliest of them;
otherwise the next open period if it is due within the horizon.
"""

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

from api.clock import SHANGHAI
from api.services.care.calendar import Period

TODO_HORIZON_DAYS = 7
# Overdue longer than this: the school's leaders are told (once per item).
LEADER_FLAG_DAYS = 7


class Status(StrEnum):
    done = "done"  # 已完成
    due = "due"  # 待完成
    overdue = "overdue"  # 已逾期


@dataclass(frozen=True, slots=True)
class Judged:
    period: Period
    status: Status
    days: int  # overdue: days late; due: days left; done: 0


def shanghai_date(moment: datetime) -> date:
    """The Asia/Shanghai calendar date of an instant (a call at 23:30 UTC on the 31st is on the 1st)."""
    return moment.astimezone(SHANGHAI).date()


def is_strict(*, flagged: bool, incident_times: Iterable[datetime], judged_on: date, incident_days: int) -> bool:
    """Special children, and those with an incident in the ``incident_days`` days up to ``judged_on``."""
    if flagged:
        return True
    earliest = judged_on - timedelta(days=incident_days)
    return any(earliest <= shanghai_date(t) <= judged_on for t in incident_times)


def judge(period: Period, done_dates: Sequence[date], today: date) -> Judged:
    """Done, due or overdue: one period of one child."""
    if any(period.starts_on <= d <= period.ends_on for d in done_dates):
        return Judged(period, Status.done, 0)
    if period.due_on < today:
        return Judged(period, Status.overdue, (today - period.due_on).days)
    return Judged(period, Status.due, (period.due_on - today).days)


def asked_periods(periods: Sequence[Period], *, since: date) -> list[Period]:
    """The periods a child is asked for: those due on or after the day the child's file was created."""
    return [p for p in periods if p.due_on >= since]


@dataclass(frozen=True, slots=True)
class TodoItem:
    status: Status  # overdue or due
    period: Period  # the earliest missed period (overdue) or the next open one (due)
    days: int
    missed: int  # how many periods are missed since the latest done one


def todo_item(
    periods: Sequence[Period], done_dates: Sequence[date], today: date, *, horizon_days: int = TODO_HORIZON_DAYS
) -> TodoItem | None:
    """What one child needs for one rule now, or ``None`` (all done, or nothing due within the horizon).

    ``periods`` are the periods the child is asked for (:func:`asked_periods`), in order."""
    judged = [judge(p, done_dates, today) for p in periods]
    last_done = max((j.period.due_on for j in judged if j.status == Status.done), default=None)
    open_ = [j for j in judged if j.status != Status.done and (last_done is None or j.period.due_on > last_done)]
    overdue = [j for j in open_ if j.status == Status.overdue]
    if overdue:
        first = overdue[0]
        return TodoItem(Status.overdue, first.period, first.days, len(overdue))
    upcoming = [j for j in open_ if j.status == Status.due and j.days <= horizon_days]
    if upcoming:
        return TodoItem(Status.due, upcoming[0].period, upcoming[0].days, 0)
    return None
