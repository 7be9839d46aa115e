"""The dispatcher: claims due messages, sends them through the channels, records what happened.

Three short steps, never a transaction held across the network:

1. **claim** — ``UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)``: due ``pending`` messages, and ``sending``
   ones whose lease expired (their worker died), become ``sending`` with a lease, and the attempt counter
   goes up; committed at once.
2. **send** — concurrently, each with its idempotency key. SMS and voice providers dedupe on the key, so a
   message re-claimed after a crash is re-sent with the same key and goes out once. WeChat has no key: a
   WeChat message re-claimed after a crash, or whose send timed out, is *ambiguous* — it is failed without
   resending and the party falls back to SMS/voice.
3. **record** — one short transaction: ``sent`` (with the provider id), back to ``pending`` with backoff for
   a temporary error, or ``failed``; a failure nudges the party so the scheduler moves on at once.
"""

import asyncio
import logging
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api import metrics
from api.channels.base import ChannelPermanentError, ChannelTemporaryError, SendResult
from api.channels.sms import send_sms
from api.channels.voice import place_call
from api.channels.wechat import WechatTokenSource, send_subscribe_message
from api.clock import Clock
from api.db import scoped_session
from api.models.escalation import (
    Channel,
    EscalationParty,
    EscalationStep,
    EscalationTarget,
    MessageStatus,
    OutboundMessage,
    PartyStatus,
)
from api.models.incidents import EventKind, IncidentEvent
from api.services.escalation import DEAD_ADDRESS_CODES, masked_address
from api.settings import Settings

log = logging.getLogger("liushou.escalation.dispatcher")

MESSAGES = OutboundMessage.__table__  # type: ignore[attr-defined]
PARTIES = EscalationParty.__table__  # type: ignore[attr-defined]
STEPS = EscalationStep.__table__  # type: ignore[attr-defined]
TARGETS = EscalationTarget.__table__  # type: ignore[attr-defined]
EVENTS = IncidentEvent.__table__  # type: ignore[attr-defined]
_MAX_BACKOFF = timedelta(minutes=5)


@dataclass(frozen=True)
class Claimed:
    """A message this worker holds the lease of."""

    id: uuid.UUID
    incident_id: uuid.UUID
    party_id: uuid.UUID | None
    target_id: uuid.UUID | None
    purpose: str
    channel: Channel
    address: str
    recipient_label: str
    body: str
    template_data: dict[str, str] | None
    wechat_page: str | None
    idempotency_key: str
    attempts: int
    max_attempts: int
    retry_backoff_seconds: int
    ack_wait_seconds: int
    prev_status: str
    step_no: int | None


@dataclass(frozen=True)
class Outcome:
    kind: str  # sent | retry | failed
    provider_message_id: str | None = None
    code: str | None = None
    text: str | None = None
    retry_at: datetime | None = None
    failure: str | None = None  # permanent | ambiguous | exhausted
    dead_address: bool = False


def _backoff(message: Claimed, retry_after: float | None) -> timedelta:
    delay = timedelta(seconds=message.retry_backoff_seconds * 2 ** max(0, message.attempts - 1))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return min(delay, _MAX_BACKOFF)


async def claim_due(
    session: AsyncSession,
    *,
    now: datetime,
    limit: int,
    worker_id: str,
    lease_seconds: int,
    incident_id: uuid.UUID | None = None,
) -> list[Claimed]:
    """``UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)``: due pending messages, and sending ones whose
    lease expired, become ``sending`` under this worker's lease (the caller commits)."""
    m = MESSAGES.c
    due_now = sa.or_(
        sa.and_(m.status == MessageStatus.pending.value, m.next_attempt_at <= now),
        sa.and_(m.status == MessageStatus.sending.value, m.lease_until <= now),
    )
    only = [m.incident_id == incident_id] if incident_id is not None else []
    # Earliest deadline first when there is a backlog: a guardian's 30 minutes before the bureau's 2 hours;
    # alerts to the school's leaders (no step) before anything else.
    deadline = (
        sa.select(STEPS.c.deadline_at)
        .select_from(PARTIES.join(STEPS, STEPS.c.id == PARTIES.c.step_id))
        .where(PARTIES.c.id == m.party_id, m.purpose == "notify")
        .scalar_subquery()
    )
    due = (
        sa.select(m.id, m.status.label("prev_status"))
        .where(due_now, *only)
        .order_by(deadline.asc().nulls_first(), m.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
    )
    step_no = (
        sa.select(STEPS.c.step_no)
        .select_from(PARTIES.join(STEPS, STEPS.c.id == PARTIES.c.step_id))
        .where(PARTIES.c.id == m.party_id)
        .scalar_subquery()
    )
    stmt = (
        sa.update(MESSAGES)
        .where(m.id == due.c.id)
        .values(
            status=MessageStatus.sending.value,
            lease_until=now + timedelta(seconds=lease_seconds),
            leased_by=worker_id,
            attempts=m.attempts + 1,
        )
        .returning(
            m.id,
            m.incident_id,
            m.party_id,
            m.target_id,
            m.purpose,
            m.channel,
            m.address,
            m.recipient_label,
            m.body,
            m.template_data,
            m.wechat_page,
            m.idempotency_key,
            m.attempts,
            m.max_attempts,
            m.retry_backoff_seconds,
            m.ack_wait_seconds,
            due.c.prev_status,
            step_no.label("step_no"),
        )
    )
    rows = (await session.execute(stmt)).mappings().all()
    return [Claimed(**{**row, "channel": Channel(row["channel"])}) for row in rows]


async def record_outcomes(
    session: AsyncSession, results: list[tuple[Claimed, Outcome]], *, now: datetime, worker_id: str
) -> None:
    """Write send outcomes and their timeline lines. Parties are locked first (to nudge those whose message
    failed), then messages: the engine's lock order."""
    if not results:
        return
    m = MESSAGES.c
    failed = [msg for msg, out in results if out.kind == "failed" and msg.party_id is not None]
    sent = [(msg, out) for msg, out in results if out.kind == "sent"]
    retries = [(msg, out) for msg, out in results if out.kind == "retry"]
    failures = [(msg, out) for msg, out in results if out.kind == "failed"]
    if failed:
        await session.execute(
            sa.update(PARTIES)
            .where(
                PARTIES.c.id.in_(sorted({msg.party_id for msg in failed if msg.party_id is not None})),
                PARTIES.c.current_message_id.in_([msg.id for msg in failed]),
                PARTIES.c.status == PartyStatus.notifying.value,
            )
            .values(next_check_at=now)
        )
    if sent:
        # Whoever holds the lease now: a provider id is worth keeping, and a receipt that arrived before
        # this answer (delivered, failed) is not overwritten.
        await session.execute(
            sa.update(MESSAGES)
            .where(m.id == sa.bindparam("b_id"))
            .values(
                status=sa.case((m.status == MessageStatus.sending.value, MessageStatus.sent.value), else_=m.status),
                provider_message_id=sa.func.coalesce(m.provider_message_id, sa.bindparam("b_pid")),
                sent_at=sa.func.coalesce(m.sent_at, sa.bindparam("b_now")),
                ack_wait_until=sa.func.coalesce(m.ack_wait_until, sa.bindparam("b_ack")),
                lease_until=None,
                error_code=None,
                error_message=None,
            ),
            [
                {
                    "b_id": msg.id,
                    "b_pid": out.provider_message_id,
                    "b_now": now,
                    "b_ack": now + timedelta(seconds=msg.ack_wait_seconds),
                }
                for msg, out in sent
            ],
        )
    owned = sa.and_(m.id == sa.bindparam("b_id"), m.status == MessageStatus.sending.value, m.leased_by == worker_id)
    if retries:
        await session.execute(
            sa.update(MESSAGES)
            .where(owned)
            .values(
                status=MessageStatus.pending.value,
                next_attempt_at=sa.bindparam("b_at"),
                lease_until=None,
                leased_by=None,
                error_code=sa.bindparam("b_code"),
                error_message=sa.bindparam("b_text"),
            ),
            [
                {"b_id": msg.id, "b_at": out.retry_at, "b_code": out.code, "b_text": (out.text or "")[:256]}
                for msg, out in retries
            ],
        )
    if failures:
        await session.execute(
            sa.update(MESSAGES)
            .where(owned)
            .values(
                status=MessageStatus.failed.value,
                failed_at=sa.bindparam("b_now"),
                lease_until=None,
                error_code=sa.bindparam("b_code"),
                error_message=sa.bindparam("b_text"),
            ),
            [
                {"b_id": msg.id, "b_now": now, "b_code": out.code, "b_text": (out.text or "")[:256]}
                for msg, out in failures
            ],
        )
        dead = [(msg, out) for msg, out in failures if out.dead_address and msg.target_id is not None]
        if dead:
            await session.execute(
                sa.update(TARGETS)
                .where(TARGETS.c.id == sa.bindparam("b_id"), TARGETS.c.dead_at.is_(None))
                .values(dead_at=sa.bindparam("b_now"), dead_reason=sa.bindparam("b_code")),
                [{"b_id": msg.target_id, "b_now": now, "b_code": out.code} for msg, out in dead],
            )
    await session.execute(sa.insert(EVENTS), [_event(msg, out, now) for msg, out in results])


def _event(msg: Claimed, out: Outcome, now: datetime) -> dict[str, Any]:
    detail: dict[str, Any] = {
        "recipient": msg.recipient_label,
        "address": masked_address(msg.channel, msg.address),
        "attempt": msg.attempts,
        "purpose": msg.purpose,
    }
    if out.kind == "sent":
        kind = EventKind.message_sent
        detail["provider_message_id"] = out.provider_message_id
    elif out.kind == "retry":
        kind = EventKind.message_retry
        detail.update(error=out.code, retry_at=out.retry_at.isoformat() if out.retry_at else None)
    else:
        kind = EventKind.message_failed
        detail.update(error=out.code, failure=out.failure, address_unusable=out.dead_address or None)
    return {
        "incident_id": msg.incident_id,
        "at": now,
        "kind": kind.value,
        "step_no": msg.step_no,
        "party_id": msg.party_id,
        "message_id": msg.id,
        "channel": msg.channel.value,
        "actor_account_id": None,
        "detail": {k: v for k, v in detail.items() if v is not None},
    }


class Dispatcher:
    def __init__(
        self,
        sessionmaker: async_sessionmaker[AsyncSession],
        *,
        http: httpx.AsyncClient,
        settings: Settings,
        clock: Clock,
        worker_id: str,
        wechat_tokens: WechatTokenSource,
    ) -> None:
        self.sessionmaker = sessionmaker
        self.http = http
        self.settings = settings
        self.clock = clock
        self.worker_id = worker_id
        self.wechat_tokens = wechat_tokens
        self._limit = asyncio.Semaphore(settings.escalation_send_concurrency)

    # ---- 1. claim ----------------------------------------------------------------------------------------

    async def claim(self, limit: int) -> list[Claimed]:
        """Take the lease of up to ``limit`` due messages (committed before anything is sent)."""
        async with scoped_session(self.sessionmaker) as session:
            return await claim_due(
                session,
                now=self.clock.now(),
                limit=limit,
                worker_id=self.worker_id,
                lease_seconds=self.settings.escalation_lease_seconds,
            )

    # ---- 2. send -----------------------------------------------------------------------------------------

    async def _call_provider(self, message: Claimed) -> SendResult:
        s = self.settings
        base = s.public_base_url.rstrip("/")
        if message.channel == Channel.sms:
            return await send_sms(
                self.http,
                base_url=s.sms_base_url,
                api_key=s.sms_api_key,
                to=message.address,
                text=message.body,
                idempotency_key=message.idempotency_key,
                callback_url=f"{base}/inbound/sms",
                timeout=s.http_timeout_seconds,
            )
        if message.channel == Channel.voice:
            return await place_call(
                self.http,
                base_url=s.voice_base_url,
                api_key=s.voice_api_key,
                to=message.address,
                tts_text=message.body,
                idempotency_key=message.idempotency_key,
                callback_url=f"{base}/inbound/voice",
                timeout=s.http_timeout_seconds,
            )
        return await send_subscribe_message(
            self.http,
            base_url=s.wechat_base_url,
            tokens=self.wechat_tokens,
            openid=message.address,
            template_id=s.wechat_subscribe_template_id,
            data=message.template_data or {},
            page=message.wechat_page,
            timeout=s.http_timeout_seconds,
        )

    async def send(self, message: Claimed) -> Outcome:
        """Send one claimed message and say what happened; never raises."""
        if message.channel == Channel.wechat and message.prev_status == MessageStatus.sending.value:
            # Its worker died mid-send: WeChat may have delivered it, and resending could deliver it twice.
            return Outcome(kind="failed", failure="ambiguous", code="lease_expired", text="worker lost mid-send")
        if message.attempts > message.max_attempts:
            return Outcome(kind="failed", failure="exhausted", code="max_attempts", text="attempts used up")
        async with self._limit:
            try:
                result = await self._call_provider(message)
            except ChannelPermanentError as exc:
                return Outcome(
                    kind="failed",
                    failure="permanent",
                    code=exc.code,
                    text=exc.message,
                    dead_address=exc.code in DEAD_ADDRESS_CODES,
                )
            except ChannelTemporaryError as exc:
                return self._temporary(message, exc.code, exc.message, exc.retry_after)
            except Exception as exc:  # a bug or an unexpected answer: retried like a temporary error
                log.exception("unexpected error sending message %s", message.id)
                return self._temporary(message, "unexpected", type(exc).__name__, None)
        return Outcome(kind="sent", provider_message_id=result.provider_message_id)

    def _temporary(self, message: Claimed, code: str, text: str, retry_after: float | None) -> Outcome:
        if message.channel == Channel.wechat and code in ("unavailable", "unexpected"):
            # No idempotency key on WeChat: after a timeout the message may be out. Fall back, do not resend.
            return Outcome(kind="failed", failure="ambiguous", code=code, text=text)
        if message.attempts >= message.max_attempts:
            return Outcome(kind="failed", failure="exhausted", code=code, text=text)
        return Outcome(kind="retry", code=code, text=text, retry_at=self.clock.now() + _backoff(message, retry_after))

    # ---- 3. record ---------------------------------------------------------------------------------------

    async def record(self, results: list[tuple[Claimed, Outcome]]) -> None:
        """Write the outcomes in one short transaction."""
        if not results:
            return
        async with scoped_session(self.sessionmaker) as session:
            await record_outcomes(session, results, now=self.clock.now(), worker_id=self.worker_id)
        for msg, out in results:
            if out.kind == "sent":
                metrics.MESSAGES_SENT.labels(channel=msg.channel.value, purpose=msg.purpose).inc()
            else:
                metrics.SEND_ERRORS.labels(channel=msg.channel.value, outcome=out.failure or out.kind).inc()

    # ---- all three -------------------------------------------------------------------------------------

    async def run_once(self, limit: int) -> int:
        """Claim, send and record one batch; returns how many messages were handled."""
        claimed = await self.claim(limit)
        if not claimed:
            return 0
        outcomes = await asyncio.gather(*(self.send(message) for message in claimed))
        await self.record(list(zip(claimed, outcomes, strict=True)))
        return len(claimed)
