"""A county's chain policy — never later than 30 / 60 / 120 minutes — and its duty contacts (值班)."""

import pytest
import sqlalchemy as sa

from api.db import scoped_session
from api.models.accounts import Account
from api.models.audit import AuditEntry
from api.scoping import SYSTEM
from tests.test_escalation_support import Kit, e164, escalation_settings


@pytest.fixture
def settings():
    return escalation_settings()


def policy_path(kit: Kit, county: str = "county") -> str:
    return f"/counties/{kit.world[county]}/escalation-policy"


async def test_a_county_that_never_set_a_policy_has_the_school_plans_deadlines(kit):
    r = await kit.client.get(policy_path(kit), headers=await kit.headers("teacher1"))
    assert r.status_code == 200
    policy = r.json()
    assert policy["is_default"] is True
    assert (
        policy["guardian_deadline_minutes"],
        policy["parents_deadline_minutes"],
        policy["authorities_deadline_minutes"],
    ) == (30, 60, 120)


async def test_the_bureau_shortens_its_deadlines_and_the_change_is_audited(kit):
    r = await kit.client.put(
        policy_path(kit),
        json={"guardian_deadline_minutes": 20, "parents_deadline_minutes": 45, "ack_wait_minutes": 4},
        headers=await kit.headers("bureau"),
    )
    assert r.status_code == 200, r.text
    assert (r.json()["guardian_deadline_minutes"], r.json()["is_default"]) == (20, False)
    again = await kit.client.get(policy_path(kit), headers=await kit.headers("admin1"))
    assert again.json()["parents_deadline_minutes"] == 45
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        actions = (await s.execute(sa.select(AuditEntry.action))).scalars().all()
    assert "escalation_policy.create" in actions


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"guardian_deadline_minutes": 31}, "validation_error"),
        ({"parents_deadline_minutes": 61}, "validation_error"),
        ({"authorities_deadline_minutes": 121}, "validation_error"),
        ({"guardian_deadline_minutes": 10, "ack_wait_minutes": 5}, "policy_does_not_fit"),
        ({"guardian_deadline_minutes": 10, "near_deadline_minutes": 10, "ack_wait_minutes": 1}, "policy_does_not_fit"),
    ],
    ids=["guardian after 30 min", "parents after 1 h", "authorities after 2 h", "no room for 3 attempts",
         "alert as late as the deadline"],
)  # fmt: skip
async def test_no_county_may_set_a_later_deadline_than_the_plans_or_one_that_cannot_work(kit, change, code):
    r = await kit.client.put(policy_path(kit), json=change, headers=await kit.headers("bureau"))
    assert (r.status_code, r.json()["error"]["code"]) == (422, code)


@pytest.mark.parametrize(("who", "county", "status"), [("admin1", "county", 403), ("other_bureau", "county", 404)])
async def test_only_the_county_s_own_bureau_sets_its_policy(kit, who, county, status):
    r = await kit.client.put(
        policy_path(kit, county), json={"guardian_deadline_minutes": 20}, headers=await kit.headers(who)
    )
    assert r.status_code == status


async def test_duty_contacts_are_kept_by_the_bureau_and_each_township_for_itself(kit):
    path = f"/counties/{kit.world['county']}/duty-contacts"
    r = await kit.client.post(
        path, json={"name": "县教育局安全股值班室", "phone": "0739-522 1234"}, headers=await kit.headers("bureau")
    )
    assert r.status_code == 201, r.text
    assert r.json()["phone"] == "0739-5221234" and r.json()["township_id"] is None
    r = await kit.client.post(
        path,
        json={"name": "石桥镇值班室", "phone": "13700137001", "township_id": str(kit.world["township1"])},
        headers=await kit.headers("official1"),
    )
    assert r.status_code == 201, r.text
    # A township keeps its own roster only: not another township's (not even visible), not the bureau's.
    for who, township, status in (
        ("official2", "township1", 404),
        ("official1", "township3", 404),
        ("official1", None, 403),
    ):
        r = await kit.client.post(
            path,
            json={"name": "值班室", "phone": "13700137002", "township_id": township and str(kit.world[township])},
            headers=await kit.headers(who),
        )
        assert r.status_code == status, (who, township)
    for payload, code in (
        ({"name": "值班室", "phone": "12"}, "phone_format"),
        ({"name": "值班室"}, "duty_contact_unreachable"),
    ):
        r = await kit.client.post(path, json=payload, headers=await kit.headers("bureau"))
        assert (r.status_code, r.json()["error"]["code"]) == (422, code)
    seen = await kit.client.get(path, headers=await kit.headers("teacher1"))
    assert [c["name"] for c in seen.json()] == ["县教育局安全股值班室", "石桥镇值班室"]
    seen = await kit.client.get(path, headers=await kit.headers("official2"))
    assert seen.json() == []


async def test_a_retired_duty_contact_is_not_called_and_without_any_the_officials_accounts_are(kit):
    await kit.duty(township=None)
    path = f"/counties/{kit.world['county']}/duty-contacts"
    [duty] = (await kit.client.get(path, headers=await kit.headers("bureau"))).json()
    r = await kit.client.patch(
        f"/duty-contacts/{duty['id']}", json={"is_active": False}, headers=await kit.headers("bureau")
    )
    assert r.status_code == 200 and r.json()["is_active"] is False
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        (await s.get(Account, kit.world["bureau"])).phone = "13500135001"
    family = await kit.family()
    incident = await kit.report(family.child_id)
    bureau = next(p for p in incident["steps"][2]["parties"] if p["audience"] == "county_bureau")
    assert [(c["label"], c["channel"], c["address"]) for c in bureau["contacts"]] == [
        ("青山县教育局", "sms", e164("13500135001")),
        ("青山县教育局", "voice", e164("13500135001")),
    ]
