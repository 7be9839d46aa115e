"""What "told" can be trusted to mean: the moment the person answered (not when the provider's callback
landed), an SMS reply code that names exactly one open party of the number, no acknowledgement of a closed
incident, and acknowledgement links signed with keys of their own."""

import asyncio
import itertools
import json
import re
import time
import uuid
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from api import ack_links
from api.channels.base import SIGNATURE_HEADER, sign_callback
from api.db import scoped_session
from api.models.escalation import (
    Acknowledgement,
    AckRoute,
    ReplyCode,
)
from api.models.guardians import GuardianRole
from api.models.notifications import OutboundMessage
from api.scoping import SYSTEM
from api.services.emergency import texts as messages
from api.settings import DEV_ACK_LINK_KEYS, DEV_CALLBACK_SECRET, Environment, Settings
from tests.test_escalation_support import FATHER, GRANDMA, GRANDPA, Kit, e164, escalation_settings, kinds


@pytest.fixture
def settings():
    return escalation_settings()


def iso(moment: str) -> datetime:
    return datetime.fromisoformat(moment.replace("Z", "+00:00"))


def signed(body: bytes) -> dict[str, str]:
    return {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign_callback(DEV_CALLBACK_SECRET, body, time.time()),
    }


async def post_event(kit: Kit, kind: str, event: dict[str, Any]) -> dict[str, Any]:
    body = json.dumps({"event_id": f"evt_{uuid.uuid4().hex[:12]}", **event}).encode()
    r = await kit.client.post(f"/inbound/{kind}", content=body, headers=signed(body))
    assert r.status_code == 200, r.text
    answer: dict[str, Any] = r.json()
    return answer


async def rows(kit: Kit, model: Any, *where: Any) -> list[Any]:
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        return list((await s.execute(sa.select(model).where(*where))).scalars())


async def sms_to(kit: Kit, national: str) -> list[str]:
    return [m["text"] for m in (await kit.outbox())["sms"] if m["to"] == e164(national)]


def reply_code(text: str) -> str:
    found = re.search(r"回复(\d{4,8})确认收到", text)
    assert found, text
    return found.group(1)


async def reply(kit: Kit, national: str, text: str) -> None:
    """The person texts back; the provider posts it to our callback (held by the relay until forwarded)."""
    r = await kit.http.post(f"{kit.fake.base_url}/_fake/sms/reply", json={"from": e164(national), "text": text})
    assert r.status_code == 200, r.text


async def grandma_gets_sms(kit: Kit, family_members: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A child whose grandmother (and grandfather) do not pick up: the grandmother gets an SMS with a code."""
    family = await kit.family(family_members)
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="no_answer")
    await kit.script("voice/numbers", number=e164(GRANDPA), outcome="no_answer")
    incident = await kit.report(family.child_id)
    await kit.settle()
    return incident


# ---- told at the moment the person answered ------------------------------------------------------------


async def test_a_keypress_before_the_deadline_whose_callback_lands_after_it_meets_the_deadline(kit):
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDPA), outcome="no_answer")
    incident = await kit.report(family.child_id)
    pressed = kit.clock.now()
    await kit.worker.run_once()  # the call goes out; the grandmother picks up and presses 1 at once
    await kit.relay.settle()
    # …but the provider's callbacks are stuck in a burst for 35 minutes.
    held = [c for c in kit.relay.received if json.loads(c[2]).get("to") == e164(GRANDMA)]
    assert [json.loads(c[2])["type"] for c in held] == ["voice.answered", "voice.dtmf", "voice.completed"]
    kit.relay.received[:] = [c for c in kit.relay.received if c not in held]
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="no_answer")  # later calls go unanswered
    for _ in range(7):
        kit.advance(minutes=5)
        await kit.settle()
    step = await kit.step(incident["id"], 1)
    assert step["status"] == "notifying" and step["breached_at"] is not None  # as far as we knew, late
    received = kit.clock.now()

    kit.relay.received.extend(held)
    answers = await kit.forward()
    assert {"status": "acknowledged"} in answers

    step = await kit.step(incident["id"], 1)
    assert step["status"] == "told"
    assert iso(step["told_at"]) == pressed
    assert step["deadline_met"] is True
    party = await kit.party(incident["id"], "entrusted_guardian")
    [ack] = await rows(kit, Acknowledgement, Acknowledgement.party_id == uuid.UUID(party["id"]))
    assert (ack.route, ack.acknowledged_at, ack.recorded_at) == (AckRoute.voice_dtmf, pressed, received)
    timeline = await kit.timeline(incident["id"])
    [line] = [e for e in kinds(timeline, "acknowledged") if e["step_no"] == 1]
    assert iso(line["at"]) == received
    assert iso(line["detail"]["acknowledged_at"]) == pressed and iso(line["detail"]["received_at"]) == received
    [told] = [e for e in kinds(timeline, "step_told") if e["step_no"] == 1]
    assert told["detail"]["deadline_met"] is True


async def test_an_sms_reply_texted_in_time_counts_from_when_it_was_texted(kit):
    incident = await grandma_gets_sms(kit)
    [text] = await sms_to(kit, GRANDMA)
    kit.advance(minutes=2)
    texted = kit.clock.now()
    await reply(kit, GRANDMA, f"收到{reply_code(text)}")  # held by the relay: the callback is late
    kit.advance(minutes=40)
    await kit.forward()
    step = await kit.step(incident["id"], 1)
    assert (step["status"], iso(step["told_at"]), step["deadline_met"]) == ("told", texted, True)
    [ack] = await rows(kit, Acknowledgement, Acknowledgement.route == AckRoute.sms_reply)
    assert (ack.acknowledged_at, ack.recorded_at) == (texted, kit.clock.now())


@pytest.mark.parametrize("provider_says", ["an hour ahead", "an hour before the call"])
async def test_a_provider_time_outside_the_call_is_clamped(kit, provider_says):
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="silent")
    incident = await kit.report(family.child_id)
    await kit.settle()
    [call] = await rows(kit, OutboundMessage, OutboundMessage.address == e164(GRANDMA))
    assert call.sent_at == kit.clock.now()
    kit.advance(minutes=3)
    if provider_says == "an hour ahead":
        occurred, expected = kit.clock.now() + timedelta(hours=1), kit.clock.now()
    else:
        occurred, expected = call.sent_at - timedelta(hours=1), call.sent_at
    answer = await post_event(
        kit,
        "voice",
        {
            "type": "voice.dtmf",
            "occurred_at": occurred.isoformat(),
            "call_id": call.provider_message_id,
            "idempotency_key": call.idempotency_key,
            "to": e164(GRANDMA),
            "digits": "1",
        },
    )
    assert answer == {"status": "acknowledged"}
    party = await kit.party(incident["id"], "entrusted_guardian")
    assert iso(party["told_at"]) == expected
    [line] = kinds(await kit.timeline(incident["id"]), "acknowledged")
    assert iso(line["detail"]["provider_time"]) == occurred  # what the provider said is kept beside it
    assert iso(line["detail"]["acknowledged_at"]) == expected


# ---- reply codes ---------------------------------------------------------------------------------------


# A family whose father works away without WeChat: every report texts him at once, in the report's transaction.
GRANDMA_AND_FATHER = [
    {"key": "grandma", "role": GuardianRole.entrusted_guardian, "relation": "祖母", "name": "王桂英", "phone": GRANDMA},
    {"key": "father", "role": GuardianRole.parent_away, "relation": "父亲", "name": "刘建军", "phone": FATHER},
]


def scripted_draws(monkeypatch: pytest.MonkeyPatch, four_digit: Iterable[str]) -> None:
    """Bad luck on demand: 4-digit draws come from ``four_digit`` in turn (then real draws, if it ends):
    a list, ``itertools.repeat("4321")`` for always the same, ``itertools.cycle(...)`` for a list over and over."""
    real = messages.new_reply_code
    queue = iter(four_digit)

    def draw(digits: int = 4) -> str:
        if digits != 4:
            return real(digits)
        return next(queue, None) or real(digits)

    monkeypatch.setattr(messages, "new_reply_code", draw)


async def test_sibling_incidents_texted_to_one_grandmother_get_different_codes(kit, monkeypatch):
    scripted_draws(monkeypatch, ["4321", "4321", "8765"])
    first = await grandma_gets_sms(kit)
    second = await grandma_gets_sms(kit)  # her other grandchild, the same afternoon
    texts = await sms_to(kit, GRANDMA)
    assert [reply_code(t) for t in texts] == ["4321", "8765"]

    await reply(kit, GRANDMA, "收到8765")
    await kit.settle()
    assert (await kit.party(second["id"], "entrusted_guardian"))["status"] == "told"
    assert (await kit.party(first["id"], "entrusted_guardian"))["status"] == "notifying"
    await reply(kit, GRANDMA, "4321 收到")
    await kit.settle()
    assert (await kit.party(first["id"], "entrusted_guardian"))["status"] == "told"


async def test_concurrent_reports_to_one_number_never_share_a_code(kit, monkeypatch):
    members = GRANDMA_AND_FATHER
    families = [await kit.family(members) for _ in range(6)]
    scripted_draws(monkeypatch, itertools.repeat("4321"))  # every 4-digit draw is 4321
    await asyncio.gather(*(kit.report(f.child_id) for f in families))
    texted = await rows(kit, OutboundMessage, OutboundMessage.address == e164(FATHER))
    codes = [m.reply_code for m in texted]
    assert len(codes) == 6 and len(set(codes)) == 6, codes
    assert all(f"回复{m.reply_code}确认收到" in m.body for m in texted)
    assert codes.count("4321") == 1  # the others collided and got a longer code
    held = await rows(kit, ReplyCode, ReplyCode.address == e164(FATHER), ReplyCode.released_at.is_(None))
    assert sorted(c.code for c in held) == sorted(codes)


async def test_a_reports_first_draw_takes_each_partys_first_free_candidate(kit, monkeypatch):
    # The father is texted at the report, in its own statement, from several candidate codes per party: the
    # first one (in the order drawn) that no open code on his number holds.
    members = GRANDMA_AND_FATHER

    async def fathers_new_code(candidates: list[str]) -> str:
        family = await kit.family(members)
        scripted_draws(monkeypatch, itertools.cycle(candidates))  # each party's candidates in turn
        before = {m.id for m in await rows(kit, OutboundMessage, OutboundMessage.address == e164(FATHER))}
        await kit.report(family.child_id)
        [new] = [
            m for m in await rows(kit, OutboundMessage, OutboundMessage.address == e164(FATHER)) if m.id not in before
        ]
        assert new.body.count(f"回复{new.reply_code}确认收到") == 1, new.body  # the text asks for the code held
        return new.reply_code

    assert await fathers_new_code(["4321"]) == "4321"
    assert await fathers_new_code(["4321", "8765"]) == "8765"  # the first candidate is his open code already
    assert await fathers_new_code(["7777", "1234"]) == "7777"  # both free: the first drawn
    assert await fathers_new_code(["4321", "8765", "7777", "5555"]) == "5555"
    held = await rows(kit, ReplyCode, ReplyCode.address == e164(FATHER), ReplyCode.released_at.is_(None))
    assert sorted(c.code for c in held) == ["4321", "5555", "7777", "8765"]


async def test_a_reply_naming_two_open_cases_tells_nobody_and_is_answered(kit):
    first = await grandma_gets_sms(kit)
    second = await grandma_gets_sms(kit)
    codes = [reply_code(t) for t in await sms_to(kit, GRANDMA)]
    await reply(kit, GRANDMA, f"收到 {codes[0]} {codes[1]}")
    answers = await kit.forward()
    assert answers == [{"status": "ambiguous_reply"}]
    await kit.settle()
    for incident in (first, second):
        assert (await kit.party(incident["id"], "entrusted_guardian"))["status"] == "notifying"
        [line] = kinds(await kit.timeline(incident["id"]), "reply_received")
        assert (line["detail"]["matched"], line["detail"]["reason"]) == (False, "ambiguous")
    assert await rows(kit, Acknowledgement) == []
    answer = (await sms_to(kit, GRANDMA))[-1]
    assert "多个确认码" in answer and codes[0] in answer and codes[1] in answer
    assert "刘小明" not in answer


async def test_a_stale_or_unknown_code_tells_nobody_and_is_answered(kit):
    first = await grandma_gets_sms(kit)
    [first_text] = await sms_to(kit, GRANDMA)
    link = re.search(r"(/ack/[A-Za-z0-9_\-]+)", first_text).group(1)
    assert (await kit.client.post(link)).status_code == 200  # the first case is acknowledged by its link
    second = await grandma_gets_sms(kit)
    stale, open_code = reply_code(first_text), reply_code((await sms_to(kit, GRANDMA))[-1])

    await reply(kit, GRANDMA, f"{stale}收到")
    assert await kit.forward() == [{"status": "reply_not_matched"}]
    await kit.settle()
    assert (await kit.party(second["id"], "entrusted_guardian"))["status"] == "notifying"
    assert len(await rows(kit, Acknowledgement)) == 1  # only the link's
    [line] = kinds(await kit.timeline(first["id"]), "reply_received")
    assert line["detail"]["reason"] == "no_longer_open"
    answer = (await sms_to(kit, GRANDMA))[-1]
    assert "已确认或事件已结案" in answer and open_code in answer

    unknown = next(c for c in ("1111", "2222", "3333") if c not in (stale, open_code))
    await reply(kit, GRANDMA, f"收到{unknown}")
    assert await kit.forward() == [{"status": "reply_not_matched"}]
    await kit.settle()
    assert (await kit.party(second["id"], "entrusted_guardian"))["status"] == "notifying"
    answer = (await sms_to(kit, GRANDMA))[-1]
    assert "未能识别" in answer and open_code in answer

    # The same unhelpful reply again within minutes: one answer is enough (no ping-pong with an auto-reply).
    await reply(kit, GRANDMA, f"收到{unknown}")
    await kit.forward()
    await kit.settle()
    assert sum("未能识别" in t for t in await sms_to(kit, GRANDMA)) == 1


async def test_a_reply_from_a_number_we_never_texted_is_not_answered(kit):
    await grandma_gets_sms(kit)
    before = len((await kit.outbox())["sms"])
    inbound = f"{kit.relay_server.base_url}/inbound/sms"
    (await kit.http.put(f"{kit.fake.base_url}/_fake/config", json={"callback_url": inbound})).raise_for_status()
    await reply(kit, "13500135000", "1234")
    assert await kit.forward() == [{"status": "unknown_sender"}]
    await kit.settle()
    assert len((await kit.outbox())["sms"]) == before


# ---- a closed incident ---------------------------------------------------------------------------------


async def close(kit: Kit, incident_id: str) -> None:
    staff = await kit.headers("admin1")
    for step in (await kit.incident(incident_id))["steps"]:
        for party in step["parties"]:
            if party["status"] != "told":
                r = await kit.client.post(
                    f"/incidents/{incident_id}/calls",
                    json={
                        "party_id": party["id"],
                        "contact_label": "值班人员",
                        "called_at": kit.clock.now().isoformat(),
                    },
                    headers=staff,
                )
                assert r.status_code == 201, r.text
    r = await kit.client.post(f"/incidents/{incident_id}/outcome", json={"outcome": "handed_to_family"}, headers=staff)
    assert r.status_code == 200, r.text
    r = await kit.client.post(f"/incidents/{incident_id}/close", json={"summary": "已处置完毕"}, headers=staff)
    assert r.status_code == 200, r.text


async def test_a_closed_incident_takes_no_acknowledgement_by_any_route(kit):
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="silent")  # rings; the press comes later
    incident = await kit.report(family.child_id)
    await kit.settle()
    [call] = await rows(kit, OutboundMessage, OutboundMessage.address == e164(GRANDMA))
    kit.advance(minutes=6)
    await kit.settle()  # no answer within the wait: the grandmother gets an SMS
    [text] = await sms_to(kit, GRANDMA)
    link = re.search(r"(/ack/[A-Za-z0-9_\-]+)", text).group(1)
    await close(kit, incident["id"])
    acks = len(await rows(kit, Acknowledgement))
    kit.advance(minutes=1)

    page = await kit.client.get(link)
    assert page.status_code == 200 and "已结案" in page.text and "<form" not in page.text
    assert (await kit.client.get(link, headers={"Accept": "application/json"})).json()["closed"] is True
    page = await kit.client.post(link)
    assert page.status_code == 409 and "已结案" in page.text and "<form" not in page.text
    r = await kit.client.post(link, headers={"Accept": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "incident_closed")

    r = await kit.client.post(
        f"/incidents/{incident['id']}/acknowledge", headers=await kit.headers(family.accounts["father"])
    )
    assert (r.status_code, r.json()["error"]["code"]) == (409, "incident_closed")
    party = (await kit.incident(incident["id"]))["steps"][0]["parties"][0]
    r = await kit.client.post(
        f"/incidents/{incident['id']}/calls",
        json={"party_id": party["id"], "contact_label": "祖母", "called_at": kit.clock.now().isoformat()},
        headers=await kit.headers("teacher1"),
    )
    assert (r.status_code, r.json()["error"]["code"]) == (409, "incident_closed")

    pressed = await post_event(
        kit,
        "voice",
        {
            "type": "voice.dtmf",
            "occurred_at": kit.clock.now().isoformat(),
            "call_id": call.provider_message_id,
            "idempotency_key": call.idempotency_key,
            "to": e164(GRANDMA),
            "digits": "1",
        },
    )
    assert pressed == {"status": "incident_closed"}
    await reply(kit, GRANDMA, f"收到{reply_code(text)}")
    assert await kit.forward() == [{"status": "reply_not_matched"}]
    await kit.settle()

    assert len(await rows(kit, Acknowledgement)) == acks
    timeline = await kit.timeline(incident["id"])
    assert [e["detail"]["digits"] for e in kinds(timeline, "ack_after_close")] == ["1"]
    assert kinds(timeline, "reply_received")[-1]["detail"]["reason"] == "no_longer_open"
    assert "已确认或事件已结案" in (await sms_to(kit, GRANDMA))[-1]


# ---- acknowledgement-link keys -------------------------------------------------------------------------

NEW_LINK_KEY = "k2026:" + "bmV3LWFjay1saW5rLWtleS1mb3ItdGhlLXRlc3QtMzI="


async def test_links_survive_a_jwt_secret_rotation_and_a_link_key_rotation(kit):
    await grandma_gets_sms(kit)
    [text] = await sms_to(kit, GRANDMA)
    link = re.search(r"(/ack/[A-Za-z0-9_\-]+)", text).group(1)
    settings = kit.app.state.settings

    # The JWT secret leaked and was rotated mid-emergency: the grandmother's link still works.
    kit.app.state.settings = settings.model_copy(update={"jwt_secret": "rotated-after-a-leak-" + "x" * 40})
    assert (await kit.client.get(link)).status_code == 200
    # A new link key signs from now on; links signed with the old one work while it stays in the ring.
    kit.app.state.settings = settings.model_copy(update={"ack_link_keys": f"{NEW_LINK_KEY},{DEV_ACK_LINK_KEYS}"})
    assert (await kit.client.get(link)).status_code == 200
    token = ack_links.ack_token(kit.app.state.settings.ack_link_keys, uuid.uuid4())
    assert ack_links.read_ack_token(NEW_LINK_KEY, token) is not None
    assert ack_links.read_ack_token(DEV_ACK_LINK_KEYS, token) is None
    # Once it is dropped, they do not.
    kit.app.state.settings = settings.model_copy(update={"ack_link_keys": NEW_LINK_KEY})
    assert (await kit.client.get(link)).status_code == 404


def production(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "environment": Environment.production,
        "jwt_secret": "p" * 48,
        "field_keys": "k1:" + "cHJvZHVjdGlvbi1maWVsZC1rZXktMzItYnl0ZXMhIQ==",
        "callback_secret": "production-callback-secret",
        "database_url": "postgresql+asyncpg://liushou@db/liushou",
        "ack_link_keys": NEW_LINK_KEY,
        **overrides,
    }
    return Settings(**values)


def test_production_refuses_the_development_link_keys_and_a_malformed_ring():
    assert production().ack_link_keys == NEW_LINK_KEY
    with pytest.raises(ValueError, match="LIUSHOU_ACK_LINK_KEYS"):
        production(ack_link_keys=DEV_ACK_LINK_KEYS)
    for ring in ("", "no-colon", "k1:not base64!", "k1:c2hvcnQ=", f"{NEW_LINK_KEY},{NEW_LINK_KEY}"):
        with pytest.raises(ValueError, match="acknowledgement-link"):
            production(ack_link_keys=ring)


def test_the_link_token_names_its_message_and_cannot_be_altered():
    message_id = uuid.uuid4()
    token = ack_links.ack_token(DEV_ACK_LINK_KEYS, message_id)
    assert ack_links.read_ack_token(DEV_ACK_LINK_KEYS, token) == message_id
    altered = token[:-5] + ("A" if token[-5] != "A" else "B") + token[-4:]  # a character of the MAC
    assert ack_links.read_ack_token(DEV_ACK_LINK_KEYS, altered) is None
