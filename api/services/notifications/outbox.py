"""Queueing a message: one row per way to reach one person, sent by the dispatcher after the transaction
commits (workers are woken by ``NOTIFY`` on commit).

:func:`enqueue` is what a domain calls: a recipient, the ways to reach them in order of preference (each
with its own text, or WeChat template and fields), a dedupe key (enqueueing the same key twice queues one
message) and a time before which it must not go out. When a way fails (a permanent error, a bounce, a call
not reached, retries used up, or a WeChat answer lost) the next way is queued at once.

WeChat subscribe messages never carry personal data: the sender names the words that must not appear (a
child's name), and a route whose template fields or page contain one is refused (:class:`PrivateDataError`).
"""

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api.models.base import new_row
from api.models.notifications import Channel, MessagePurpose, MessageStatus, OutboundMessage, Topic
from api.scoping import as_system

WAKE_CHANNEL = "liushou_escalation"
# WeChat subscribe-message fields: <kind><n>; "thing" values are limited to 20 characters by WeChat.
_WECHAT_FIELD = re.compile(r"[a-z_]+[0-9]+")
_WECHAT_LIMITS = {"thing": 20, "character_string": 32, "phrase": 5, "name": 10, "number": 32, "time": 32}


class PrivateDataError(ValueError):
    """A WeChat route would carry a word its sender marked private (or is not a valid template field)."""


@dataclass(frozen=True)
class Route:
    """One way to reach the recipient. ``body`` is the SMS text or the call's speech; for WeChat it is the line
    kept on record, and the message itself is ``template_data`` (template ``wechat_template_id``, or the
    configured default) opening ``wechat_page`` in the mini-program."""

    channel: Channel
    address: str
    body: str
    template_data: Mapping[str, str] | None = None
    wechat_template_id: str | None = None
    wechat_page: str | None = None


@dataclass(frozen=True)
class Outgoing:
    """A message a domain wants sent."""

    topic: Topic
    subject_id: uuid.UUID
    recipient_label: str
    routes: Sequence[Route]  # in order of preference: the next is tried when one fails
    dedupe_key: str
    not_before: datetime
    school_id: uuid.UUID | None = None
    account_id: uuid.UUID | None = None
    purpose: MessagePurpose = MessagePurpose.inform
    # Under a backlog: lower first (an incident's messages are 0 and 1), then the earlier due_by.
    priority: int = 2
    due_by: datetime | None = None
    max_attempts: int = 5
    retry_backoff_seconds: int = 15
    private_words: Sequence[str] = field(default_factory=tuple)


@dataclass(frozen=True)
class Enqueued:
    message_id: uuid.UUID
    created: bool  # False: a message with this dedupe key was queued before


def check_wechat(route: Route, private_words: Sequence[str]) -> None:
    """Refuse a WeChat route whose fields are not template fields or that carries a private word."""
    if route.channel != Channel.wechat:
        return
    if not route.template_data:
        raise PrivateDataError("a WeChat message needs its template fields")
    words = [w for w in private_words if w and w.strip()]
    for key, value in route.template_data.items():
        if not _WECHAT_FIELD.fullmatch(key) or not isinstance(value, str):
            raise PrivateDataError(f"{key!r} is not a WeChat template field with a text value")
        limit = _WECHAT_LIMITS.get(key.rstrip("0123456789"))
        if limit is not None and len(value) > limit:
            raise PrivateDataError(f"{key!r} is longer than WeChat allows ({limit})")
    shown = [*route.template_data.values(), route.wechat_page or ""]
    if any(word in text for word in words for text in shown):
        raise PrivateDataError("a WeChat message may not carry personal data (a private word is in it)")


def new_message(
    *,
    topic: Topic,
    subject_id: uuid.UUID | None,
    purpose: MessagePurpose,
    route: Route,
    recipient_label: str,
    now: datetime,
    not_before: datetime | None = None,
    max_attempts: int,
    retry_backoff_seconds: int,
    ack_wait_seconds: int = 0,
    message_id: uuid.UUID | None = None,
    private_words: Sequence[str] = (),
    **extra: Any,
) -> OutboundMessage:
    """A pending message row (not yet added to the session). ``extra``: the topic's own columns
    (``incident_id``, ``party_id``, ``target_id``, ``reply_code``, ``round`` …)."""
    check_wechat(route, private_words)
    message_id = message_id or uuid.uuid4()
    return new_row(
        OutboundMessage,
        id=message_id,
        topic=topic,
        subject_id=subject_id,
        purpose=purpose,
        channel=route.channel,
        address=route.address,
        recipient_label=recipient_label[:128],
        status=MessageStatus.pending,
        idempotency_key=f"liushou-{message_id.hex}",
        body=route.body,
        template_data=dict(route.template_data) if route.template_data is not None else None,
        wechat_template_id=route.wechat_template_id,
        wechat_page=route.wechat_page,
        max_attempts=max_attempts,
        retry_backoff_seconds=retry_backoff_seconds,
        ack_wait_seconds=ack_wait_seconds,
        next_attempt_at=not_before or now,
        created_at=now,
        **extra,
    )


def _route_json(route: Route) -> dict[str, Any]:
    data = asdict(route)
    data["channel"] = route.channel.value
    data["template_data"] = dict(route.template_data) if route.template_data is not None else None
    return data


def _route(data: Mapping[str, Any]) -> Route:
    return Route(**{**data, "channel": Channel(data["channel"])})


async def _insert(session: AsyncSession, message: OutboundMessage) -> bool:
    """Insert unless a message with its dedupe key exists; returns whether it was inserted."""
    values = {c.name: getattr(message, c.name) for c in OutboundMessage.__table__.columns}  # type: ignore[attr-defined]
    inserted = await session.execute(
        pg_insert(OutboundMessage)
        .values(**values)
        .on_conflict_do_nothing(index_elements=["dedupe_key"])
        .returning(col(OutboundMessage.id))
    )
    return inserted.first() is not None


async def enqueue(session: AsyncSession, outgoing: Outgoing, *, now: datetime) -> Enqueued:
    """Queue ``outgoing`` on its first route (the others are its fallback), unless its dedupe key was queued
    before: then nothing changes and the first message's id is returned. Wakes the workers on commit."""
    if not outgoing.routes:
        raise ValueError("a message needs at least one route")
    for route in outgoing.routes:
        check_wechat(route, outgoing.private_words)
    first, *rest = outgoing.routes
    message = new_message(
        topic=outgoing.topic,
        subject_id=outgoing.subject_id,
        purpose=outgoing.purpose,
        route=first,
        recipient_label=outgoing.recipient_label,
        now=now,
        not_before=outgoing.not_before,
        max_attempts=outgoing.max_attempts,
        retry_backoff_seconds=outgoing.retry_backoff_seconds,
        school_id=outgoing.school_id,
        account_id=outgoing.account_id,
        dedupe_key=outgoing.dedupe_key,
        fallback=[_route_json(r) for r in rest] or None,
        priority=outgoing.priority,
        due_by=outgoing.due_by,
    )
    # SYSTEM: the outbox is the system's own. Whoever asks for a message (a teacher reporting, a parent
    # booking a call, the worker) has been authorised for what it is about; the row that carries it — to
    # an address the caller may not read — is written, and an earlier one with its key found, by the system.
    async with as_system(session):
        if await _insert(session, message):
            await wake_workers(session)
            return Enqueued(message.id, created=True)
        existing = (
            await session.execute(select(OutboundMessage.id).where(OutboundMessage.dedupe_key == outgoing.dedupe_key))
        ).scalar_one()
    return Enqueued(existing, created=False)


async def fall_back(session: AsyncSession, message_id: uuid.UUID, *, now: datetime) -> uuid.UUID | None:
    """The message failed (or may not have been shown): queue the next of its fallback ways, at once.
    Returns the new message's id, or ``None`` when it had no way left."""
    row = await session.get(OutboundMessage, message_id)  # the dispatcher and receipts act as the system
    if row is None or not row.fallback:
        return None
    first, *rest = row.fallback
    key = f"{row.dedupe_key[:120]}~{len(rest)}" if row.dedupe_key else None
    follow = new_message(
        topic=row.topic,
        subject_id=row.subject_id,
        purpose=row.purpose,
        route=_route(first),
        recipient_label=row.recipient_label,
        now=now,
        max_attempts=row.max_attempts,
        retry_backoff_seconds=row.retry_backoff_seconds,
        school_id=row.school_id,
        account_id=row.account_id,
        dedupe_key=key,
        fallback=rest or None,
        priority=row.priority,
        due_by=row.due_by,
    )
    if not await _insert(session, follow):
        return None
    await wake_workers(session)
    return follow.id


_WAKE = sa.select(sa.func.pg_notify(WAKE_CHANNEL, ""))  # built once
_WOKEN_KEY = "liushou_workers_woken"  # the transaction in which the workers were last woken


def note_woken(session: AsyncSession) -> None:
    """The caller's own statement has just run ``pg_notify(WAKE_CHANNEL, '')`` in the session's transaction:
    :func:`wake_workers` need not notify again in it."""
    sync = session.sync_session
    session.info[_WOKEN_KEY] = sync.get_nested_transaction() or sync.get_transaction()


async def wake_workers(session: AsyncSession) -> None:
    """Wake idle workers when the transaction commits (PostgreSQL delivers NOTIFY on commit). Once per
    transaction (or savepoint, whose rollback would drop it): PostgreSQL folds a transaction's identical
    notifications into one anyway, so a booking that queues four reminders spends one round trip on it."""
    sync = session.sync_session
    current = sync.get_nested_transaction() or sync.get_transaction()
    if current is not None and session.info.get(_WOKEN_KEY) is current:
        return
    await session.execute(_WAKE)
    session.info[_WOKEN_KEY] = sync.get_nested_transaction() or sync.get_transaction()
