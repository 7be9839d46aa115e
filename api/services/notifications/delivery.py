"""What a message's state becomes — pure rules, no I/O (the dispatcher and the receipts apply them).

A message walks ``pending → sending → sent → delivered``; ``failed``, ``cancelled`` and ``unconfirmed`` end it.
A send's answer becomes an :class:`Outcome`: sent, retried later with backoff, failed (permanent error,
attempts used up), ``unconfirmed`` (WeChat, whose API has no idempotency key: an answer lost may hide a
message shown, so it is never resent), or released (its deadline came before it was handed over).
"""

from dataclasses import dataclass
from datetime import datetime, timedelta

from api.channels.base import mask_phone
from api.models.notifications import Channel, MessageStatus

# Provider errors that say the address itself is unusable: nobody should try it again.
DEAD_ADDRESS_CODES = frozenset({"invalid_number", "blocked", "43101", "40003"})
MAX_BACKOFF = timedelta(minutes=5)
# Temporary errors after which a WeChat message may have been shown (no idempotency key to resend safely).
_WECHAT_AMBIGUOUS = frozenset({"unavailable", "unexpected", "deadline"})
# States a message no longer leaves (a late "sent" answer may still turn unconfirmed into sent).
FINAL = frozenset({MessageStatus.delivered, MessageStatus.failed, MessageStatus.cancelled})


@dataclass(frozen=True)
class Outcome:
    kind: str  # sent | retry | failed | unconfirmed (WeChat, answer lost) | release (deadline before sending)
    provider_message_id: str | None = None
    code: str | None = None
    text: str | None = None
    retry_at: datetime | None = None
    failure: str | None = None  # permanent | ambiguous | exhausted
    dead_address: bool = False


def backoff(retry_backoff_seconds: int, attempts: int, retry_after: float | None) -> timedelta:
    """Exponential: ``retry_backoff_seconds`` × 2ⁿ⁻¹ after the n-th attempt, at least the provider's
    ``Retry-After``, at most :data:`MAX_BACKOFF`."""
    delay = timedelta(seconds=retry_backoff_seconds * 2 ** max(0, attempts - 1))
    if retry_after is not None:
        delay = max(delay, timedelta(seconds=retry_after))
    return min(delay, MAX_BACKOFF)


def before_send(*, channel: Channel, prev_status: str, attempts: int, max_attempts: int) -> Outcome | None:
    """An outcome decided without sending (``None``: send it). ``prev_status`` is the state the claim found:
    ``sending`` means its last worker stopped mid-send."""
    if channel == Channel.wechat and prev_status == MessageStatus.sending.value:
        # Its worker stopped mid-send: WeChat may have shown it, and resending could show it twice.
        return Outcome(kind="unconfirmed", code="lease_expired", text="the worker sending it stopped before its answer")
    if attempts > max_attempts:
        return Outcome(kind="failed", failure="exhausted", code="max_attempts", text="attempts used up")
    return None


def after_permanent_error(code: str, text: str) -> Outcome:
    return Outcome(kind="failed", failure="permanent", code=code, text=text, dead_address=code in DEAD_ADDRESS_CODES)


def after_temporary_error(
    *,
    channel: Channel,
    code: str,
    text: str,
    retry_after: float | None,
    attempts: int,
    max_attempts: int,
    retry_backoff_seconds: int,
    now: datetime,
) -> Outcome:
    """Retry later — unless it is WeChat and the message may be out, or the attempts are used up."""
    if channel == Channel.wechat and code in _WECHAT_AMBIGUOUS:
        # No idempotency key on WeChat: after a timeout the message may be out. Fall back, do not resend.
        return Outcome(kind="unconfirmed", code=code, text=text)
    if attempts >= max_attempts:
        return Outcome(kind="failed", failure="exhausted", code=code, text=text)
    return Outcome(
        kind="retry", code=code, text=text, retry_at=now + backoff(retry_backoff_seconds, attempts, retry_after)
    )


def may_deliver(status: MessageStatus) -> bool:
    """A delivery receipt (or an answered call) counts for a message out or still being sent."""
    return status in (MessageStatus.sending, MessageStatus.sent)


def may_fail(status: MessageStatus) -> bool:
    """A bounce or a call not reached fails a message unless it already failed or was cancelled."""
    return status not in (MessageStatus.failed, MessageStatus.cancelled)


def sent_by_receipt(status: MessageStatus, sent_at: datetime | None) -> bool:
    """A receipt about a message whose send answer is not recorded yet proves the provider accepted it."""
    return status == MessageStatus.sending and sent_at is None


def ack_wait_until(current: datetime | None, *, first_known: datetime, ack_wait_seconds: int) -> datetime:
    """The end of the acknowledgement wait, stored once: by whichever of sent / delivered came first."""
    return current or first_known + timedelta(seconds=ack_wait_seconds)


def masked_address(channel: Channel, address: str) -> str:
    """An address as staff and the timeline see it: a WeChat openid is never shown, a number masked."""
    return "微信" if channel == Channel.wechat else mask_phone(address)
