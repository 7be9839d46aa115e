"""The fake providers' memory and the one thing all three channels share: posting signed callbacks.

State lives in memory, in the server's event loop; `Fake.reset` returns to the configuration it was built with.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
from fastapi import Request

from api.channels.base import SIGNATURE_HEADER, SmsInbound, SmsReceipt, VoiceEvent, dump_callback_event, sign_callback
from api.channels.fakes.scripts import CodeScript, SmsNumberScript, VoiceNumberScript, WechatUserScript

DEFAULT_WECHAT_APPID = "wx-dev-appid"
DEFAULT_WECHAT_SECRET = "wx-dev-secret"
DEFAULT_SMS_API_KEY = "dev-sms-key"
DEFAULT_VOICE_API_KEY = "dev-voice-key"

_CALLBACK_ATTEMPTS = 3


@dataclass
class FakeConfig:
    """Fixed at creation; `reset` goes back to it."""

    callback_secret: str
    callback_url: str | None = None
    wechat_appid: str = DEFAULT_WECHAT_APPID
    wechat_secret: str = DEFAULT_WECHAT_SECRET
    sms_api_key: str = DEFAULT_SMS_API_KEY
    voice_api_key: str = DEFAULT_VOICE_API_KEY
    callback_delay: float = 0.05
    voice_default_press: str | None = "1"
    # Callbacks in flight at once, as a real provider paces its own: a burst of calls queues here, in order,
    # rather than as thousands of requests waiting in the HTTP client's connection pool.
    callback_concurrency: int = 32


@dataclass
class FakeState:
    """Everything the fake remembers; touched only from the server's event loop."""

    callback_url: str | None
    codes: dict[str, CodeScript] = field(default_factory=dict)
    used_codes: set[str] = field(default_factory=set)
    wechat_users: dict[str, WechatUserScript] = field(default_factory=dict)
    token: str | None = None
    token_expires_at: float = 0.0
    token_lifetime: int = 7200
    poisoned_tokens: set[str] = field(default_factory=set)
    token_failures: list[int] = field(default_factory=list)
    next_msgid: int = 3_000_000_001
    sms_numbers: dict[str, SmsNumberScript] = field(default_factory=dict)
    voice_numbers: dict[str, VoiceNumberScript] = field(default_factory=dict)
    sms_by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    calls_by_key: dict[str, dict[str, Any]] = field(default_factory=dict)
    outbox: dict[str, list[dict[str, Any]]] = field(
        default_factory=lambda: {
            k: [] for k in ("wechat_logins", "wechat_tokens", "wechat_messages", "sms", "voice", "callbacks")
        }
    )
    attempts: list[dict[str, Any]] = field(default_factory=list)
    tasks: set[asyncio.Task[None]] = field(default_factory=set)
    # The last callback delivery of each call: a call's events are posted in the order they happened.
    deliveries: dict[str, asyncio.Task[Any]] = field(default_factory=dict)
    frozen_at: datetime | None = None


def now_utc() -> datetime:
    return datetime.now(UTC)


def new_id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:16]}"


class Fake:
    """The fake's behaviour, shared by the routers; one per app."""

    def __init__(self, config: FakeConfig) -> None:
        self.config = config
        self.state = FakeState(callback_url=config.callback_url)
        self.http: httpx.AsyncClient | None = None
        self.callback_slots = asyncio.Semaphore(config.callback_concurrency)
        # The provider's clock: events carry the time they happened (`occurred_at`), read here at that moment,
        # not the time their callback is posted (in a burst that can be minutes later). In-process tests may
        # point it at their own clock (`FakeProviderServer.use_clock`).
        self.clock: Callable[[], datetime] = now_utc

    def now(self) -> datetime:
        return self.state.frozen_at or self.clock()

    def reset(self) -> None:
        for task in self.state.tasks:
            task.cancel()
        self.state = FakeState(callback_url=self.config.callback_url)

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        # Keep a reference so the task is not garbage-collected mid-flight, and so reset can cancel it.
        task = asyncio.get_running_loop().create_task(coro)
        self.state.tasks.add(task)
        task.add_done_callback(self.state.tasks.discard)
        return task

    def post_in_order(
        self, chain: str, url: str | None, event: SmsReceipt | SmsInbound | VoiceEvent
    ) -> asyncio.Task[dict[str, Any]]:
        """Post `event` after the earlier events of the same call have been posted, without holding up what
        happens next on the call (the person presses 1 whenever they do, however slow callbacks are)."""
        previous = self.state.deliveries.get(chain)

        async def after_previous() -> dict[str, Any]:
            if previous is not None:
                with contextlib.suppress(Exception):
                    await previous
            return await self.deliver(url, event)

        def forget(done: asyncio.Task[dict[str, Any]]) -> None:
            if self.state.deliveries.get(chain) is done:
                del self.state.deliveries[chain]

        task = self.spawn(after_previous())
        self.state.deliveries[chain] = task
        task.add_done_callback(forget)
        return task

    async def deliver(self, url: str | None, event: SmsReceipt | SmsInbound | VoiceEvent) -> dict[str, Any]:
        """POST a signed event to `url`, retrying a few times like a real provider; record the outcome."""
        body = dump_callback_event(event)
        record: dict[str, Any] = {"url": url, "event": json.loads(body), "attempts": 0, "status_code": None}
        self.state.outbox["callbacks"].append(record)
        if url is None or self.http is None:
            record["error"] = "no callback url"
            return record
        for attempt in range(_CALLBACK_ATTEMPTS):
            if attempt:
                await asyncio.sleep(0.2 * 2**attempt)
            record["attempts"] += 1
            headers = {
                "Content-Type": "application/json",
                SIGNATURE_HEADER: sign_callback(self.config.callback_secret, body, time.time()),
            }
            try:
                async with self.callback_slots:
                    response = await self.http.post(url, content=body, headers=headers, timeout=5.0)
            except httpx.HTTPError as exc:
                record["error"] = type(exc).__name__
                continue
            record["status_code"] = response.status_code
            if response.is_success:
                record.pop("error", None)
                return record
            record["error"] = f"HTTP {response.status_code}"
        return record


def fake_of(request: Request) -> Fake:
    fake: Fake = request.app.state.fake
    return fake
