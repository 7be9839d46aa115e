"""Checks on plans and activities, and the 三个优先 share — pure, no I/O."""

import uuid
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from api.clock import SHANGHAI
from api.errors import Conflict, Invalid, field_error
from api.models.plan import ItemState
from api.services.plan.templates import months_between


def today_in_china(now: datetime) -> date:
    return now.astimezone(SHANGHAI).date()


def invalid(code: str, message: str, loc: Sequence[str | int]) -> Invalid:
    return Invalid(message, code=code, fields=[field_error(list(loc), message, code)])


def check_held_on(held_on: date, today: date) -> None:
    """An activity is recorded once it has happened: its date is not after today in Asia/Shanghai."""
    if held_on > today:
        raise invalid(
            "activity_in_future", "活动日期不能晚于今天 (an activity is recorded after it happened)", ["held_on"]
        )


def check_no_duplicates(child_ids: Sequence[uuid.UUID]) -> None:
    seen: set[uuid.UUID] = set()
    for i, child_id in enumerate(child_ids):
        if child_id in seen:
            raise invalid("activity_duplicate_child", "同一名学生重复列出 (a child is listed twice)", ["child_ids", i])
        seen.add(child_id)


def check_month_in_plan(month: date, starts_on: date, ends_on: date, loc: Sequence[str | int] = ("month",)) -> None:
    if month not in months_between(starts_on, ends_on):
        raise invalid(
            "plan_item_month_outside_plan", "月份不在计划的起止日期内 (the month is outside the plan's dates)", loc
        )


def check_plan_dates(starts_on: date, ends_on: date, item_months: Iterable[date]) -> None:
    """New dates must still hold every item's month."""
    if ends_on < starts_on:
        raise invalid("plan_dates", "结束日期早于开始日期 (ends_on is before starts_on)", ["ends_on"])
    if (ends_on - starts_on).days > 400:
        raise invalid("plan_dates", "计划最长一个学年 (a plan covers at most a school year)", ["ends_on"])
    months = set(months_between(starts_on, ends_on))
    if any(m not in months for m in item_months):
        raise invalid(
            "plan_items_outside_dates",
            "有计划项目的月份不在新的起止日期内，请先调整这些项目 (some items would fall outside the plan)",
            ["starts_on"],
        )


def check_item_can_take(state: ItemState, fulfilled_by_id: uuid.UUID | None, activity_id: uuid.UUID) -> None:
    """An activity may fulfil an item that is planned (or late), or done without a linked record (the activity
    then stands as its proof); not a dropped item, nor one another activity already fulfils."""
    if state == ItemState.dropped:
        raise invalid("plan_item_dropped", "该计划项目已取消 (the plan item was dropped)", ["plan_item_id"])
    if fulfilled_by_id is not None and fulfilled_by_id != activity_id:
        raise Conflict(
            "该计划项目已由另一项活动落实 (the plan item is already fulfilled by another activity)",
            code="plan_item_already_fulfilled",
            fields=[field_error(["plan_item_id"], "already fulfilled", "conflict")],
        )


def check_activity_free(linked_item_id: uuid.UUID | None, item_id: uuid.UUID) -> None:
    """An activity fulfils at most one plan item."""
    if linked_item_id is not None and linked_item_id != item_id:
        raise Conflict(
            "该活动已落实另一个计划项目 (the activity already fulfils another plan item)",
            code="activity_already_linked",
            fields=[field_error(["fulfilled_by"], "already linked", "conflict")],
        )


def share(left_behind_places: int, places: int) -> float | None:
    """三个优先: the share of places that went to left-behind children (None when there were no places)."""
    if places == 0:
        return None
    return round(left_behind_places / places, 4)
