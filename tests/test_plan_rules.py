"""工作计划 and 关爱活动, the pure parts: late across month ends in Asia/Shanghai, what a progress update does,
the typical plans placed in a plan's months, activity checks, and the 三个优先 share."""

import uuid
from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from api.errors import Conflict, Invalid
from api.models.plan import FulfilmentKind, ItemProgress, ItemState, parse_month
from api.services.plan import progress, rules, templates

CST = timezone(timedelta(hours=8))
SEPT = date(2026, 9, 1)
DEC = date(2026, 12, 1)


@pytest.mark.parametrize(
    ("month", "state", "now", "expected"),
    [
        # The last minute of September in Shanghai: a September item is not late yet.
        (SEPT, ItemState.planned, datetime(2026, 9, 30, 23, 59, tzinfo=CST), ItemProgress.planned),
        # The first minute of October in Shanghai (still 30 September in UTC): it is.
        (SEPT, ItemState.planned, datetime(2026, 10, 1, 0, 0, tzinfo=CST), ItemProgress.late),
        (SEPT, ItemState.planned, datetime(2026, 9, 30, 16, 0, tzinfo=UTC), ItemProgress.late),
        (SEPT, ItemState.planned, datetime(2026, 9, 30, 15, 59, 59, tzinfo=UTC), ItemProgress.planned),
        # Year end: December is late from 1 January 00:00 +08.
        (DEC, ItemState.planned, datetime(2026, 12, 31, 23, 59, 59, tzinfo=CST), ItemProgress.planned),
        (DEC, ItemState.planned, datetime(2027, 1, 1, 0, 0, tzinfo=CST), ItemProgress.late),
        # February of a leap year and not.
        (date(2028, 2, 1), ItemState.planned, datetime(2028, 2, 29, 23, 0, tzinfo=CST), ItemProgress.planned),
        (date(2027, 2, 1), ItemState.planned, datetime(2027, 3, 1, 0, 0, tzinfo=CST), ItemProgress.late),
        # A month still to come, or the current month, is never late.
        (DEC, ItemState.planned, datetime(2026, 11, 24, 10, 0, tzinfo=CST), ItemProgress.planned),
        (DEC, ItemState.planned, datetime(2026, 12, 15, 10, 0, tzinfo=CST), ItemProgress.planned),
        # Done and dropped items are never late, however long ago their month was.
        (SEPT, ItemState.done, datetime(2027, 6, 1, tzinfo=CST), ItemProgress.done),
        (SEPT, ItemState.dropped, datetime(2027, 6, 1, tzinfo=CST), ItemProgress.dropped),
    ],
)
def test_an_item_is_late_once_its_month_has_ended_in_shanghai(month, state, now, expected):
    assert progress.progress_of(month, state, now) == expected


def test_counts_add_up_by_progress():
    counts = progress.count([ItemProgress.late, ItemProgress.done, ItemProgress.late, ItemProgress.planned])
    assert counts.model_dump() == {"planned": 1, "late": 2, "done": 1, "dropped": 0}


TODAY = date(2026, 11, 24)
ACTIVITY = uuid.uuid4()


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        # Done by an activity: the activity's date unless one is given.
        (
            {"target": ItemState.done, "fulfilled": (FulfilmentKind.activity, ACTIVITY, date(2026, 11, 20))},
            progress.Change(ItemState.done, date(2026, 11, 20), None, FulfilmentKind.activity, ACTIVITY),
        ),
        # Done with a note of what was done: today unless a date is given.
        ({"target": ItemState.done, "note": "已更新档案"}, progress.Change(ItemState.done, TODAY, "已更新档案")),
        (
            {"target": ItemState.done, "note": "已更新", "done_on": date(2026, 9, 30)},
            progress.Change(ItemState.done, date(2026, 9, 30), "已更新"),
        ),
        ({"target": ItemState.dropped, "reason": "停课"}, progress.Change(ItemState.dropped, dropped_reason="停课")),
        ({"target": ItemState.planned}, progress.Change(ItemState.planned)),
    ],
)
def test_a_progress_update_writes(kwargs, expected):
    assert progress.decide(linked=False, today=TODAY, **kwargs) == expected


@pytest.mark.parametrize(
    ("kwargs", "code"),
    [
        ({"target": ItemState.done}, "plan_item_done_needs_note"),
        ({"target": ItemState.done, "note": "x", "done_on": TODAY + timedelta(days=1)}, "plan_item_done_in_future"),
        ({"target": ItemState.dropped}, "plan_item_drop_needs_reason"),
        ({"target": ItemState.planned, "linked": True}, "plan_item_linked"),
        ({"target": ItemState.dropped, "reason": "x", "linked": True}, "plan_item_linked"),
    ],
)
def test_a_progress_update_is_refused(kwargs, code):
    kwargs.setdefault("linked", False)
    with pytest.raises(progress.ProgressRefused) as refused:
        progress.decide(today=TODAY, **kwargs)
    assert refused.value.code == code


# ---- the typical plans --------------------------------------------------------------------------------


def test_every_template_item_cites_a_seed_and_sits_in_a_template_month():
    for template in templates.TEMPLATES.values():
        assert template.items and template.goals and template.goals_source
        for item in template.items:
            assert item.month in template.months, (template.key, item.title)
            assert item.source and item.title and item.owner_hint
            assert any(ref in item.source for ref in ("000", "001", "002", "003", "004", "DOMAIN"))


def test_the_autumn_template_follows_the_seed_schedule_month_by_month():
    placed = templates.instantiate(templates.TEMPLATES["autumn_term"], date(2026, 9, 1), date(2027, 1, 20))
    by_month: dict[date, list[str]] = {}
    for p in placed:
        assert not p.moved
        by_month.setdefault(p.month, []).append(p.item.title)
    assert list(by_month) == [date(2026, m, 1) for m in (9, 10, 11, 12)] + [date(2027, 1, 1)]
    assert "开通留守儿童亲情电话" in by_month[date(2026, 9, 1)]  # 000 篇6 九月
    assert "举行留守儿童拔河比赛" in by_month[date(2026, 10, 1)]  # 000 篇6 十月
    assert "开展留守儿童法制教育讲座" in by_month[date(2026, 11, 1)]  # 000 篇6 十一月
    assert "留守儿童主题班会活动" in by_month[date(2026, 12, 1)]  # 000 篇6 十二月
    assert "班级及学校留守儿童工作总结" in by_month[date(2027, 1, 1)]  # 000 篇6 元月


def test_a_short_term_keeps_every_item_moving_the_outside_ones_to_the_nearest_end():
    # A term from mid-October to mid-December: September items go to October, January's to December.
    template = templates.TEMPLATES["autumn_term"]
    placed = templates.instantiate(template, date(2026, 10, 15), date(2026, 12, 20))
    assert len(placed) == len(template.items)
    assert {p.month for p in placed} == {date(2026, 10, 1), date(2026, 11, 1), date(2026, 12, 1)}
    for p in placed:
        if p.item.month == 9:
            assert p.moved and p.month == date(2026, 10, 1)
        elif p.item.month == 1:
            assert p.moved and p.month == date(2026, 12, 1)
        else:
            assert not p.moved and p.month.month == p.item.month


def test_the_school_year_template_spans_both_terms():
    placed = templates.instantiate(templates.TEMPLATES["school_year"], date(2026, 9, 1), date(2027, 7, 10))
    assert not any(p.moved for p in placed)
    assert {p.month for p in placed if p.item.title.startswith("各校组织庆“六一”")} == {date(2027, 6, 1)}
    assert date(2027, 2, 1) not in {p.month for p in placed}  # 寒假


def test_a_template_whose_months_the_plan_does_not_have_does_not_fit():
    with pytest.raises(templates.TemplateDoesNotFit):
        templates.instantiate(templates.TEMPLATES["spring_term"], date(2026, 9, 1), date(2026, 12, 31))


@pytest.mark.parametrize(
    ("starts_on", "ends_on", "months"),
    [
        (date(2026, 9, 1), date(2026, 9, 30), [(2026, 9)]),
        (date(2026, 11, 15), date(2027, 2, 1), [(2026, 11), (2026, 12), (2027, 1), (2027, 2)]),
    ],
)
def test_months_between(starts_on, ends_on, months):
    assert templates.months_between(starts_on, ends_on) == [date(y, m, 1) for y, m in months]


# ---- activity checks, months, share -------------------------------------------------------------------


def test_an_activity_is_not_in_the_future_in_shanghai():
    rules.check_held_on(TODAY, TODAY)
    rules.check_held_on(TODAY - timedelta(days=300), TODAY)
    with pytest.raises(Invalid) as e:
        rules.check_held_on(TODAY + timedelta(days=1), TODAY)
    assert e.value.code == "activity_in_future" and e.value.fields[0].loc == ["held_on"]
    # 2026-11-24 16:30 UTC is already the 25th in Shanghai.
    assert rules.today_in_china(datetime(2026, 11, 24, 16, 30, tzinfo=UTC)) == date(2026, 11, 25)


def test_a_child_listed_twice_is_named_by_position():
    a, b = uuid.uuid4(), uuid.uuid4()
    rules.check_no_duplicates([a, b])
    with pytest.raises(Invalid) as e:
        rules.check_no_duplicates([a, b, a])
    assert e.value.code == "activity_duplicate_child" and e.value.fields[0].loc == ["child_ids", 2]


def test_an_item_month_must_be_inside_the_plan():
    rules.check_month_in_plan(date(2027, 1, 1), date(2026, 9, 1), date(2027, 1, 20))
    with pytest.raises(Invalid) as e:
        rules.check_month_in_plan(date(2027, 2, 1), date(2026, 9, 1), date(2027, 1, 20))
    assert e.value.code == "plan_item_month_outside_plan"


def test_new_plan_dates_must_still_hold_every_item():
    rules.check_plan_dates(date(2026, 9, 1), date(2026, 12, 31), [date(2026, 12, 1)])
    with pytest.raises(Invalid) as e:
        rules.check_plan_dates(date(2026, 10, 1), date(2026, 12, 31), [date(2026, 9, 1)])
    assert e.value.code == "plan_items_outside_dates"


def test_what_an_activity_may_fulfil():
    mine, other = uuid.uuid4(), uuid.uuid4()
    rules.check_item_can_take(ItemState.planned, None, mine)
    rules.check_item_can_take(ItemState.done, None, mine)  # done by a note: the activity becomes its proof
    rules.check_item_can_take(ItemState.done, mine, mine)
    with pytest.raises(Conflict) as c:
        rules.check_item_can_take(ItemState.done, other, mine)
    assert c.value.code == "plan_item_already_fulfilled"
    with pytest.raises(Invalid) as i:
        rules.check_item_can_take(ItemState.dropped, None, mine)
    assert i.value.code == "plan_item_dropped"


@pytest.mark.parametrize(
    ("left_behind", "places", "expected"), [(0, 0, None), (3, 4, 0.75), (2, 3, 0.6667), (5, 5, 1.0), (0, 7, 0.0)]
)
def test_the_share_of_places_for_left_behind_children(left_behind, places, expected):
    assert rules.share(left_behind, places) == expected


@pytest.mark.parametrize("text", ["2026-13", "2026-1", "26-10", "2026-00", "2026/10", ""])
def test_a_month_is_yyyy_mm(text):
    with pytest.raises(ValueError):
        parse_month(text)
    assert parse_month("2026-10") == date(2026, 10, 1)
