"""The incident's timeline: every decision, attempt, delivery, acknowledgement and breach, written as it
happens (:func:`record_event`, append-only) and read minute by minute (:func:`timeline`).
"""

import uuid
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.clock import SHANGHAI
from api.errors import NotFound
from api.models.base import new_row
from api.models.escalation import (
    EscalationStep,
    EscalationTarget,
)
from api.models.incidents import (
    EVENT_LABELS,
    EventKind,
    Incident,
    IncidentEvent,
    StepSummary,
    Timeline,
    TimelineEntry,
)
from api.models.notifications import CHANNEL_LABELS, Channel
from api.services.emergency import rows
from api.services.emergency.decide import deadline_met
from api.services.notifications.delivery import masked_address

NOT_FOUND = "找不到该事件 (incident not found)"


async def get_incident(session: AsyncSession, incident_id: uuid.UUID) -> Incident:
    incident = await session.get(Incident, incident_id)
    if incident is None:
        raise NotFound(NOT_FOUND, code="incident_not_found")
    return incident


def record_event(
    session: AsyncSession,
    incident_id: uuid.UUID,
    kind: EventKind,
    *,
    at: datetime,
    step_no: int | None = None,
    party_id: uuid.UUID | None = None,
    message_id: uuid.UUID | None = None,
    channel: Channel | None = None,
    actor_account_id: uuid.UUID | None = None,
    **detail: Any,
) -> None:
    """Append a line to the incident's timeline."""
    rows.add(
        session,
        new_row(
            IncidentEvent,
            incident_id=incident_id,
            at=at,
            kind=kind,
            step_no=step_no,
            party_id=party_id,
            message_id=message_id,
            channel=channel,
            actor_account_id=actor_account_id,
            detail={k: v for k, v in detail.items() if v is not None},
        ),
    )


def target_detail(target: EscalationTarget) -> dict[str, Any]:
    return {
        "contact": target.contact_label,
        "name": target.contact_name,
        "address": masked_address(target.channel, target.address),
        "channel_label": CHANNEL_LABELS[target.channel],
    }


async def incident_steps(session: AsyncSession, incident_id: uuid.UUID) -> list[EscalationStep]:
    """The incident's three steps, in order."""
    return list(
        (
            await session.execute(
                select(EscalationStep)
                .where(EscalationStep.incident_id == incident_id)
                .order_by(col(EscalationStep.step_no))
            )
        ).scalars()
    )


def step_summary(step: EscalationStep) -> StepSummary:
    return StepSummary(
        step_no=step.step_no,
        status=step.status,
        deadline_at=step.deadline_at,
        told_at=step.told_at,
        breached=step.breached_at is not None,
        deadline_met=deadline_met(step),
    )


def _t_plus(delta: timedelta) -> str:
    seconds = int(delta.total_seconds())
    sign = "+" if seconds >= 0 else "-"
    seconds = abs(seconds)
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"T{sign}{hours}:{minutes:02d}:{secs:02d}" if hours else f"T{sign}{minutes:02d}:{secs:02d}"


async def timeline(session: AsyncSession, *, incident_id: uuid.UUID) -> Timeline:
    """The incident minute by minute: every decision, attempt, delivery, acknowledgement and breach."""
    incident = await get_incident(session, incident_id)
    steps = await incident_steps(session, incident.id)
    events = (
        await session.execute(
            select(IncidentEvent)
            .where(IncidentEvent.incident_id == incident.id)
            .order_by(col(IncidentEvent.at), col(IncidentEvent.id))
        )
    ).scalars()
    audit.record(
        session,
        action="incident.timeline.read",
        resource_type="incident",
        resource_id=incident.id,
        school_id=incident.school_id,
        county_id=incident.county_id,
    )
    return Timeline(
        incident_id=incident.id,
        case_code=incident.case_code,
        clock_start=incident.occurred_at,
        steps=[step_summary(s) for s in steps],
        entries=[
            TimelineEntry(
                at=e.at,
                at_local=e.at.astimezone(SHANGHAI).strftime("%Y-%m-%d %H:%M:%S"),
                t_plus=_t_plus(e.at - incident.occurred_at),
                kind=e.kind,
                label=EVENT_LABELS[e.kind],
                step_no=e.step_no,
                channel=e.channel,
                actor_account_id=e.actor_account_id,
                detail=e.detail,
            )
            for e in events
        ],
    )
