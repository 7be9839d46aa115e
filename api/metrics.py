"""Prometheus metrics of the escalation engine at ``/metrics``.

Counters (messages sent, send errors) are counted by the worker in this process. The gauges describe the
engine as PostgreSQL sees it — due, in flight, overdue, failed, breaches, unreachable parties, the age of
the freshest worker heartbeat — and are read from the database at each scrape, so they are right whichever
process runs the workers. Only counts: no personal data.
"""

from datetime import timedelta

import sqlalchemy as sa
from fastapi import APIRouter, Request
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, generate_latest
from sqlmodel import col

from api.errors import Unauthorized
from api.models.escalation import (
    EscalationParty,
    EscalationStep,
    PartyStatus,
    StepStatus,
    WorkerHeartbeat,
)
from api.models.notifications import (
    MessageStatus,
    OutboundMessage,
)

REGISTRY = CollectorRegistry(auto_describe=True)

MESSAGES_SENT = Counter(
    "liushou_escalation_messages_sent",
    "Messages and calls accepted by a provider, by channel and purpose (notify / leader_alert).",
    ["channel", "purpose"],
    registry=REGISTRY,
)
SEND_ERRORS = Counter(
    "liushou_escalation_send_errors",
    "Send attempts that did not go out: retry (temporary), permanent, ambiguous (WeChat), exhausted.",
    ["channel", "outcome"],
    registry=REGISTRY,
)
DUE = Gauge("liushou_escalation_messages_due", "Pending messages whose send time has come.", registry=REGISTRY)
IN_FLIGHT = Gauge(
    "liushou_escalation_messages_in_flight", "Messages claimed by a worker whose lease is live.", registry=REGISTRY
)
OVERDUE = Gauge(
    "liushou_escalation_messages_overdue",
    "Messages due for more than a minute, or whose worker's lease expired: the workers are not keeping up.",
    registry=REGISTRY,
)
FAILED_RECENT = Gauge(
    "liushou_escalation_messages_failed_last_hour", "Messages that failed in the last hour.", registry=REGISTRY
)
LATE_STEPS = Gauge(
    "liushou_escalation_steps_late",
    "Steps past their deadline and still not told (breaches in progress).",
    registry=REGISTRY,
)
BREACHES = Gauge("liushou_escalation_breaches", "Steps whose deadline was ever missed.", registry=REGISTRY)
UNREACHABLE = Gauge(
    "liushou_escalation_parties_flagged",
    "Parties nobody could reach (unreachable / exhausted), waiting for the school.",
    ["status"],
    registry=REGISTRY,
)
HEARTBEAT_AGE = Gauge(
    "liushou_escalation_worker_heartbeat_age_seconds",
    "Seconds since the freshest worker heartbeat (-1: no worker ever beat).",
    registry=REGISTRY,
)

router = APIRouter(tags=["健康 health"])


async def refresh(state: object) -> None:
    """Read the engine's state from PostgreSQL into the gauges."""
    now = state.clock.now()  # type: ignore[attr-defined]
    status, due_at = col(OutboundMessage.status), col(OutboundMessage.next_attempt_at)
    lease = col(OutboundMessage.lease_until)
    step_status, party_status = col(EscalationStep.status), col(EscalationParty.status)

    def count(table: type, *where: sa.ColumnElement[bool]) -> sa.ScalarSelect[int]:
        return sa.select(sa.func.count()).select_from(table).where(*where).scalar_subquery()

    stmt = sa.select(
        count(OutboundMessage, status == MessageStatus.pending, due_at <= now),
        count(OutboundMessage, status == MessageStatus.sending, lease > now),
        count(
            OutboundMessage,
            sa.or_(
                sa.and_(status == MessageStatus.pending, due_at <= now - timedelta(minutes=1)),
                sa.and_(status == MessageStatus.sending, lease <= now),
            ),
        ),
        count(
            OutboundMessage,
            status == MessageStatus.failed,
            col(OutboundMessage.failed_at) >= now - timedelta(hours=1),
        ),
        count(EscalationStep, step_status != StepStatus.told, col(EscalationStep.deadline_at) <= now),
        count(EscalationStep, col(EscalationStep.breached_at).is_not(None)),
        count(EscalationParty, party_status == PartyStatus.unreachable),
        count(EscalationParty, party_status == PartyStatus.exhausted),
        sa.select(sa.func.max(WorkerHeartbeat.beat_at)).scalar_subquery(),
    )
    async with state.engine.connect() as conn:  # type: ignore[attr-defined]
        due, in_flight, overdue, failed, late, breaches, unreachable, exhausted, beat = (await conn.execute(stmt)).one()
    DUE.set(due)
    IN_FLIGHT.set(in_flight)
    OVERDUE.set(overdue)
    FAILED_RECENT.set(failed)
    LATE_STEPS.set(late)
    BREACHES.set(breaches)
    UNREACHABLE.labels(status="unreachable").set(unreachable)
    UNREACHABLE.labels(status="exhausted").set(exhausted)
    HEARTBEAT_AGE.set((now - beat).total_seconds() if beat is not None else -1)


@router.get(
    "/metrics",
    summary="Prometheus metrics of the escalation engine (counts only)",
    response_class=Response,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}, 401: {"description": "metrics_token set and not given"}},
)
async def metrics(request: Request) -> Response:
    token = request.app.state.settings.metrics_token
    if token and request.headers.get("authorization") != f"Bearer {token}":
        raise Unauthorized("需要监控凭证 (metrics token required)", code="metrics_token_required")
    await refresh(request.app.state)
    return Response(generate_latest(REGISTRY), media_type=CONTENT_TYPE_LATEST)
