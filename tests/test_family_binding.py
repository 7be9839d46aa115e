"""Family binding: a parent or guardian binds WeChat with a one-time invite and then sees exactly their own
children (siblings included), nothing else. WeChat is the fake provider speaking jscode2session."""

import uuid
from datetime import date, timedelta

from sqlalchemy import select

from api.db import scoped_session
from api.models.accounts import Account, InviteKind, Role
from api.models.audit import AuditEntry
from api.models.children import Child, Sex
from api.models.guardians import Guardian
from api.scoping import SYSTEM, Principal
from api.services.accounts import create_invite


async def make_child(app, world, *, school="school1", klass="class11", name="张子轩", **fields) -> uuid.UUID:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        child = Child(
            school_id=world[school],
            class_id=world[klass] if klass else None,
            name=name,
            sex=fields.pop("sex", Sex.male),
            birth_date=fields.pop("birth_date", date(2016, 5, 1)),
            **fields,
        )
        s.add(child)
        await s.flush()
        return child.id


async def link(client, world, child, *, who="admin1", **body):
    body.setdefault("role", "parent_away")
    body.setdefault("relation", "父亲")
    r = await client.post(f"/children/{child}/guardians", json=body, headers=world.headers(who))
    assert r.status_code == 201, r.text
    return r.json()


async def invite(client, world, child, guardian_id, who="admin1"):
    return await client.post(f"/children/{child}/guardians/{guardian_id}/invites", headers=world.headers(who))


async def invite_code(client, world, child, guardian_id, who="admin1"):
    r = await invite(client, world, child, guardian_id, who)
    assert r.status_code == 201, r.text
    return r.json()["code"]


async def bind(client, code, person="dad"):
    """wx.login → unbound → bind with the invite code, as the mini-program does; ``demo-x`` logs in as o-demo-x."""
    r = await client.post("/auth/wechat/login", json={"code": f"demo-{person}"})
    assert r.status_code == 200, r.text
    assert r.json()["status"] == "unbound"
    return await client.post(
        "/auth/wechat/bind", json={"binding_ticket": r.json()["binding_ticket"], "invite_code": code}
    )


def bearer(response):
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


async def siblings_with_father(client, world, app):
    """Two siblings in different classes of school 1 share their father; he gets an invite for the elder."""
    elder = await make_child(
        app, world, name="张子轩", birth_date=date(2015, 3, 2), id_number_masked="430524********1234"
    )
    younger = await make_child(app, world, name="张梓涵", klass="class12", sex=Sex.female, birth_date=date(2018, 9, 9))
    father = await link(client, world, elder, guardian={"name": "张伟", "phone": "13807398888", "work_city": "东莞"})
    await link(client, world, younger, guardian_id=father["guardian_id"])
    return elder, younger, father["guardian_id"]


async def test_a_father_binds_and_sees_exactly_his_two_children(client, world, app, fake):
    elder, younger, father = await siblings_with_father(client, world, app)
    classmate = await make_child(app, world, name="刘浩然")
    elsewhere = await make_child(app, world, school="school2", klass="class21", name="罗一鸣")
    await link(client, world, classmate, guardian={"name": "刘强", "phone": "13907390001"})

    headers = bearer(await bind(client, await invite_code(client, world, elder, father)))
    me = (await client.get("/auth/me", headers=headers)).json()
    assert me["role"] == "family" and me["display_name"] == "张伟" and me["wechat_bound"] is True

    r = await client.get("/me/children", headers=headers)
    assert r.status_code == 200, r.text
    assert [(c["name"], c["school_name"], c["class_label"], c["relation"]) for c in r.json()] == [
        ("张子轩", "石桥镇中心小学", "三年级1班", "父亲"),
        ("张梓涵", "石桥镇中心小学", "三年级2班", "父亲"),
    ]
    r = await client.get(f"/me/children/{elder}", headers=headers)
    assert r.status_code == 200, r.text
    detail = r.json()
    assert detail["id_number_masked"] == "430524********1234" and "id_number" not in detail
    assert detail["head_teacher_name"] == "李老师" and detail["age"] == 11
    for other in (classmate, elsewhere, uuid.uuid4()):
        r = await client.get(f"/me/children/{other}", headers=headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "child_not_found"


async def test_a_family_cannot_use_the_staff_side(client, world, app, fake):
    elder, _, father = await siblings_with_father(client, world, app)
    headers = bearer(await bind(client, await invite_code(client, world, elder, father)))
    for url in (
        f"/children/{elder}/guardians",
        f"/children/{elder}/contact-card",
        f"/guardians/{father}",
        f"/schools/{world['school1']}",
        "/accounts",
    ):
        r = await client.get(url, headers=headers)
        assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden", url
    r = await client.post(f"/children/{elder}/guardians/{father}/invites", headers=headers)
    assert r.status_code == 403


async def test_a_child_whose_link_ended_disappears_and_a_sibling_linked_later_appears(client, world, app, fake):
    elder, younger, father = await siblings_with_father(client, world, app)
    headers = bearer(await bind(client, await invite_code(client, world, elder, father)))
    links = (await client.get(f"/children/{younger}/guardians", headers=world.headers("admin1"))).json()
    r = await client.post(
        f"/children/{younger}/guardians/{links[0]['id']}/end",
        json={"reason": "转由外祖母监护"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200
    assert [c["name"] for c in (await client.get("/me/children", headers=headers)).json()] == ["张子轩"]
    assert (await client.get(f"/me/children/{younger}", headers=headers)).status_code == 404

    newborn = await make_child(app, world, name="张一诺", klass="class12", birth_date=date(2020, 1, 1))
    await link(client, world, newborn, guardian_id=father)
    names = [c["name"] for c in (await client.get("/me/children", headers=headers)).json()]
    assert names == ["张子轩", "张一诺"]


async def test_an_invite_works_once(client, world, app, fake):
    elder, _, father = await siblings_with_father(client, world, app)
    code = await invite_code(client, world, elder, father)
    bearer(await bind(client, code, "dad"))
    r = await bind(client, code, "someone-else")
    assert r.status_code == 422 and r.json()["error"]["code"] == "invite_used"


async def test_an_expired_invite_is_refused(client, world, app, fake, clock):
    elder, _, father = await siblings_with_father(client, world, app)
    code = await invite_code(client, world, elder, father)
    clock.advance(timedelta(days=8))
    r = await bind(client, code)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invite_expired"


async def test_a_new_invite_voids_the_earlier_one(client, world, app, fake):
    elder, _, father = await siblings_with_father(client, world, app)
    lost = await invite_code(client, world, elder, father)
    fresh = await invite_code(client, world, elder, father)
    r = await bind(client, lost)
    assert r.status_code == 422 and r.json()["error"]["code"] == "invite_expired"
    bearer(await bind(client, fresh))


async def test_a_bound_guardian_gets_no_second_account(client, world, app, fake, system_session):
    elder, _, father = await siblings_with_father(client, world, app)
    first = await invite_code(client, world, elder, father)
    # Two live invites for one guardian (the API voids earlier ones; here one is made behind its back)
    # must still not give the guardian a second account.
    second = await create_invite(
        system_session,
        Principal(account_id=world["admin1"], role=Role.school_admin, school_id=world["school1"]),
        settings=app.state.settings,
        school_id=world["school1"],
        kind=InviteKind.guardian,
        role=Role.family,
        display_name=None,
        guardian_id=uuid.UUID(father),
        now=app.state.clock.now(),
    )
    await system_session.commit()
    bearer(await bind(client, first, "dad"))
    r = await bind(client, second.code, "dad-second-phone")
    assert r.status_code == 409 and r.json()["error"]["code"] == "guardian_already_bound"
    r = await invite(client, world, elder, father)
    assert r.status_code == 409 and r.json()["error"]["code"] == "guardian_already_bound"
    families = await system_session.scalars(select(Account).where(Account.role == Role.family))
    assert len(list(families)) == 1


async def test_only_the_childs_school_admin_or_head_teacher_issues_guardian_invites(client, world, app, fake):
    elder, younger, father = await siblings_with_father(client, world, app)
    r = await invite(client, world, elder, father, who="teacher1b")  # heads class 12, not the elder's class 11
    assert r.status_code == 403 and r.json()["error"]["code"] == "not_head_teacher"
    r = await invite(client, world, elder, father, who="bureau")
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden"
    r = await invite(client, world, elder, father, who="admin2")
    assert r.status_code == 404 and r.json()["error"]["code"] == "child_not_found"
    stranger = await make_child(app, world, name="刘浩然")
    r = await invite(client, world, stranger, father)  # he is not this child's guardian
    assert r.status_code == 404 and r.json()["error"]["code"] == "guardian_link_not_found"


async def test_a_guardian_whose_links_all_ended_cannot_bind(client, world, app, fake):
    elder, younger, father = await siblings_with_father(client, world, app)
    code = await invite_code(client, world, elder, father)
    for child in (elder, younger):
        (row,) = (await client.get(f"/children/{child}/guardians", headers=world.headers("admin1"))).json()
        await client.post(
            f"/children/{child}/guardians/{row['id']}/end", json={"reason": "返乡"}, headers=world.headers("admin1")
        )
    r = await bind(client, code)
    assert r.status_code == 422 and r.json()["error"]["code"] == "guardian_not_linked"


async def test_a_parent_updates_their_own_phone_and_work_city_and_it_is_audited(
    client, world, app, fake, system_session
):
    elder, _, father = await siblings_with_father(client, world, app)
    headers = bearer(await bind(client, await invite_code(client, world, elder, father)))
    mine = (await client.get("/me/guardian", headers=headers)).json()
    assert mine["id"] == father and mine["phone"] == "13807398888" and mine["wechat_bound"] is True

    r = await client.patch("/me/guardian", json={"phone": "139 0739 7777", "work_city": "深圳"}, headers=headers)
    assert r.status_code == 200, r.text
    assert (r.json()["phone"], r.json()["work_city"]) == ("13907397777", "深圳")
    r = await client.patch("/me/guardian", json={"phone": "12345"}, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "phone_format"
    r = await client.patch("/me/guardian", json={"phone": None}, headers=headers)
    assert r.status_code == 422 and r.json()["error"]["code"] == "phone_required"
    r = await client.patch("/me/guardian", json={"name": "别人"}, headers=headers)
    assert r.status_code == 422  # the name is the school's to change

    staff_view = (await client.get(f"/children/{elder}/guardians", headers=world.headers("admin1"))).json()
    assert staff_view[0]["guardian"]["phone"] == "13907397777"
    entry = (
        await system_session.execute(
            select(AuditEntry).where(AuditEntry.action == "guardian.update", AuditEntry.role == "family")
        )
    ).scalar_one()
    assert entry.changes["phone"] == {"old": "13807398888", "new": "13907397777"}
    assert (await system_session.get(Guardian, uuid.UUID(father))).account_id == entry.account_id


async def test_a_familys_read_of_a_child_is_audited(client, world, app, fake, system_session):
    elder, _, father = await siblings_with_father(client, world, app)
    headers = bearer(await bind(client, await invite_code(client, world, elder, father)))
    await client.get(f"/me/children/{elder}", headers=headers)
    entry = (await system_session.execute(select(AuditEntry).where(AuditEntry.action == "child.read"))).scalar_one()
    assert entry.role == "family" and entry.resource_id == str(elder) and entry.school_id == world["school1"]


async def test_staff_have_no_family_view(client, world):
    r = await client.get("/me/children", headers=world.headers("admin1"))
    assert r.status_code == 403
