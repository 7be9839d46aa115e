"""A plan item's progress — pure, no I/O.

An item is *late* when its month has passed in Asia/Shanghai and it is neither done nor dropped: on 2026-10-01
00:00 (+08) a September item still planned is late; at 2026-09-30 23:59 (+08) it is not. Late is never
stored, so it can never be stale.
"""

import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from api.clock import SHANGHAI
from api.models.plan import FulfilmentKind, ItemProgress, ItemState, ProgressCounts


def month_start(day: date) -> date:
    return day.replace(day=1)


def next_month(month: date) -> date:
    return date(month.year + 1, 1, 1) if month.month == 12 else date(month.year, month.month + 1, 1)


def is_late(month: date, state: ItemState, now: datetime) -> bool:
    """Whether an item of ``month`` in ``state`` is late at the instant ``now`` (aware)."""
    if state != ItemState.planned:
        return False
    return now.astimezone(SHANGHAI).date() >= next_month(month_start(month))


def progress_of(month: date, state: ItemState, now: datetime) -> ItemProgress:
    if is_late(month, state, now):
        return ItemProgress.late
    return ItemProgress(state.value)


def count(progresses: Iterable[ItemProgress]) -> ProgressCounts:
    counts = ProgressCounts()
    for p in progresses:
        setattr(counts, p.value, getattr(counts, p.value) + 1)
    return counts


@dataclass(frozen=True, slots=True)
class Change:
    """What a progress update writes on the item."""

    state: ItemState
    done_on: date | None = None
    done_note: str | None = None
    fulfilled_by_kind: FulfilmentKind | None = None
    fulfilled_by_id: uuid.UUID | None = None
    dropped_reason: str | None = None


class ProgressRefused(ValueError):
    def __init__(self, code: str, message: str, field: str) -> None:
        super().__init__(message)
        self.code, self.message, self.field = code, message, field


def decide(
    *,
    linked: bool,
    target: ItemState,
    today: date,
    done_on: date | None = None,
    note: str | None = None,
    fulfilled: tuple[FulfilmentKind, uuid.UUID, date] | None = None,
    reason: str | None = None,
) -> Change:
    """The change a progress update makes, or :class:`ProgressRefused`.

    ``linked``: the item is fulfilled by a record (an activity) — it changes only through that record.
    ``fulfilled``: (kind, id, date) of the record that fulfils it, already checked to be of the same school.
    Done needs what fulfilled it or a note of what was done; dropped needs a reason; a date is never in the
    future (Asia/Shanghai)."""
    if linked:
        raise ProgressRefused(
            "plan_item_linked",
            "该项目由关爱活动落实；请修改或解除该活动的关联 (change the linked activity instead)",
            "state",
        )
    if target == ItemState.done:
        if fulfilled is not None:
            kind, record_id, record_date = fulfilled
            day = done_on or record_date
            return Change(ItemState.done, _not_future(day, today), note, kind, record_id)
        if not note:
            raise ProgressRefused(
                "plan_item_done_needs_note", "请说明完成情况或关联落实的活动 (say what was done, or link it)", "note"
            )
        return Change(ItemState.done, _not_future(done_on or today, today), note)
    if target == ItemState.dropped:
        if not reason:
            raise ProgressRefused(
                "plan_item_drop_needs_reason", "取消计划项目需填写原因 (a reason is needed)", "reason"
            )
        return Change(ItemState.dropped, dropped_reason=reason)
    return Change(ItemState.planned)


def _not_future(day: date, today: date) -> date:
    if day > today:
        raise ProgressRefused("plan_item_done_in_future", "完成日期不能晚于今天 (done_on is in the future)", "done_on")
    return day
