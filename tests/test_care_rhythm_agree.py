"""The care rhythm's rule has two forms — Python (api.services.care.rules) and SQL (api.services.care.due) — and
they judge alike: every period of every child done, due or overdue by the same days, and the same to-do item,
over generated schools, children, incidents, records and booked family calls, on days at month ends, term edges
and in holidays (Asia/Shanghai dates; instants a few minutes either side of Shanghai midnight)."""

import random
import uuid
from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa
from sqlmodel import col

from api.models.care import CareKind
from api.models.care_rhythm import Cadence, CareRule, RhythmKind
from api.models.children import Child, ChildStatus, Sex
from api.models.family_calls import CallStatus
from api.services.care.due import (
    cared_children,
    counts_for,
    judged_periods,
    period_rows,
    school_rhythms,
    todo_query,
    todo_rows,
)
from api.services.care.rules import asked_periods, is_strict, judge, shanghai_date, todo_item
from tests.care_rhythm_support import (
    add_call_line,
    add_family_call,
    add_incident,
    add_records,
    record_row,
    set_calendar,
)

TERMS = [
    ("2025年秋季学期", date(2025, 9, 1), date(2026, 1, 16)),
    ("2026年春季学期", date(2026, 2, 23), date(2026, 7, 3)),
    ("2026年秋季学期", date(2026, 9, 1), date(2027, 1, 20)),
]
HOLIDAYS = [
    ("国庆节", date(2025, 10, 1), date(2025, 10, 7)),
    ("清明节", date(2026, 4, 4), date(2026, 4, 6)),
    ("劳动节", date(2026, 5, 1), date(2026, 5, 5)),
    ("国庆节", date(2026, 10, 1), date(2026, 10, 8)),
    ("元旦", date(2026, 12, 31), date(2027, 1, 2)),
]
# Month ends and starts, term edges, inside a holiday, the day after one.
DAYS = [
    date(2025, 10, 1),
    date(2025, 10, 8),
    date(2026, 1, 16),
    date(2026, 1, 17),
    date(2026, 2, 28),
    date(2026, 3, 1),
    date(2026, 5, 3),
    date(2026, 7, 4),
    date(2026, 8, 31),
    date(2026, 9, 1),
    date(2026, 11, 30),
    date(2026, 12, 1),
    date(2027, 1, 1),
]
CHANNELS = ["phone", "video", "letter", "in_person", None]


def near_shanghai_midnight(rng: random.Random, day: date) -> datetime:
    """An instant a few minutes either side of midnight in Shanghai (16:00 UTC) on ``day``."""
    base = datetime(day.year, day.month, day.day, 16, 0, tzinfo=UTC) - timedelta(days=1)
    return base + timedelta(minutes=rng.choice([-7, -1, 0, 1, 7, 600]))


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
async def test_sql_and_python_judge_every_period_alike(app, world, system_session, seed):
    rng = random.Random(seed)
    s = system_session
    school = world["school1"]
    await set_calendar(s, school, terms=TERMS, holidays=HOLIDAYS)
    cadences = list(Cadence)
    for kind in RhythmKind:
        if rng.random() < 0.7:
            s.add(
                CareRule(
                    school_id=school,
                    kind=kind,
                    cadence=rng.choice(cadences),
                    strict_cadence=rng.choice(cadences),
                    incident_days=rng.choice([0, 7, 30, 90]),
                    is_active=rng.random() < 0.9,
                )
            )
    children: list[Child] = []
    records: dict[uuid.UUID, list[tuple[CareKind, date, str | None]]] = {}
    incidents: dict[uuid.UUID, list[datetime]] = {}
    calls: dict[uuid.UUID, list[date]] = {}
    line = await add_call_line(s, school)
    rows = []
    start = date(2025, 8, 1)
    for i in range(24):
        created = near_shanghai_midnight(rng, start + timedelta(days=rng.randrange(0, 480)))
        child = Child(
            school_id=school,
            class_id=world["class11"],
            name=f"测试{i}",
            sex=Sex.male,
            birth_date=date(2016, 1, 1),
            is_left_behind=rng.random() < 0.9,
            status=ChildStatus.enrolled if rng.random() < 0.9 else ChildStatus.left,
            special_hardship=rng.random() < 0.15,
            single_parent=rng.random() < 0.1,
            needs_individual_plan=rng.random() < 0.1,
            struggling_learner=rng.random() < 0.3,  # not a strict flag
            created_at=created,
        )
        s.add(child)
        await s.flush()
        children.append(child)
        incidents[child.id] = []
        for _ in range(rng.choice([0, 0, 1, 2])):
            at = near_shanghai_midnight(rng, start + timedelta(days=rng.randrange(0, 520)))
            incidents[child.id].append(at)
            await add_incident(s, world=world, school="school1", child_id=child.id, at=at, reporter="teacher1")
        # 亲情电话 booked through the family-call domain: a completed one keeps the weekly call rule, a missed or
        # cancelled one does not; some a few minutes either side of Shanghai midnight.
        calls[child.id] = []
        for _ in range(rng.randrange(0, 12)):
            at = near_shanghai_midnight(rng, start + timedelta(days=rng.randrange(0, 520)))
            status = rng.choice([CallStatus.completed, CallStatus.completed, CallStatus.missed, CallStatus.cancelled])
            if status == CallStatus.completed:
                calls[child.id].append(shanghai_date(at))
            await add_family_call(
                s, line_id=line, school_id=school, child_id=child.id, booked_by=world["teacher1"], at=at, status=status
            )
        records[child.id] = []
        for _ in range(rng.randrange(0, 40)):
            kind = rng.choice(list(CareKind))
            on = start + timedelta(days=rng.randrange(0, 520))
            channel = rng.choice(CHANNELS) if kind == CareKind.parent_contact else None
            records[child.id].append((kind, on, channel))
            rows.append(
                record_row(
                    school_id=school,
                    child_id=child.id,
                    author_id=world["teacher1"],
                    kind=kind,
                    on=on,
                    seq=0,
                    at=created,
                    channel=channel,
                )
            )
    await add_records(s, rows)
    await s.flush()

    rhythm = (await school_rhythms(s, [school]))[school]
    days = [*DAYS, *(start + timedelta(days=rng.randrange(0, 520)) for _ in range(3))]
    compared = 0
    for today in days:
        lo, hi = today - timedelta(days=rng.choice([40, 120, 300])), today + timedelta(days=rng.choice([0, 10, 40]))
        kid = cared_children(col(Child.school_id) == school, judged_on=today)
        judged = judged_periods(kid, period_rows([rhythm], lo, hi), today=today, judged_on=today)
        got = {
            (r.child_id, r.kind, r.due_on): (r.status, r.days, r.strict)
            for r in (await s.execute(sa.select(judged))).all()
        }
        got_todo = {
            (t.child_id, t.kind): (t.status, t.days, t.due_on, t.label, t.missed)
            for t in todo_rows((await s.execute(todo_query(judged, today=today))).all(), today=today)
        }
        want: dict = {}
        want_todo: dict = {}
        for child in children:
            if child.status != ChildStatus.enrolled or not child.is_left_behind:
                continue
            flagged = child.special_hardship or child.single_parent or child.needs_individual_plan
            for kind in rhythm.active:
                spec = rhythm.rules[kind]
                strict = is_strict(
                    flagged=flagged,
                    incident_times=incidents[child.id],
                    judged_on=today,
                    incident_days=spec.incident_days,
                )
                asked = asked_periods(
                    rhythm.periods(kind, strict=strict, lo=lo, hi=hi), since=shanghai_date(child.created_at)
                )
                dates = [on for k, on, ch in records[child.id] if counts_for(kind, k, ch)]
                if kind == RhythmKind.family_call:
                    dates += calls[child.id]
                for p in asked:
                    j = judge(p, dates, today)
                    want[(child.id, kind.value, p.due_on)] = (j.status.value, j.days, strict)
                item = todo_item(asked, dates, today)
                if item is not None:
                    want_todo[(child.id, kind)] = (
                        item.status,
                        item.days,
                        item.period.due_on,
                        item.period.label,
                        item.missed,
                    )
        assert got == want, f"on {today}"
        assert got_todo == want_todo, f"to-do on {today}"
        compared += len(want)
    assert compared > 500  # the cases are not empty
