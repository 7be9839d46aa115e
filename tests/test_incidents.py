"""Incidents through the API: reporting and its validation, who sees what, updates, the child's outcome,
closure, the manual actions, the timeline — and that nothing is ever deleted."""

import re
from datetime import timedelta

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from api.db import scoped_session
from api.demo.context import principal_of
from api.models.accounts import Account
from api.models.audit import AuditEntry
from api.models.children import Child, ChildStatus
from api.models.guardians import GuardianRole
from api.models.incidents import IncidentCreate
from api.scoping import SYSTEM, db_role
from api.services.emergency.incidents import report_incident
from tests.statements import sent_statements, work_of
from tests.test_escalation_support import GRANDMA, GRANDPA, LEADER, Kit, attempts, e164, escalation_settings, kinds


@pytest.fixture
def settings():
    return escalation_settings()


def body(kit: Kit, child_id, **overrides) -> dict:
    payload = {
        "child_id": str(child_id),
        "category": "missing",
        "severity": "severe",
        "summary": "午休后未回教室，校园内未找到",
        "location": "学校及周边",
        "occurred_at": kit.clock.now().isoformat(),
        "time_basis": "discovered",
        "first_actions": "全体值班教师分组寻找，已联系派出所",
    }
    payload.update(overrides)
    return payload


async def post(kit: Kit, path: str, who: str, json: dict | None = None):
    return await kit.client.post(path, json=json, headers=await kit.headers(who))


# ---- reporting ------------------------------------------------------------------------------------------


async def test_a_teacher_reports_an_incident_and_gets_its_chain(kit):
    family = await kit.family()
    r = await post(kit, "/incidents", "teacher1", body(kit, family.child_id))
    assert r.status_code == 201, r.text
    incident = r.json()
    assert incident["status"] == "open" and incident["child_name"] == "刘小明"
    assert [s["step_no"] for s in incident["steps"]] == [1, 2, 3]
    assert [[p["audience"] for p in s["parties"]] for s in incident["steps"]] == [
        ["entrusted_guardian"],
        ["parents_away"],
        ["county_bureau", "township"],
    ]
    # The contact card of step 1: both grandparents in contact order, a call first, then an SMS.
    contacts = incident["steps"][0]["parties"][0]["contacts"]
    assert [(c["label"], c["channel"], c["address"]) for c in contacts] == [
        ("祖母", "voice", e164(GRANDMA)),
        ("祖母", "sms", e164(GRANDMA)),
        ("祖父", "voice", e164(GRANDPA)),
        ("祖父", "sms", e164(GRANDPA)),
    ]
    assert len(incident["case_code"]) == 13 and "刘" not in incident["case_code"]


async def test_the_answer_to_a_report_is_the_incident_as_a_read_then_shows_it(kit):
    # The report answers from the chain it has just written, without reading it back: the same steps, parties
    # in the same order with the same states, the same contacts and the child's name as a read gives.
    family = await kit.family()
    for holds in ([], [{"step_no": 1, "minutes": 5}]):
        r = await post(kit, "/incidents", "teacher1", body(kit, family.child_id, holds=holds))
        assert r.status_code == 201, r.text
        read = await kit.client.get(f"/incidents/{r.json()['id']}", headers=await kit.headers("teacher1"))
        assert read.status_code == 200
        assert r.json() == read.json()


@pytest.mark.parametrize(
    ("overrides", "status", "code"),
    [
        ({"occurred_at": "2030-01-01T08:00:00+08:00"}, 422, "occurred_in_future"),
        ({"occurred_at": "2026-11-01T08:00:00+08:00"}, 422, "occurred_too_long_ago"),
        ({"occurred_at": "2026-11-24T09:50:00"}, 422, "validation_error"),
        ({"category": "earthquake"}, 422, "validation_error"),
        ({"severity": ""}, 422, "validation_error"),
        ({"summary": ""}, 422, "validation_error"),
        ({"holds": [{"step_no": 1, "minutes": 11}]}, 422, "hold_exceeds_policy"),
        ({"holds": [{"step_no": 4, "minutes": 5}]}, 422, "validation_error"),
        ({"holds": [{"step_no": 2, "minutes": 5}, {"step_no": 2, "minutes": 3}]}, 422, "hold_duplicate"),
    ],
    ids=["future", "weeks ago", "no time zone", "bad category", "no severity", "no summary", "hold too long",
         "no such step", "two holds on one step"],
)  # fmt: skip
async def test_a_report_with_bad_input_gets_a_clear_4xx(kit, overrides, status, code):
    family = await kit.family()
    r = await post(kit, "/incidents", "teacher1", body(kit, family.child_id, **overrides))
    assert (r.status_code, r.json()["error"]["code"]) == (status, code)
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        assert (await s.execute(sa.text("SELECT count(*) FROM incident"))).scalar_one() == 0


async def test_a_hold_that_would_leave_no_room_for_retries_before_the_deadline_is_refused(kit):
    family = await kit.family()
    # Step 1's deadline is 22 minutes away; 3 attempts × 5 minutes need 15, so at most 7 minutes of hold.
    happened = kit.clock.now() - timedelta(minutes=8)
    r = await post(
        kit, "/incidents", "teacher1",
        body(kit, family.child_id, occurred_at=happened.isoformat(), holds=[{"step_no": 1, "minutes": 8}]),
    )  # fmt: skip
    assert (r.status_code, r.json()["error"]["code"]) == (422, "hold_too_long")
    assert "最多可暂缓7分钟" in r.json()["error"]["message"]
    r = await post(
        kit, "/incidents", "teacher1",
        body(kit, family.child_id, occurred_at=happened.isoformat(), holds=[{"step_no": 1, "minutes": 7}]),
    )  # fmt: skip
    assert r.status_code == 201, r.text


async def test_only_school_staff_report_and_only_for_children_of_their_school(kit):
    family = await kit.family()
    for who, status in (("bureau", 403), ("official1", 403), ("teacher2", 404), ("admin2", 404)):
        r = await post(kit, "/incidents", who, body(kit, family.child_id))
        assert r.status_code == status, who
    r = await post(kit, "/incidents", "admin1", body(kit, family.child_id))
    assert r.status_code == 201


async def test_a_child_no_longer_on_the_roster_cannot_be_reported(kit):
    family = await kit.family()
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        (await s.get(Child, family.child_id)).status = ChildStatus.left
    r = await post(kit, "/incidents", "teacher1", body(kit, family.child_id))
    assert (r.status_code, r.json()["error"]["code"]) == (422, "child_not_enrolled")


async def test_a_report_reads_whom_to_tell_in_one_statement(kit):
    # No duty roster (step 3 falls back to the officials' accounts) and no parents on the card (that party is
    # flagged and the school's leaders alerted): still the contact card, the officials and the leaders in
    # one read, besides the sign-in's look-up.
    family = await kit.family(
        [{"key": "grandma", "role": GuardianRole.entrusted_guardian, "relation": "祖母", "name": "王桂英",
          "phone": GRANDMA}]
    )  # fmt: skip
    await kit.leader_phone()
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        (await s.get(Account, kit.world["bureau"])).phone = "13500135001"
    await kit.report(family.child_id)  # a fresh connection first looks up the types of what it reads
    headers = await kit.headers("teacher1")
    with sent_statements(kit.app) as statements:
        r = await kit.client.post("/incidents", json=body(kit, family.child_id), headers=headers)
    assert r.status_code == 201, r.text
    reads = [s for s in work_of(statements) if re.search(r"\bFROM account\b", s)]
    assert len(reads) == 2, reads
    assert "login_session" in reads[0] and "child_guardian" in reads[1]
    parties = {p["audience"]: p for step in r.json()["steps"] for p in step["parties"]}
    assert parties["parents_away"]["status"] == "unreachable"
    assert [(c["channel"], c["address"]) for c in parties["county_bureau"]["contacts"]] == [
        ("sms", e164("13500135001")),
        ("voice", e164("13500135001")),
    ]
    await kit.settle()
    texts = [m["text"] for m in (await kit.outbox())["sms"] if m["to"] == e164(LEADER)]
    assert sum("无可联系" in t and "在外务工家长" in t for t in texts) == 2  # one per report


async def test_numbers_that_cannot_be_dialled_are_left_out_of_the_chain_and_shown_in_its_record(kit):
    family = await kit.family(
        [{"key": "grandma", "role": GuardianRole.entrusted_guardian, "relation": "祖母", "name": "王桂英",
          "phone": "123", "phone_alt": "0739-5221234"}]
    )  # fmt: skip
    incident = await kit.report(family.child_id)
    contacts = incident["steps"][0]["parties"][0]["contacts"]
    # The mobile is not a number; the landline gets a call but no SMS.
    assert [(c["channel"], c["address"]) for c in contacts] == [("voice", "+867395221234")]
    frozen = kinds(await kit.timeline(incident["id"]), "chain_frozen")[0]["detail"]["parties"][0]
    assert frozen["contacts"][0]["unusable"] == ["phone_format"]


# ---- who sees what ---------------------------------------------------------------------------------------


async def test_an_incident_is_seen_by_its_school_its_township_and_its_county_only(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    for who, status in (
        ("teacher1", 200), ("admin1", 200), ("bureau", 200), ("official1", 200), ("platform", 200),
        ("admin2", 404), ("teacher2", 404), ("official2", 404), ("other_bureau", 404),
    ):  # fmt: skip
        r = await kit.client.get(f"/incidents/{incident['id']}", headers=await kit.headers(who))
        assert r.status_code == status, who
        r = await kit.client.get(f"/incidents/{incident['id']}/timeline", headers=await kit.headers(who))
        assert r.status_code == status, who
        listed = await kit.client.get("/incidents", headers=await kit.headers(who))
        assert listed.json()["count"] == (1 if status == 200 else 0), who


async def test_the_school_dials_full_numbers_the_bureau_sees_them_masked_and_reads_are_audited(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    school = await kit.incident(incident["id"], who="teacher1")
    bureau = await kit.incident(incident["id"], who="bureau")
    assert school["steps"][0]["parties"][0]["contacts"][0]["address"] == e164(GRANDMA)
    assert bureau["steps"][0]["parties"][0]["contacts"][0]["address"] == "+86***8001"
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        actions = (
            (
                await s.execute(
                    sa.select(AuditEntry.action).where(AuditEntry.resource_id == incident["id"]).order_by(AuditEntry.id)
                )
            )
            .scalars()
            .all()
        )
    # The report's answer and the teacher's read show full numbers; the bureau's masked ones are no such read.
    assert actions == ["incident.create", "incident.contacts.read", "incident.contacts.read"]


async def test_after_the_chain_a_report_is_back_in_the_reporters_role_and_scope(kit):
    # The chain is frozen as the owner (the incident's insert takes that role as it ends); what follows in the
    # report's transaction runs as the reporter again, under row security.
    family = await kit.family()
    other = await kit.family(school="school2")
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        teacher = await principal_of(s, kit.world["teacher1"])
    async with scoped_session(kit.app.state.sessionmaker, teacher, clock=kit.clock) as s:
        await report_incident(
            s,
            teacher,
            data=IncidentCreate.model_validate(body(kit, family.child_id)),
            settings=kit.app.state.settings,
            now=kit.clock.now(),
        )
        assert (await s.execute(sa.text("SELECT current_user"))).scalar_one() == db_role(teacher)
        seen = await s.execute(
            sa.text("SELECT id FROM child WHERE id = ANY(:ids)"), {"ids": [family.child_id, other.child_id]}
        )
        assert seen.scalars().all() == [family.child_id]


async def test_a_report_no_one_is_answered_with_records_no_read_of_its_numbers(kit):
    # The demo's seeder reports through the service without answering with the incident.
    family = await kit.family()
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        teacher = await principal_of(s, kit.world["teacher1"])
    async with scoped_session(kit.app.state.sessionmaker, teacher, clock=kit.clock) as s:
        incident = await report_incident(
            s,
            teacher,
            data=IncidentCreate.model_validate(body(kit, family.child_id)),
            settings=kit.app.state.settings,
            now=kit.clock.now(),
        )
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        actions = await s.execute(sa.select(AuditEntry.action).where(AuditEntry.resource_id == str(incident.id)))
        assert actions.scalars().all() == ["incident.create"]


async def test_a_family_cannot_read_incidents(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    r = await kit.client.get(f"/incidents/{incident['id']}", headers=await kit.headers(family.accounts["father"]))
    assert r.status_code == 403


# ---- updates, outcome, closure ---------------------------------------------------------------------------


async def test_updates_and_the_outcome_go_on_the_timeline(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    r = await post(
        kit, f"/incidents/{incident['id']}/updates", "teacher1", {"note": "已送镇卫生院", "severity": "severe"}
    )
    assert r.status_code == 200 and r.json()["severity"] == "severe"
    r = await post(kit, f"/incidents/{incident['id']}/outcome", "teacher1", {"outcome": "hospital", "note": "轻微骨裂"})
    assert r.json()["outcome"] == "hospital"
    entries = kinds(await kit.timeline(incident["id"]), "update", "outcome_recorded")
    assert [e["detail"].get("note") for e in entries] == ["已送镇卫生院", "轻微骨裂"]
    assert entries[0]["detail"]["severity_to"] == "severe"


async def test_an_incident_closes_only_when_every_step_is_told_and_the_outcome_recorded(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    path = f"/incidents/{incident['id']}"
    r = await post(kit, f"{path}/close", "admin1", {"summary": "已处理"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "incident_chain_open")
    assert "告知在外务工家长" in r.json()["error"]["message"]
    detail = await kit.incident(incident["id"])
    for step in detail["steps"]:
        for party in step["parties"]:
            r = await post(
                kit, f"{path}/calls", "teacher1",
                {"party_id": party["id"], "contact_label": party["label"], "called_at": kit.clock.now().isoformat()},
            )  # fmt: skip
            assert r.status_code == 201, r.text
    r = await post(kit, f"{path}/close", "admin1", {"summary": "已处理"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "outcome_missing")
    await post(kit, f"{path}/outcome", "teacher1", {"outcome": "handed_to_family"})
    r = await post(kit, f"{path}/close", "teacher1", {"summary": "已处理"})
    assert r.status_code == 403
    r = await post(kit, f"{path}/close", "admin1", {"summary": "孩子已由祖母接回，家长已知悉。"})
    assert r.status_code == 200 and r.json()["status"] == "closed"
    r = await post(kit, f"{path}/updates", "teacher1", {"note": "补充"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "incident_closed")


async def test_an_incident_and_its_record_can_never_be_deleted_or_rewritten(kit):
    family = await kit.family()
    await kit.report(family.child_id)
    for statement in (
        "DELETE FROM incident",
        "UPDATE incident_event SET kind = 'closed'",
        "DELETE FROM incident_event",
    ):
        async with kit.app.state.engine.connect() as conn:
            with pytest.raises(DBAPIError, match="append-only"):
                await conn.execute(sa.text(statement))


# ---- manual actions --------------------------------------------------------------------------------------


async def test_escalate_now_moves_on_without_waiting_out_the_acknowledgement(kit):
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="no_answer")
    incident = await kit.report(family.child_id)
    await kit.settle()
    assert await attempts(kit, GRANDPA) == []
    r = await post(kit, f"/incidents/{incident['id']}/escalate", "teacher1", {"step_no": 1})
    assert r.status_code == 200, r.text
    await kit.settle()
    assert [a[0] for a in await attempts(kit, GRANDPA)] == ["voice"]
    assert kinds(await kit.timeline(incident["id"]), "escalated")[0]["actor_account_id"] == str(kit.world["teacher1"])


async def test_escalate_now_starts_a_held_step_and_refuses_when_all_is_told(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id, holds=[{"step_no": 1, "minutes": 10}])
    await post(kit, f"/incidents/{incident['id']}/escalate", "teacher1")
    await kit.settle()
    assert await attempts(kit, GRANDMA) == [("voice", e164(GRANDMA), "accepted")]
    assert (await kit.step(incident["id"], 1))["status"] == "told"
    r = await post(kit, f"/incidents/{incident['id']}/escalate", "teacher1", {"step_no": 1})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "nothing_to_escalate")


async def test_a_number_added_during_the_emergency_is_tried_at_once_even_for_a_flagged_party(kit):
    family = await kit.family([])
    incident = await kit.report(family.child_id)
    party = next(p for s in incident["steps"] for p in s["parties"] if p["audience"] == "entrusted_guardian")
    assert party["status"] == "unreachable"
    path = f"/incidents/{incident['id']}/parties/{party['id']}/contacts"
    r = await post(kit, path, "teacher1", {"label": "邻居", "name": "李婶", "phone": "abc"})
    assert (r.status_code, r.json()["error"]["code"]) == (422, "phone_format")
    r = await post(kit, path, "teacher1", {"label": "邻居", "name": "李婶", "phone": "138 0013 8009"})
    assert r.status_code == 201, r.text
    await kit.settle()
    assert [a[0] for a in await attempts(kit, "13800138009")] == ["voice"]
    party = await kit.party(incident["id"], "entrusted_guardian")
    assert party["status"] == "told"
    r = await post(kit, path, "teacher1", {"label": "邻居", "phone": "13800138010"})
    assert (r.status_code, r.json()["error"]["code"]) == (409, "party_told")


async def test_resend_sends_a_new_attempt_to_the_contact_now(kit):
    family = await kit.family()
    await kit.script("voice/numbers", number=e164(GRANDMA), outcome="no_answer")
    incident = await kit.report(family.child_id)
    await kit.settle()
    party = await kit.party(incident["id"], "entrusted_guardian")
    path = f"/incidents/{incident['id']}/parties/{party['id']}/resend"
    r = await post(kit, path, "teacher1", {"contact_id": str(party["id"])})
    assert (r.status_code, r.json()["error"]["code"]) == (404, "contact_not_found")
    r = await post(kit, path, "teacher1", {"contact_id": party["contacts"][0]["id"]})
    assert r.status_code == 200, r.text
    await kit.settle()
    assert [a[0] for a in await attempts(kit, GRANDMA)] == ["voice", "sms", "voice"]
    # Unanswered again: the chain carries on where it was, with the grandfather, who presses 1.
    assert [a[0] for a in await attempts(kit, GRANDPA)] == ["voice"]
    r = await post(kit, path, "teacher1")
    assert (r.status_code, r.json()["error"]["code"]) == (409, "party_told")


async def test_manual_actions_are_for_the_school_of_the_incident(kit):
    family = await kit.family()
    incident = await kit.report(family.child_id)
    party = next(p for s in incident["steps"] for p in s["parties"])
    for path, payload in (
        ("escalate", None),
        (f"parties/{party['id']}/resend", None),
        (f"parties/{party['id']}/contacts", {"label": "邻居", "phone": "13800138009"}),
    ):
        r = await post(kit, f"/incidents/{incident['id']}/{path}", "teacher2", payload)
        assert r.status_code == 404, path
        r = await post(kit, f"/incidents/{incident['id']}/{path}", "bureau", payload)
        assert r.status_code == 403, path


# ---- the timeline ----------------------------------------------------------------------------------------


async def test_the_timeline_tells_the_incident_minute_by_minute_in_beijing_time(kit):
    family = await kit.family()
    happened = kit.clock.now() - timedelta(minutes=3)
    incident = await kit.report(family.child_id, occurred_at=happened.isoformat())
    await kit.settle()
    r = await kit.client.get(f"/incidents/{incident['id']}/timeline", headers=await kit.headers("bureau"))
    timeline = r.json()
    assert timeline["case_code"] == incident["case_code"]
    first = timeline["entries"][0]
    assert (first["kind"], first["t_plus"], first["at_local"]) == ("reported", "T+03:00", "2026-11-24 10:00:00")
    sent = kinds(timeline["entries"], "message_sent")
    assert all(e["detail"]["provider_message_id"] for e in sent)
    assert {e["step_no"] for e in sent} == {1, 2}
    [told] = kinds(timeline["entries"], "step_told")
    assert told["detail"]["deadline_met"] is True and told["detail"]["minutes_from_start"] == 3.0
    # Numbers are masked in the proof; names of the people told are there, the child's is not.
    assert "13800138001" not in r.text and "刘小明" not in r.text
