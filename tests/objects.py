"""One object of every id kind in school 1, and who must not reach it — for the tests that sweep every endpoint.

A path parameter's name is its id kind (``child_id``, ``incident_id`` …). :data:`BUILDERS` maps each kind to
a builder that makes one such object in school 1 (class 3(1) of 石桥镇中心小学), consistent with the others: the
guardian link is of that child, the party is of that incident. The access sweep and the API fuzz enumerate the
app's routes, so a new endpoint joins them by itself; one whose id kind has no builder here fails the sweep
with a message saying to add one (or, for a path parameter that is not an object id, to say why in
:data:`NOT_OBJECT_IDS`).

Each builder also says at which level its object lives; :data:`OUT_OF_SCOPE` lists, per level, the accounts of
the test world that must not see it: another county, township or school, and the family of another child.
"""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from enum import StrEnum

import httpx
from fastapi import FastAPI

from api.db import scoped_session
from api.models.accounts import Account, Role
from api.models.children import Child, Sex
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.scoping import SYSTEM
from tests.factories import World, login_token


class Level(StrEnum):
    county = "county"  # the county of school 1
    township = "township"  # township 1 (石桥镇), where school 1 is
    school = "school"  # school 1 itself
    child = "child"  # a child of class 3(1) and what hangs on that child (guardians, incidents)


_OTHER_AREAS = ["other_bureau", "admin3"]
_OTHER_TOWNSHIP = ["official2", "admin2", "teacher2"]

# Accounts of the test world (see :func:`add_families`) that must get "not found" for an object of each level.
# Staff of the same school (teacher1b, another class) see a child at limited detail, so are not listed.
OUT_OF_SCOPE: dict[Level, list[str]] = {
    Level.county: [*_OTHER_AREAS, "family1", "family2"],
    Level.township: [*_OTHER_AREAS, *_OTHER_TOWNSHIP, "family1", "family2"],
    Level.school: [*_OTHER_AREAS, *_OTHER_TOWNSHIP, "family1", "family2"],
    Level.child: [*_OTHER_AREAS, *_OTHER_TOWNSHIP, "family2"],
}

# The role of each account of the test world (families added by :func:`add_families`).
ROLE_OF: dict[str, Role] = {
    "platform": Role.platform_admin,
    "bureau": Role.county_bureau,
    "other_bureau": Role.county_bureau,
    "official1": Role.township_official,
    "official2": Role.township_official,
    "admin1": Role.school_admin,
    "admin2": Role.school_admin,
    "admin3": Role.school_admin,
    "teacher1": Role.teacher,
    "teacher1b": Role.teacher,
    "teacher2": Role.teacher,
    "family1": Role.family,
    "family2": Role.family,
}

# Accounts that see an object of school 1 in full, tried in this order for the control request that proves
# the built object is really there (so a 404 from an out-of-scope account is not a 404 for everyone).
IN_SCOPE = ["admin1", "teacher1", "official1", "bureau", "platform", "family1"]

# Path parameters that do not name an object in anyone's scope, and why the access sweep leaves them out.
NOT_OBJECT_IDS = {
    "token": "an acknowledgement link's token is its own capability, used without an account "
    "(forged and expired tokens: tests/test_inbound.py)",
    "term_key": "a term's name such as 2026-2027-1, not an object (the school of the path is; bad keys: "
    "tests/test_stats_scope.py)",
}


@dataclass
class Objects:
    """The objects built so far for one test, by id kind (built on first use, once). The world must have its
    families (:func:`add_families`): the child of ``family1`` is the child of the builders."""

    app: FastAPI
    client: httpx.AsyncClient
    world: World
    now: datetime
    ids: dict[str, str] = field(default_factory=dict)

    async def get(self, kind: str) -> str:
        if kind not in self.ids:
            self.ids[kind] = str(await BUILDERS[kind].build(self))
        return self.ids[kind]

    async def build_all(self) -> dict[str, str]:
        for kind in BUILDERS:
            await self.get(kind)
        return dict(self.ids)

    async def fresh_token(self, who: str) -> str:
        """A token of a new login session of ``who`` (for cases that end the session they are sent with)."""
        async with scoped_session(self.app.state.sessionmaker, SYSTEM) as s:
            account = await s.get_one(Account, self.world[who])
            return await login_token(s, self.app, account, self.now)

    async def post(self, path: str, who: str, body: dict) -> dict:
        r = await self.client.post(path, json=body, headers=self.world.headers(who))
        assert r.status_code == 201, f"building test objects: POST {path} → {r.status_code} {r.text}"
        result: dict = r.json()
        return result


@dataclass(frozen=True)
class Builder:
    level: Level
    build: Callable[[Objects], Awaitable[uuid.UUID | str]]


async def add_families(app: FastAPI, world: World, now: datetime) -> None:
    """Two family accounts: ``family1``, the father of a child of class 3(1) of school 1 (the child of the
    builders), and ``family2``, the mother of a child of school 2. Tokens in ``world.tokens`` as for staff."""
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        for key, school, klass, name, relation in (
            ("family1", "school1", "class11", "刘建军", "父亲"),
            ("family2", "school2", "class21", "陈秀兰", "母亲"),
        ):
            child = Child(
                school_id=world[school],
                class_id=world[klass],
                name="刘小明" if key == "family1" else "陈可欣",
                sex=Sex.male if key == "family1" else Sex.female,
                birth_date=date(2016, 3, 1),
            )
            account = Account(role=Role.family, display_name=name)
            s.add_all([child, account])
            await s.flush()
            phone = "13900139001" if key == "family1" else "13900139002"
            guardian = Guardian(name=name, phone=phone, account_id=account.id)
            s.add(guardian)
            await s.flush()
            link = ChildGuardian(
                child_id=child.id, guardian_id=guardian.id, role=GuardianRole.parent_away, relation=relation
            )
            s.add(link)
            await s.flush()
            world.ids.update(
                {key: account.id, f"{key}_child": child.id, f"{key}_guardian": guardian.id, f"{key}_link": link.id}
            )
            world.tokens[key] = await login_token(s, app, account, now)


async def _account(o: Objects) -> uuid.UUID:
    # A teacher of school 1 who holds no token of the test world, so deactivating it locks nobody out.
    async with scoped_session(o.app.state.sessionmaker, SYSTEM) as s:
        account = Account(
            role=Role.teacher,
            display_name="周老师",
            username="zhou-sweep",
            county_id=o.world["county"],
            township_id=o.world["township1"],
            school_id=o.world["school1"],
        )
        s.add(account)
        await s.flush()
        return account.id


async def _invite(o: Objects) -> str:
    issued = await o.post(f"/schools/{o.world['school1']}/invites", "admin1", {"display_name": "新来的周老师"})
    return str(issued["id"])


async def _incident(o: Objects) -> str:
    body = {
        "child_id": str(o.world["family1_child"]),
        "category": "missing",
        "severity": "severe",
        "summary": "午休后未回教室，校园内未找到",
        "location": "学校及周边",
        "occurred_at": o.now.isoformat(),
        "time_basis": "discovered",
        "first_actions": "全体值班教师分组寻找",
    }
    return str((await o.post("/incidents", "teacher1", body))["id"])


async def _party(o: Objects) -> str:
    incident = await o.get("incident_id")
    r = await o.client.get(f"/incidents/{incident}", headers=o.world.headers("teacher1"))
    assert r.status_code == 200, r.text
    return str(r.json()["steps"][0]["parties"][0]["id"])


async def _duty_contact(o: Objects) -> str:
    body = {"township_id": str(o.world["township1"]), "name": "石桥镇值班室", "phone": "13700137001"}
    return str((await o.post(f"/counties/{o.world['county']}/duty-contacts", "official1", body))["id"])


async def _call_line(o: Objects) -> str:
    body = {
        "name": "亲情电话",
        "kind": "phone",
        "room": "留守儿童之家",
        "capacity": 2,
        "windows": [{"weekday": d, "starts": "07:00", "ends": "22:00"} for d in range(7)],
    }
    return str((await o.post(f"/schools/{o.world['school1']}/call-lines", "admin1", body))["id"])


async def _family_call(o: Objects) -> str:
    """A call booked by family1 for its child, on the first slot at least a day ahead."""
    line = await o.get("line_id")
    r = await o.client.get(f"/call-lines/{line}/slots", headers=o.world.headers("admin1"))
    assert r.status_code == 200, r.text
    start = next(s["starts_at"] for s in r.json() if s["starts_at"] >= (o.now + timedelta(days=1)).isoformat())
    body = {"child_id": str(o.world["family1_child"]), "line_id": line, "starts_at": start}
    return str((await o.post("/family-calls", "family1", body))["id"])


async def _pairing(o: Objects) -> str:
    # teacher1 is the proxy parent of the child of the builders (a head teacher pairs a child of their class).
    body = {"kind": "proxy_parent", "staff_id": str(o.world["teacher1"])}
    return str((await o.post(f"/children/{o.world['family1_child']}/care-pairings", "admin1", body))["id"])


async def _care_record(o: Objects) -> str:
    body = {
        "kind": "talk",
        "occurred_on": o.now.date().isoformat(),
        "content": {"place": "教室", "topics": "最近学习和生活", "mood": "good"},
    }
    return str((await o.post(f"/children/{o.world['family1_child']}/care-records", "teacher1", body))["id"])


async def _plan(o: Objects) -> str:
    body = {"name": "2026年秋季学期关爱留守儿童工作计划", "starts_on": "2026-09-01", "ends_on": "2027-01-20"}
    return str((await o.post(f"/schools/{o.world['school1']}/plans", "admin1", body))["id"])


async def _plan_member(o: Objects) -> str:
    body = {"position": "leader", "account_id": str(o.world["admin1"]), "duty": "全面负责"}
    return str((await o.post(f"/plans/{await o.get('plan_id')}/members", "admin1", body))["id"])


async def _plan_item(o: Objects) -> str:
    body = {"month": "2026-11", "title": "开展留守儿童法制教育讲座", "kind": "activity"}
    return str((await o.post(f"/plans/{await o.get('plan_id')}/items", "admin1", body))["id"])


async def _activity(o: Objects) -> str:
    body = {
        "kind": "lecture_law",
        "title": "法制教育讲座",
        "held_on": "2026-11-20",
        "place": "学校多功能室",
        "organiser": "guan_gong_wei",
        "child_ids": [str(o.world["family1_child"])],
    }
    return str((await o.post(f"/schools/{o.world['school1']}/activities", "admin1", body))["id"])


async def _summary(o: Objects) -> str:
    body = {"starts_on": "2026-09-01", "ends_on": "2027-01-20", "highlights": "结对帮扶全覆盖"}
    return str((await o.post(f"/schools/{o.world['school1']}/summaries", "admin1", body))["id"])


BUILDERS: dict[str, Builder] = {
    "county_id": Builder(Level.county, lambda o: _given(o, "county")),
    "school_id": Builder(Level.school, lambda o: _given(o, "school1")),
    "class_id": Builder(Level.school, lambda o: _given(o, "class11")),
    "account_id": Builder(Level.school, _account),
    "invite_id": Builder(Level.school, _invite),
    "contact_id": Builder(Level.township, _duty_contact),
    "child_id": Builder(Level.child, lambda o: _given(o, "family1_child")),
    "guardian_id": Builder(Level.child, lambda o: _given(o, "family1_guardian")),
    "link_id": Builder(Level.child, lambda o: _given(o, "family1_link")),
    "incident_id": Builder(Level.child, _incident),
    "party_id": Builder(Level.child, _party),
    "line_id": Builder(Level.school, _call_line),
    "call_id": Builder(Level.child, _family_call),
    "pairing_id": Builder(Level.child, _pairing),
    "record_id": Builder(Level.child, _care_record),
    "plan_id": Builder(Level.school, _plan),
    "plan_member_id": Builder(Level.school, _plan_member),
    "plan_item_id": Builder(Level.school, _plan_item),
    "activity_id": Builder(Level.school, _activity),
    "summary_id": Builder(Level.school, _summary),
}


async def _given(o: Objects, key: str) -> uuid.UUID:
    return o.world[key]


# ---- the care rhythm: a school's terms and holidays --------------------------------------------------------


async def _term(o: Objects) -> str:
    body = {"name": "2026年秋季学期", "starts_on": "2026-09-01", "ends_on": "2027-01-20"}
    return str((await o.post(f"/schools/{o.world['school1']}/terms", "admin1", body))["id"])


async def _holiday(o: Objects) -> str:
    body = {"name": "国庆节", "starts_on": "2026-10-01", "ends_on": "2026-10-07"}
    return str((await o.post(f"/schools/{o.world['school1']}/holidays", "admin1", body))["id"])


BUILDERS.update(
    {
        "term_id": Builder(Level.school, _term),
        "holiday_id": Builder(Level.school, _holiday),
    }
)
