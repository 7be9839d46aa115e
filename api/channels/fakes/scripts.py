"""What a test (or the demo) can ask the fake providers to do: the bodies of the `/_fake` scripting API
(`api.channels.fakes.control`), remembered in the fake's state until `POST /_fake/reset`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from api.channels.base import VoiceEventType


class CodeScript(BaseModel):
    """What `jscode2session` answers for one js_code (single use, like a real `wx.login` code)."""

    code: str
    openid: str | None = None
    unionid: str | None = None
    errcode: int | None = None
    delay_seconds: float = 0.0
    http_status: int | None = Field(default=None, description="Answer with this status and an HTML body.")


class WechatUserScript(BaseModel):
    """How subscribe/send treats one openid; `subscriptions=None` means unlimited."""

    openid: str
    subscriptions: int | None = None
    errcode: int | None = None
    delay_seconds: float = 0.0


class TokenScript(BaseModel):
    """`expire`: the current token answers 42001 and normal mode issues a new one. `poison`: the current
    token answers 40001 but normal mode keeps returning it (only force_refresh replaces it). `fail_next`:
    the next stable_token call answers `errcode`. `lifetime`: tokens issued from now live `expires_in` s."""

    action: Literal["expire", "poison", "fail_next", "lifetime"]
    errcode: int = -1
    expires_in: int = 7200


class NumberScript(BaseModel):
    number: str
    permanent_error: str | None = Field(default=None, description="Answer 400 with this error code.")
    temporary_failures: int = Field(default=0, description="Answer the next N new requests with an error.")
    temporary_status: int = 503
    retry_after: int | None = None
    delay_seconds: float = Field(default=0.0, description="Sleep before answering (client timeouts).")


class SmsNumberScript(NumberScript):
    """Behaviour of the SMS provider for one number."""

    receipt: Literal["delivered", "failed", "none"] = "delivered"


class VoiceNumberScript(NumberScript):
    """Behaviour of the voice provider for one number; `silent` sends no callbacks at all."""

    outcome: Literal["answered", "no_answer", "busy", "failed", "silent"] = "answered"
    press: str | None = Field(default=None, description="Digits the callee presses after answering.")


class InboundSms(BaseModel):
    """A reply texted to our sender number."""

    model_config = ConfigDict(populate_by_name=True)
    sender: str = Field(alias="from")
    text: str


class VoiceEventScript(BaseModel):
    """Emit one voice event for an existing call now."""

    type: VoiceEventType
    digits: str | None = None


class FakeConfigUpdate(BaseModel):
    """Change the default callback URL (used when a request gives none, and for inbound SMS)."""

    callback_url: str | None


class ClockScript(BaseModel):
    """Stop the provider's clock at `now` (events happen at that instant until moved again); null: run on the
    real clock again. Lets a test say when a guardian pressed 1 independently of when the callback lands."""

    now: datetime | None
