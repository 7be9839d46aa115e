"""Acknowledgement by every route — SMS reply code, keypad, link, mini-program, a staff member's call — and
the signed provider callbacks that carry them. Only an acknowledgement is told."""

import json
import re
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import sqlalchemy as sa

from api.channels.base import SIGNATURE_HEADER, sign_callback
from api.db import scoped_session
from api.models.accounts import Account, Role
from api.models.notifications import (
    MessageStatus,
    OutboundMessage,
)
from api.scoping import SYSTEM
from api.settings import DEV_CALLBACK_SECRET
from tests.test_escalation_support import (
    FATHER,
    GRANDMA,
    GRANDPA,
    Kit,
    attempts,
    e164,
    escalation_settings,
    kinds,
)


@pytest.fixture
def settings():
    return escalation_settings()


def voice_event(key: str, type_: str = "voice.dtmf", digits: str | None = "1", event_id: str | None = None) -> bytes:
    event = {
        "event_id": event_id or f"evt_{uuid.uuid4().hex[:12]}",
        "type": type_,
        "occurred_at": datetime.now(UTC).isoformat(),
        "call_id": "call_test",
        "idempotency_key": key,
        "to": e164(GRANDMA),
    }
    if digits is not None:
        event["digits"] = digits
    return json.dumps(event).encode()


def signed(body: bytes, *, secret: str = DEV_CALLBACK_SECRET, at: float | None = None) -> dict[str, str]:
    return {"Content-Type": "application/json", SIGNATURE_HEADER: sign_callback(secret, body, at or time.time())}


async def grandma_sms(kit: Kit) -> str:
    [text] = [m["text"] for m in (await kit.outbox())["sms"] if m["to"] == e164(GRANDMA)]
    return text


async def only_sms_for_grandma(kit: Kit) -> dict:
    """The grandmother does not pick up, so she gets an SMS with a reply code and a link."""
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="no_answer")
    await kit.script("voice/numbers", number=e164(GRANDPA), outcome="no_answer")
    incident = await kit.report(family.child_id)
    await kit.settle()
    return incident


async def message_keys(kit: Kit, channel: str) -> list[str]:
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        rows = await s.execute(
            sa.select(OutboundMessage.idempotency_key)
            .where(OutboundMessage.channel == channel)
            .order_by(OutboundMessage.created_at)
        )
        return list(rows.scalars())


# ---- signatures -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "code", "status"),
    [
        ({}, "callback_signature_invalid", 401),
        ({SIGNATURE_HEADER: "t=1,v1=00"}, "callback_signature_invalid", 401),
    ],
    ids=["unsigned", "garbage signature"],
)
async def test_an_unsigned_callback_is_refused(kit, headers, code, status):
    r = await kit.client.post("/inbound/voice", content=voice_event("liushou-x"), headers=headers)
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)


async def test_a_callback_signed_with_another_secret_or_replayed_later_is_refused(kit):
    incident = await only_sms_for_grandma(kit)
    [key] = (await message_keys(kit, "voice"))[:1]
    body = voice_event(key)
    for headers in (signed(body, secret="not-ours"), signed(body, at=time.time() - 600)):
        r = await kit.client.post("/inbound/voice", content=body, headers=headers)
        assert r.status_code == 401 and r.json()["error"]["code"] == "callback_signature_invalid"
    assert (await kit.party(incident["id"], "entrusted_guardian"))["status"] == "notifying"


async def test_malformed_or_misdirected_events_get_a_clear_422(kit):
    body = b'{"type": "sms.delivered"}'
    r = await kit.client.post("/inbound/sms", content=body, headers=signed(body))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "callback_invalid")
    body = voice_event("liushou-x")
    r = await kit.client.post("/inbound/sms", content=body, headers=signed(body))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "callback_wrong_endpoint")


async def test_a_callback_delivered_twice_is_applied_once(kit):
    incident = await only_sms_for_grandma(kit)
    key = (await message_keys(kit, "voice"))[0]
    body = voice_event(key, event_id="evt_same")
    first = await kit.client.post("/inbound/voice", content=body, headers=signed(body))
    again = await kit.client.post("/inbound/voice", content=body, headers=signed(body))
    assert (first.json(), again.json()) == ({"status": "acknowledged"}, {"status": "duplicate"})
    assert len(kinds(await kit.timeline(incident["id"]), "acknowledged")) == 1


# ---- SMS replies ----------------------------------------------------------------------------------------


async def test_an_sms_reply_with_the_code_acknowledges(kit):
    incident = await only_sms_for_grandma(kit)
    code = re.search(r"回复(\d{4})确认收到", await grandma_sms(kit)).group(1)
    r = await kit.http.post(
        f"{kit.fake.base_url}/_fake/sms/reply", json={"from": e164(GRANDMA), "text": f"收到 {code}"}
    )
    assert r.status_code == 200
    await kit.settle()
    party = await kit.party(incident["id"], "entrusted_guardian")
    assert (party["status"], party["told_route"]) == ("told", "sms_reply")


async def test_an_sms_reply_without_the_right_code_is_not_told_but_shows_on_the_timeline(kit):
    incident = await only_sms_for_grandma(kit)
    code = re.search(r"回复(\d{4})确认收到", await grandma_sms(kit)).group(1)
    wrong = f"{(int(code) + 1) % 10000:04d}"
    for text in ("收到", f"收到{wrong}"):
        await kit.http.post(f"{kit.fake.base_url}/_fake/sms/reply", json={"from": e164(GRANDMA), "text": text})
    await kit.settle()
    assert (await kit.party(incident["id"], "entrusted_guardian"))["status"] == "notifying"
    replies = kinds(await kit.timeline(incident["id"]), "reply_received")
    assert [(e["detail"]["text"], e["detail"]["matched"]) for e in replies] == [
        ("收到", False),
        (f"收到{wrong}", False),
    ]


# ---- voice -----------------------------------------------------------------------------------------------


async def test_pressing_another_key_is_not_told(kit):
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="answered", press="2")
    incident = await kit.report(family.child_id)
    await kit.settle()
    assert (await kit.party(incident["id"], "entrusted_guardian"))["status"] == "notifying"
    # The call ended without a 1: no waiting for an acknowledgement that cannot come, an SMS at once.
    assert [a[0] for a in await attempts(kit, GRANDMA)] == ["voice", "sms"]
    assert kinds(await kit.timeline(incident["id"]), "keys_pressed")[0]["detail"]["digits"] == "2"


async def test_a_bounced_sms_moves_on_to_the_next_contact_without_waiting(kit):
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="no_answer")
    await kit.script("sms/numbers", number=e164(GRANDMA), receipt="failed")
    incident = await kit.report(family.child_id)
    await kit.settle()
    assert [a[0] for a in await attempts(kit, GRANDPA)] == ["voice"]
    assert (await kit.party(incident["id"], "entrusted_guardian"))["status"] == "told"


async def test_a_receipt_that_arrives_before_the_send_answer_is_kept(kit):
    family = await kit.family([])
    await kit.report(family.child_id)
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        message = OutboundMessage(
            incident_id=(await s.execute(sa.text("SELECT id FROM incident"))).scalar_one(),
            purpose="leader_alert",
            channel="sms",
            address=e164(GRANDMA),
            recipient_label="校领导",
            status=MessageStatus.pending,
            idempotency_key="liushou-early-receipt",
            body="【留守儿童应急】测试",
            max_attempts=3,
            retry_backoff_seconds=15,
            ack_wait_seconds=0,
            next_attempt_at=kit.clock.now(),
            created_at=kit.clock.now(),
        )
        s.add(message)
    dispatcher = kit.worker.dispatcher
    [claimed] = [c for c in await dispatcher.claim(50) if c.idempotency_key == "liushou-early-receipt"]
    outcome = await dispatcher.send(claimed)
    await kit.relay.settle()
    await kit.forward()  # the provider's "delivered" lands while we still hold the send
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        assert (await s.get(OutboundMessage, message.id)).status == MessageStatus.delivered
    await dispatcher.record([(claimed, outcome)])
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        row = await s.get(OutboundMessage, message.id)
        assert row.status == MessageStatus.delivered
        assert row.provider_message_id == outcome.provider_message_id and row.sent_at is not None


# ---- the link --------------------------------------------------------------------------------------------


async def test_the_link_page_does_not_acknowledge_but_confirming_it_does_once(kit):
    incident = await only_sms_for_grandma(kit)
    link = re.search(r"(/ack/[A-Za-z0-9_\-]+)", await grandma_sms(kit)).group(1)
    page = await kit.client.get(link)
    assert page.status_code == 200 and "确认收到" in page.text and incident["case_code"] in page.text
    assert "刘小明" not in page.text
    assert (await kit.party(incident["id"], "entrusted_guardian"))["status"] == "notifying"
    first = await kit.client.post(link)
    assert first.status_code == 200 and "已确认收到" in first.text
    again = await kit.client.post(link, headers={"Accept": "application/json"})
    assert again.status_code == 200 and again.json()["acknowledged"] is True
    party = await kit.party(incident["id"], "entrusted_guardian")
    assert (party["status"], party["told_route"]) == ("told", "link")
    assert len(kinds(await kit.timeline(incident["id"]), "acknowledged")) == 1


@pytest.mark.parametrize("token", ["not-a-token", "A" * 38, "A" * 200])
async def test_an_unknown_or_forged_link_is_not_found(kit, token):
    page = await kit.client.get(f"/ack/{token}")
    assert page.status_code == 404 and "链接无效" in page.text
    r = await kit.client.post(f"/ack/{token}", headers={"Accept": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "ack_link_invalid")


# ---- the mini-program ----------------------------------------------------------------------------------


async def test_the_father_acknowledges_in_the_mini_program(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    await kit.settle()
    headers = await kit.headers(family.accounts["father"])
    r = await kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=headers)
    assert r.status_code == 200, r.text
    [ack] = r.json()
    assert (ack["step_no"], ack["route"], ack["contact_label"]) == (2, "mini_program", "父亲")
    again = await kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=headers)
    assert [a["id"] for a in again.json()] == [ack["id"]]
    step2 = await kit.step(incident["id"], 2)
    assert step2["status"] == "told" and step2["deadline_met"] is True
    # Told: the SMS that was waiting for the WeChat to go unanswered is never sent.
    kit.advance(minutes=10)
    await kit.settle()
    assert await attempts(kit, FATHER) == []


async def test_a_family_not_on_the_incident_cannot_acknowledge_it(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        stranger = Account(role=Role.family, display_name="别人家长", wechat_openid="o-stranger")
        s.add(stranger)
    r = await kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=await kit.headers(stranger.id))
    assert (r.status_code, r.json()["error"]["code"]) == (404, "incident_not_found")


async def test_an_official_acknowledges_for_their_own_area_only(kit):
    family = await kit.family()
    await kit.duty(bureau=None)
    incident = await kit.report(family.child_id)
    for outsider in ("other_bureau", "official2"):
        r = await kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=await kit.headers(outsider))
        assert r.status_code == 404, outsider
    r = await kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=await kit.headers("bureau"))
    assert [a["contact_label"] for a in r.json()] == ["青山县教育局"]
    step3 = await kit.step(incident["id"], 3)
    assert [p["status"] for p in step3["parties"]] == ["told", "notifying"]
    r = await kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=await kit.headers("teacher1"))
    assert r.status_code == 403


# ---- a staff member's call -------------------------------------------------------------------------------


async def test_a_call_made_by_hand_records_who_and_when(kit):
    incident = await only_sms_for_grandma(kit)
    party = await kit.party(incident["id"], "entrusted_guardian")
    called = kit.clock.now() - timedelta(minutes=1)
    kit.advance(minutes=2)
    r = await kit.client.post(
        f"/incidents/{incident['id']}/calls",
        json={
            "party_id": party["id"],
            "contact_label": "邻居转告祖母",
            "called_at": called.isoformat(),
            "note": "祖母已知悉",
        },
        headers=await kit.headers("teacher1"),
    )
    assert r.status_code == 201, r.text
    ack = r.json()
    assert (ack["route"], ack["contact_label"], ack["recorded_by_id"]) == (
        "staff_call",
        "邻居转告祖母",
        str(kit.world["teacher1"]),
    )
    step1 = await kit.step(incident["id"], 1)
    assert step1["told_at"].replace("Z", "+00:00") == called.isoformat()


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"called_at": "2030-01-01T00:00:00+08:00", "contact_label": "祖母"}, "call_in_future"),
        ({"called_at": "2026-11-23T00:00:00+08:00", "contact_label": "祖母"}, "call_before_incident"),
        ({"called_at": "2026-11-24T10:00:00+08:00"}, "call_contact_missing"),
        ({"called_at": "2026-11-24T10:00:00", "contact_label": "祖母"}, "validation_error"),
    ],
    ids=["future", "before the incident", "who is missing", "no time zone"],
)
async def test_a_call_needs_a_believable_time_and_a_person(kit, body, code):
    incident = await only_sms_for_grandma(kit)
    party = await kit.party(incident["id"], "entrusted_guardian")
    r = await kit.client.post(
        f"/incidents/{incident['id']}/calls",
        json={"party_id": party["id"], **body},
        headers=await kit.headers("teacher1"),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (422, code)
