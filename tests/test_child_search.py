"""Finding a child: by name in characters or pinyin, by class, status, flags and completeness; paginated with
totals, sorted by class then name, and every page recorded."""

import pytest
from sqlalchemy import select

from api.models.audit import AuditEntry
from api.models.children import ChildStatus, ParentsAway
from tests.test_completeness import make_child


@pytest.fixture
async def school(app, world, system_session):
    """Children of 石桥镇中心小学 (三年级1班, 三年级2班) and one of 柳河乡中心小学."""
    s1, c11, c12 = world["school1"], world["class11"], world["class12"]
    made = {}
    for name, class_id, extra in [
        ("张晓明", c11, {}),
        ("张小梅", c12, {"special_hardship": True}),
        ("曾雨桐", c11, {"special_hardship": True, "single_parent": True}),
        ("欧阳子轩", c12, {"home_address": None}),
        ("李浩然", c11, {"is_left_behind": False, "parents_away": ParentsAway.none}),
        ("王一诺", c11, {"status": ChildStatus.graduated}),
        ("阿依古丽·买买提", None, {}),
    ]:
        made[name] = await make_child(app, system_session, s1, class_id, name=name, **extra)
    made["张晓东"] = await make_child(app, system_session, world["school2"], world["class21"], name="张晓东")
    await system_session.commit()
    return made


async def names(client, world, who="admin1", **params):
    r = await client.get("/children", params=params, headers=world.headers(who))
    assert r.status_code == 200, r.text
    return [c["name"] for c in r.json()["data"]]


@pytest.mark.parametrize(
    ("q", "expected"),
    [
        ("晓明", ["张晓明"]),
        ("张", ["张晓明", "张小梅"]),
        ("zhang", ["张晓明", "张小梅"]),
        ("xiaomei", ["张小梅"]),
        ("zhangxm", []),
        ("zxm", ["张晓明", "张小梅"]),
        ("ZXM", ["张晓明", "张小梅"]),
        ("z x m", ["张晓明", "张小梅"]),
        ("zeng", ["曾雨桐"]),  # 曾 as a surname reads Zēng, not céng
        ("ceng", []),
        ("oyzx", ["欧阳子轩"]),
        ("ouyang", ["欧阳子轩"]),
        ("ayiguli", ["阿依古丽·买买提"]),
        ("张xm", ["张晓明", "张小梅"]),
        ("%", ["张晓明", "曾雨桐", "张小梅", "欧阳子轩", "阿依古丽·买买提"]),
        ("赵", []),
    ],
)
async def test_a_child_is_found_by_characters_pinyin_or_initials(client, world, school, q, expected):
    assert sorted(await names(client, world, q=q, left_behind="true")) == sorted(expected)


async def test_lists_are_sorted_by_class_then_name_and_children_without_a_class_come_last(client, world, school):
    # Within a class by pinyin: lihaoran, zengyutong, zhangxiaoming.
    assert await names(client, world) == ["李浩然", "曾雨桐", "张晓明", "欧阳子轩", "张小梅", "阿依古丽·买买提"]
    r = await client.get("/children", headers=world.headers("admin1"))
    labels = [c["class_label"] for c in r.json()["data"]]
    assert labels == ["三年级1班"] * 3 + ["三年级2班"] * 2 + [None]


async def test_pages_carry_the_total(client, world, school):
    r = await client.get("/children", params={"limit": 2, "offset": 2}, headers=world.headers("admin1"))
    body = r.json()
    assert body["count"] == 6 and [c["name"] for c in body["data"]] == ["张晓明", "欧阳子轩"]
    r = await client.get("/children", params={"limit": 2, "offset": 10}, headers=world.headers("admin1"))
    assert r.json() == {"data": [], "count": 6}
    for bad in ({"limit": 0}, {"limit": 201}, {"offset": -1}, {"q": "x" * 33}, {"status": "deleted"}, {"flag": "rich"}):
        r = await client.get("/children", params=bad, headers=world.headers("admin1"))
        assert r.status_code == 422 and r.json()["error"]["code"] == "validation_error", bad


async def test_filters_combine(client, world, school):
    assert await names(client, world, class_id=str(world["class12"])) == ["欧阳子轩", "张小梅"]
    assert await names(client, world, flag="special_hardship") == ["曾雨桐", "张小梅"]
    assert await names(client, world, flag=["special_hardship", "single_parent"]) == ["曾雨桐"]
    assert await names(client, world, left_behind="false") == ["李浩然"]
    assert await names(client, world, status="graduated") == ["王一诺"]
    assert len(await names(client, world, status=["enrolled", "graduated"])) == 7
    assert await names(client, world, complete="false") == ["欧阳子轩", "阿依古丽·买买提"]
    assert await names(client, world, complete="false", class_id=str(world["class12"]), q="oy") == ["欧阳子轩"]
    r = await client.get("/children", params={"complete": "false"}, headers=world.headers("admin1"))
    missing = {c["name"]: [m["code"] for m in c["missing"]] for c in r.json()["data"]}
    assert missing == {"欧阳子轩": ["missing_home_address"], "阿依古丽·买买提": ["missing_class"]}


async def test_each_sees_the_children_of_their_own_scope(client, world, school):
    assert len(await names(client, world, who="teacher1b")) == 6
    assert await names(client, world, who="admin2") == ["张晓东"]
    assert await names(client, world, who="official2") == ["张晓东"]
    bureau = await names(client, world, who="bureau", q="zhangxiao")
    assert bureau == ["张晓东", "张晓明", "张小梅"]  # 柳河乡中心小学 sorts before 石桥镇中心小学
    assert await names(client, world, who="other_bureau") == []
    # Asking for another school's class or school is not an error: nothing of it is in scope.
    assert await names(client, world, class_id=str(world["class21"])) == []
    assert await names(client, world, school_id=str(world["school2"])) == []


async def test_list_items_are_the_basic_view(client, world, school):
    r = await client.get("/children", params={"q": "晓明"}, headers=world.headers("teacher1b"))
    [item] = r.json()["data"]
    assert item["name"] == "张晓明" and item["class_label"] == "三年级1班" and item["school_name"] == "石桥镇中心小学"
    assert item["complete"] is True and item["missing"] == [] and item["flags"] == []
    for key in ("id_number_masked", "home_address", "health", "notes", "birth_date"):
        assert key not in item


async def test_each_page_is_one_audit_entry(client, world, school, system_session):
    await client.get("/children", params={"q": "zhang", "limit": 1}, headers=world.headers("teacher1"))
    await client.get("/children", params={"q": "zhang", "limit": 1, "offset": 1}, headers=world.headers("teacher1"))
    entries = (
        (
            await system_session.execute(
                select(AuditEntry).where(AuditEntry.action == "child.list").order_by(AuditEntry.id)
            )
        )
        .scalars()
        .all()
    )
    assert len(entries) == 2
    first, second = entries
    assert first.account_id == world["teacher1"] and first.school_id == world["school1"]
    assert first.changes["q"] == "zhang" and first.changes["count"] == 2
    assert first.changes["child_ids"] == [str(school["张晓明"].id)]
    assert second.changes["child_ids"] == [str(school["张小梅"].id)]
