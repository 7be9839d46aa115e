"""The outbox as another domain uses it (a family-call reminder): enqueued once per dedupe key, not sent
before its time, falling back to the next way when one fails, its receipts applied, no personal data on
WeChat, and seen only by the admin of its school."""

import uuid
from datetime import timedelta

import pytest
import sqlalchemy as sa

from api.db import scoped_session
from api.models.accounts import Role
from api.models.incidents import IncidentEvent
from api.models.notifications import Channel, MessageStatus, OutboundMessage, Topic
from api.scoping import SYSTEM, Principal
from api.services.notifications.outbox import Enqueued, Outgoing, PrivateDataError, Route, enqueue
from tests.test_escalation_support import FATHER, MOTHER, Kit, e164, escalation_settings


@pytest.fixture
def settings():
    return escalation_settings()


CALL_ID = uuid.UUID("00000000-0000-4000-8000-00000000ca11")


def reminder(kit: Kit, routes: list[Route], *, key: str = "call-reminder-1", **extra: object) -> Outgoing:
    fields: dict[str, object] = {
        "topic": Topic.family_call,
        "subject_id": CALL_ID,
        "school_id": kit.world["school1"],
        "recipient_label": "父亲",
        "routes": routes,
        "dedupe_key": key,
        "not_before": kit.clock.now(),
        "private_words": ("刘小明",),
        **extra,
    }
    return Outgoing(**fields)  # type: ignore[arg-type]


SMS = Route(Channel.sms, e164(FATHER), "【石桥镇中心小学】今晚8点是孩子的亲情通话时间，请留意来电。")
VOICE = Route(Channel.voice, e164(FATHER), "您好，今晚8点是孩子的亲情通话时间。")


async def queue(kit: Kit, outgoing: Outgoing) -> Enqueued:
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        return await enqueue(s, outgoing, now=kit.clock.now())


async def rows(kit: Kit, principal: Principal | None = None) -> list[OutboundMessage]:
    async with scoped_session(kit.app.state.sessionmaker, principal or SYSTEM) as s:
        stmt = sa.select(OutboundMessage).order_by(OutboundMessage.created_at, OutboundMessage.channel)
        return list((await s.execute(stmt)).scalars())


async def timeline_lines(kit: Kit) -> int:
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        return int((await s.execute(sa.select(sa.func.count()).select_from(IncidentEvent))).scalar_one())


async def test_the_same_dedupe_key_queues_one_message_and_it_goes_out_once(kit):
    first = await queue(kit, reminder(kit, [SMS]))
    again = await queue(kit, reminder(kit, [SMS, VOICE]))
    assert first.created and not again.created and again.message_id == first.message_id
    await kit.settle()
    assert await kit.sent_to(FATHER) == [("sms", SMS.body)]
    [row] = await rows(kit)
    assert (row.topic, row.subject_id, row.incident_id, row.status) == (
        Topic.family_call,
        CALL_ID,
        None,
        MessageStatus.delivered,  # the fake's receipt came back through /inbound/sms
    )
    assert row.delivered_at is not None
    assert await timeline_lines(kit) == 0  # no incident: nothing written on any timeline


async def test_a_message_is_not_sent_before_its_time(kit):
    await queue(kit, reminder(kit, [SMS], not_before=kit.clock.now() + timedelta(minutes=30)))
    await kit.settle()
    assert await kit.sent_to(FATHER) == []
    kit.advance(minutes=30)
    await kit.settle()
    assert await kit.sent_to(FATHER) == [("sms", SMS.body)]


async def test_a_way_that_fails_falls_back_to_the_next(kit):
    await kit.script("sms/numbers", number=e164(FATHER), permanent_error="invalid_number")
    await queue(kit, reminder(kit, [SMS, VOICE]))
    await kit.settle()
    assert await kit.sent_to(FATHER) == [("voice", VOICE.body)]
    sms, voice = await rows(kit)
    assert (sms.channel, sms.status, sms.error_code) == (Channel.sms, MessageStatus.failed, "invalid_number")
    assert (voice.channel, voice.status, voice.fallback) == (Channel.voice, MessageStatus.delivered, None)
    assert voice.dedupe_key == "call-reminder-1~0"


async def test_a_bounced_sms_falls_back_once_its_receipt_comes(kit):
    await kit.script("sms/numbers", number=e164(MOTHER), receipt="failed")
    other = Route(Channel.sms, e164(MOTHER), "提醒")
    await queue(kit, reminder(kit, [other, VOICE]))
    await kit.settle()
    assert await kit.sent_to(MOTHER) == [("sms", "提醒")]
    assert await kit.sent_to(FATHER) == [("voice", VOICE.body)]
    bounced, voice = await rows(kit)
    assert bounced.status == MessageStatus.failed and voice.status == MessageStatus.delivered


async def test_wechat_fields_never_carry_a_private_word(kit):
    fields = {"thing1": "刘小明的亲情通话", "time2": "2026-12-01 20:00"}
    named = Route(Channel.wechat, "o-father", "微信订阅消息", fields)
    with pytest.raises(PrivateDataError):
        await queue(kit, reminder(kit, [named]))
    in_page = Route(Channel.wechat, "o-father", "微信", {"thing1": "亲情通话"}, wechat_page="pages/call?name=刘小明")
    with pytest.raises(PrivateDataError):
        await queue(kit, reminder(kit, [SMS, in_page]))
    assert await rows(kit) == []


async def test_a_reminder_is_seen_by_its_school_admin_only(kit):
    await queue(kit, reminder(kit, [SMS]))
    w = kit.world

    def staff(who: str, role: Role, school: str) -> Principal:
        return Principal(account_id=w[who], role=role, county_id=w["county"], school_id=w[school])

    assert len(await rows(kit, staff("admin1", Role.school_admin, "school1"))) == 1
    assert await rows(kit, staff("admin2", Role.school_admin, "school2")) == []
    assert await rows(kit, staff("teacher1", Role.teacher, "school1")) == []
    assert await rows(kit, Principal(account_id=w["bureau"], role=Role.county_bureau, county_id=w["county"])) == []
