"""Reminders of family calls: what is queued when a call is booked (family and head teacher, per lead time,
WeChat first with SMS behind it, never the child's name), and that each is sent exactly once while real
``liushou worker`` processes are killed with SIGKILL in the middle of sending."""

import asyncio
import os
import random
import time
import uuid
from collections import Counter
from datetime import datetime, timedelta
from datetime import time as clock_time
from pathlib import Path

import httpx
import sqlalchemy as sa

from api.channels.fakes import FakeProviderServer
from api.clock import SHANGHAI
from api.db import make_engine, scoped_session
from api.models.accounts import Account
from api.models.notifications import OutboundMessage
from api.scoping import SYSTEM
from api.worker.loop import Worker
from bench.escalation_chaos import Workers, slow_answers
from tests.test_family_call_races import many_families
from tests.test_family_calls import TUE, family_world, sh

SECRET = "calls-callback-secret"
FINAL = ("sent", "delivered", "failed", "unconfirmed", "cancelled")


async def reminders(app, call_id: str | None = None) -> list:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        stmt = sa.select(OutboundMessage).where(OutboundMessage.topic == "family_call")
        if call_id:
            stmt = stmt.where(OutboundMessage.subject_id == uuid.UUID(call_id))
        return list((await s.execute(stmt.order_by(OutboundMessage.dedupe_key))).scalars())


async def test_booking_queues_reminders_for_the_family_and_the_head_teacher_naming_no_child(client, world, app, clock):
    phone, room = await family_world(client, world, app, clock)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        (await s.get_one(Account, world["teacher1"])).phone = "13700137011"
        (await s.get_one(Account, world["family1"])).wechat_openid = "o-family-1"
    wed = TUE + timedelta(days=1)
    r = await client.post(
        "/family-calls",
        json={"child_id": str(world["family1_child"]), "line_id": phone, "starts_at": sh(wed, "12:00")},
        headers=world.headers("family1"),
    )
    assert r.status_code == 201, r.text
    call = r.json()
    messages = await reminders(app, call["id"])
    # Default leads: a day and an hour before, to both; the family by WeChat (SMS behind it), the teacher by SMS.
    assert [(m.dedupe_key.split(":", 2)[2], m.channel, m.recipient_label) for m in messages] == [
        ("1440:family", "wechat", "家长"),
        ("1440:teacher", "sms", "班主任"),
        ("60:family", "wechat", "家长"),
        ("60:teacher", "sms", "班主任"),
    ]
    starts = messages[0].due_by
    assert {m.next_attempt_at for m in messages} == {
        starts - timedelta(minutes=1440),
        starts - timedelta(minutes=60),
    }
    family = messages[0]
    assert family.template_data == {"thing1": "亲情电话", "time2": "11月25日 12:00", "thing3": "留守儿童之家"}
    assert (
        family.fallback and family.fallback[0]["channel"] == "sms" and family.fallback[0]["address"] == "+8613900139001"
    )
    for m in messages:
        assert "刘小明" not in m.body and "刘小明" not in str(m.template_data) and "刘小明" not in (m.wechat_page or "")
    assert "您班一名学生" in messages[1].body and "0739-1234567" in family.body

    # A call booked under a day ahead gets only the hour's reminder; booking the same call again queues nothing.
    r = await client.post(
        "/family-calls",
        json={"child_id": str(world["family1_child"]), "line_id": room, "starts_at": sh(TUE, "18:00")},
        headers=world.headers("family1"),
    )
    assert [m.dedupe_key.split(":", 2)[2] for m in await reminders(app, r.json()["id"])] == ["60:family", "60:teacher"]


async def test_a_reminder_reaches_wechat_on_the_family_call_template_with_no_child_in_its_fields(
    client, world, app, clock, settings, fake
):
    """The worker sends the family's reminder as a subscribe message of the family-call template (its own
    fields: line, time, room), not the emergency one; the teacher's goes by SMS. Neither names the child."""
    assert settings.wechat_family_call_template_id != settings.wechat_subscribe_template_id
    phone, _ = await family_world(client, world, app, clock)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        (await s.get_one(Account, world["teacher1"])).phone = "13700137011"
        (await s.get_one(Account, world["family1"])).wechat_openid = "o-family-1"
    wed = TUE + timedelta(days=1)
    r = await client.post(
        "/family-calls",
        json={"child_id": str(world["family1_child"]), "line_id": phone, "starts_at": sh(wed, "12:00")},
        headers=world.headers("family1"),
    )
    assert r.status_code == 201, r.text
    clock.set(datetime.combine(TUE, clock_time(12, 1), SHANGHAI))  # the day-ahead reminders are due, not the hour's
    worker = Worker(app.state.engine, http=app.state.http, settings=settings, clock=clock)
    await worker.run_once()
    async with httpx.AsyncClient() as http:
        outbox = (await http.get(f"{fake.base_url}/_fake/outbox")).json()
    [wechat] = outbox["wechat_messages"]
    assert wechat["touser"] == "o-family-1"
    assert wechat["template_id"] == settings.wechat_family_call_template_id
    assert wechat["data"] == {
        "thing1": {"value": "亲情电话"},
        "time2": {"value": "11月25日 12:00"},
        "thing3": {"value": "留守儿童之家"},
    }
    assert wechat["page"] == f"pages/family-call/detail?id={r.json()['id']}"
    [teacher_sms] = outbox["sms"]
    assert teacher_sms["to"] == "+8613700137011" and "您班一名学生" in teacher_sms["text"]
    assert "刘小明" not in str(outbox)


async def test_reminders_are_sent_exactly_once_while_workers_are_killed_mid_send(
    client, world, app, clock, settings, database_url: str, tmp_path: Path
):
    """Calls booked on the frozen Tuesday are days past by the real clock the workers run on: every reminder is
    due at once. Providers answer a second late, so a kill often lands between the send and its record."""
    phone, room = await family_world(client, world, app, clock)
    families = await many_families(app, world, clock.now(), 24)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        (await s.get_one(Account, world["teacher1"])).phone = "13700137011"
    # Each family books one call this week and next (two leads × two recipients each: 4 reminders a call).
    starts = [sh(TUE + timedelta(days=d), t) for d in (1, 2, 3) for t in ("12:00", "12:40")]
    lines = (phone, room)
    requests = [
        (
            "/family-calls",
            {"child_id": child, "line_id": lines[i % 2], "starts_at": starts[(i // 2) % len(starts)]},
            {"Authorization": f"Bearer {token}"},
        )
        for i, (child, token) in enumerate(families[:12])
    ]
    results = [await client.post(path, json=body, headers=headers) for path, body, headers in requests]
    assert sum(r.status_code == 201 for r in results) >= 10, [r.text for r in results if r.status_code != 201]
    planned = await reminders(app)
    keys = {m.dedupe_key for m in planned}
    assert len(keys) == len(planned) >= 40

    fake = FakeProviderServer(callback_secret=SECRET)
    fake.start()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LIUSHOU_ENVIRONMENT": "test",
        "LIUSHOU_CALLBACK_SECRET": SECRET,
        "LIUSHOU_SMS_BASE_URL": fake.sms_base_url,
        "LIUSHOU_VOICE_BASE_URL": fake.voice_base_url,
        "LIUSHOU_WECHAT_BASE_URL": fake.wechat_base_url,
        "LIUSHOU_ESCALATION_POLL_SECONDS": "0.2",
        "LIUSHOU_ESCALATION_LEASE_SECONDS": "6",
        "LIUSHOU_HTTP_TIMEOUT_SECONDS": "3",
        "LIUSHOU_DB_POOL_SIZE": "3",
    }
    numbers = sorted({m.address for m in planned if m.channel == "sms"})
    await slow_answers({"sms": fake.base_url, "voice": fake.base_url}, numbers, 0.8)
    workers = Workers(2, env, tmp_path)
    engine = make_engine(database_url, settings)
    rng = random.Random()
    try:
        workers.start()
        began = time.monotonic()
        await workers.chaos(engine, until=began + 40, every=(0.5, 1.5), rng=rng, kills=4)
        assert workers.kills >= 2
        workers.revive()
        while time.monotonic() < began + 120:
            states = Counter(m.status for m in await reminders(app))
            if all(state in FINAL for state in states):
                break
            await asyncio.sleep(1)
        async with httpx.AsyncClient() as http:
            outbox = (await http.get(f"{fake.base_url}/_fake/outbox")).json()
    finally:
        workers.stop()
        fake.stop()
        await engine.dispose()
    messages = await reminders(app)
    assert {m.status for m in messages} <= {"sent", "delivered"}, Counter(m.status for m in messages)
    # Every reminder planned was sent, by exactly one message, and the provider accepted each once.
    assert {m.dedupe_key for m in messages} == keys
    accepted = Counter(sms["idempotency_key"] for sms in outbox["sms"])
    # The workers run on the real clock, so the week's care digest may go out to the teacher too: every SMS the
    # provider took is one of our messages, the reminders all of them, and any other the digest's.
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        rows = await s.execute(sa.select(OutboundMessage.idempotency_key, OutboundMessage.topic))
        topic_of = {key: topic for key, topic in rows}
    assert set(accepted) <= set(topic_of)
    assert {m.idempotency_key for m in messages} == {k for k in accepted if topic_of[k] == "family_call"}
    assert {topic_of[k] for k in accepted} <= {"family_call", "care_digest"}
    assert max(accepted.values()) == 1, [k for k, n in accepted.items() if n > 1]
    assert not any("学生0" in str(sms) or "学生1" in str(sms) for sms in outbox["sms"])  # no child's name
