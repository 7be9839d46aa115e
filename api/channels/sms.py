"""SMS client for our provider contract (docs/providers.md): `POST {base}/v1/sms/send`."""

from __future__ import annotations

import logging

import httpx

from api.channels.base import ChannelError, SendResult, mask_phone, post_to_provider

logger = logging.getLogger(__name__)


async def send_sms(
    http: httpx.AsyncClient,
    *,
    base_url: str,
    api_key: str,
    to: str,
    text: str,
    idempotency_key: str,
    callback_url: str | None = None,
    timeout: float = 10.0,  # noqa: ASYNC109 - an httpx timeout, see base.post_to_provider
) -> SendResult:
    """Ask the SMS provider to send `text` to `to` (E.164, e.g. "+8613800138000").

    Returns the provider's message id once accepted; delivery arrives later as a signed `sms.delivered`
    or `sms.failed` callback at `callback_url`. Raises `ChannelPermanentError` (bad number, blocked,
    rejected content, bad credentials) or `ChannelTemporaryError` (timeout, 429, 5xx): retry those with the
    same `idempotency_key` — the provider then returns the same message id and sends nothing new.
    """
    payload = {"to": to, "text": text, "idempotency_key": idempotency_key, "callback_url": callback_url}
    try:
        result = await post_to_provider(
            http,
            f"{base_url.rstrip('/')}/v1/sms/send",
            api_key=api_key,
            payload=payload,
            id_field="message_id",
            timeout=timeout,
        )
    except ChannelError as exc:
        logger.warning("sms to %s not accepted: %s (%s)", mask_phone(to), exc.code, type(exc).__name__)
        raise
    logger.info("sms to %s accepted as %s", mask_phone(to), result.provider_message_id)
    return result
