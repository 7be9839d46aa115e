"""The channel clients against the fake providers over real HTTP on loopback, and the fakes' callbacks.

No database: these check the wire protocol, error mapping, idempotency and callback signatures.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import fields
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.channels import (
    SIGNATURE_HEADER,
    ChannelPermanentError,
    ChannelTemporaryError,
    SmsInbound,
    SmsReceipt,
    VoiceEvent,
    WechatError,
    WechatNotSubscribed,
    WechatTokenCache,
    WechatUnavailable,
    code_to_session,
    fetch_stable_token,
    parse_callback_event,
    place_call,
    send_sms,
    send_subscribe_message,
    sign_callback,
    verify_callback,
)
from api.channels.fakes import (
    DEFAULT_SMS_API_KEY,
    DEFAULT_VOICE_API_KEY,
    DEFAULT_WECHAT_APPID,
    DEFAULT_WECHAT_SECRET,
    FakeProviderServer,
    LoopbackServer,
)
from api.channels.wechat import WechatSession

SECRET = "test-callback-secret"
GRANDMA = "+8613800138000"
FATHER = "+8613900139000"
TEMPLATE = "tmpl-emergency"


class Receiver:
    """Our side of the callbacks: records what arrives, optionally failing the first requests."""

    def __init__(self) -> None:
        self.received: list[tuple[str | None, bytes]] = []
        self.fail_next = 0
        self.app = Starlette(routes=[Route("/callbacks", self._callback, methods=["POST"])])
        self.url = ""

    async def _callback(self, request: Request) -> Response:
        body = await request.body()
        if self.fail_next > 0:
            self.fail_next -= 1
            return Response(status_code=500)
        self.received.append((request.headers.get(SIGNATURE_HEADER), body))
        return Response(status_code=204)

    def events(self) -> list[Any]:
        return [parse_callback_event(body) for _, body in self.received]

    async def wait_for(self, count: int, within: float = 5.0) -> list[Any]:
        deadline = time.monotonic() + within
        while len(self.received) < count:
            if time.monotonic() > deadline:
                pytest.fail(f"expected {count} callbacks, got {len(self.received)}")
            await asyncio.sleep(0.02)
        return self.events()


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    with LoopbackServer(receiver.app) as server:
        receiver.url = f"{server.base_url}/callbacks"
        yield receiver


@pytest.fixture(scope="module")
def fake(receiver: Receiver) -> Iterator[FakeProviderServer]:
    with FakeProviderServer(callback_secret=SECRET, callback_url=receiver.url, callback_delay=0.01) as server:
        yield server


@pytest.fixture
async def http(fake: FakeProviderServer, receiver: Receiver) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        (await client.post(f"{fake.base_url}/_fake/reset")).raise_for_status()
        await asyncio.sleep(0.02)  # let a callback already on the wire land before we forget it
        receiver.received.clear()
        receiver.fail_next = 0
        yield client


@pytest.fixture
def script(http: httpx.AsyncClient, fake: FakeProviderServer) -> Callable[..., Any]:
    async def post(path: str, **body: Any) -> None:
        (await http.post(f"{fake.base_url}/_fake/{path}", json=body)).raise_for_status()

    return post


async def outbox(http: httpx.AsyncClient, fake: FakeProviderServer) -> dict[str, Any]:
    response = await http.get(f"{fake.base_url}/_fake/outbox")
    response.raise_for_status()
    result: dict[str, Any] = response.json()
    return result


def login(http: httpx.AsyncClient, fake: FakeProviderServer, code: str, **kw: Any) -> Any:
    return code_to_session(
        http,
        base_url=fake.wechat_base_url,
        appid=kw.pop("appid", DEFAULT_WECHAT_APPID),
        secret=kw.pop("secret", DEFAULT_WECHAT_SECRET),
        code=code,
        **kw,
    )


def token_cache(http: httpx.AsyncClient, fake: FakeProviderServer, **kw: Any) -> WechatTokenCache:
    return WechatTokenCache(
        http, base_url=fake.wechat_base_url, appid=DEFAULT_WECHAT_APPID, secret=DEFAULT_WECHAT_SECRET, **kw
    )


def sms(http: httpx.AsyncClient, fake: FakeProviderServer, **kw: Any) -> Any:
    kw.setdefault("to", GRANDMA)
    kw.setdefault("text", "【留守】您的孩子在校突发情况，请尽快联系班主任。")
    kw.setdefault("idempotency_key", "k-1")
    return send_sms(http, base_url=fake.sms_base_url, api_key=kw.pop("api_key", DEFAULT_SMS_API_KEY), **kw)


def call(http: httpx.AsyncClient, fake: FakeProviderServer, **kw: Any) -> Any:
    kw.setdefault("to", GRANDMA)
    kw.setdefault("tts_text", "您好，这里是学校。孩子在校突发情况，听到请按1。")
    kw.setdefault("idempotency_key", "c-1")
    return place_call(http, base_url=fake.voice_base_url, api_key=DEFAULT_VOICE_API_KEY, **kw)


# --- WeChat login ---------------------------------------------------------------------------------------


async def test_a_login_code_gives_openid_and_unionid_but_never_the_session_key(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    await script("wechat/codes", code="c-ok", openid="o-father", unionid="u-father")
    session = await login(http, fake, "c-ok")
    assert session == WechatSession(openid="o-father", unionid="u-father")
    assert [f.name for f in fields(WechatSession)] == ["openid", "unionid"]


async def test_a_login_code_works_only_once(http: httpx.AsyncClient, fake: FakeProviderServer, script: Any) -> None:
    await script("wechat/codes", code="c-once", openid="o-1")
    await login(http, fake, "c-once")
    with pytest.raises(WechatError) as caught:
        await login(http, fake, "c-once")
    assert caught.value.errcode == 40163


@pytest.mark.parametrize(("errcode", "retryable"), [(40029, False), (40163, False), (45011, True), (-1, True)])
async def test_wechat_login_errcodes_are_raised_as_wechat_errors(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any, errcode: int, retryable: bool
) -> None:
    await script("wechat/codes", code="c-err", errcode=errcode)
    with pytest.raises(WechatError) as caught:
        await login(http, fake, "c-err")
    assert (caught.value.errcode, caught.value.retryable) == (errcode, retryable)


async def test_an_unknown_code_is_invalid_and_demo_codes_map_deterministically(
    http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    with pytest.raises(WechatError) as caught:
        await login(http, fake, "never-issued")
    assert caught.value.errcode == 40029
    first = await login(http, fake, "demo-wang-nainai")
    again = await login(http, fake, "demo-wang-nainai")
    assert first == again == WechatSession(openid="o-demo-wang-nainai", unionid="u-demo-wang-nainai")


async def test_a_wrong_app_secret_is_refused(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    with pytest.raises(WechatError) as caught:
        await login(http, fake, "demo-x", secret="stolen")
    assert caught.value.errcode == 40125


async def test_wechat_unreachable_or_answering_garbage_is_unavailable(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    await script("wechat/codes", code="c-502", http_status=502)
    await script("wechat/codes", code="c-slow", openid="o-slow", delay_seconds=1.0)
    with pytest.raises(WechatUnavailable):
        await login(http, fake, "c-502")
    with pytest.raises(WechatUnavailable):
        await login(http, fake, "c-slow", timeout=0.2)
    closed = LoopbackServer(Starlette())
    closed_url = closed.start()
    closed.stop()
    with pytest.raises(WechatUnavailable):
        await code_to_session(http, base_url=closed_url, appid="a", secret="s", code="c")


# --- WeChat access token --------------------------------------------------------------------------------


async def test_stable_token_lives_7200_seconds(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    token = await fetch_stable_token(
        http, base_url=fake.wechat_base_url, appid=DEFAULT_WECHAT_APPID, secret=DEFAULT_WECHAT_SECRET
    )
    assert token.token and 7190 <= token.expires_in <= 7200


async def test_concurrent_callers_share_one_token_fetch(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    cache = token_cache(http, fake)
    tokens = await asyncio.gather(*(cache.get_token() for _ in range(20)))
    assert len(set(tokens)) == 1
    assert len((await outbox(http, fake))["wechat_tokens"]) == 1


async def test_the_token_is_refreshed_five_minutes_before_it_expires(
    http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    clock = FakeClock()
    cache = token_cache(http, fake, clock=clock)
    await cache.get_token()
    clock.now += 7200 - 310
    await cache.get_token()
    assert len((await outbox(http, fake))["wechat_tokens"]) == 1
    clock.now += 20
    await cache.get_token()
    assert len((await outbox(http, fake))["wechat_tokens"]) == 2


async def test_a_failed_token_fetch_is_a_temporary_send_error(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    await script("wechat/token", action="fail_next", errcode=-1)
    with pytest.raises(ChannelTemporaryError) as caught:
        await subscribe(http, fake, token_cache(http, fake), "o-father")
    assert caught.value.code == "-1"


# --- WeChat subscribe messages --------------------------------------------------------------------------


def subscribe(http: httpx.AsyncClient, fake: FakeProviderServer, cache: WechatTokenCache, openid: str) -> Any:
    return send_subscribe_message(
        http,
        base_url=fake.wechat_base_url,
        tokens=cache,
        openid=openid,
        template_id=TEMPLATE,
        data={"thing1": "学生在校突发情况", "time2": "2024-05-01 10:00"},
        page="pages/incident/detail?id=42",
    )


async def test_a_subscribe_message_is_sent_in_wechat_format(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    result = await subscribe(http, fake, token_cache(http, fake), "o-father")
    [message] = (await outbox(http, fake))["wechat_messages"]
    assert result.provider_message_id == str(message["msgid"])
    assert message["touser"] == "o-father"
    assert message["data"] == {
        "thing1": {"value": "学生在校突发情况"},
        "time2": {"value": "2024-05-01 10:00"},
    }
    assert message["miniprogram_state"] == "formal"


async def test_a_user_without_subscriptions_left_gets_not_subscribed_so_the_caller_falls_back(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    await script("wechat/users", openid="o-father", subscriptions=1)
    cache = token_cache(http, fake)
    await subscribe(http, fake, cache, "o-father")
    with pytest.raises(WechatNotSubscribed) as caught:
        await subscribe(http, fake, cache, "o-father")
    assert isinstance(caught.value, ChannelPermanentError)
    assert caught.value.code == "43101"


async def test_an_expired_token_is_refreshed_and_the_send_retried_once(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    cache = token_cache(http, fake)
    old = await cache.get_token()
    await script("wechat/token", action="expire")
    await subscribe(http, fake, cache, "o-father")
    box = await outbox(http, fake)
    assert len(box["wechat_messages"]) == 1
    assert [t["force_refresh"] for t in box["wechat_tokens"]] == [False, False]
    assert await cache.get_token() != old


async def test_a_rejected_token_that_normal_mode_keeps_returning_is_force_refreshed(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    cache = token_cache(http, fake)
    await cache.get_token()
    await script("wechat/token", action="poison")
    await subscribe(http, fake, cache, "o-father")
    box = await outbox(http, fake)
    assert len(box["wechat_messages"]) == 1
    assert [t["force_refresh"] for t in box["wechat_tokens"]] == [False, False, True]


async def test_a_token_rejected_twice_is_not_retried_forever(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    await script("wechat/users", openid="o-father", errcode=40001)
    with pytest.raises(ChannelTemporaryError) as caught:
        await subscribe(http, fake, token_cache(http, fake), "o-father")
    assert caught.value.code == "40001"
    # One refresh (normal mode returns the same token, so it is forced), one retry, then give up.
    assert [t["force_refresh"] for t in (await outbox(http, fake))["wechat_tokens"]] == [False, False, True]


@pytest.mark.parametrize(("errcode", "error"), [(40003, ChannelPermanentError), (-1, ChannelTemporaryError)])
async def test_other_send_errcodes_map_to_permanent_or_temporary(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any, errcode: int, error: type[Exception]
) -> None:
    await script("wechat/users", openid="o-father", errcode=errcode)
    with pytest.raises(error):
        await subscribe(http, fake, token_cache(http, fake), "o-father")


# --- SMS ------------------------------------------------------------------------------------------------


async def test_the_same_idempotency_key_sends_one_sms(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    first = await sms(http, fake)
    second = await sms(http, fake)
    assert first == second
    assert [m["message_id"] for m in (await outbox(http, fake))["sms"]] == [first.provider_message_id]


async def test_reusing_an_idempotency_key_for_another_text_is_refused(
    http: httpx.AsyncClient, fake: FakeProviderServer
) -> None:
    await sms(http, fake)
    with pytest.raises(ChannelPermanentError) as caught:
        await sms(http, fake, text="另一条")
    assert caught.value.code == "idempotency_key_reused"


async def test_invalid_and_blocked_numbers_fail_permanently(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    with pytest.raises(ChannelPermanentError) as caught:
        await sms(http, fake, to="12345")
    assert caught.value.code == "invalid_number"
    await script("sms/numbers", number=FATHER, permanent_error="blocked")
    with pytest.raises(ChannelPermanentError) as caught:
        await sms(http, fake, to=FATHER)
    assert caught.value.code == "blocked"
    assert (await outbox(http, fake))["sms"] == []


async def test_a_wrong_api_key_fails_permanently(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    with pytest.raises(ChannelPermanentError) as caught:
        await sms(http, fake, api_key="wrong")
    assert caught.value.code == "unauthorized"


async def test_temporary_failures_are_retryable_until_the_provider_recovers(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    await script("sms/numbers", number=GRANDMA, temporary_failures=2)
    for _ in range(2):
        with pytest.raises(ChannelTemporaryError) as caught:
            await sms(http, fake)
        assert caught.value.code == "provider_unavailable"
    await sms(http, fake)
    box = await outbox(http, fake)
    assert len(box["sms"]) == 1
    assert [a["outcome"] for a in box["attempts"]] == ["temporary_error", "temporary_error", "accepted"]


async def test_rate_limiting_is_temporary_and_says_when_to_retry(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    await script("sms/numbers", number=GRANDMA, temporary_failures=1, temporary_status=429, retry_after=7)
    with pytest.raises(ChannelTemporaryError) as caught:
        await sms(http, fake)
    assert (caught.value.code, caught.value.retry_after) == ("rate_limited", 7.0)


async def test_a_timeout_is_temporary_and_the_retry_does_not_send_twice(
    http: httpx.AsyncClient, fake: FakeProviderServer, script: Any
) -> None:
    await script("sms/numbers", number=GRANDMA, delay_seconds=1.0)
    with pytest.raises(ChannelTemporaryError) as caught:
        await sms(http, fake, timeout=0.2)
    assert caught.value.code == "timeout"
    retried = await sms(http, fake, timeout=0.2)
    assert [m["message_id"] for m in (await outbox(http, fake))["sms"]] == [retried.provider_message_id]


async def test_an_unreachable_provider_is_temporary(http: httpx.AsyncClient) -> None:
    closed = LoopbackServer(Starlette())
    closed_url = closed.start()
    closed.stop()
    with pytest.raises(ChannelTemporaryError) as caught:
        await send_sms(http, base_url=closed_url, api_key="k", to=GRANDMA, text="t", idempotency_key="k", timeout=1.0)
    assert caught.value.code == "network"


# --- voice ----------------------------------------------------------------------------------------------


async def test_a_call_reads_the_text_twice_and_waits_for_1(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    result = await call(http, fake)
    [placed] = (await outbox(http, fake))["voice"]
    assert placed["call_id"] == result.provider_message_id
    assert (placed["repeat"], placed["dtmf_ack_digit"]) == (2, "1")
    assert result == await call(http, fake)  # idempotent as well


async def test_an_invalid_number_cannot_be_called(http: httpx.AsyncClient, fake: FakeProviderServer) -> None:
    with pytest.raises(ChannelPermanentError):
        await call(http, fake, to="not-a-number")


# --- signatures -----------------------------------------------------------------------------------------


def test_a_signed_body_verifies() -> None:
    body = b'{"type":"sms.delivered"}'
    assert verify_callback(SECRET, sign_callback(SECRET, body, 1_700_000_000), body, 1_700_000_100)


@pytest.mark.parametrize(
    ("secret", "body", "now"),
    [
        ("wrong-secret", b'{"a":1}', 1_700_000_000),
        (SECRET, b'{"a":2}', 1_700_000_000),
        (SECRET, b'{"a":1}', 1_700_000_301),
        (SECRET, b'{"a":1}', 1_699_999_699),
    ],
    ids=["wrong secret", "tampered body", "stale", "from the future"],
)
def test_a_callback_is_rejected_when(secret: str, body: bytes, now: float) -> None:
    header = sign_callback(SECRET, b'{"a":1}', 1_700_000_000)
    assert not verify_callback(secret, header, body, now)


@pytest.mark.parametrize("header", [None, "", "v1=abc", "t=1700000000", "t=soon,v1=abc", "garbage"])
def test_a_malformed_signature_header_is_rejected(header: str | None) -> None:
    assert not verify_callback(SECRET, header, b"{}", 1_700_000_000)


def test_during_secret_rotation_either_signature_verifies() -> None:
    body = b"{}"
    old = sign_callback("old", body, 1_700_000_000)
    new = sign_callback(SECRET, body, 1_700_000_000).split(",")[1]
    assert verify_callback(SECRET, f"{old},{new}", body, 1_700_000_000)


# --- callbacks ------------------------------------------------------------------------------------------


async def test_a_delivered_receipt_arrives_signed(
    http: httpx.AsyncClient, fake: FakeProviderServer, receiver: Receiver
) -> None:
    sent = await sms(http, fake, idempotency_key="notify-7-guardian")
    [receipt] = await receiver.wait_for(1)
    header, body = receiver.received[0]
    assert verify_callback(SECRET, header, body, time.time())
    assert not verify_callback("other-secret", header, body, time.time())
    assert isinstance(receipt, SmsReceipt)
    assert (receipt.type, receipt.message_id, receipt.idempotency_key) == (
        "sms.delivered",
        sent.provider_message_id,
        "notify-7-guardian",
    )


async def test_a_bounced_sms_reports_failed(
    http: httpx.AsyncClient, fake: FakeProviderServer, receiver: Receiver, script: Any
) -> None:
    await script("sms/numbers", number=GRANDMA, receipt="failed")
    await sms(http, fake)
    [receipt] = await receiver.wait_for(1)
    assert receipt.type == "sms.failed" and receipt.error.code == "undeliverable"


async def test_callbacks_go_to_the_url_given_in_the_request(
    http: httpx.AsyncClient, fake: FakeProviderServer, receiver: Receiver
) -> None:
    await http.put(f"{fake.base_url}/_fake/config", json={"callback_url": None})
    await sms(http, fake, callback_url=receiver.url)
    [receipt] = await receiver.wait_for(1)
    assert receipt.type == "sms.delivered"


async def test_a_failing_receiver_gets_the_callback_again(
    http: httpx.AsyncClient, fake: FakeProviderServer, receiver: Receiver
) -> None:
    receiver.fail_next = 1
    await sms(http, fake)
    await receiver.wait_for(1)
    [delivery] = (await outbox(http, fake))["callbacks"]
    assert (delivery["attempts"], delivery["status_code"]) == (2, 204)


async def test_a_burst_of_callbacks_is_paced_and_none_is_lost(http: httpx.AsyncClient) -> None:
    """Like a real provider, the fake keeps at most ``callback_concurrency`` callbacks in flight."""
    in_flight = peak = 0
    got: list[bytes] = []
    all_in = threading.Event()  # the receiver runs in its own thread and event loop

    async def slow(request: Request) -> Response:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        await asyncio.sleep(0.05)
        got.append(await request.body())
        in_flight -= 1
        if len(got) == 12:
            all_in.set()
        return Response(status_code=204)

    with LoopbackServer(Starlette(routes=[Route("/cb", slow, methods=["POST"])])) as slow_receiver:
        url = f"{slow_receiver.base_url}/cb"
        with FakeProviderServer(
            callback_secret=SECRET, callback_url=url, callback_delay=0.0, callback_concurrency=3
        ) as paced:
            await asyncio.gather(
                *(sms(http, paced, to=f"+86138000000{i:02d}", idempotency_key=f"k-{i}") for i in range(12))
            )
            assert await asyncio.to_thread(all_in.wait, 10)
    assert {parse_callback_event(body).to for body in got} == {f"+86138000000{i:02d}" for i in range(12)}
    assert 1 < peak <= 3


async def test_a_guardian_reply_arrives_as_inbound_sms(
    http: httpx.AsyncClient, fake: FakeProviderServer, receiver: Receiver
) -> None:
    sent = await sms(http, fake)
    await receiver.wait_for(1)
    response = await http.post(f"{fake.base_url}/_fake/sms/reply", json={"from": GRANDMA, "text": "收到"})
    assert response.json()["status_code"] == 204
    inbound = (await receiver.wait_for(2))[1]
    assert isinstance(inbound, SmsInbound)
    assert (inbound.sender, inbound.text, inbound.in_reply_to) == (GRANDMA, "收到", sent.provider_message_id)


async def test_an_answered_call_reports_answered_then_the_digit_then_completed(
    http: httpx.AsyncClient, fake: FakeProviderServer, receiver: Receiver
) -> None:
    placed = await call(http, fake)
    events = await receiver.wait_for(3)
    assert all(isinstance(e, VoiceEvent) and e.call_id == placed.provider_message_id for e in events)
    assert [(e.type, e.digits) for e in events] == [
        ("voice.answered", None),
        ("voice.dtmf", "1"),
        ("voice.completed", None),
    ]


async def test_a_guardian_who_never_answers_reports_only_no_answer(
    http: httpx.AsyncClient, fake: FakeProviderServer, receiver: Receiver, script: Any
) -> None:
    await script("voice/numbers", number=GRANDMA, outcome="no_answer")
    await call(http, fake)
    [event] = await receiver.wait_for(1)
    await asyncio.sleep(0.1)
    assert event.type == "voice.no_answer" and len(receiver.received) == 1


async def test_a_digit_can_be_pressed_on_demand(
    http: httpx.AsyncClient, fake: FakeProviderServer, receiver: Receiver, script: Any
) -> None:
    await script("voice/numbers", number=GRANDMA, outcome="answered", press=None)
    placed = await call(http, fake)
    await receiver.wait_for(2)
    response = await http.post(
        f"{fake.base_url}/_fake/voice/calls/{placed.provider_message_id}/events",
        json={"type": "voice.dtmf", "digits": "1"},
    )
    response.raise_for_status()
    events = await receiver.wait_for(3)
    assert [e.type for e in events] == ["voice.answered", "voice.completed", "voice.dtmf"]
    assert (await outbox(http, fake))["voice"][0]["digits"] == "1"


async def test_reset_forgets_everything(http: httpx.AsyncClient, fake: FakeProviderServer, script: Any) -> None:
    await script("sms/numbers", number=GRANDMA, permanent_error="blocked")
    await sms(http, fake, to=FATHER)
    await http.post(f"{fake.base_url}/_fake/reset")
    await sms(http, fake)
    box = await outbox(http, fake)
    assert [m["to"] for m in box["sms"]] == [GRANDMA]
