"""The acknowledgement link's page, as its readers get it — a grandmother, a father working away, an official —
and the school's duty phone that it (and the contact card, and the notices) offers to call."""

import re
import uuid
from datetime import UTC, datetime

import pytest

from api import ack_links, pages
from api.db import scoped_session
from api.models.escalation import (
    AckPage,
    Audience,
)
from api.models.notifications import (
    Channel,
    MessagePurpose,
    MessageStatus,
    OutboundMessage,
)
from api.scoping import SYSTEM
from api.services.emergency import texts as messages
from tests.test_acknowledgements import close
from tests.test_escalation_support import GRANDMA, GRANDPA, Kit, e164, escalation_settings

LINK = re.compile(r"/ack/([A-Za-z0-9_\-]+)")


@pytest.fixture
def settings():
    return escalation_settings()


def notice(audience: Audience = Audience.entrusted_guardian, **changes) -> AckPage:
    values = {
        "case_code": "261130-K7Q2MX",
        "school_name": "石桥镇中心小学",
        "category_label": "意外受伤",
        "occurred_at": datetime(2026, 11, 30, 6, 5, tzinfo=UTC),
        "occurred_at_local": "2026-11-30 14:05",
        "audience": audience,
        "acknowledged": False,
        "acknowledged_at": None,
        "severity": "severe",
        "severity_label": "严重",
        "school_phone": "0739-5220000",
    }
    values.update(changes)
    return AckPage(**values)


def text_of(page: str) -> str:
    return re.sub(r"<[^>]+>", "", re.sub(r"<style>.*?</style>", "", page, flags=re.S))


# ---- the page itself ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("audience", list(Audience))
def test_the_page_says_what_happened_how_serious_where_and_when_with_one_big_button(audience):
    page = pages.ack_page(notice(audience), action="TOKEN")
    words = text_of(page)
    assert "委托监护人" not in words
    assert "意外受伤" in words and "严重" in words and "石桥镇中心小学" in words
    assert "2026年11月30日 14:05 北京时间" in words  # 06:05 UTC is 14:05 in Shanghai
    assert "<span class='code' id='case-code'>261130-K7Q2MX</span>" in page
    assert ".code{white-space:nowrap" in page
    # One form, posting back to the page's own address (relative: any path prefix works), one submit button.
    assert page.count("<form") == 1 and "<form method='post' action='TOKEN'>" in page
    assert page.count("type='submit'") == 1 and "class='btn confirm'" in page
    assert ".btn{display:block;width:100%" in page and "font-size:22px" in page
    assert "href='tel:07395220000'" in page and "0739-5220000" in words
    # Nothing to run and nothing fetched: no script, no outside address.
    assert "<script" not in page and "http://" not in page and "https://" not in page and "@import" not in page
    assert "name='viewport'" in page


def test_each_reader_gets_their_own_words():
    grandma = text_of(pages.ack_page(notice(Audience.entrusted_guardian), action="t"))
    father = text_of(pages.ack_page(notice(Audience.parents_away), action="t"))
    official = text_of(pages.ack_page(notice(Audience.county_bureau), action="t"))
    assert "您家孩子在石桥镇中心小学出了事" in grandma and "绿色大按钮" in grandma
    assert "您的孩子在石桥镇中心小学发生意外受伤" in father and "打个电话" in father
    assert "石桥镇中心小学报告一起学生意外受伤事件" in official and "登录" in official
    assert "您家孩子" not in official


def test_after_confirming_it_says_what_happens_next():
    done = pages.ack_page(
        notice(acknowledged=True, acknowledged_at=datetime(2026, 11, 30, 6, 20, tzinfo=UTC)), action="t"
    )
    words = text_of(done)
    assert "已确认收到" in words and "2026年11月30日 14:20" in words
    assert "接下来" in words and "不会再打电话或发短信让您确认" in words
    assert "<form" not in done and "tel:07395220000" in done


def test_a_closed_incident_says_it_is_closed_and_asks_nothing():
    closed = pages.ack_page(notice(closed=True), action="t")
    words = text_of(closed)
    assert "已结案" in words and "不需要再做什么" in words
    assert "<form" not in closed and "请尽快" not in words and "tel:07395220000" in closed


@pytest.mark.parametrize(
    ("stored", "href"),
    [
        ("13812345678", "tel:13812345678"),
        ("0739-5220000", "tel:07395220000"),
        ("0739-5220000-123", "tel:07395220000,123"),
    ],
)
def test_the_call_button_dials_the_number_as_stored(stored, href):
    assert pages.tel_href(stored) == href


def test_a_school_without_a_phone_gets_no_call_button():
    page = pages.ack_page(notice(school_phone=None), action="t")
    assert "tel:" not in page and "<form" in page


# ---- through the service ---------------------------------------------------------------------------------


async def set_duty_phone(kit: Kit, phone: str | None, who: str = "admin1") -> dict:
    r = await kit.client.patch(
        f"/schools/{kit.world['school1']}", json={"duty_phone": phone}, headers=await kit.headers(who)
    )
    assert r.status_code == 200, r.text
    return r.json()


async def grandma_link(kit: Kit) -> tuple[dict, str]:
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="no_answer")
    await kit.script("voice/numbers", number=e164(GRANDPA), outcome="no_answer")
    incident = await kit.report(family.child_id, severity="severe")
    await kit.settle()
    [text] = [m["text"] for m in (await kit.outbox())["sms"] if m["to"] == e164(GRANDMA)]
    return incident, text


async def test_the_school_admin_sets_a_duty_phone_that_the_page_card_and_notices_use(kit):
    await kit.leader_phone("13900001111")  # the admin's own phone: what the card and notices borrowed before
    assert (await set_duty_phone(kit, "0739 522 0000"))["duty_phone"] == "0739-5220000"
    incident, text = await grandma_link(kit)
    assert "学校电话0739-5220000" in text
    token = LINK.search(text).group(1)

    page = await kit.client.get(f"/ack/{token}")
    assert page.status_code == 200
    assert "tel:07395220000" in page.text and incident["case_code"] in page.text and "严重" in page.text
    assert "刘小明" not in page.text and "委托监护人" not in text_of(page.text)
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
    as_json = (await kit.client.get(f"/ack/{token}", headers={"Accept": "application/json"})).json()
    assert as_json["school_phone"] == "0739-5220000"
    assert (as_json["severity"], as_json["severity_label"]) == ("severe", "严重")

    done = await kit.client.post(f"/ack/{token}")
    assert done.status_code == 200 and "已确认收到" in done.text and "接下来" in done.text

    child = (await kit.incident(incident["id"]))["child_id"]
    card = await kit.client.get(f"/children/{child}/contact-card", headers=await kit.headers("teacher1"))
    assert card.json()["school_phone"] == "0739-5220000"


async def test_without_a_duty_phone_the_admins_phone_is_still_offered(kit):
    await kit.leader_phone("13900001111")
    _, text = await grandma_link(kit)
    assert "学校电话13900001111" in text
    page = await kit.client.get(f"/ack/{LINK.search(text).group(1)}")
    assert "tel:13900001111" in page.text


def test_the_officials_sms_and_the_familys_call_give_the_schools_number():
    facts = messages.CaseFacts(
        incident_id=uuid.uuid4(),
        case_code="261130-K7Q2MX",
        school_name="石桥镇中心小学",
        school_phone="0739-5220000",
        child_name="刘小明",
        category_label="意外受伤",
        severity_label="严重",
        occurred_at=datetime(2026, 11, 30, 6, 5, tzinfo=UTC),
    )
    official = messages.notification(
        facts, audience=Audience.township, channel=Channel.sms, link="L", reply_code="1234", token="t"
    )
    call = messages.notification(
        facts, audience=Audience.entrusted_guardian, channel=Channel.voice, link="L", reply_code="1234", token="t"
    )
    assert "学校电话0739-5220000" in official.body and "刘小明" not in official.body
    assert "学校电话0739-5220000" in call.body


@pytest.mark.parametrize(
    ("phone", "code"), [("5220000", "phone_area_code"), ("call me", "phone_format"), ("12345", "phone_format")]
)
async def test_a_duty_phone_nobody_can_dial_is_refused_with_a_stable_code(kit, phone, code):
    r = await kit.client.patch(
        f"/schools/{kit.world['school1']}", json={"duty_phone": phone}, headers=await kit.headers("admin1")
    )
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == code and error["fields"][0]["loc"] == ["body", "duty_phone"]


async def test_the_duty_phone_can_be_cleared_and_other_schools_admins_cannot_set_it(kit):
    await set_duty_phone(kit, "13812345678")
    assert (await set_duty_phone(kit, None))["duty_phone"] is None
    r = await kit.client.patch(
        f"/schools/{kit.world['school1']}", json={"duty_phone": "13812345678"}, headers=await kit.headers("admin2")
    )
    assert r.status_code == 404
    r = await kit.client.patch(
        f"/schools/{kit.world['school1']}", json={"duty_phone": "13812345678"}, headers=await kit.headers("teacher1")
    )
    assert r.status_code == 403


async def test_a_closed_incidents_link_says_so_with_the_schools_number(kit):
    await set_duty_phone(kit, "0739-5220000")
    incident, text = await grandma_link(kit)
    token = LINK.search(text).group(1)
    await close(kit, incident["id"])
    for answer in (await kit.client.get(f"/ack/{token}"), await kit.client.post(f"/ack/{token}")):
        words = text_of(answer.text)
        assert "已结案" in words and "请尽快" not in words and "<form" not in answer.text
        assert "tel:07395220000" in answer.text


async def test_an_invalid_link_explains_itself_and_gives_the_schools_number_where_known(kit, settings):
    await set_duty_phone(kit, "0739-5220000")
    unknown = await kit.client.get("/ack/not-a-real-link")
    assert unknown.status_code == 404
    assert "链接无效" in unknown.text and "直接给孩子的学校打电话" in unknown.text and "tel:" not in unknown.text

    # A genuine token whose message asks for no acknowledgement (an answer to an SMS reply): the school is known.
    incident, _ = await grandma_link(kit)
    message_id = uuid.uuid4()
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        s.add(
            OutboundMessage(
                id=message_id,
                incident_id=uuid.UUID(incident["id"]),
                purpose=MessagePurpose.reply_help,
                channel=Channel.sms,
                address=e164(GRANDMA),
                recipient_label="奶奶",
                status=MessageStatus.sent,
                idempotency_key=f"liushou-{message_id.hex}",
                body="…",
                max_attempts=1,
                retry_backoff_seconds=30,
                ack_wait_seconds=0,
                next_attempt_at=kit.clock.now(),
                created_at=kit.clock.now(),
            )
        )
    token = ack_links.ack_token(settings.ack_link_keys, message_id)
    known = await kit.client.get(f"/ack/{token}")
    assert known.status_code == 404
    assert "石桥镇中心小学" in known.text and "tel:07395220000" in known.text
    r = await kit.client.post(f"/ack/{token}", headers={"Accept": "application/json"})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "ack_link_invalid")
