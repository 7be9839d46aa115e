"""The chain: its one lock order, freezing it onto an incident, and moving each step and party along.

Row locks are always taken in the order step → party → message, each level by id, by every writer
(scheduler, dispatcher, escalate-now, acknowledgements, callbacks) through :func:`lock_chain` — it and every
helper that takes chain locks live here and nowhere else — so concurrent workers, staff and callbacks
cannot deadlock; a lock not granted within ``LOCK_TIMEOUT_MS`` is a :class:`~api.errors.DatabaseBusy`
(503 with ``Retry-After``), never a request hanging behind a worker.

Freezing (at the report) resolves who to tell and how into rows — steps with deadlines, parties, and the
ordered targets — so that later edits of the policy or the archive do not touch an incident in flight.
Moving along is the same code whoever calls it (the report, the scheduler, a staff member's "escalate
now"): the decisions are :mod:`.decide`'s, applied here under the locks. The outbox tells the chain what
became of its messages through :class:`IncidentMessages` (registered for the incident topic).
"""

import uuid
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.errors import DatabaseBusy, NotFound
from api.models.base import new_row
from api.models.escalation import (
    AUDIENCE_LABELS,
    Audience,
    EscalationParty,
    EscalationStep,
    EscalationTarget,
    PartyStatus,
    PolicyValues,
    StepStatus,
)
from api.models.incidents import (
    EventKind,
    Incident,
    StepHold,
)
from api.models.notifications import Channel, OutboundMessage, Topic
from api.services.emergency import rows
from api.services.emergency.contacts import ReportContacts, add_targets, resolve_contacts
from api.services.emergency.decide import (
    after_last_target,
    next_step_check,
    party_next,
    plan_steps,
    step_deadline_minutes,
    step_due,
)
from api.services.emergency.notify import (
    alert_leaders,
    first_reply_codes,
    notification,
    queue_notification,
    quoting_instead,
    record_queued,
    reserve_new_reply_codes,
)
from api.services.emergency.texts import with_reply_code
from api.services.emergency.timeline import record_event
from api.services.notifications.topics import Change, MessageRef, TopicHooks, register
from api.settings import Settings

STEP_AUDIENCES: dict[int, tuple[Audience, ...]] = {
    1: (Audience.entrusted_guardian,),
    2: (Audience.parents_away,),
    3: (Audience.county_bureau, Audience.township),
}


# How long a transaction of the engine waits for a row lock: the engine's own transactions are short, so a
# longer wait means something is wrong; the request answers 503 and the worker looks again shortly.
LOCK_TIMEOUT_MS = 3000


_LOCK_NOT_AVAILABLE = "55P03"


def is_lock_timeout(exc: BaseException) -> bool:
    """PostgreSQL gave up waiting for a lock (``lock_timeout``)."""
    return isinstance(exc, DBAPIError) and getattr(exc.orig, "sqlstate", None) == _LOCK_NOT_AVAILABLE


@dataclass
class ChainLocks:
    """The rows :func:`lock_chain` locked, fresh from the database, by id."""

    steps: dict[uuid.UUID, EscalationStep]
    parties: dict[uuid.UUID, EscalationParty]
    messages: dict[uuid.UUID, OutboundMessage]


async def _lock_rows(session: AsyncSession, model: Any, ids: Collection[uuid.UUID | None]) -> dict[uuid.UUID, Any]:
    wanted = sorted({i for i in ids if i is not None})
    if not wanted:
        return {}
    rows = (
        await session.execute(
            select(model)
            .where(col(model.id).in_(wanted))
            .order_by(col(model.id))
            .with_for_update()
            .execution_options(populate_existing=True)
        )
    ).scalars()
    return {row.id: row for row in rows}


async def lock_chain(
    session: AsyncSession,
    *,
    step_ids: Collection[uuid.UUID | None] = (),
    party_ids: Collection[uuid.UUID | None] = (),
    message_ids: Collection[uuid.UUID | None] = (),
) -> ChainLocks:
    """Lock rows of the chain in the engine's one order — steps, then parties, then messages, each by id —
    and return them re-read. Every writer of these tables goes through here, and a transaction that already
    holds a lock of one level only asks for rows of the same or a later level afterwards (re-asking for a
    row it holds is free), so no two transactions can wait on each other in a cycle.

    Sets ``lock_timeout`` for the rest of the transaction; a lock not granted in time raises
    :class:`~api.errors.DatabaseBusy`.
    """
    await session.execute(sa.text(f"SET LOCAL lock_timeout = {int(LOCK_TIMEOUT_MS)}"))
    try:
        return ChainLocks(
            steps=await _lock_rows(session, EscalationStep, step_ids),
            parties=await _lock_rows(session, EscalationParty, party_ids),
            messages=await _lock_rows(session, OutboundMessage, message_ids),
        )
    except DBAPIError as exc:
        if is_lock_timeout(exc):
            raise DatabaseBusy() from None
        raise


async def lock_party(session: AsyncSession, party_id: uuid.UUID) -> tuple[EscalationStep, EscalationParty] | None:
    """Lock a party and its step (in the engine's order); ``None`` when there is no such party."""
    step_id = (
        await session.execute(select(EscalationParty.step_id).where(EscalationParty.id == party_id))
    ).scalar_one_or_none()
    if step_id is None:
        return None
    locks = await lock_chain(session, step_ids=[step_id], party_ids=[party_id])
    return locks.steps[step_id], locks.parties[party_id]


async def lock_step_and_party(session: AsyncSession, party_id: uuid.UUID) -> tuple[EscalationStep, EscalationParty]:
    """Lock in the engine's order (:func:`lock_chain`): the step, then the party."""
    locked = await lock_party(session, party_id)
    if locked is None:
        raise NotFound("找不到该通知对象 (party not found)", code="party_not_found")
    return locked


async def lock_parties(session: AsyncSession, step_id: uuid.UUID) -> list[EscalationParty]:
    """Lock the parties of a step whose lock the caller holds (by id, through :func:`lock_chain`)."""
    ids = (await session.execute(select(EscalationParty.id).where(EscalationParty.step_id == step_id))).scalars()
    return list((await lock_chain(session, party_ids=list(ids))).parties.values())


async def nudge_party(session: AsyncSession, message: MessageRef, now: datetime) -> None:
    """Ask the scheduler to look at the party now, if this message is the one it is waiting on."""
    if message.party_id is None:
        return
    await session.execute(
        sa.update(EscalationParty)
        .where(
            col(EscalationParty.id) == message.party_id,
            col(EscalationParty.current_message_id) == message.id,
            col(EscalationParty.status) == PartyStatus.notifying,
        )
        .values(next_check_at=now)
        .execution_options(synchronize_session=False)
    )


class IncidentMessages(TopicHooks):
    """An incident's messages: locked after their step and party (the one lock order); when one is out of
    the running its party is nudged; a dead address is not tried again; every change is on the timeline."""

    async def lock_message(self, session: AsyncSession, message_id: uuid.UUID) -> OutboundMessage | None:
        row = (
            await session.execute(
                select(OutboundMessage.party_id, EscalationParty.step_id)
                .outerjoin(EscalationParty, col(EscalationParty.id) == OutboundMessage.party_id)
                .where(OutboundMessage.id == message_id)
            )
        ).first()
        if row is None:
            return None
        party_id, step_id = row
        locks = await lock_chain(session, step_ids=[step_id], party_ids=[party_id], message_ids=[message_id])
        return locks.messages.get(message_id)

    async def before_failure(self, session: AsyncSession, message: MessageRef) -> None:
        if message.party_id is not None:
            # The party is nudged after the message changes: locked before it (the engine's order).
            await lock_chain(session, party_ids=[message.party_id])

    async def changed(self, session: AsyncSession, message: MessageRef, change: Change, *, now: datetime) -> None:
        if change.moved_on:
            await nudge_party(session, message, now)
        if change.dead_address and message.target_id is not None:
            await session.execute(
                sa.update(EscalationTarget)
                .where(col(EscalationTarget.id) == message.target_id, col(EscalationTarget.dead_at).is_(None))
                .values(dead_at=now, dead_reason=change.detail.get("error"))
                .execution_options(synchronize_session=False)
            )
        step_no = None
        if message.party_id is not None:
            party = await session.get(EscalationParty, message.party_id)
            step = await session.get(EscalationStep, party.step_id) if party else None
            step_no = step.step_no if step else None
        assert message.incident_id is not None
        record_event(
            session,
            message.incident_id,
            EventKind(change.kind),
            at=now,
            step_no=step_no,
            party_id=message.party_id,
            message_id=message.id,
            channel=message.channel,
            **change.detail,
        )


register(Topic.incident, IncidentMessages())


async def _next_target(session: AsyncSession, party: EscalationParty) -> EscalationTarget | None:
    return (
        await session.execute(
            select(EscalationTarget)
            .where(
                EscalationTarget.party_id == party.id,
                col(EscalationTarget.seq) > party.cursor,
                col(EscalationTarget.dead_at).is_(None),
            )
            .order_by(col(EscalationTarget.seq))
            .limit(1)
        )
    ).scalar_one_or_none()


async def _has_live_target(session: AsyncSession, party: EscalationParty) -> bool:
    found = await session.execute(
        select(EscalationTarget.id)
        .where(EscalationTarget.party_id == party.id, col(EscalationTarget.dead_at).is_(None))
        .limit(1)
    )
    return found.first() is not None


async def flag_party(
    session: AsyncSession,
    party: EscalationParty,
    status: PartyStatus,
    *,
    settings: Settings,
    now: datetime,
    step: EscalationStep | None = None,
    incident: Incident | None = None,
) -> None:
    """Nobody left to try: stop waiting and tell the school's leaders at once. (``step`` and ``incident``:
    the party's, when the caller has them.)"""
    step = step or await session.get(EscalationStep, party.step_id)
    incident = incident or await session.get(Incident, party.incident_id)
    assert step is not None and incident is not None
    party.status = status
    party.next_check_at = None
    party.current_message_id = None
    party.flagged_at = now
    kind = EventKind.party_unreachable if status == PartyStatus.unreachable else EventKind.party_exhausted
    record_event(
        session,
        incident.id,
        kind,
        at=now,
        step_no=step.step_no,
        party_id=party.id,
        audience=party.audience.value,
        audience_label=AUDIENCE_LABELS[party.audience],
        rounds=party.round,
    )
    await alert_leaders(session, incident, step, reason=status.value, party=party, settings=settings, now=now)


async def advance_party(
    session: AsyncSession,
    party: EscalationParty,
    *,
    settings: Settings,
    now: datetime,
    reason: str,
    targets: Sequence[EscalationTarget] | None = None,
) -> OutboundMessage | None:
    """Queue the party's next target; at the end of the list start another round after a pause, or flag
    the party when no usable target is left or the rounds are used up. The caller holds the party's lock.
    ``targets``: all of the party's targets when the caller has them (at the report), saving the queries."""
    step = await session.get(EscalationStep, party.step_id)
    incident = await session.get(Incident, party.incident_id)
    assert step is not None and incident is not None
    if targets is None:
        target = await _next_target(session, party)
    else:
        target = next((t for t in targets if t.seq > party.cursor and t.dead_at is None), None)
    if target is not None:
        message = await queue_notification(
            session, incident, step, party, target, settings=settings, now=now, reason=reason,
            new_party=targets is not None and party.cursor == 0 and party.round == 1,
        )  # fmt: skip
        party.cursor = target.seq
        party.current_message_id = message.id
        # A safety net: the dispatcher and callbacks nudge the party sooner when something happens.
        party.next_check_at = now + timedelta(seconds=step.ack_wait_seconds)
        return message
    party.current_message_id = None
    live = any(t.dead_at is None for t in targets) if targets is not None else await _has_live_target(session, party)
    used_up = after_last_target(
        any_live_target=live,
        round_=party.round,
        max_rounds=step.max_rounds,
        round_pause_seconds=step.round_pause_seconds,
        now=now,
    )
    if used_up.flag is not None:
        await flag_party(session, party, used_up.flag, settings=settings, now=now)
    else:
        assert used_up.next_round is not None and used_up.at is not None
        party.round = used_up.next_round
        party.cursor = 0
        party.next_check_at = used_up.at
        record_event(
            session,
            incident.id,
            EventKind.round_finished,
            at=now,
            step_no=step.step_no,
            party_id=party.id,
            next_round=party.round,
            next_round_at=party.next_check_at.isoformat(),
        )
    return None


async def rearm_party(
    session: AsyncSession, party: EscalationParty, *, settings: Settings, now: datetime, reason: str
) -> OutboundMessage | None:
    """A staff member asked to try again (escalate now, a new contact): fresh rounds, starting now."""
    if party.status in (PartyStatus.unreachable, PartyStatus.exhausted):
        party.status = PartyStatus.notifying
        party.round = 1
        party.cursor = 0
    return await advance_party(session, party, settings=settings, now=now, reason=reason)


async def check_party(session: AsyncSession, party: EscalationParty, *, settings: Settings, now: datetime) -> None:
    """The scheduler's look at a notifying party: wait, or move on to the next channel / contact.
    The caller holds the party's lock (and its step's); the message it waits on is locked here."""
    if party.status != PartyStatus.notifying:
        party.next_check_at = None
        return
    if party.current_message_id is None:
        await advance_party(session, party, settings=settings, now=now, reason="next_round")
        return
    message = (await lock_chain(session, message_ids=[party.current_message_id])).messages.get(party.current_message_id)
    step = await session.get(EscalationStep, party.step_id)
    assert message is not None and step is not None
    decided = party_next(message, ack_wait_seconds=step.ack_wait_seconds, now=now)
    if decided.ack_wait_until is not None and message.ack_wait_until is None:
        message.ack_wait_until = decided.ack_wait_until  # stored once, never recomputed from "now"
    if decided.wait_until is not None:
        party.next_check_at = decided.wait_until
        return
    assert decided.reason is not None
    if decided.reason == "no_ack_within_wait":
        record_event(
            session,
            party.incident_id,
            EventKind.no_ack_within_wait,
            at=now,
            step_no=step.step_no,
            party_id=party.id,
            message_id=message.id,
            channel=message.channel,
            waited_seconds=step.ack_wait_seconds,
        )
    await advance_party(session, party, settings=settings, now=now, reason=decided.reason)


async def start_step(session: AsyncSession, step: EscalationStep, *, settings: Settings, now: datetime) -> None:
    """Start sending for a step (its hold is over, or a staff member escalated it). Holds the step's lock."""
    step.status = StepStatus.notifying
    step.started_at = now
    record_event(session, step.incident_id, EventKind.step_started, at=now, step_no=step.step_no)
    for party in await lock_parties(session, step.id):
        if party.status == PartyStatus.held:
            party.status = PartyStatus.notifying
            await advance_party(session, party, settings=settings, now=now, reason="step_started")


async def check_step(
    session: AsyncSession, step: EscalationStep, *, settings: Settings, now: datetime, incident: Incident | None = None
) -> None:
    """The scheduler's look at a step: end its hold, alert near the deadline, record a missed deadline.
    (``incident``: the step's, when the caller has it.)"""
    incident = incident or await session.get(Incident, step.incident_id)
    assert incident is not None
    due = step_due(step, now=now)
    if due.start:
        await start_step(session, step, settings=settings, now=now)
    if due.breach:
        step.breached_at = now
        late = int((now - step.deadline_at).total_seconds())
        record_event(
            session,
            incident.id,
            EventKind.breach,
            at=now,
            step_no=step.step_no,
            deadline_at=step.deadline_at.isoformat(),
            seconds_past_deadline=late,
            late_report=incident.reported_at > step.deadline_at or None,
        )
        await alert_leaders(session, incident, step, reason="breach", party=None, settings=settings, now=now)
    elif due.near:
        step.near_alerted_at = now
        record_event(
            session,
            incident.id,
            EventKind.near_deadline,
            at=now,
            step_no=step.step_no,
            deadline_at=step.deadline_at.isoformat(),
            seconds_left=int((step.deadline_at - now).total_seconds()),
        )
        await alert_leaders(session, incident, step, reason="near_deadline", party=None, settings=settings, now=now)
    step.next_check_at = next_step_check(step)


def _new_rows(
    incident: Incident, *, policy: PolicyValues, holds: Sequence[StepHold], now: datetime
) -> tuple[list[EscalationStep], list[tuple[EscalationStep, EscalationParty]]]:
    """The incident's steps (deadlines and holds as the policy says) and their parties, not yet added."""
    steps: list[EscalationStep] = []
    parties: list[tuple[EscalationStep, EscalationParty]] = []
    for step_no, deadline_at, hold_until in plan_steps(
        policy, occurred_at=incident.occurred_at, reported_at=now, holds=holds
    ):
        held = hold_until is not None
        step = new_row(
            EscalationStep,
            incident_id=incident.id,
            step_no=step_no,
            deadline_minutes=step_deadline_minutes(policy, step_no),
            deadline_at=deadline_at,
            hold_until=hold_until,
            starts_at=hold_until or now,
            status=StepStatus.held if held else StepStatus.notifying,
            started_at=None if held else now,
            ack_wait_seconds=policy.ack_wait_minutes * 60,
            near_margin_seconds=policy.near_deadline_minutes * 60,
            max_rounds=policy.max_rounds,
            round_pause_seconds=policy.round_pause_minutes * 60,
        )
        steps.append(step)
        for audience in STEP_AUDIENCES[step_no]:
            party = new_row(
                EscalationParty,
                incident_id=incident.id,
                step_id=step.id,
                audience=audience,
                status=PartyStatus.held if held else PartyStatus.notifying,
            )
            parties.append((step, party))
    return steps, parties


@dataclass(frozen=True)
class FrozenChain:
    """What :func:`freeze_chain` wrote: the steps in order, their parties, and every party's targets."""

    steps: list[EscalationStep]
    parties: list[EscalationParty]
    targets: list[EscalationTarget]


async def freeze_chain(
    session: AsyncSession,
    incident: Incident,
    *,
    policy: PolicyValues,
    holds: Sequence[StepHold],
    settings: Settings,
    now: datetime,
    contacts: ReportContacts,
) -> FrozenChain:
    """Create the incident's steps, parties and targets, and start every step that is not held.

    Every row is decided in memory first, as :func:`advance_party` and :func:`check_step` would move the new
    chain along, so that each is inserted once in its final state (:mod:`.rows`): steps, parties and targets
    in one go; then each SMS target's reply code (the database decides whether a code is free); then the
    messages and the timeline. ``contacts``: whom to tell, as the report read them
    (:func:`.contacts.read_report_contacts`). The caller collects rows (:func:`.rows.collecting`)."""
    steps, parties = _new_rows(incident, policy=policy, holds=holds, now=now)
    rows.add(session, *steps, *(party for _, party in parties))
    frozen: list[dict[str, Any]] = []
    party_targets: dict[uuid.UUID, list[EscalationTarget]] = {}
    plans_of = resolve_contacts(contacts)
    for step, party in parties:
        plans = plans_of[party.audience]
        targets = add_targets(session, party, plans, first_seq=1, first_contact_no=1, now=now)
        party_targets[party.id] = targets
        frozen.append(
            {
                "step_no": step.step_no,
                "audience": party.audience.value,
                "contacts": [
                    {"label": p.label, "name": p.name, "channels": [c.value for c, _ in p.ways], "unusable": p.unusable}
                    for p in plans
                ],
                "targets": len(targets),
            }
        )
    record_event(session, incident.id, EventKind.chain_frozen, at=now, parties=frozen, policy=incident.policy)
    for step in steps:
        if step.status == StepStatus.held:
            record_event(
                session,
                incident.id,
                EventKind.step_held,
                at=now,
                step_no=step.step_no,
                hold_until=step.hold_until.isoformat() if step.hold_until else None,
            )
        else:
            record_event(session, incident.id, EventKind.step_started, at=now, step_no=step.step_no)
    # What advance_party does for a party just frozen: its first target, else (no way to reach anyone) the
    # party is flagged at once. A message's id is drawn now; the message is written once its code is held.
    first: list[tuple[EscalationStep, EscalationParty, EscalationTarget, uuid.UUID]] = []
    for step, party in parties:
        if party.status != PartyStatus.notifying:
            continue
        target = next((t for t in party_targets[party.id] if t.dead_at is None), None)
        if target is None:
            used_up = after_last_target(
                any_live_target=False,
                round_=party.round,
                max_rounds=step.max_rounds,
                round_pause_seconds=step.round_pause_seconds,
                now=now,
            )
            assert used_up.flag is not None
            await flag_party(session, party, used_up.flag, settings=settings, now=now, step=step, incident=incident)
            continue
        message_id = uuid.uuid4()
        record_queued(session, incident.id, step, party, target, message_id=message_id, now=now, reason="reported")
        party.cursor = target.seq
        party.current_message_id = message_id
        # A safety net: the dispatcher and callbacks nudge the party sooner when something happens.
        party.next_check_at = now + timedelta(seconds=step.ack_wait_seconds)
        first.append((step, party, target, message_id))
    for step in steps:
        # At the report no hold is over yet (a hold is at least a minute): this records a deadline already
        # missed (a late report) or near, and when the scheduler must look next.
        await check_step(session, step, settings=settings, now=now, incident=incident)
    # The steps, parties and targets with each party's first SMS reply code, the messages asking for them, and
    # the timeline, in one statement: each SMS asks for its party's first candidate code, with its text asking
    # for each other candidate beside it, and the statement writes the one asking for the code taken. When a
    # party got none (every candidate was taken), none of the messages is written with the rest: codes are
    # drawn again until each party holds one, and the messages, each asking for its party's code, after.
    collected: list[Any] = session.info[rows.KEY]
    wanted = [(party.id, target.address) for _, party, target, _ in first if target.channel == Channel.sms]
    drawn = first_reply_codes(wanted)
    candidates: dict[tuple[uuid.UUID, str], dict[str, None]] = {}
    for party_id, address, candidate in drawn:
        candidates.setdefault((party_id, address), {})[candidate] = None  # each code once
    texted: list[OutboundMessage] = []
    other_texts: list[tuple[uuid.UUID, str, str]] = []
    for step, party, target, message_id in first:
        codes_of = list(candidates.get((party.id, target.address), ())) if target.channel == Channel.sms else []
        message = await notification(
            session,
            incident,
            step,
            party,
            target,
            settings=settings,
            now=now,
            message_id=message_id,
            reply_code=codes_of[0] if codes_of else None,
        )
        rows.add(session, message)
        if codes_of:
            texted.append(message)
            body = message.body or ""
            other_texts += [(message_id, code, with_reply_code(body, codes_of[0], code)) for code in codes_of[1:]]
    inserted, written = await rows.write_report(
        session, collected, incident_id=incident.id, codes=drawn, texts=other_texts, now=now
    )
    if not written:
        codes = await reserve_new_reply_codes(
            session,
            incident_id=incident.id,
            wanted=wanted,
            now=now,
            held={(party_id, address): code for party_id, address, code in inserted},
            rounds_drawn=1,
        )
        for message in texted:  # each asking for its party's code
            code = codes[(message.party_id, message.address)]  # type: ignore[index]
            if code != message.reply_code:
                at = next(i for i, row in enumerate(collected) if row is message)
                collected[at] = quoting_instead(message, code)
        await rows.write_messages(session, collected)
    return FrozenChain(
        steps=steps,
        parties=[party for _, party in parties],
        targets=[target for targets in party_targets.values() for target in targets],
    )
