"""Outbound notification channels: WeChat subscribe messages, SMS and voice calls.

Every client takes the app's one shared `httpx.AsyncClient` plus keyword-only configuration, and maps
provider answers onto `SendResult`, `ChannelPermanentError` (fall back) or `ChannelTemporaryError` (retry).
The provider contract for SMS and voice, and the fakes used by tests and the demo, are in
docs/providers.md and `api.channels.fakes`.
"""

from api.channels.base import (
    SIGNATURE_HEADER,
    CallbackEvent,
    ChannelError,
    ChannelPermanentError,
    ChannelTemporaryError,
    SendResult,
    SmsInbound,
    SmsReceipt,
    VoiceEvent,
    mask_phone,
    parse_callback_event,
    sign_callback,
    verify_callback,
)
from api.channels.sms import send_sms
from api.channels.voice import ACK_DIGIT, place_call
from api.channels.wechat import (
    WechatError,
    WechatNotSubscribed,
    WechatSession,
    WechatTokenCache,
    WechatTokenSource,
    WechatUnavailable,
    code_to_session,
    fetch_stable_token,
    send_subscribe_message,
)

__all__ = [
    "ACK_DIGIT",
    "SIGNATURE_HEADER",
    "CallbackEvent",
    "ChannelError",
    "ChannelPermanentError",
    "ChannelTemporaryError",
    "SendResult",
    "SmsInbound",
    "SmsReceipt",
    "VoiceEvent",
    "WechatError",
    "WechatNotSubscribed",
    "WechatSession",
    "WechatTokenCache",
    "WechatTokenSource",
    "WechatUnavailable",
    "code_to_session",
    "fetch_stable_token",
    "mask_phone",
    "parse_callback_event",
    "place_call",
    "send_sms",
    "send_subscribe_message",
    "sign_callback",
    "verify_callback",
]
