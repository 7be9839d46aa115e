"""Demo data for the school plan: 石桥镇中心小学's plan for this autumn term, started from the typical autumn plan,
with its 领导小组; the items of past months done (the activities linked to them: 拔河比赛, 法制讲座…), one
dropped with a reason, one left late; a 主题班会 that no item asked for; and each demo school's enrolment for
this term and the last one, which the statistics divide by.

Written through the plan, activity and enrolment services, as the school's admin, so their rules and audit
hold. The plan has no fixed id (the service makes it): a demo school's plan is found by the template and the
term it was made from, and if it is there nothing of it is seeded again.
"""

import uuid
from datetime import date, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.clock import SHANGHAI
from api.demo.context import DemoContext, demo_id, principal_of
from api.models.children import Child, ChildStatus
from api.models.enrolment import EnrolmentUpdate, SchoolEnrolment
from api.models.organisations import School
from api.models.plan import (
    ActivityCreate,
    ActivityKind,
    CarePlan,
    CarePlanItem,
    FulfilledBy,
    FulfilmentKind,
    ItemState,
    MemberCreate,
    MemberPosition,
    Organiser,
    PlanCreate,
    ProgressUpdate,
    WorkKind,
)
from api.models.stats import PeriodKind
from api.scoping import Principal
from api.services.plan import activities, plans
from api.services.stats import enrolment, periods

DEMO_SCHOOL = "shiqiao-central"
TEMPLATE = "autumn_term"
BOARDING_SHARE = 0.18
# Items of the typical autumn plan that the demo school handled otherwise (matched by the start of the title).
DROPPED = ("举行留守儿童讲故事比赛", "与全县“书香校园”读书节活动合并举行")
LATE = "留守儿童心理健康咨询会"  # the counsellor's post is vacant: the item is still open
# What was held for the template's activities (by the start of the item's title).
HELD = {
    "举行留守儿童拔河比赛": (ActivityKind.contest, "留守儿童拔河比赛", "学校操场", Organiser.school, "体育组"),
    "开展留守儿童法制教育讲座": (
        ActivityKind.lecture_law,
        "法制教育讲座：学法守法，保护自己",
        "学校多功能教室",
        Organiser.guan_gong_wei,
        "县关工委、石桥派出所",
    ),
}


def autumn_term(today: date) -> tuple[date, date]:
    """This school year's autumn term: 1 September to the end of January."""
    first = today.year if today.month >= 9 else today.year - 1
    term = periods.term(first, 1)
    return term.starts_on, term.ends_on


async def seed_plan(session: AsyncSession, ctx: DemoContext) -> None:
    now = ctx.now
    today = now.astimezone(SHANGHAI).date()
    await _seed_enrolment(session, ctx, today=today, now=now)
    school_id = demo_id(f"school-{DEMO_SCHOOL}")
    starts_on, ends_on = autumn_term(today)
    existing = await session.execute(
        sa.select(col(CarePlan.id)).where(
            col(CarePlan.school_id) == school_id,
            col(CarePlan.template_key) == TEMPLATE,
            col(CarePlan.starts_on) == starts_on,
        )
    )
    if existing.first() is not None:
        return
    admin = await principal_of(session, ctx.accounts["shiqiao-admin"])
    # The plan is made on the first day of term; its progress is entered as of "today".
    made = datetime.combine(starts_on, datetime.min.time(), SHANGHAI) + timedelta(hours=9)
    plan = await plans.create_plan(
        session,
        admin,
        school_id=school_id,
        data=PlanCreate(
            name=f"{starts_on.year}年秋季学期关爱留守儿童工作计划",
            starts_on=starts_on,
            ends_on=ends_on,
            template=TEMPLATE,
            leading_group=[
                MemberCreate(
                    position=MemberPosition.leader, account_id=admin.account_id, duty="全面负责", sort_order=0
                ),
                MemberCreate(
                    position=MemberPosition.deputy,
                    name="孙德明",
                    affiliation="德育处主任",
                    duty="具体组织",
                    sort_order=1,
                ),
                MemberCreate(account_id=ctx.accounts["teacher-li"], duty="留守儿童之家、结对帮扶", sort_order=2),
                MemberCreate(account_id=ctx.accounts["teacher-wang"], duty="活动与家访", sort_order=3),
                MemberCreate(name="刘桂芳", affiliation="石桥村委会妇女主任", duty="家校联系", sort_order=4),
            ],
        ),
        now=min(made, now),
    )
    children = await _children(session, school_id)
    items = list(await plans.plan_items(session, plan.id))
    month = today.replace(day=1)
    for n, item in enumerate(items):
        if item.title.startswith(DROPPED[0]):
            data = ProgressUpdate(state=ItemState.dropped, reason=DROPPED[1])
        elif item.kind == WorkKind.activity and (
            item.month < month or (item.month == month and today.day > 10 and item.title.startswith(tuple(HELD)))
        ):
            # Past months' activities were held, and this month's lecture or contest once ten days are gone.
            await _hold(session, admin, item, children, n, today=today, now=now)
            continue
        elif item.month >= month or item.title.startswith(LATE):
            continue  # this month's and later items are still planned; the late one is overdue
        else:
            day = min(item.month + timedelta(days=9 + n % 10), today)
            data = ProgressUpdate(state=ItemState.done, done_on=day, note="已按计划完成，材料已归档")
        await plans.set_progress(session, admin, item_id=item.id, data=data, now=now)
    # A class meeting the plan did not ask for: 四年级1班's 主题班会 last week.
    meeting_on = today - timedelta(days=6)
    if meeting_on >= starts_on:
        class_id = demo_id(f"class-{DEMO_SCHOOL}-4-1")
        in_class = (
            await session.execute(
                sa.select(col(Child.id)).where(
                    col(Child.class_id) == class_id, col(Child.status) == ChildStatus.enrolled
                )
            )
        ).scalars()
        await activities.create_activity(
            session,
            admin,
            school_id=school_id,
            data=ActivityCreate(
                kind=ActivityKind.class_meeting,
                title="“我爱我家”主题班会",
                held_on=meeting_on,
                place="四年级1班教室",
                organiser=Organiser.school_class,
                organiser_name="四年级1班",
                class_id=class_id,
                child_ids=list(in_class),
                adult_count=2,
                outcome="孩子们给外出的爸爸妈妈写了一封信，班主任统一寄出",
            ),
            now=now,
        )


async def _children(session: AsyncSession, school_id: uuid.UUID) -> list[uuid.UUID]:
    return list(
        (
            await session.execute(
                sa.select(col(Child.id))
                .where(col(Child.school_id) == school_id, col(Child.status) == ChildStatus.enrolled)
                .order_by(col(Child.name_pinyin), col(Child.id))
            )
        ).scalars()
    )


async def _hold(
    session: AsyncSession,
    admin: Principal,
    item: CarePlanItem,
    children: list[uuid.UUID],
    n: int,
    *,
    today: date,
    now: datetime,
) -> None:
    """Hold the activity an item of a past month asked for, linked to it (which marks the item done)."""
    kind, title, place, organiser, organiser_name = next(
        (v for k, v in HELD.items() if item.title.startswith(k)),
        (ActivityKind.other, item.title[:64], "学校", Organiser.school, item.owner_name),
    )
    taking_part = children[n % 3 :: 3]  # about a third of the school's children
    activity = await activities.create_activity(
        session,
        admin,
        school_id=item.school_id,
        data=ActivityCreate(
            kind=kind,
            title=title,
            held_on=min(item.month + timedelta(days=14 + n % 7), today - timedelta(days=1)),
            place=place,
            organiser=organiser,
            organiser_name=organiser_name,
            child_ids=taking_part,
            adult_count=6,
            outcome="留守儿童积极参加，增强了集体荣誉感",
        ),
        now=now,
    )
    await plans.set_progress(
        session,
        admin,
        item_id=item.id,
        data=ProgressUpdate(
            state=ItemState.done, fulfilled_by=FulfilledBy(kind=FulfilmentKind.activity, id=activity.id)
        ),
        now=now,
    )


async def _seed_enrolment(session: AsyncSession, ctx: DemoContext, *, today: date, now: datetime) -> None:
    """Every demo school's enrolment for this term and the one before (the school's own count, a little
    fewer last term), recorded by its admin where none is recorded yet."""
    this_term = periods.containing(PeriodKind.term, today)
    last_term = periods.containing(PeriodKind.term, this_term.starts_on - timedelta(days=1))
    admins = {"shiqiao-central": "shiqiao-admin", "shiqiao-second": "shiqiao2-admin", "liuhe-central": "liuhe-admin"}
    for key, username in admins.items():
        school = await session.get(School, demo_id(f"school-{key}"))
        assert school is not None
        admin = None
        for term, pupils in ((this_term, school.pupil_count), (last_term, school.pupil_count - 9)):
            if await session.get(SchoolEnrolment, (school.id, term.key)) is not None:
                continue
            admin = admin or await principal_of(session, ctx.accounts[username])
            await enrolment.put_enrolment(
                session,
                admin,
                school_id=school.id,
                term_key=term.key,
                data=EnrolmentUpdate(pupils=pupils, boarders=round(pupils * BOARDING_SHARE)),
                now=now,
            )
