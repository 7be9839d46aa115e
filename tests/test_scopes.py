"""Scope rules: nobody sees an object outside their part of the county; such objects answer 404."""

import pytest


async def school_names(client, world, who):
    r = await client.get("/schools", headers=world.headers(who))
    assert r.status_code == 200, r.text
    return sorted(s["name"] for s in r.json()["data"])


@pytest.mark.parametrize(
    ("who", "expected"),
    [
        ("platform", ["柳河乡中心小学", "白沙镇完小", "石桥镇中心小学"]),
        ("bureau", ["柳河乡中心小学", "石桥镇中心小学"]),
        ("other_bureau", ["白沙镇完小"]),
        ("official1", ["石桥镇中心小学"]),
        ("official2", ["柳河乡中心小学"]),
        ("admin1", ["石桥镇中心小学"]),
        ("teacher2", ["柳河乡中心小学"]),
    ],
)
async def test_each_role_lists_only_its_schools(client, world, who, expected):
    assert await school_names(client, world, who) == expected


async def test_a_school_outside_scope_is_not_found(client, world):
    r = await client.get(f"/schools/{world['school2']}", headers=world.headers("admin1"))
    assert r.status_code == 404
    assert r.json()["error"]["code"] == "school_not_found"
    r = await client.get(f"/schools/{world['school1']}", headers=world.headers("other_bureau"))
    assert r.status_code == 404


async def test_classes_of_another_school_are_not_found(client, world):
    r = await client.get(f"/schools/{world['school2']}/classes", headers=world.headers("teacher1"))
    assert r.status_code == 404
    r = await client.patch(f"/classes/{world['class21']}", json={"name": "9班"}, headers=world.headers("admin1"))
    assert r.status_code == 404


async def test_county_bureau_counts_only_its_county(client, world):
    r = await client.get("/accounts", headers=world.headers("bureau"))
    assert r.status_code == 200
    names = {a["display_name"] for a in r.json()["data"]}
    assert "白沙校长" not in names and "白水县教育局" not in names
    assert "石桥校长" in names and "柳河校长" in names
    assert r.json()["count"] == len(names)


async def test_anonymous_requests_are_refused(client, world):
    r = await client.get("/schools")
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "unauthorized"


async def test_subject_teachers_are_assigned_only_within_the_admins_school(client, world):
    ok = await client.put(f"/classes/{world['class11']}/teachers/{world['teacher1b']}", headers=world.headers("admin1"))
    assert ok.status_code == 204, ok.text
    r = await client.put(f"/classes/{world['class11']}/teachers/{world['teacher2']}", headers=world.headers("admin1"))
    assert r.status_code == 422 and r.json()["error"]["code"] == "head_teacher_invalid"
    r = await client.put(f"/classes/{world['class21']}/teachers/{world['teacher1']}", headers=world.headers("admin1"))
    assert r.status_code == 404


async def test_a_subject_teacher_gets_the_class_in_their_principal(client, world, app):
    await client.put(f"/classes/{world['class11']}/teachers/{world['teacher1b']}", headers=world.headers("admin1"))
    from api.db import scoped_session
    from api.scoping import SYSTEM
    from api.security import read_access_token
    from api.services.auth import load_principal

    claims = read_access_token(app.state.settings, world.tokens["teacher1b"], app.state.clock.now())
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        principal = await load_principal(s, claims)
    assert principal.class_ids == {world["class11"], world["class12"]}
