"""Reminders of family calls: the family (the guardian who will call) and the child's head teacher before the
call, at the school's lead times, and the family at once when the school cancels.

Everything goes through the shared outbox (``api.services.notifications``): queued in the booking's own
transaction with ``not_before`` = the call minus the lead time, one dedupe key per call, lead and recipient (so
planning twice queues once), WeChat subscribe message first and SMS as its fallback. The worker sends each
once, across crashes (its idempotency key travels to the provider). No message names the child: the WeChat
fields carry the line, the time and the room, and the child's name is a private word the outbox refuses there;
the SMS texts say "your call" and "a pupil of your class".
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.clock import SHANGHAI
from api.models.accounts import Account
from api.models.children import Child
from api.models.family_calls import CallLine, FamilyCall, FamilyCallSettings
from api.models.guardians import Guardian
from api.models.notifications import Channel, MessageStatus, OutboundMessage, Topic
from api.models.organisations import School, SchoolClass
from api.phones import PhoneError, PhoneKind, normalize_phone
from api.scoping import as_system
from api.services.notifications.outbox import Outgoing, Route, enqueue

REMINDER_KEY = "call-reminder"
CANCELLED_KEY = "call-cancelled"
WECHAT_PAGE = "pages/family-call/detail?id={call_id}"


@dataclass(frozen=True)
class Recipient:
    kind: str  # family | teacher
    label: str
    account_id: uuid.UUID | None
    openid: str | None
    phone: str | None  # E.164, mobiles only (SMS)


@dataclass(frozen=True)
class CallFacts:
    call_id: uuid.UUID
    school_id: uuid.UUID
    school_name: str
    line_name: str
    room: str
    number: str | None
    starts_at: datetime
    child_name: str
    family: Recipient | None
    teacher: Recipient | None


def _mobile(raw: str | None) -> str | None:
    if not raw:
        return None
    try:
        phone = normalize_phone(raw)
    except PhoneError:
        return None
    return phone.e164 if phone.kind == PhoneKind.mobile else None


async def _facts(session: AsyncSession, call_id: uuid.UUID) -> CallFacts:
    """Everything the messages of a call need, in one statement: the call, its line and school, the child (for
    its name, which the outbox keeps off WeChat), the guardian who will call and the child's head teacher."""
    family_account, head = sa.orm.aliased(Account), sa.orm.aliased(Account)
    row = (
        await session.execute(
            sa.select(
                FamilyCall,
                col(CallLine.name),
                col(CallLine.room),
                col(CallLine.number),
                col(School.name),
                col(Child.name),
                col(Guardian.id),
                col(Guardian.phone),
                family_account.id,
                family_account.wechat_openid,
                head.id,
                head.wechat_openid,
                head.phone,
            )  # type: ignore[call-overload]
            .join(CallLine, col(CallLine.id) == FamilyCall.line_id)
            .join(School, col(School.id) == FamilyCall.school_id)
            .join(Child, col(Child.id) == FamilyCall.child_id)
            .outerjoin(Guardian, col(Guardian.id) == FamilyCall.guardian_id)
            .outerjoin(family_account, col(family_account.id) == Guardian.account_id)
            .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
            .outerjoin(head, sa.and_(col(head.id) == SchoolClass.head_teacher_id, col(head.is_active)))
            .where(col(FamilyCall.id) == call_id)
        )
    ).one()
    (call, line_name, room, number, school_name, child_name, guardian_id, guardian_phone, family_id, family_openid,
     head_id, head_openid, head_phone) = row  # fmt: skip
    family = teacher = None
    if guardian_id is not None:
        family = Recipient("family", "家长", family_id, family_openid, _mobile(guardian_phone))
    if head_id is not None:
        teacher = Recipient("teacher", "班主任", head_id, head_openid, _mobile(head_phone))
    return CallFacts(
        call_id=call.id,
        school_id=call.school_id,
        school_name=school_name,
        line_name=line_name,
        room=room,
        number=number,
        starts_at=call.starts_at,
        child_name=child_name,
        family=family,
        teacher=teacher,
    )


def _when(moment: datetime) -> str:
    local = moment.astimezone(SHANGHAI)
    return f"{local.month}月{local.day}日 {local:%H:%M}"


def _routes(to: Recipient, *, sms: str, fields: dict[str, str], call_id: uuid.UUID) -> list[Route]:
    routes = []
    if to.openid:
        page = WECHAT_PAGE.format(call_id=call_id)
        routes.append(Route(Channel.wechat, to.openid, body=sms, template_data=fields, wechat_page=page))
    if to.phone:
        routes.append(Route(Channel.sms, to.phone, body=sms))
    return routes


def reminder_text(facts: CallFacts, to: Recipient) -> str:
    """The SMS: the school, the time, the line and the room — never the child."""
    where = f"{facts.line_name}（{facts.room}）"
    if to.kind == "teacher":
        return (
            f"【{facts.school_name}】提醒：{_when(facts.starts_at)} 您班一名学生有亲情通话，地点{where}，"
            "请在小程序查看并按时带学生到场。"
        )
    number = f"，电话 {facts.number}" if facts.number else ""
    return f"【{facts.school_name}】亲情通话提醒：您预约的通话在 {_when(facts.starts_at)}，{where}{number}。"


async def _plan(
    session: AsyncSession, *, call_id: uuid.UUID, starts_at: datetime, settings: FamilyCallSettings, now: datetime
) -> None:
    """Queue one reminder per lead time still ahead (a call booked 90 minutes ahead gets no 24-hour one), to the
    family and to the head teacher, each by WeChat with SMS as fallback (or SMS alone without WeChat)."""
    leads = [lead for lead in settings.reminder_lead_minutes if starts_at - timedelta(minutes=lead) > now]
    if not leads:
        return
    facts = await _facts(session, call_id)
    for lead in leads:
        for to in (facts.family, facts.teacher):
            if to is None:
                continue
            fields = {"thing1": facts.line_name[:20], "time2": _when(facts.starts_at), "thing3": facts.room[:20]}
            routes = _routes(to, sms=reminder_text(facts, to), fields=fields, call_id=call_id)
            if not routes:
                continue
            await enqueue(
                session,
                Outgoing(
                    topic=Topic.family_call,
                    subject_id=call_id,
                    school_id=facts.school_id,
                    recipient_label=to.label,
                    account_id=to.account_id,
                    routes=routes,
                    dedupe_key=f"{REMINDER_KEY}:{call_id}:{lead}:{to.kind}",
                    not_before=starts_at - timedelta(minutes=lead),
                    due_by=starts_at,
                    private_words=(facts.child_name,),
                ),
                now=now,
            )


async def _tell_cancelled(session: AsyncSession, *, call_id: uuid.UUID, now: datetime) -> None:
    """The school cancelled: the family is told at once (the reason is read in the mini-program)."""
    facts = await _facts(session, call_id)
    if facts.family is None:
        return
    sms = (
        f"【{facts.school_name}】很抱歉，学校取消了您 {_when(facts.starts_at)} 的亲情通话（{facts.line_name}），"
        "原因请在小程序查看，可重新预约。"
    )
    fields = {"thing1": facts.line_name[:20], "time2": _when(facts.starts_at), "thing3": "学校已取消"}
    routes = _routes(facts.family, sms=sms, fields=fields, call_id=call_id)
    if not routes:
        return
    await enqueue(
        session,
        Outgoing(
            topic=Topic.family_call,
            subject_id=call_id,
            school_id=facts.school_id,
            recipient_label=facts.family.label,
            account_id=facts.family.account_id,
            routes=routes,
            dedupe_key=f"{CANCELLED_KEY}:{call_id}",
            not_before=now,
            priority=1,
            private_words=(facts.child_name,),
        ),
        now=now,
    )


async def _drop_pending(session: AsyncSession, *, call_id: uuid.UUID, now: datetime) -> None:
    """A call that will not happen needs no reminder: those still waiting are cancelled (kept, not deleted)."""
    await session.execute(
        sa.update(OutboundMessage)
        .where(
            col(OutboundMessage.topic) == Topic.family_call,
            col(OutboundMessage.subject_id) == call_id,
            col(OutboundMessage.status) == MessageStatus.pending,
            col(OutboundMessage.dedupe_key).startswith(f"{REMINDER_KEY}:"),
        )
        .values(status=MessageStatus.cancelled, error_code="call_cancelled", failed_at=now)
    )


# The three below cross scope: the recipients' addresses (the guardian who will call, the head teacher's
# account) are not the caller's to read — a family sees no staff account — and the outbox is the system's own.
# Only the messages of the one call the caller has just acted on are read and written.


async def plan(
    session: AsyncSession, *, call_id: uuid.UUID, starts_at: datetime, settings: FamilyCallSettings, now: datetime
) -> None:
    """Queue one reminder per lead time still ahead (a call booked 90 minutes ahead gets no 24-hour one), to the
    family and to the head teacher, each by WeChat with SMS as fallback (or SMS alone without WeChat)."""
    # SYSTEM: the addresses of this call's family and head teacher, and the outbox's rows (see above).
    async with as_system(session):
        await _plan(session, call_id=call_id, starts_at=starts_at, settings=settings, now=now)


async def tell_cancelled(session: AsyncSession, *, call_id: uuid.UUID, now: datetime) -> None:
    """The school cancelled: the family is told at once (the reason is read in the mini-program)."""
    # SYSTEM: the address of this call's family, and the outbox's rows (see above).
    async with as_system(session):
        await _tell_cancelled(session, call_id=call_id, now=now)


async def drop_pending(session: AsyncSession, *, call_id: uuid.UUID, now: datetime) -> None:
    """A call that will not happen needs no reminder: those still waiting are cancelled (kept, not deleted)."""
    # SYSTEM: this call's queued reminders are the outbox's rows, which a family cancelling cannot see.
    async with as_system(session):
        await _drop_pending(session, call_id=call_id, now=now)
