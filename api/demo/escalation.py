"""The emergency part of the demo county: duty contacts (值班) for 青山县 and its townships, and one closed
incident whose whole timeline was produced by the engine's own code.

The incident is replayed, not written by hand: it is reported through the incident service, its messages
are claimed and recorded by the dispatcher's functions (the providers' answers are scripted), receipts and
keypad presses go through the same callback handler as real ones, the township acknowledges in the
mini-program, and the school closes it. Seeding twice changes nothing.
"""

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.channels.base import SmsInbound, SmsReceipt, VoiceEvent
from api.clock import SHANGHAI
from api.demo.context import DemoContext, demo_id, principal_of
from api.models.children import Child, ChildStatus
from api.models.escalation import (
    Audience,
    DutyContact,
    EscalationParty,
    EscalationStep,
    StepStatus,
)
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.incidents import (
    ChildOutcome,
    Incident,
    IncidentCategory,
    IncidentClose,
    IncidentCreate,
    IncidentNote,
    OutcomeRecord,
    Severity,
)
from api.models.notifications import (
    Channel,
    MessagePurpose,
    OutboundMessage,
)
from api.services.emergency import incidents
from api.services.emergency.acknowledgements import acknowledge_in_mini_program
from api.services.emergency.callbacks import handle_callback
from api.services.notifications.delivery import Outcome
from api.services.notifications.dispatch import claim_due, record_outcomes
from api.settings import get_settings

INCIDENT_KEY = "incident-shiqiao-ankle"
CASE_CODE = "261015-DEMO01"
# 2026-10-15 (a Thursday), Beijing time.
OCCURRED = datetime(2026, 10, 15, 10, 12, tzinfo=SHANGHAI)
REPORTED = OCCURRED + timedelta(minutes=3)

DUTY = [
    # key, township index (None: the county bureau), name, phone, account username
    ("duty-county", None, "青山县教育局安全股值班室", "0739-5551100", "bureau"),
    ("duty-shiqiao", 0, "石桥镇党委政府值班室", "13907395501", "shiqiao-gov"),
    ("duty-liuhe", 1, "柳河乡党委政府值班室", "13907395502", "liuhe-gov"),
]


async def seed_emergencies(session: AsyncSession, ctx: DemoContext) -> None:
    await _seed_duty_contacts(session, ctx)
    if await session.get(Incident, demo_id(INCIDENT_KEY)) is None:
        await _replay_incident(session, ctx)


async def _seed_duty_contacts(session: AsyncSession, ctx: DemoContext) -> None:
    for key, township, name, phone, username in DUTY:
        if await session.get(DutyContact, demo_id(key)) is None:
            session.add(
                DutyContact(
                    id=demo_id(key),
                    county_id=ctx.county_id,
                    township_id=ctx.township_ids[township] if township is not None else None,
                    name=name,
                    phone=phone,
                    account_id=ctx.accounts[username],
                    created_at=REPORTED,
                    updated_at=REPORTED,
                )
            )
    await session.flush()


async def _demo_child(session: AsyncSession, school_id: uuid.UUID) -> uuid.UUID | None:
    """A left-behind child of the school whose entrusted guardian and a parent away both have a phone."""

    def with_phone(role: GuardianRole) -> Any:
        return sa.exists().where(
            col(ChildGuardian.child_id) == Child.id,
            col(ChildGuardian.is_active),
            col(ChildGuardian.role) == role,
            col(Guardian.id) == ChildGuardian.guardian_id,
            col(Guardian.phone).is_not(None),
        )

    return (
        await session.execute(
            select(Child.id)
            .where(
                Child.school_id == school_id,
                Child.status == ChildStatus.enrolled,
                col(Child.is_left_behind),
                with_phone(GuardianRole.entrusted_guardian),
                with_phone(GuardianRole.parent_away),
            )
            .order_by(col(Child.id))
            .limit(1)
        )
    ).scalar_one_or_none()


class _Replay:
    """Plays the providers' side for one incident."""

    def __init__(self, session: AsyncSession, incident: Incident) -> None:
        self.session = session
        self.incident = incident
        self.events = 0

    def event_id(self) -> str:
        self.events += 1
        return f"evt_demo_{self.incident.case_code}_{self.events}"

    async def send_due(self, at: datetime) -> list[OutboundMessage]:
        """Claim what is due for this incident, the provider accepts it, record it as the worker would."""
        claimed = await claim_due(
            self.session, now=at, limit=100, worker_id="demo", lease_seconds=60, incident_id=self.incident.id
        )
        results = [(c, Outcome(kind="sent", provider_message_id=f"demo_{c.id.hex[:16]}")) for c in claimed]
        await record_outcomes(self.session, results, now=at + timedelta(seconds=2), worker_id="demo")
        rows = await self.session.execute(
            select(OutboundMessage)
            .where(col(OutboundMessage.id).in_([c.id for c in claimed]))
            .execution_options(populate_existing=True)
        )
        return list(rows.scalars())

    async def callback(self, event: SmsReceipt | SmsInbound | VoiceEvent, at: datetime) -> None:
        await handle_callback(self.session, event, now=at)

    async def sms_delivered(self, message: OutboundMessage, at: datetime) -> None:
        await self.callback(
            SmsReceipt(
                event_id=self.event_id(),
                occurred_at=at,
                type="sms.delivered",
                message_id=message.provider_message_id or "",
                idempotency_key=message.idempotency_key,
                to=message.address,
            ),
            at,
        )

    async def sms_reply(self, message: OutboundMessage, at: datetime) -> None:
        await self.callback(
            SmsInbound.model_validate(
                {
                    "event_id": self.event_id(),
                    "occurred_at": at,
                    "type": "sms.inbound",
                    "message_id": f"mo_{self.events}",
                    "from": message.address,
                    "text": f"收到{message.reply_code}，马上给老师打电话",
                    "in_reply_to": message.provider_message_id,
                }
            ),
            at,
        )

    async def call(self, message: OutboundMessage, at: datetime, *, press: str | None = "1") -> None:
        steps: list[tuple[str, str | None, int]] = [("voice.answered", None, 20)]
        if press:
            steps.append(("voice.dtmf", press, 35))
        steps.append(("voice.completed", None, 50))
        for type_, digits, seconds in steps:
            moment = at + timedelta(seconds=seconds)
            await self.callback(
                VoiceEvent(
                    event_id=self.event_id(),
                    occurred_at=moment,
                    type=type_,
                    call_id=message.provider_message_id or "",
                    idempotency_key=message.idempotency_key,
                    to=message.address,
                    digits=digits,
                ),
                moment,
            )


async def _replay_incident(session: AsyncSession, ctx: DemoContext) -> None:
    school_id = ctx.school_ids[0]
    child_id = await _demo_child(session, school_id)
    if child_id is None:
        return  # no archive in this demo: nothing to replay
    settings = get_settings()
    teacher = await principal_of(session, ctx.accounts["teacher-li"])
    leader = await principal_of(session, ctx.accounts["shiqiao-admin"])
    township = await principal_of(session, ctx.accounts["shiqiao-gov"])
    reported = REPORTED.astimezone(UTC)
    incident = await incidents.report_incident(
        session,
        teacher,
        data=IncidentCreate(
            child_id=child_id,
            category=IncidentCategory.injury,
            severity=Severity.moderate,
            summary="体育课跳远落地时扭伤右脚踝，肿胀明显，不能行走。",
            location="学校操场沙坑",
            occurred_at=OCCURRED,
            first_actions="体育老师冰敷固定，校医检查，班主任陪同在医务室休息。",
        ),
        settings=settings,
        now=reported,
        incident_id=demo_id(INCIDENT_KEY),
        case_code=CASE_CODE,
    )
    replay = _Replay(session, incident)
    sent = await replay.send_due(reported + timedelta(seconds=3))
    audiences = {
        p.id: p.audience
        for p in (
            await session.execute(select(EscalationParty).where(EscalationParty.incident_id == incident.id))
        ).scalars()
    }
    for message in sent:
        if message.purpose != MessagePurpose.notify or message.party_id is None:
            continue
        audience = audiences[message.party_id]
        start = message.sent_at or reported
        if message.channel == Channel.voice and audience != Audience.township:
            # The grandmother (or the bureau's duty room) picks up and presses 1.
            await replay.call(message, start)
        elif message.channel == Channel.sms:
            await replay.sms_delivered(message, start + timedelta(seconds=6))
            if audience == Audience.parents_away:
                await replay.sms_reply(message, start + timedelta(minutes=6))
    # The father's WeChat, if he is bound, goes unanswered for the wait and the SMS follows; the township's
    # duty officer reads the notice and acknowledges in the mini-program.
    await acknowledge_in_mini_program(session, township, incident_id=incident.id, now=reported + timedelta(minutes=9))
    await incidents.add_update(
        session,
        teacher,
        incident_id=incident.id,
        data=IncidentNote(note="已由班主任和校医陪同到镇卫生院拍片：软组织挫伤，未见骨折。"),
        now=reported + timedelta(minutes=55),
    )
    await incidents.record_outcome(
        session,
        teacher,
        incident_id=incident.id,
        data=OutcomeRecord(outcome=ChildOutcome.handed_to_family, note="监护人下午到校接回家休养，家长已知悉。"),
        now=reported + timedelta(hours=5, minutes=20),
    )
    if await _all_told(session, incident.id):
        await incidents.close_incident(
            session,
            leader,
            incident_id=incident.id,
            data=IncidentClose(
                summary="按应急机制逐级告知：委托监护人、在外务工家长、县教育局和镇党委政府均已确认收到。"
                "孩子已回家休养，班主任次日家访。"
            ),
            now=reported + timedelta(hours=6, minutes=15),
        )
    await session.flush()


async def _all_told(session: AsyncSession, incident_id: uuid.UUID) -> bool:
    open_steps = await session.execute(
        select(sa.func.count())
        .select_from(EscalationStep)
        .where(EscalationStep.incident_id == incident_id, EscalationStep.status != StepStatus.told)
    )
    return int(open_steps.scalar_one()) == 0
