"""The dispatcher: claims due messages, sends them through the channels, records what happened.

Three short steps, never a transaction held across the network:

1. **claim** — ``UPDATE … FROM (SELECT … FOR UPDATE SKIP LOCKED)``: due ``pending`` messages, and ``sending``
   ones whose lease expired (their worker died), become ``sending`` with a lease, and the attempt counter
   goes up; committed at once. Under a backlog the lowest ``priority`` goes first, then the earliest
   ``due_by`` (an incident step's deadline).
2. **send** — concurrently, each with its idempotency key. SMS and voice providers dedupe on the key, so a
   message re-claimed after a crash is re-sent with the same key and goes out once. WeChat has no key: a
   WeChat message re-claimed after a crash, or whose send timed out, is *ambiguous* — it is recorded
   ``unconfirmed`` without resending and its sender falls back to another channel.
   Each send has a deadline well inside the lease (``send_deadline_seconds``), covering the wait for a free
   slot and every HTTP phase: a message not handed to the provider by then is released unsent, and no send
   outlives its lease (else a second worker would send it again).
3. **record** — as soon as each answer is in, one short transaction: ``sent`` (with the provider id), back
   to ``pending`` with backoff for a temporary error, ``failed``, or ``unconfirmed`` (WeChat, answer lost).
   The message's topic hears of it (:mod:`.topics`: an incident's party is nudged so the scheduler moves on
   at once, and the timeline gets its line); a message with fallback ways queues the next. A receipt that
   arrived first has recorded the send already: the answer then adds nothing.
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
from api.models.notifications import Channel, MessageStatus, OutboundMessage, Topic
from api.scoping import SYSTEM
from api.services.notifications import delivery
from api.services.notifications.delivery import Outcome, masked_address
from api.services.notifications.outbox import fall_back
from api.services.notifications.topics import Change, MessageRef, hooks_for
from api.settings import Settings

log = logging.getLogger("liushou.escalation.dispatcher")

MESSAGES = OutboundMessage.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True)
class Claimed:
    """A message this worker holds the lease of."""

    id: uuid.UUID
    topic: Topic
    subject_id: uuid.UUID | None
    incident_id: uuid.UUID | None
    party_id: uuid.UUID | None
    target_id: uuid.UUID | None
    purpose: str
    channel: Channel
    address: str
    recipient_label: str
    body: str
    template_data: dict[str, str] | None
    wechat_template_id: str | None
    wechat_page: str | None
    idempotency_key: str
    attempts: int
    max_attempts: int
    retry_backoff_seconds: int
    ack_wait_seconds: int
    prev_status: str

    @property
    def ref(self) -> MessageRef:
        return MessageRef.of(self)


def wechat_template(settings: Settings, message: Claimed) -> str:
    """The subscribe-message template a message goes out on: its own if it names one, else its topic's (read at
    send time, so a template the console replaced applies to messages already queued)."""
    if message.wechat_template_id:
        return message.wechat_template_id
    if message.topic == Topic.family_call:
        return settings.wechat_family_call_template_id
    return settings.wechat_subscribe_template_id


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
    # Lowest priority first under a backlog (alerts to a school's leaders are 0), then the earliest due_by
    # (a guardian's 30 minutes before the bureau's 2 hours).
    due = (
        sa.select(m.id, m.status.label("prev_status"))
        .where(due_now, *only)
        .order_by(m.priority, m.due_by.asc().nulls_first(), m.next_attempt_at)
        .limit(limit)
        .with_for_update(skip_locked=True)
        .cte("due")
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
            m.topic,
            m.subject_id,
            m.incident_id,
            m.party_id,
            m.target_id,
            m.purpose,
            m.channel,
            m.address,
            m.recipient_label,
            m.body,
            m.template_data,
            m.wechat_template_id,
            m.wechat_page,
            m.idempotency_key,
            m.attempts,
            m.max_attempts,
            m.retry_backoff_seconds,
            m.ack_wait_seconds,
            due.c.prev_status,
        )
    )
    rows = (await session.execute(stmt)).mappings().all()
    return [Claimed(**{**row, "channel": Channel(row["channel"]), "topic": Topic(row["topic"])}) for row in rows]


def _sent_record(msg: Claimed, out: Outcome, now: datetime) -> sa.Update:
    """The provider accepted it. Whoever holds the lease now: a provider id is worth keeping, a receipt that
    arrived before this answer (delivered, failed) is not overwritten, and a WeChat message another worker
    gave up on as unconfirmed is now known to be out. Returns the ``sent_at`` before, from the locked row."""
    m = MESSAGES.c
    before = (
        sa.select(m.id.label("id"), m.sent_at.label("was_sent_at"), m.status.label("was_status"))
        .where(m.id == msg.id)
        .with_for_update()
        .subquery("before")
    )
    first_known = sa.func.coalesce(m.sent_at, m.delivered_at, now)
    waiting = sa.or_(m.status == MessageStatus.sending.value, m.status == MessageStatus.unconfirmed.value)
    return (
        sa.update(MESSAGES)
        .where(m.id == before.c.id)
        .values(
            status=sa.case((waiting, MessageStatus.sent.value), else_=m.status),
            provider_message_id=sa.func.coalesce(m.provider_message_id, out.provider_message_id),
            sent_at=sa.func.coalesce(m.sent_at, now),
            # The wait is anchored to the first of sent / delivered, whichever event came first.
            ack_wait_until=sa.func.coalesce(m.ack_wait_until, first_known + timedelta(seconds=msg.ack_wait_seconds)),
            lease_until=sa.case((waiting, None), else_=m.lease_until),
            error_code=sa.case((waiting, None), else_=m.error_code),
            error_message=sa.case((waiting, None), else_=m.error_message),
        )
        .returning(before.c.was_sent_at, before.c.was_status)
    )


async def record_outcome(session: AsyncSession, msg: Claimed, out: Outcome, *, now: datetime, worker_id: str) -> bool:
    """Write one send outcome and tell its topic, if it still tells something new: a receipt may have
    recorded the send first, and a message whose lease another worker took over is not ours to change.
    Returns whether anything was written."""
    m = MESSAGES.c
    hooks = hooks_for(msg.topic)
    owned = sa.and_(m.id == msg.id, m.status == MessageStatus.sending.value, m.leased_by == worker_id)
    if out.kind == "sent":
        row = (await session.execute(_sent_record(msg, out, now))).first()
        if row is None or row.was_sent_at is not None:
            return False  # the receipt told the story already: the send, then the delivery
        await hooks.changed(session, msg.ref, _change(msg, out), now=now)
        return True
    if out.kind == "release":
        # Its deadline passed before it was handed to the provider: not sent, not an attempt.
        released = await session.execute(
            sa.update(MESSAGES)
            .where(owned)
            .values(status=MessageStatus.pending.value, lease_until=None, leased_by=None, attempts=m.attempts - 1)
            .returning(m.id)
        )
        return released.first() is not None
    if out.kind in ("failed", "unconfirmed"):
        await hooks.before_failure(session, msg.ref)
    if out.kind == "retry":
        values: dict[str, Any] = {
            "status": MessageStatus.pending.value,
            "next_attempt_at": out.retry_at,
            "lease_until": None,
            "leased_by": None,
        }
    elif out.kind == "unconfirmed":
        values = {"status": MessageStatus.unconfirmed.value, "lease_until": None}
    else:
        values = {"status": MessageStatus.failed.value, "failed_at": now, "lease_until": None}
    changed = await session.execute(
        sa.update(MESSAGES)
        .where(owned)
        .values(**values, error_code=out.code, error_message=(out.text or "")[:256])
        .returning(m.id)
    )
    if changed.first() is None:
        return False
    if out.kind in ("failed", "unconfirmed"):
        await fall_back(session, msg.id, now=now)
    await hooks.changed(session, msg.ref, _change(msg, out), now=now)
    return True


async def record_outcomes(
    session: AsyncSession, results: list[tuple[Claimed, Outcome]], *, now: datetime, worker_id: str
) -> None:
    """Write several outcomes in the caller's transaction (the demo replays a batch this way)."""
    for msg, out in sorted(results, key=lambda r: r[0].id):
        await record_outcome(session, msg, out, now=now, worker_id=worker_id)


def _change(msg: Claimed, out: Outcome) -> Change:
    detail: dict[str, Any] = {
        "recipient": msg.recipient_label,
        "address": masked_address(msg.channel, msg.address),
        "attempt": msg.attempts,
        "purpose": msg.purpose,
    }
    if out.kind == "sent":
        kind = "message_sent"
        detail["provider_message_id"] = out.provider_message_id
    elif out.kind == "retry":
        kind = "message_retry"
        detail.update(error=out.code, retry_at=out.retry_at.isoformat() if out.retry_at else None)
    elif out.kind == "unconfirmed":
        kind = "message_unconfirmed"
        detail.update(error=out.code, resent=False)
    else:
        kind = "message_failed"
        detail.update(error=out.code, failure=out.failure, address_unusable=out.dead_address or None)
    return Change(
        kind=kind,
        detail={k: v for k, v in detail.items() if v is not None},
        moved_on=out.kind in ("failed", "unconfirmed"),
        dead_address=out.kind == "failed" and out.dead_address,
    )


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
        # SYSTEM: the dispatcher sends for every school's incidents.
        async with scoped_session(self.sessionmaker, SYSTEM) as session:
            return await claim_due(
                session,
                now=self.clock.now(),
                limit=limit,
                worker_id=self.worker_id,
                lease_seconds=self.settings.escalation_lease_seconds,
            )

    # ---- 2. send -----------------------------------------------------------------------------------------

    async def _call_provider(self, message: Claimed, timeout: float) -> SendResult:  # noqa: ASYNC109
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
                timeout=timeout,
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
                timeout=timeout,
            )
        return await send_subscribe_message(
            self.http,
            base_url=s.wechat_base_url,
            tokens=self.wechat_tokens,
            openid=message.address,
            template_id=wechat_template(s, message),
            data=message.template_data or {},
            page=message.wechat_page,
            timeout=timeout,
        )

    def deadline_after_claim(self, claim_started: float) -> float:
        """The event-loop time by which a message claimed at ``claim_started`` must have its answer: well
        inside its lease, so that no other worker can take it over while this one may still send it."""
        return claim_started + self.settings.send_deadline_seconds

    async def send(self, message: Claimed, *, deadline: float | None = None) -> Outcome:
        """Send one claimed message and say what happened; never raises. ``deadline`` (event-loop time,
        :meth:`deadline_after_claim`) bounds everything: the wait for a free slot, the WeChat token, every
        HTTP phase. A message still waiting for a slot at its deadline is released unsent."""
        decided = delivery.before_send(
            channel=message.channel,
            prev_status=message.prev_status,
            attempts=message.attempts,
            max_attempts=message.max_attempts,
        )
        if decided is not None:
            return decided
        loop = asyncio.get_running_loop()
        if deadline is None:
            deadline = self.deadline_after_claim(loop.time())
        handed_over = False
        try:
            async with asyncio.timeout_at(deadline), self._limit:
                handed_over = True
                timeout = max(0.001, min(self.settings.http_timeout_seconds, deadline - loop.time()))
                try:
                    result = await self._call_provider(message, timeout)
                except ChannelPermanentError as exc:
                    return delivery.after_permanent_error(exc.code, exc.message)
                except ChannelTemporaryError as exc:
                    return self._temporary(message, exc.code, exc.message, exc.retry_after)
                except Exception as exc:  # a bug or an unexpected answer: retried like a temporary error
                    log.exception("unexpected error sending message %s", message.id)
                    return self._temporary(message, "unexpected", type(exc).__name__, None)
        except TimeoutError:
            if not handed_over:
                return Outcome(kind="release", code="deadline", text="no free slot before the send deadline")
            return self._temporary(message, "deadline", "no answer before the send deadline", None)
        return Outcome(kind="sent", provider_message_id=result.provider_message_id)

    def _temporary(self, message: Claimed, code: str, text: str, retry_after: float | None) -> Outcome:
        return delivery.after_temporary_error(
            channel=message.channel,
            code=code,
            text=text,
            retry_after=retry_after,
            attempts=message.attempts,
            max_attempts=message.max_attempts,
            retry_backoff_seconds=message.retry_backoff_seconds,
            now=self.clock.now(),
        )

    # ---- 3. record ---------------------------------------------------------------------------------------

    async def record(self, results: list[tuple[Claimed, Outcome]]) -> None:
        """Write each outcome in a short transaction of its own."""
        for msg, out in results:
            async with scoped_session(self.sessionmaker, SYSTEM) as session:  # SYSTEM: the dispatcher, as above
                await record_outcome(session, msg, out, now=self.clock.now(), worker_id=self.worker_id)
            if out.kind == "sent":
                metrics.MESSAGES_SENT.labels(channel=msg.channel.value, purpose=msg.purpose).inc()
            elif out.kind != "release":
                metrics.SEND_ERRORS.labels(channel=msg.channel.value, outcome=out.failure or out.kind).inc()

    # ---- all three -------------------------------------------------------------------------------------

    async def _send_and_record(self, message: Claimed, deadline: float) -> None:
        outcome = await self.send(message, deadline=deadline)
        try:
            # At once, not after the whole batch: the shorter the time between the provider's answer and
            # its record, the fewer answers a crash can lose.
            await self.record([(message, outcome)])
        except Exception:
            # The database went away: the lease runs out and another pass takes the message over (SMS and
            # voice are re-sent with the same key; WeChat is recorded unconfirmed, never resent).
            log.exception("could not record the outcome of message %s", message.id)

    async def run_once(self, limit: int) -> int:
        """Claim, send and record one batch; returns how many messages were handled."""
        claim_started = asyncio.get_running_loop().time()
        claimed = await self.claim(limit)
        if not claimed:
            return 0
        deadline = self.deadline_after_claim(claim_started)
        await asyncio.gather(*(self._send_and_record(message, deadline) for message in claimed))
        return len(claimed)
