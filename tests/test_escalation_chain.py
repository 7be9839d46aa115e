"""The chain end to end: a report, the worker telling each party through the real (fake) providers, and the
rules of the school plans — 30 minutes, 1 hour, 2 hours; every step mandatory; told means acknowledged."""

from datetime import timedelta

import pytest

from api.models.guardians import GuardianRole
from tests.test_escalation_support import (
    BUREAU_DUTY,
    FATHER,
    GRANDMA,
    GRANDPA,
    LEADER,
    MOTHER,
    TOWNSHIP_DUTY,
    Kit,
    attempts,
    e164,
    escalation_settings,
    kinds,
)


@pytest.fixture
def settings():
    return escalation_settings()


async def silent_grandparents(kit: Kit) -> None:
    """Neither grandparent picks up, and their phones never confirm an SMS."""
    for number in (GRANDMA, GRANDPA):
        await kit.script("voice/numbers", number=e164(number), outcome="no_answer")
        await kit.script("sms/numbers", number=e164(number), receipt="none")


async def test_a_grandmother_who_presses_1_is_told_within_the_first_step(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    await kit.settle()
    step1 = await kit.step(incident["id"], 1)
    assert (step1["status"], step1["deadline_met"]) == ("told", True)
    assert step1["parties"][0]["told_route"] == "voice_dtmf"
    # Elderly guardians are called first: one call, nothing else needed.
    assert await attempts(kit, GRANDMA) == [("voice", e164(GRANDMA), "accepted")]
    assert await attempts(kit, GRANDPA) == []


async def test_each_deadline_counts_from_when_it_happened_not_from_the_report(kit):
    family = await kit.family()
    await kit.duty()
    happened = kit.clock.now() - timedelta(minutes=12)
    incident = await kit.report(family.child_id, occurred_at=happened.isoformat(), time_basis="discovered")
    deadlines = {s["step_no"]: s["deadline_at"] for s in incident["steps"]}
    assert deadlines == {
        1: (happened + timedelta(minutes=30)).isoformat().replace("+00:00", "Z"),
        2: (happened + timedelta(minutes=60)).isoformat().replace("+00:00", "Z"),
        3: (happened + timedelta(minutes=120)).isoformat().replace("+00:00", "Z"),
    }
    # Every step starts sending at once: the first message of each party is already queued at the report.
    queued = kinds(await kit.timeline(incident["id"]), "message_queued")
    assert sorted(e["detail"]["audience"] for e in queued) == [
        "county_bureau",
        "entrusted_guardian",
        "parents_away",
        "township",
    ]


async def test_a_guardian_who_never_answers_is_not_counted_as_told(kit):
    family = await kit.family()
    await silent_grandparents(kit)
    incident = await kit.report(family.child_id)
    await kit.settle()
    # The call was not answered: at once an SMS to the same grandmother.
    assert await attempts(kit, GRANDMA) == [("voice", e164(GRANDMA), "accepted"), ("sms", e164(GRANDMA), "accepted")]
    party = await kit.party(incident["id"], "entrusted_guardian")
    assert party["status"] == "notifying" and party["told_at"] is None
    # An SMS that went out is not told either: after the acknowledgement wait, the next contact in order.
    kit.advance(minutes=4, seconds=59)
    await kit.settle()
    assert await attempts(kit, GRANDPA) == []
    kit.advance(seconds=2)
    await kit.settle()
    assert await attempts(kit, GRANDPA) == [("voice", e164(GRANDPA), "accepted"), ("sms", e164(GRANDPA), "accepted")]
    step1 = await kit.step(incident["id"], 1)
    assert step1["status"] == "notifying" and step1["told_at"] is None


async def test_parents_get_wechat_first_then_sms_then_a_call_then_the_other_parent(kit):
    family = await kit.family()
    for number in (FATHER, MOTHER):
        await kit.script("voice/numbers", number=e164(number), outcome="answered", press=None)
    incident = await kit.report(family.child_id)
    await kit.settle()
    box = await kit.outbox()
    assert [m["touser"] for m in box["wechat_messages"]] == ["o-father"]
    assert await attempts(kit, FATHER) == []
    for _ in range(2):
        kit.advance(minutes=5, seconds=1)
        await kit.settle()
    # SMS waited out; the call was answered but nobody pressed 1 — that is not told: on to the mother.
    assert [a[0] for a in await attempts(kit, FATHER)] == ["sms", "voice"]
    assert [a[0] for a in await attempts(kit, MOTHER)] == ["sms"]
    party = await kit.party(incident["id"], "parents_away")
    assert party["status"] == "notifying"


async def test_an_acknowledgement_closes_only_its_own_step(kit):
    family = await kit.family()
    await kit.duty()
    incident = await kit.report(family.child_id)
    await kit.settle()
    steps = {s["step_no"]: s for s in (await kit.incident(incident["id"]))["steps"]}
    assert steps[1]["status"] == "told"
    # The grandmother pressed 1: the parents and the authorities still have to be told.
    assert steps[2]["status"] == "notifying"
    assert steps[3]["status"] == "notifying"


async def test_step_3_needs_both_the_county_bureau_and_the_township(kit):
    family = await kit.family()
    await kit.duty()
    incident = await kit.report(family.child_id)
    await kit.settle()
    step3 = await kit.step(incident["id"], 3)
    by_audience = {p["audience"]: p for p in step3["parties"]}
    # The bureau's duty landline got a call and pressed 1; the township's duty mobile only got an SMS.
    assert by_audience["county_bureau"]["status"] == "told"
    assert by_audience["township"]["status"] == "notifying"
    assert step3["status"] == "notifying"
    r = await kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=await kit.headers("official1"))
    assert r.status_code == 200, r.text
    step3 = await kit.step(incident["id"], 3)
    assert step3["status"] == "told" and step3["deadline_met"] is True
    assert [a[0] for a in await attempts(kit, BUREAU_DUTY)] == ["voice"]
    assert [a[0] for a in await attempts(kit, TOWNSHIP_DUTY)] == ["sms"]


async def test_a_late_report_is_escalated_at_once_and_the_missed_deadline_recorded_as_a_breach(kit):
    family = await kit.family()
    await kit.duty()
    await kit.leader_phone()
    await silent_grandparents(kit)
    happened = kit.clock.now() - timedelta(minutes=45)
    incident = await kit.report(family.child_id, occurred_at=happened.isoformat())
    step1 = next(s for s in incident["steps"] if s["step_no"] == 1)
    assert step1["breached_at"] is not None and step1["deadline_met"] is False
    assert next(s for s in incident["steps"] if s["step_no"] == 2)["breached_at"] is None
    await kit.settle()
    # Still trying: the grandmother is called at once, and the school's leaders are told of the breach.
    assert await attempts(kit, GRANDMA)
    leader_sms = [m["text"] for m in (await kit.outbox())["sms"] if m["to"] == e164(LEADER)]
    assert len(leader_sms) == 1 and "已超时" in leader_sms[0]
    breach = kinds(await kit.timeline(incident["id"]), "breach")
    assert breach[0]["step_no"] == 1 and breach[0]["detail"]["late_report"] is True
    # Told later, it stays honestly late.
    await kit.script("voice/numbers", number=e164(GRANDPA), outcome="answered", press="1")
    kit.advance(minutes=5, seconds=1)
    await kit.settle()
    step1 = await kit.step(incident["id"], 1)
    assert step1["status"] == "told" and step1["deadline_met"] is False


async def test_near_the_deadline_the_leaders_are_alerted_and_at_the_deadline_the_breach_is_recorded(kit):
    family = await kit.family()
    await kit.duty()
    await kit.leader_phone()
    await silent_grandparents(kit)
    incident = await kit.report(family.child_id)
    await kit.settle()

    def leader_texts(box):
        return [m["text"] for m in box["sms"] if m["to"] == e164(LEADER)]

    kit.advance(minutes=19, seconds=59)
    await kit.settle()
    assert leader_texts(await kit.outbox()) == []
    kit.advance(seconds=1)
    await kit.settle()
    [near] = leader_texts(await kit.outbox())
    assert "即将超时" in near and "第1步" in near
    kit.advance(minutes=10)
    await kit.settle()
    texts = leader_texts(await kit.outbox())
    assert len(texts) == 2 and "已超时" in texts[1]
    step1 = await kit.step(incident["id"], 1)
    assert step1["breached_at"] is not None and step1["deadline_met"] is False
    entries = await kit.timeline(incident["id"])
    assert [e["kind"] for e in kinds(entries, "near_deadline", "breach")] == ["near_deadline", "breach"]
    # The leaders' messages never name the child.
    assert all("刘小明" not in t for t in texts)


async def test_a_party_with_nobody_to_reach_is_flagged_to_the_leaders_at_once(kit):
    family = await kit.family(
        [
            {
                "key": "grandma",
                "role": GuardianRole.entrusted_guardian,
                "relation": "祖母",
                "name": "王桂英",
                "phone": GRANDMA,
            }
        ]
    )
    await kit.leader_phone()
    incident = await kit.report(family.child_id)
    parents = next(p for s in incident["steps"] for p in s["parties"] if p["audience"] == "parents_away")
    assert parents["status"] == "unreachable" and parents["contacts"] == []
    await kit.settle()
    texts = [m["text"] for m in (await kit.outbox())["sms"] if m["to"] == e164(LEADER)]
    assert any("无可联系" in t and "在外务工家长" in t for t in texts)
    r = await kit.client.get("/incidents?needs_attention=true", headers=await kit.headers("admin1"))
    assert [i["id"] for i in r.json()["data"]] == [incident["id"]]


async def test_an_unusable_number_is_skipped_and_a_party_with_none_left_is_flagged(kit):
    family = await kit.family(
        [
            {
                "key": "grandma",
                "role": GuardianRole.entrusted_guardian,
                "relation": "祖母",
                "name": "王桂英",
                "phone": GRANDMA,
            }
        ]
    )
    await kit.leader_phone()
    for channel in ("voice", "sms"):
        await kit.script(f"{channel}/numbers", number=e164(GRANDMA), permanent_error="blocked")
    incident = await kit.report(family.child_id)
    await kit.settle()
    party = await kit.party(incident["id"], "entrusted_guardian")
    assert party["status"] == "unreachable"
    assert [(c["channel"], c["usable"], c["unusable_reason"]) for c in party["contacts"]] == [
        ("voice", False, "blocked"),
        ("sms", False, "blocked"),
    ]
    entries = await kit.timeline(incident["id"])
    flagged = kinds(entries, "party_unreachable", "leaders_alerted")
    assert [e["kind"] for e in flagged if e["step_no"] == 1] == ["party_unreachable", "leaders_alerted"]


async def test_after_every_round_goes_unanswered_the_party_is_flagged_as_exhausted(kit):
    family = await kit.family()
    await kit.leader_phone()
    await silent_grandparents(kit)
    incident = await kit.report(family.child_id)
    for _ in range(12):
        await kit.settle()
        kit.advance(minutes=5, seconds=1)
    party = await kit.party(incident["id"], "entrusted_guardian")
    assert party["status"] == "exhausted" and party["round"] == 3
    # Three rounds of (call, SMS) to each grandparent, no more.
    assert len(await attempts(kit, GRANDMA)) == 6 and len(await attempts(kit, GRANDPA)) == 6
    kinds_seen = [e["kind"] for e in await kit.timeline(incident["id"]) if e["step_no"] == 1]
    assert kinds_seen.count("round_finished") == 2 and "party_exhausted" in kinds_seen


async def test_later_policy_edits_do_not_touch_an_incident_in_flight(kit):
    family = await kit.family()
    before = await kit.report(family.child_id)
    r = await kit.client.put(
        f"/counties/{kit.world['county']}/escalation-policy",
        json={"guardian_deadline_minutes": 20, "ack_wait_minutes": 3},
        headers=await kit.headers("bureau"),
    )
    assert r.status_code == 200, r.text
    after = await kit.report(family.child_id)
    again = await kit.incident(before["id"])
    assert again["steps"][0]["deadline_minutes"] == 30
    assert after["steps"][0]["deadline_minutes"] == 20


async def test_a_school_may_hold_a_step_so_staff_phone_first(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id, holds=[{"step_no": 1, "minutes": 5}])
    await kit.settle()
    assert await attempts(kit, GRANDMA) == []
    assert (await kit.step(incident["id"], 1))["status"] == "held"
    # The head teacher reached the grandmother by phone at T+3: told, nothing is sent when the hold ends.
    party = await kit.party(incident["id"], "entrusted_guardian")
    kit.advance(minutes=4)
    r = await kit.client.post(
        f"/incidents/{incident['id']}/calls",
        json={
            "party_id": party["id"],
            "contact_id": party["contacts"][0]["id"],
            "called_at": (kit.clock.now() - timedelta(minutes=1)).isoformat(),
        },
        headers=await kit.headers("teacher1"),
    )
    assert r.status_code == 201, r.text
    kit.advance(minutes=2)
    await kit.settle()
    assert await attempts(kit, GRANDMA) == []
    step1 = await kit.step(incident["id"], 1)
    assert step1["status"] == "told" and step1["parties"][0]["told_route"] == "staff_call"


async def test_a_held_step_starts_sending_when_the_hold_ends(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id, holds=[{"step_no": 1, "minutes": 5}])
    kit.advance(minutes=4, seconds=59)
    await kit.settle()
    assert await attempts(kit, GRANDMA) == []
    kit.advance(seconds=1)
    await kit.settle()
    assert await attempts(kit, GRANDMA) == [("voice", e164(GRANDMA), "accepted")]
    assert (await kit.step(incident["id"], 1))["status"] == "told"


async def test_wechat_never_names_the_child_but_sms_to_the_family_does_with_a_way_to_acknowledge(kit):
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="no_answer")
    incident = await kit.report(family.child_id)
    await kit.settle()
    box = await kit.outbox()
    [wechat] = box["wechat_messages"]
    assert "刘小明" not in str(wechat)
    assert incident["case_code"] in str(wechat["data"])
    assert "token=" in wechat["page"]
    [sms] = [m for m in box["sms"] if m["to"] == e164(GRANDMA)]
    assert "刘小明" in sms["text"] and "/ack/" in sms["text"]
    assert "回复" in sms["text"] and "确认收到" in sms["text"]
    [call] = [c for c in box["voice"] if c["to"] == e164(GRANDMA)]
    assert "按1" in call["tts_text"] and call["dtmf_ack_digit"] == "1"


async def test_a_parent_without_wechat_subscriptions_left_gets_an_sms_at_once(kit):
    family = await kit.family()
    await kit.script("wechat/users", openid="o-father", subscriptions=0)
    incident = await kit.report(family.child_id)
    await kit.settle()
    assert [a[0] for a in await attempts(kit, FATHER)] == ["sms"]
    failed = [e for e in kinds(await kit.timeline(incident["id"]), "message_failed") if e["channel"] == "wechat"]
    assert failed[0]["detail"]["error"] == "43101"
