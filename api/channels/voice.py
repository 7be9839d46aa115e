"""Voice-call client for our provider contract (docs/providers.md): `POST {base}/v1/voice/calls`.

Used for entrusted guardians (often elderly, without a smartphone): the provider calls, reads the text
aloud, and reports the keys pressed; pressing the acknowledgement digit ("1") is what counts as told.
"""

from __future__ import annotations

import logging

import httpx

from api.channels.base import ChannelError, SendResult, mask_phone, post_to_provider

logger = logging.getLogger(__name__)

ACK_DIGIT = "1"


async def place_call(
    http: httpx.AsyncClient,
    *,
    base_url: str,
    api_key: str,
    to: str,
    tts_text: str,
    idempotency_key: str,
    callback_url: str | None = None,
    dtmf_ack_digit: str = ACK_DIGIT,
    repeat: int = 2,
    timeout: float = 10.0,  # noqa: ASYNC109 - an httpx timeout, see base.post_to_provider
) -> SendResult:
    """Ask the voice provider to call `to` and read `tts_text` (Chinese TTS) `repeat` times.

    Returns the provider's call id (as `provider_message_id`) once the call is queued. The outcome arrives
    as signed callbacks: `voice.answered` / `voice.no_answer` / `voice.busy` / `voice.failed`, then
    `voice.dtmf` with the digits pressed, then `voice.completed`. Errors as for `send_sms`.
    """
    payload = {
        "to": to,
        "tts_text": tts_text,
        "repeat": repeat,
        "dtmf_ack_digit": dtmf_ack_digit,
        "idempotency_key": idempotency_key,
        "callback_url": callback_url,
    }
    try:
        result = await post_to_provider(
            http,
            f"{base_url.rstrip('/')}/v1/voice/calls",
            api_key=api_key,
            payload=payload,
            id_field="call_id",
            timeout=timeout,
        )
    except ChannelError as exc:
        logger.warning("call to %s not placed: %s (%s)", mask_phone(to), exc.code, type(exc).__name__)
        raise
    logger.info("call to %s queued as %s", mask_phone(to), result.provider_message_id)
    return result
