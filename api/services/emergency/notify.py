"""What the chain queues on the outbox (:mod:`api.services.notifications`): a notification to one target of a
party (with its acknowledgement link and SMS reply code), alerts to the school's leaders, and the
cancellation of what a told party no longer needs. The texts are :mod:`.texts`; sending is the worker's.
"""

import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import ack_links, driver
from api.models.accounts import Account, Role
from api.models.base import new_row
from api.models.children import Child
from api.models.escalation import (
    EscalationParty,
    EscalationStep,
    EscalationTarget,
    ReplyCode,
)
from api.models.incidents import (
    CATEGORY_LABELS,
    SEVERITY_LABELS,
    EventKind,
    Incident,
)
from api.models.notifications import Channel, MessagePurpose, MessageStatus, OutboundMessage, Topic
from api.models.organisations import School
from api.phones import PhoneError, PhoneKind, normalize_phone
from api.services.emergency import rows, texts
from api.services.emergency.timeline import record_event, target_detail
from api.services.notifications.outbox import Route, new_message
from api.settings import Settings

_CASE_FACTS = "liushou_case_facts"
# Built once: the reporter's phone, else a school admin's.
_SCHOOL_PHONE: Any = (
    sa.select(col(Account.phone))
    .where(
        col(Account.phone).is_not(None),
        col(Account.is_active),
        sa.or_(
            col(Account.id) == sa.bindparam("reporter_id"),
            sa.and_(col(Account.school_id) == sa.bindparam("school_id"), col(Account.role) == Role.school_admin),
        ),
    )
    .order_by((col(Account.id) == sa.bindparam("reporter_id")).desc(), col(Account.created_at))
    .limit(1)
)


async def case_facts(session: AsyncSession, incident: Incident) -> texts.CaseFacts:
    cache: dict[uuid.UUID, texts.CaseFacts] = session.info.setdefault(_CASE_FACTS, {})
    if incident.id in cache:
        return cache[incident.id]
    school = await session.get(School, incident.school_id)
    child = await session.get(Child, incident.child_id)
    assert school is not None and child is not None
    return await known_case_facts(
        session, incident, school_name=school.name, duty_phone=school.duty_phone, child_name=child.name
    )


async def known_case_facts(
    session: AsyncSession, incident: Incident, *, school_name: str, duty_phone: str | None, child_name: str
) -> texts.CaseFacts:
    """The facts every text of the case shows, from what the caller has already read."""
    # The school's duty phone; a school without one: the reporter's phone, else a school admin's.
    phone = (
        duty_phone
        or (
            await session.execute(
                _SCHOOL_PHONE, {"reporter_id": incident.reported_by_id, "school_id": incident.school_id}
            )
        ).scalar_one_or_none()
    )
    return remember_case_facts(session, incident, school_name=school_name, school_phone=phone, child_name=child_name)


def remember_case_facts(
    session: AsyncSession, incident: Incident, *, school_name: str, school_phone: str | None, child_name: str
) -> texts.CaseFacts:
    """The facts every text of the case shows, all read by the caller (the report), kept for the session."""
    facts = texts.CaseFacts(
        incident_id=incident.id,
        case_code=incident.case_code,
        school_name=school_name,
        school_phone=school_phone,
        child_name=child_name,
        category_label=CATEGORY_LABELS[incident.category],
        severity_label=SEVERITY_LABELS[incident.severity],
        occurred_at=incident.occurred_at,
    )
    session.info.setdefault(_CASE_FACTS, {})[incident.id] = facts
    return facts


def _message(
    incident: Incident,
    *,
    purpose: MessagePurpose,
    channel: Channel,
    address: str,
    recipient_label: str,
    rendered_for: Callable[..., texts.Rendered],
    now: datetime,
    ack_wait_seconds: int,
    party_id: uuid.UUID | None = None,
    target_id: uuid.UUID | None = None,
    account_id: uuid.UUID | None = None,
    round_: int = 1,
    reply_code: str | None = None,
    due_by: datetime | None = None,
    settings: Settings,
    message_id: uuid.UUID | None = None,
) -> OutboundMessage:
    message_id = message_id or uuid.uuid4()
    token = ack_links.ack_token(settings.ack_link_keys, message_id)
    link = f"{settings.public_base_url.rstrip('/')}/ack/{token}"
    rendered: texts.Rendered = rendered_for(link=link, reply_code=reply_code or "", token=token)
    policy = incident.policy
    return new_message(
        topic=Topic.incident,
        subject_id=incident.id,
        purpose=purpose,
        route=Route(channel, address, rendered.body, rendered.template_data, wechat_page=rendered.wechat_page),
        recipient_label=recipient_label,
        now=now,
        max_attempts=int(policy["max_send_attempts"]),
        retry_backoff_seconds=int(policy["retry_backoff_seconds"]),
        ack_wait_seconds=ack_wait_seconds,
        message_id=message_id,
        school_id=incident.school_id,
        incident_id=incident.id,
        party_id=party_id,
        target_id=target_id,
        account_id=account_id,
        round=round_,
        reply_code=reply_code,
        # Alerts to the leaders go first under a backlog; a party's message by its step's deadline.
        priority=1 if purpose == MessagePurpose.notify else 0,
        due_by=due_by,
    )


# Draws of one length before trying a longer code (a number with that many open parties is a duty phone).
_REPLY_CODE_DRAWS = 8
# Built once: the statement is the same for every code (only its parameters change).
_INSERT_REPLY_CODE = (
    pg_insert(ReplyCode.__table__)  # type: ignore[attr-defined]
    .on_conflict_do_nothing(index_elements=["address", "code"], index_where=col(ReplyCode.released_at).is_(None))
    .returning(col(ReplyCode.code))
)


async def reserve_reply_code(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    party_id: uuid.UUID,
    address: str,
    now: datetime,
    new_party: bool = False,
) -> str:
    """The SMS reply code of a party on a number: the one it already holds there, else a fresh one that no
    other open party of the number holds.

    The partial unique index on open codes decides, not a read beforehand: a concurrent report that drew the
    same code waits for ours to commit, finds the conflict and draws again. After a few collisions in a row
    (the number has thousands of open parties) the code gets two digits longer.

    ``new_party``: the party was written moments ago in this transaction (the report freezing its chain), so
    it holds no code yet and needs no flush before one refers to it."""
    if not new_party:
        held = (
            await session.execute(
                select(ReplyCode.code).where(
                    ReplyCode.party_id == party_id, ReplyCode.address == address, col(ReplyCode.released_at).is_(None)
                )
            )
        ).first()
        if held is not None:
            return held[0]
        await session.flush()  # the party the code refers to
    for digits in range(texts.REPLY_CODE_DIGITS, texts.REPLY_CODE_MAX_DIGITS + 1, 2):
        for _ in range(_REPLY_CODE_DRAWS):
            code = texts.new_reply_code(digits)
            inserted = await session.execute(
                _INSERT_REPLY_CODE,
                {
                    "id": uuid.uuid4(),
                    "incident_id": incident_id,
                    "party_id": party_id,
                    "address": address,
                    "code": code,
                    "created_at": now,
                },
            )
            if inserted.first() is not None:
                return code
    raise RuntimeError("no free SMS reply code for this number")  # 8 digits: 90 million open parties


# Every code a new chain needs in one statement (its parties' SMS targets): a code taken on its number (or drawn
# twice for one number in the batch) inserts nothing, and only those are drawn again. Sent on the driver: the
# parties are already written (rows.write_chain), and a number that many open parties text (a school's own phone,
# when reports pile up) can take several rounds, each of which cost a report ~0.3 ms through the session.
_INSERT_REPLY_CODES = driver.DriverStatement(
    sa.text(
        "INSERT INTO reply_code (id, incident_id, party_id, address, code, created_at)"
        " SELECT id, CAST(:incident_id AS uuid), party_id, address, code, CAST(:now AS timestamptz)"
        " FROM unnest(CAST(:ids AS uuid[]), CAST(:party_ids AS uuid[]), CAST(:addresses AS text[]),"
        " CAST(:codes AS text[])) AS c(id, party_id, address, code)"
        " ON CONFLICT (address, code) WHERE released_at IS NULL DO NOTHING"
        " RETURNING party_id, address, code"
    )
)


# Candidates per party in a report's first draw. With 40 % of a number's codes held (a school's own phone
# after thousands of never-closed reports), one candidate collided for 40 % of the reports, each collision a
# further round of draws; with four, for one report in 40 (0.4⁴).
FIRST_DRAW_CANDIDATES = 4


def first_reply_codes(wanted: list[tuple[uuid.UUID, str]]) -> list[tuple[uuid.UUID, str, str]]:
    """The first draw of :func:`reserve_new_reply_codes` for (party, number) pairs: candidates (party, number,
    code), :data:`FIRST_DRAW_CANDIDATES` per pair in the order drawn, for a caller that inserts the first free
    one of each pair with other rows (the report's one statement for its chain)."""
    return [
        (party_id, address, texts.new_reply_code(texts.REPLY_CODE_DIGITS))
        for party_id, address in dict.fromkeys(wanted)
        for _ in range(FIRST_DRAW_CANDIDATES)
    ]


async def reserve_new_reply_codes(
    session: AsyncSession,
    *,
    incident_id: uuid.UUID,
    wanted: list[tuple[uuid.UUID, str]],
    now: datetime,
    held: dict[tuple[uuid.UUID, str], str] | None = None,
    rounds_drawn: int = 0,
) -> dict[tuple[uuid.UUID, str], str]:
    """Reply codes for parties written moments ago in this transaction (the report freezing its chain), which
    hold none yet: (party, number) → code, drawn as :func:`reserve_reply_code` draws them, each round of draws
    one statement. ``held`` and ``rounds_drawn``: what the caller's own first rounds of draws
    (:func:`first_reply_codes`) got, and how many rounds they were."""
    held = dict(held or {})
    pending = [key for key in dict.fromkeys(wanted) if key not in held]
    rounds = 0
    for digits in range(texts.REPLY_CODE_DIGITS, texts.REPLY_CODE_MAX_DIGITS + 1, 2):
        for _ in range(_REPLY_CODE_DRAWS):
            if not pending:
                return held
            rounds += 1
            if rounds <= rounds_drawn:
                continue
            inserted = await driver.fetch(
                session,
                _INSERT_REPLY_CODES,
                {
                    "incident_id": incident_id,
                    "now": now,
                    "ids": [uuid.uuid4() for _ in pending],
                    "party_ids": [party_id for party_id, _ in pending],
                    "addresses": [address for _, address in pending],
                    "codes": [texts.new_reply_code(digits) for _ in pending],
                },
            )
            for party_id, address, code in inserted:
                held[(party_id, address)] = code
            pending = [key for key in pending if key not in held]
    if pending:
        raise RuntimeError("no free SMS reply code for this number")  # 8 digits: 90 million open parties
    return held


async def release_reply_codes(
    session: AsyncSession, *, now: datetime, party_id: uuid.UUID | None = None, incident_id: uuid.UUID | None = None
) -> None:
    """A told party (or a closed incident) no longer answers to its codes: they are free for others, and a
    reply quoting one is no longer matched to it."""
    where = col(ReplyCode.party_id) == party_id if party_id is not None else col(ReplyCode.incident_id) == incident_id
    await session.execute(
        sa.update(ReplyCode)
        .where(where, col(ReplyCode.released_at).is_(None))
        .values(released_at=now)
        .execution_options(synchronize_session=False)
    )


async def notification(
    session: AsyncSession,
    incident: Incident,
    step: EscalationStep,
    party: EscalationParty,
    target: EscalationTarget,
    *,
    settings: Settings,
    now: datetime,
    new_party: bool = False,
    message_id: uuid.UUID | None = None,
    reply_code: str | None = None,
) -> OutboundMessage:
    """The notification to one target (its SMS reply code reserved, unless the caller has: ``reply_code``),
    not yet added. (``new_party``: see :func:`reserve_reply_code`.)"""
    facts = await case_facts(session, incident)
    if target.channel == Channel.sms and reply_code is None:
        reply_code = await reserve_reply_code(
            session, incident_id=incident.id, party_id=party.id, address=target.address, now=now, new_party=new_party
        )

    def render(*, link: str, reply_code: str, token: str) -> texts.Rendered:
        return texts.notification(
            facts, audience=party.audience, channel=target.channel, link=link, reply_code=reply_code, token=token
        )

    return _message(
        incident,
        purpose=MessagePurpose.notify,
        channel=target.channel,
        address=target.address,
        recipient_label=f"{target.contact_label} {target.contact_name or ''}".strip(),
        rendered_for=render,
        now=now,
        ack_wait_seconds=step.ack_wait_seconds,
        party_id=party.id,
        target_id=target.id,
        account_id=target.account_id,
        round_=party.round,
        reply_code=reply_code,
        due_by=step.deadline_at,
        settings=settings,
        message_id=message_id,
    )


def quoting_instead(message: OutboundMessage, code: str) -> OutboundMessage:
    """The same SMS (its id too), asking for the reply code ``code`` instead of its own."""
    assert message.reply_code is not None and message.body is not None
    values = {key: value for key, value in message.__dict__.items() if not key.startswith("_sa_")}
    values.update(body=texts.with_reply_code(message.body, message.reply_code, code), reply_code=code)
    return new_row(OutboundMessage, **values)


def record_queued(
    session: AsyncSession,
    incident_id: uuid.UUID,
    step: EscalationStep,
    party: EscalationParty,
    target: EscalationTarget,
    *,
    message_id: uuid.UUID,
    now: datetime,
    reason: str,
) -> None:
    """The timeline's line for a notification queued to ``target``."""
    record_event(
        session,
        incident_id,
        EventKind.message_queued,
        at=now,
        step_no=step.step_no,
        party_id=party.id,
        message_id=message_id,
        channel=target.channel,
        audience=party.audience.value,
        round=party.round,
        reason=reason,
        **target_detail(target),
    )


async def queue_notification(
    session: AsyncSession,
    incident: Incident,
    step: EscalationStep,
    party: EscalationParty,
    target: EscalationTarget,
    *,
    settings: Settings,
    now: datetime,
    reason: str,
    new_party: bool = False,
) -> OutboundMessage:
    """Queue one notification to one target; the dispatcher sends it. (``new_party``: see
    :func:`reserve_reply_code`.)"""
    message = await notification(
        session, incident, step, party, target, settings=settings, now=now, new_party=new_party
    )
    rows.add(session, message)
    record_queued(session, incident.id, step, party, target, message_id=message.id, now=now, reason=reason)
    return message


class Leader(NamedTuple):
    """A school leader (an active school admin) as an alert needs them."""

    id: uuid.UUID
    display_name: str
    wechat_openid: str | None
    phone: str | None


# The school's leaders: this condition, ordered by creation, everywhere they are read (the report's contacts
# read too: ``.contacts``).
LEADERS_WHERE = f"a.school_id = :school_id AND a.role = '{Role.school_admin.value}' AND a.is_active"
_LEADERS: Any = sa.text(
    f"SELECT {', '.join(f'a.{c}' for c in Leader._fields)} FROM account a WHERE {LEADERS_WHERE}"
    " ORDER BY a.created_at, a.id"
).bindparams(sa.bindparam("school_id", type_=sa.Uuid))
_KNOWN_LEADERS = "liushou_known_leaders"


@contextmanager
def leaders_known(session: AsyncSession, school_id: uuid.UUID, leaders: Sequence[Leader]) -> Iterator[None]:
    """Inside the block, alerts to the leaders of ``school_id`` go to ``leaders``, as the caller has just read
    them in this transaction (the report), instead of reading them again."""
    session.info[_KNOWN_LEADERS] = (school_id, leaders)
    try:
        yield
    finally:
        session.info.pop(_KNOWN_LEADERS, None)


async def _leaders(session: AsyncSession, school_id: uuid.UUID) -> Sequence[Leader]:
    known = session.info.get(_KNOWN_LEADERS)
    if known is not None and known[0] == school_id:
        return known[1]
    return [Leader(*row) for row in await session.execute(_LEADERS, {"school_id": school_id})]


async def alert_leaders(
    session: AsyncSession,
    incident: Incident,
    step: EscalationStep,
    *,
    reason: str,
    party: EscalationParty | None,
    settings: Settings,
    now: datetime,
) -> int:
    """Alert the school's leaders (its active school admins) by WeChat and SMS; returns messages queued."""
    leaders = await _leaders(session, incident.school_id)
    facts = await case_facts(session, incident)
    queued: list[OutboundMessage] = []
    names = []
    for leader in leaders:
        ways: list[tuple[Channel, str]] = []
        if leader.wechat_openid:
            ways.append((Channel.wechat, leader.wechat_openid))
        if leader.phone:
            try:
                phone = normalize_phone(leader.phone)
            except PhoneError:
                phone = None
            if phone is not None and phone.kind == PhoneKind.mobile:
                ways.append((Channel.sms, phone.e164))
        if ways:
            names.append(leader.display_name)
        for channel, address in ways:

            def render(*, link: str, reply_code: str, token: str, channel: Channel = channel) -> texts.Rendered:
                return texts.leader_alert(
                    facts,
                    channel=channel,
                    reason=reason,
                    step_no=step.step_no,
                    audience=party.audience if party else None,
                    deadline_at=step.deadline_at,
                )

            queued.append(
                _message(
                    incident,
                    purpose=MessagePurpose.leader_alert,
                    channel=channel,
                    address=address,
                    recipient_label=f"校领导 {leader.display_name}",
                    rendered_for=render,
                    now=now,
                    ack_wait_seconds=0,
                    party_id=party.id if party else None,
                    account_id=leader.id,
                    settings=settings,
                )
            )
    rows.add(session, *queued)
    record_event(
        session,
        incident.id,
        EventKind.leaders_alerted if queued else EventKind.leaders_unreachable,
        at=now,
        step_no=step.step_no,
        party_id=party.id if party else None,
        reason=reason,
        reason_label=texts.LEADER_REASONS[reason],
        leaders=names,
        messages=len(queued),
    )
    return len(queued)


async def cancel_pending(session: AsyncSession, party: EscalationParty, *, now: datetime) -> int:
    """Messages of a told party that have not gone out yet are not needed any more."""
    result = await session.execute(
        sa.update(OutboundMessage)
        .where(
            col(OutboundMessage.party_id) == party.id,
            col(OutboundMessage.status) == MessageStatus.pending,
            col(OutboundMessage.purpose) == MessagePurpose.notify,
        )
        .values(status=MessageStatus.cancelled, failed_at=now)
        .returning(col(OutboundMessage.id), col(OutboundMessage.channel))
        .execution_options(synchronize_session=False)
    )
    cancelled = result.all()
    for message_id, channel in cancelled:
        record_event(
            session,
            party.incident_id,
            EventKind.message_cancelled,
            at=now,
            party_id=party.id,
            message_id=message_id,
            channel=Channel(channel),
        )
    return len(cancelled)
