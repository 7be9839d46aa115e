"""What every outbound channel shares: results, errors, signed callbacks, the HTTP call to a provider.

The SMS and voice providers speak *our* contract (docs/providers.md); WeChat speaks its own and maps its
errcodes onto the same two error classes, so the notification worker treats all channels alike:
`ChannelPermanentError` means "give up on this channel for this address, fall back";
`ChannelTemporaryError` means "try again later (with the same idempotency key)".
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

import httpx
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SIGNATURE_HEADER = "X-Liushou-Signature"
DEFAULT_SIGNATURE_TOLERANCE = 300

# Statuses after which the same request may succeed later. 409 is "same idempotency key still in flight".
_RETRYABLE_STATUSES = frozenset({408, 409, 425, 429})


@dataclass(frozen=True, slots=True)
class SendResult:
    """A provider accepted the message or call; delivery is reported later by a signed callback."""

    provider_message_id: str


class ChannelError(Exception):
    """Base of channel failures; `code` is the provider's error code (a string for every channel)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


class ChannelPermanentError(ChannelError):
    """Retrying cannot help (invalid number, blocked, no subscription left): fall back to another channel."""


class ChannelTemporaryError(ChannelError):
    """The provider could not take the request now; retry later with the same idempotency key."""

    def __init__(self, code: str, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(code, message)
        self.retry_after = retry_after


def mask_phone(number: str) -> str:
    """Return a phone number fit for logs: country prefix and last 4 digits only."""
    if len(number) <= 4:
        return "*" * len(number)
    head = number[:3] if number.startswith("+") else ""
    return f"{head}***{number[-4:]}"


def mask_id(value: str) -> str:
    """Return an opaque user identifier (openid) shortened for logs."""
    return f"{value[:4]}…" if len(value) > 4 else "…"


# --- signed callbacks -----------------------------------------------------------------------------------


def _signature(secret: str, timestamp: int, body: bytes) -> str:
    signed = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign_callback(secret: str, body: bytes, now: float) -> str:
    """Return the `X-Liushou-Signature` header value for a callback body sent at unix time `now`."""
    timestamp = int(now)
    return f"t={timestamp},v1={_signature(secret, timestamp, body)}"


def verify_callback(
    secret: str, header: str | None, body: bytes, now: float, tolerance: int = DEFAULT_SIGNATURE_TOLERANCE
) -> bool:
    """Check a callback's signature header against the raw body.

    Rejects a missing or malformed header, a timestamp more than `tolerance` seconds away from `now`
    (replays), and any body or secret mismatch. Several `v1=` entries are allowed so a provider can sign
    with an old and a new secret while the secret rotates.
    """
    if not header:
        return False
    timestamp: int | None = None
    candidates: list[str] = []
    for part in header.split(","):
        key, sep, value = part.strip().partition("=")
        if not sep:
            return False
        if key == "t":
            try:
                timestamp = int(value)
            except ValueError:
                return False
        elif key == "v1":
            candidates.append(value)
    if timestamp is None or not candidates or abs(now - timestamp) > tolerance:
        return False
    expected = _signature(secret, timestamp, body)
    # compare_digest on every candidate: a timing difference must not reveal which prefix matched.
    matches = [hmac.compare_digest(expected.encode(), c.encode()) for c in candidates]
    return any(matches)


# --- callback events (the JSON a provider posts to us) --------------------------------------------------


class _Event(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="ignore", frozen=True)

    event_id: str = Field(description="Unique per event; a provider may deliver the same event twice.")
    occurred_at: datetime


class ProviderErrorBody(BaseModel):
    """`{code, message}` as in the providers' error responses."""

    code: str
    message: str = ""


class SmsReceipt(_Event):
    """Delivery receipt for an outbound SMS (送达回执)."""

    type: Literal["sms.delivered", "sms.failed"]
    message_id: str
    idempotency_key: str
    to: str
    error: ProviderErrorBody | None = None


class SmsInbound(_Event):
    """A reply someone texted back to our sender number (e.g. a guardian answering "收到")."""

    type: Literal["sms.inbound"]
    message_id: str
    sender: str = Field(alias="from")
    text: str
    in_reply_to: str | None = Field(
        default=None, description="message_id of the last SMS we sent this number, when the provider knows."
    )


VoiceEventType = Literal[
    "voice.answered", "voice.no_answer", "voice.busy", "voice.failed", "voice.dtmf", "voice.completed"
]


class VoiceEvent(_Event):
    """Progress of an outbound voice call; `voice.dtmf` carries the keys the callee pressed."""

    type: VoiceEventType
    call_id: str
    idempotency_key: str
    to: str
    digits: str | None = None
    error: ProviderErrorBody | None = None


CallbackEvent = Annotated[SmsReceipt | SmsInbound | VoiceEvent, Field(discriminator="type")]
_callback_adapter: TypeAdapter[SmsReceipt | SmsInbound | VoiceEvent] = TypeAdapter(CallbackEvent)


def parse_callback_event(body: bytes) -> SmsReceipt | SmsInbound | VoiceEvent:
    """Parse a callback body (verify its signature first); raises `pydantic.ValidationError` if malformed."""
    return _callback_adapter.validate_json(body)


def dump_callback_event(event: SmsReceipt | SmsInbound | VoiceEvent) -> bytes:
    """Serialise an event exactly as providers send it (aliases such as `from`, ISO times)."""
    return event.model_dump_json(by_alias=True, exclude_none=True).encode()


# --- the HTTP call shared by the SMS and voice clients ----------------------------------------------------


def _error_of(response: httpx.Response) -> tuple[str, str]:
    try:
        error = response.json()["error"]
        return str(error["code"]), str(error.get("message", ""))
    except (ValueError, KeyError, TypeError):
        return f"http_{response.status_code}", response.reason_phrase


def _retry_after(response: httpx.Response) -> float | None:
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        return None


async def post_to_provider(
    http: httpx.AsyncClient,
    url: str,
    *,
    api_key: str,
    payload: dict[str, Any],
    id_field: str,
    timeout: float,  # noqa: ASYNC109 - httpx per-phase timeout, not a cancel scope
) -> SendResult:
    """POST a send request in our provider contract and map the answer onto `SendResult` or an error.

    Timeouts and network errors are temporary: the provider may have accepted the request, which is why
    every request carries an idempotency key and a retry with the same key cannot send twice.
    """
    try:
        response = await http.post(
            url,
            json=payload,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=timeout,
        )
    except httpx.TimeoutException as exc:
        raise ChannelTemporaryError("timeout", f"no answer within {timeout}s") from exc
    except httpx.HTTPError as exc:
        raise ChannelTemporaryError("network", type(exc).__name__) from exc

    status = response.status_code
    if status in _RETRYABLE_STATUSES or status >= 500:
        code, message = _error_of(response)
        raise ChannelTemporaryError(code, message, retry_after=_retry_after(response))
    if status >= 400:
        code, message = _error_of(response)
        raise ChannelPermanentError(code, message)
    try:
        provider_id = response.json()[id_field]
    except (ValueError, KeyError, TypeError):
        provider_id = None
    if not isinstance(provider_id, str) or not provider_id:
        # Accepted or not is unknown; a retry with the same idempotency key settles it safely.
        raise ChannelTemporaryError("bad_response", f"HTTP {status} without {id_field}")
    return SendResult(provider_message_id=provider_id)
