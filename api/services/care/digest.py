"""The weekly care digest: each teacher hears how many of their children's care items are overdue or due this
week, and the school's leaders hear once of each item overdue by more than a week.

Run by the worker (:func:`run_digests`, every pass, cheap when there is nothing to do) from Monday 07:00 in
Shanghai: each school whose digest for the ISO week has not been queued yet is done in one transaction of
its own — claim the week (``care_digest_run``, a primary key: a second worker finds it taken and moves on),
judge the school's to-do items, queue one message per teacher with something to do, record the newly
overdue items in ``care_overdue_flag`` (unique per child, rule and missed period, so an item is flagged
once however many weeks it stays overdue) and queue one message per leader when some are new. A crash
before the commit leaves nothing behind and the next pass does the school again; the outbox's dedupe keys
(``care-digest:{account}:{week}``, ``care-overdue:{account}:{week}``) make a re-run queue nothing twice.

Messages are sent through the notifications outbox: WeChat subscribe message first, SMS as its fallback.
WeChat fields carry counts only — never a child's name (the outbox refuses one: every child's name of the
school is given as a private word); the SMS to the teacher carries counts too.
"""

import logging
import uuid
from collections import Counter, defaultdict
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from sqlmodel import col

from api.clock import SHANGHAI, Clock
from api.db import scoped_session
from api.models.accounts import Account, Role
from api.models.care_rhythm import CareDigestRun, CareOverdueFlag
from api.models.children import Child
from api.models.notifications import Channel, MessagePurpose, Topic
from api.models.organisations import School
from api.phones import PhoneError, PhoneKind, normalize_phone
from api.scoping import SYSTEM
from api.services.care.rules import LEADER_FLAG_DAYS, Status
from api.services.care.todo import school_todo_rows
from api.services.notifications.outbox import Outgoing, Route, enqueue
from api.settings import Settings

log = logging.getLogger("liushou.care.digest")

DIGEST_AT = time(7, 0)  # Monday morning, Asia/Shanghai
DIGEST_NAMESPACE = uuid.UUID("6f1d2c1e-8a55-4c4e-9a57-3c0de1c4a2e1")
WECHAT_PAGE_TODO = "pages/care/todo"
WECHAT_PAGE_LEADER = "pages/care/overdue"


def digest_week(now: datetime) -> date | None:
    """The Monday of the ISO week whose digest may go out at ``now`` (from Monday 07:00 in Shanghai on)."""
    local = now.astimezone(SHANGHAI)
    monday = local.date() - timedelta(days=local.weekday())
    if local.weekday() == 0 and local.time() < DIGEST_AT:
        return None
    return monday


def week_label(monday: date) -> str:
    year, week, _ = monday.isocalendar()
    return f"{year}-W{week:02d}"


def digest_subject(school_id: uuid.UUID, monday: date) -> uuid.UUID:
    """The digest a message is about: one per school and week (stable, so re-runs name the same one)."""
    return uuid.uuid5(DIGEST_NAMESPACE, f"{school_id}:{monday.isoformat()}")


@dataclass(frozen=True)
class DigestOutcome:
    school_id: uuid.UUID
    digests: int  # teachers' messages queued (new)
    flagged: int  # items newly flagged to the leaders
    leader_messages: int


def _routes(account: Account, *, sms: str, fields: dict[str, str], page: str, record: str) -> list[Route]:
    routes: list[Route] = []
    if account.wechat_openid:
        routes.append(Route(Channel.wechat, account.wechat_openid, record, template_data=fields, wechat_page=page))
    if account.phone:
        try:
            phone = normalize_phone(account.phone)
        except PhoneError:
            phone = None
        if phone is not None and phone.kind == PhoneKind.mobile:
            routes.append(Route(Channel.sms, phone.e164, sms))
    return routes


def teacher_digest_text(name: str, *, overdue: int, due: int, week: str) -> tuple[str, dict[str, str]]:
    """The SMS text and the WeChat template fields of a teacher's digest (counts only)."""
    sms = (
        f"【留守儿童关爱】{name}：本周（{week}）关爱工作待办，已逾期{overdue}项，7天内到期{due}项。"
        "请打开小程序“本周待办”查看。"
    )
    fields = {
        "thing1": "本周关爱工作待办",
        "number2": str(overdue),
        "number3": str(due),
        "character_string4": week,
        "thing5": "请打开小程序查看详情",
    }
    return sms, fields


def leader_text(*, items: int, children: int, week: str) -> tuple[str, dict[str, str]]:
    sms = (
        f"【留守儿童关爱】本周（{week}）新增逾期超过{LEADER_FLAG_DAYS}天的关爱事项{items}项，涉及{children}名儿童。"
        "请在小程序查看并督促落实。"
    )
    fields = {
        "thing1": f"关爱事项逾期超{LEADER_FLAG_DAYS}天",
        "number2": str(items),
        "number3": str(children),
        "character_string4": week,
        "thing5": "请查看并督促落实",
    }
    return sms, fields


async def send_school_digest(
    session: AsyncSession, *, school_id: uuid.UUID, monday: date, now: datetime, settings: Settings
) -> DigestOutcome | None:
    """Queue this week's digest of one school (``None``: it was queued before). The caller commits."""
    claimed = await session.execute(
        pg_insert(CareDigestRun)
        .values(school_id=school_id, week_start=monday, finished_at=now, digests=0, flagged=0)
        .on_conflict_do_nothing()
        .returning(col(CareDigestRun.school_id))
    )
    if claimed.first() is None:
        return None
    today = now.astimezone(SHANGHAI).date()
    week = week_label(monday)
    subject = digest_subject(school_id, monday)
    rows = await school_todo_rows(session, school_id, today=today)
    names = tuple(
        (await session.execute(sa.select(col(Child.name)).where(col(Child.school_id) == school_id))).scalars()
    )
    template = settings.wechat_care_digest_template_id

    per_teacher: dict[uuid.UUID, Counter[Status]] = defaultdict(Counter)
    for row in rows:
        if row.teacher_id is not None:
            per_teacher[row.teacher_id][row.status] += 1
    staff = {
        a.id: a
        for a in (
            await session.execute(
                sa.select(Account).where(
                    col(Account.school_id) == school_id,
                    col(Account.is_active),
                    col(Account.role).in_([Role.teacher, Role.school_admin]),
                )
            )
        ).scalars()
    }
    digests = 0
    for teacher_id, counts in per_teacher.items():
        account = staff.get(teacher_id)
        if account is None:  # left the school or deactivated: their children show as unpaired to the leaders
            continue
        sms, fields = teacher_digest_text(
            account.display_name, overdue=counts[Status.overdue], due=counts[Status.due], week=week
        )
        routes = _routes(
            account, sms=sms, fields=fields, page=WECHAT_PAGE_TODO, record=f"微信订阅消息 关爱待办周报 {week}"
        )
        routes = [_with_template(r, template) for r in routes]
        if not routes:
            log.info("care digest: teacher %s has no way to be reached", teacher_id)
            continue
        queued = await enqueue(
            session,
            Outgoing(
                topic=Topic.care_digest,
                subject_id=subject,
                recipient_label=account.display_name,
                routes=routes,
                dedupe_key=f"care-digest:{account.id}:{week}",
                not_before=now,
                school_id=school_id,
                account_id=account.id,
                purpose=MessagePurpose.inform,
                priority=3,
                private_words=names,
            ),
            now=now,
        )
        digests += int(queued.created)

    late = [r for r in rows if r.status == Status.overdue and r.days > LEADER_FLAG_DAYS]
    flagged: list[uuid.UUID] = []
    if late:
        inserted = await session.execute(
            pg_insert(CareOverdueFlag)
            .values(
                [
                    {
                        "id": uuid.uuid4(),
                        "school_id": school_id,
                        "child_id": r.child_id,
                        "kind": r.kind.value,
                        "due_on": r.due_on,
                        "flagged_at": now,
                    }
                    for r in late
                ]
            )
            .on_conflict_do_nothing(constraint="uq_care_overdue_flag_item")
            .returning(col(CareOverdueFlag.child_id))
        )
        flagged = list(inserted.scalars())
    leader_messages = 0
    if flagged:
        sms, fields = leader_text(items=len(flagged), children=len(set(flagged)), week=week)
        leaders = [a for a in staff.values() if a.role == Role.school_admin]
        for leader in sorted(leaders, key=lambda a: a.created_at):
            routes = [
                _with_template(r, template)
                for r in _routes(
                    leader, sms=sms, fields=fields, page=WECHAT_PAGE_LEADER, record=f"微信订阅消息 关爱逾期提醒 {week}"
                )
            ]
            if not routes:
                continue
            queued = await enqueue(
                session,
                Outgoing(
                    topic=Topic.care_digest,
                    subject_id=subject,
                    recipient_label=leader.display_name,
                    routes=routes,
                    dedupe_key=f"care-overdue:{leader.id}:{week}",
                    not_before=now,
                    school_id=school_id,
                    account_id=leader.id,
                    purpose=MessagePurpose.leader_alert,
                    priority=3,
                    private_words=names,
                ),
                now=now,
            )
            leader_messages += int(queued.created)
    await session.execute(
        sa.update(CareDigestRun)
        .where(col(CareDigestRun.school_id) == school_id, col(CareDigestRun.week_start) == monday)
        .values(digests=digests, flagged=len(flagged), finished_at=now)
    )
    return DigestOutcome(school_id=school_id, digests=digests, flagged=len(flagged), leader_messages=leader_messages)


def _with_template(route: Route, template_id: str) -> Route:
    if route.channel != Channel.wechat:
        return route
    return Route(
        route.channel,
        route.address,
        route.body,
        template_data=route.template_data,
        wechat_template_id=template_id,
        wechat_page=route.wechat_page,
    )


async def schools_waiting(session: AsyncSession, monday: date) -> list[uuid.UUID]:
    """Schools whose digest for the week of ``monday`` is not queued yet."""
    done = sa.select(col(CareDigestRun.school_id)).where(col(CareDigestRun.week_start) == monday)
    stmt = sa.select(col(School.id)).where(col(School.id).not_in(done)).order_by(col(School.id))
    return list((await session.execute(stmt)).scalars())


async def run_digests(
    sessionmaker: async_sessionmaker[AsyncSession], *, settings: Settings, clock: Clock
) -> list[DigestOutcome]:
    """Queue the week's digest of every school that has not had it, each school in its own transaction; a
    school that fails is logged and tried again on the next pass (its week is not claimed)."""
    now = clock.now()
    monday = digest_week(now)
    if monday is None:
        return []
    # SYSTEM: the worker looks at every school's week.
    async with scoped_session(sessionmaker, SYSTEM) as session:
        waiting = await schools_waiting(session, monday)
    outcomes: list[DigestOutcome] = []
    for school_id in waiting:
        try:
            # SYSTEM: the worker judges the whole school and queues its staff's messages.
            async with scoped_session(sessionmaker, SYSTEM, clock=clock) as session:
                outcome = await send_school_digest(
                    session, school_id=school_id, monday=monday, now=clock.now(), settings=settings
                )
        except Exception:
            log.exception("care digest of school %s failed; tried again on the next pass", school_id)
            continue
        if outcome is not None:
            outcomes.append(outcome)
    return outcomes
