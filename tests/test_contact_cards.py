"""联系卡: the one page a teacher needs in an emergency — who to call, in which order, with which number."""

import io
import uuid
from datetime import date

from openpyxl import load_workbook
from sqlalchemy import select

from api.db import scoped_session
from api.models.accounts import Account
from api.models.audit import AuditEntry
from api.models.children import Child, ChildStatus, Sex
from api.scoping import SYSTEM
from api.services.contact_cards_xlsx import PAGE_BODY_HEIGHT, TITLE_ROWS

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


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


async def link(client, world, child, *, name, phone, relation, role="entrusted_guardian", who="admin1", **extra):
    r = await client.post(
        f"/children/{child}/guardians",
        json={"role": role, "relation": relation, "guardian": {"name": name, "phone": phone, **extra}},
        headers=world.headers(who),
    )
    assert r.status_code == 201, r.text
    return r.json()


async def set_phone(app, account_id, phone):
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        (await s.get(Account, account_id)).phone = phone


async def family_of_three(client, world, child):
    """A grandmother at home, the father away in 东莞, the mother away in 深圳 — then the mother first."""
    grandma = await link(
        client, world, child, name="王桂兰", phone="0739-5221234", relation="祖母", address="石门村3组", health="高血压"
    )
    await link(
        client, world, child, name="张伟", phone="13807398888", relation="父亲", role="parent_away", work_city="东莞"
    )
    mother = await link(
        client, world, child, name="李丽", phone="13907390002", relation="母亲", role="parent_away", work_city="深圳"
    )
    return grandma, mother


async def audit_entries(app, action):
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        return list((await s.execute(select(AuditEntry).where(AuditEntry.action == action))).scalars())


async def test_a_card_lists_active_guardians_in_call_order_with_full_numbers(client, world, app):
    child = await make_child(
        app,
        world,
        is_boarding=True,
        health="哮喘，随身带喷雾",
        home_address="石门村3组12号",
        birth_date=date(2016, 12, 1),
    )
    await set_phone(app, world["admin1"], "0739-5220000")
    await set_phone(app, world["teacher1"], "13700001111")
    grandma, mother = await family_of_three(client, world, child)
    await client.post(
        f"/children/{child}/guardians/{grandma['id']}/end", json={"reason": "住院"}, headers=world.headers("admin1")
    )
    r = await client.patch(
        f"/children/{child}/guardians/{mother['id']}", json={"contact_order": 1}, headers=world.headers("admin1")
    )
    assert r.status_code == 200

    r = await client.get(f"/children/{child}/contact-card", headers=world.headers("teacher1"))
    assert r.status_code == 200, r.text
    assert r.headers["cache-control"] == "no-store"
    card = r.json()
    assert card["child_name"] == "张子轩" and card["age"] == 9
    assert card["school_name"] == "石桥镇中心小学" and card["class_label"] == "三年级1班"
    assert card["school_phone"] == "0739-5220000"
    assert (card["head_teacher_name"], card["head_teacher_phone"]) == ("李老师", "13700001111")
    assert card["is_boarding"] is True and card["health"] == "哮喘，随身带喷雾"
    assert card["home_address"] == "石门村3组12号"
    assert [(g["order"], g["relation"], g["phone"], g["where"]) for g in card["guardians"]] == [
        (1, "母亲", "13907390002", "深圳"),
        (2, "父亲", "13807398888", "东莞"),
    ]
    assert card["generated_at"].endswith("+08:00")


async def test_any_staff_who_can_see_the_child_reads_full_numbers_and_every_read_is_audited(client, world, app):
    child = await make_child(app, world)
    await family_of_three(client, world, child)
    for who in ("teacher1b", "bureau"):
        r = await client.get(f"/children/{child}/contact-card", headers=world.headers(who))
        assert r.status_code == 200
        assert r.json()["guardians"][0]["phone"] == "0739-5221234"
    entries = await audit_entries(app, "contact_card.read")
    assert {(e.account_id, e.resource_id) for e in entries} == {
        (world["teacher1b"], str(child)),
        (world["bureau"], str(child)),
    }
    assert all(e.school_id == world["school1"] for e in entries)


async def test_a_card_outside_ones_scope_is_not_found(client, world, app):
    child = await make_child(app, world)
    for who in ("admin2", "teacher2", "other_bureau"):
        r = await client.get(f"/children/{child}/contact-card", headers=world.headers(who))
        assert r.status_code == 404 and r.json()["error"]["code"] == "child_not_found"
    assert await audit_entries(app, "contact_card.read") == []


async def test_a_child_without_guardians_gets_a_card_that_says_so(client, world, app):
    child = await make_child(app, world)
    r = await client.get(f"/children/{child}/contact-card", headers=world.headers("admin1"))
    assert r.status_code == 200 and r.json()["guardians"] == []


def read_xlsx(response):
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == XLSX
    assert "attachment" in response.headers["content-disposition"]
    return load_workbook(io.BytesIO(response.content))


def cell_texts(ws):
    return [[c.value for c in row] for row in ws.iter_rows()]


async def test_a_class_exports_printable_cards_that_read_back(client, world, app):
    first = await make_child(app, world, name="张子轩")
    await family_of_three(client, world, first)
    await make_child(app, world, name="刘欣怡", sex=Sex.female, is_boarding=True)
    await make_child(app, world, name="已转走", status=ChildStatus.left)
    await make_child(app, world, name="别班的", klass="class12")

    r = await client.get(f"/classes/{world['class11']}/contact-cards.xlsx", headers=world.headers("teacher1"))
    wb = read_xlsx(r)
    assert r.headers["x-card-count"] == "2"
    assert "filename*=UTF-8''" in r.headers["content-disposition"]
    assert wb.sheetnames == ["三年级1班"]
    ws = wb["三年级1班"]
    assert str(ws.page_setup.paperSize) == ws.PAPERSIZE_A4 and ws.page_setup.orientation == "portrait"
    assert ws.sheet_properties.pageSetUpPr.fitToPage and ws.page_setup.fitToWidth == 1
    assert ws.print_title_rows == "$1:$3"
    assert ws.column_dimensions["E"].width >= 15
    rows = cell_texts(ws)
    assert rows[0][0] == "石桥镇中心小学 三年级1班 留守儿童联系卡"
    assert rows[2] == ["顺序", "联系人", "关系", "身份", "电话", "备用电话", "住址 / 务工城市 / 身体"]
    text = "\n".join(str(v) for row in rows for v in row if v is not None)
    # Cards in pinyin order of the name; the child who left and the other class's child are not there.
    assert text.index("刘欣怡") < text.index("张子轩")
    assert "已转走" not in text and "别班的" not in text
    guardian_rows = [row for row in rows if row[1] in ("王桂兰", "张伟", "李丽")]
    assert [(row[0], row[1], row[2], row[4]) for row in guardian_rows] == [
        (1, "王桂兰", "祖母", "0739-5221234"),
        (2, "张伟", "父亲", "13807398888"),
        (3, "李丽", "母亲", "13907390002"),
    ]
    assert guardian_rows[0][6] == "石门村3组，高血压" and guardian_rows[1][6] == "东莞"
    assert any("未登记在册监护人" in str(row[0]) for row in rows)  # 刘欣怡 has no guardian yet
    phone_cell = next(c for c in ws["E"] if c.value == "13807398888")
    assert phone_cell.data_type == "s" and phone_cell.alignment.wrap_text


async def test_exports_are_audited_with_their_scope_and_size(client, world, app):
    await family_of_three(client, world, await make_child(app, world))
    r = await client.get(f"/classes/{world['class11']}/contact-cards.xlsx", headers=world.headers("admin1"))
    assert r.status_code == 200
    r = await client.get(f"/schools/{world['school1']}/contact-cards.xlsx", headers=world.headers("admin1"))
    assert r.status_code == 200
    entries = await audit_entries(app, "contact_cards.export")
    assert sorted((e.resource_type, e.resource_id, e.changes["cards"]) for e in entries) == [
        ("class", str(world["class11"]), 1),
        ("school", str(world["school1"]), 1),
    ]
    assert all(e.account_id == world["admin1"] and e.school_id == world["school1"] for e in entries)


async def test_a_school_exports_one_sheet_per_class(client, world, app):
    await family_of_three(client, world, await make_child(app, world, name="张子轩"))
    await make_child(app, world, name="罗梓涵", klass="class12")
    await make_child(app, world, name="唐浩然", klass=None)
    r = await client.get(f"/schools/{world['school1']}/contact-cards.xlsx", headers=world.headers("admin1"))
    wb = read_xlsx(r)
    assert wb.sheetnames == ["三年级1班", "三年级2班", "未分班"]
    assert "罗梓涵" in str(cell_texts(wb["三年级2班"]))
    assert "唐浩然" in str(cell_texts(wb["未分班"]))
    assert cell_texts(wb["三年级2班"])[0][0] == "石桥镇中心小学 三年级2班 留守儿童联系卡"


async def test_who_may_export_cards(client, world, app):
    await make_child(app, world)
    url_class = f"/classes/{world['class11']}/contact-cards.xlsx"
    url_school = f"/schools/{world['school1']}/contact-cards.xlsx"
    r = await client.get(url_class, headers=world.headers("teacher1b"))  # teaches another class
    assert r.status_code == 403 and r.json()["error"]["code"] == "contact_cards_forbidden"
    for who in ("teacher1", "bureau", "official1"):
        r = await client.get(url_school, headers=world.headers(who))
        assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden", who
    assert (await client.get(url_class, headers=world.headers("admin2"))).status_code == 404
    assert (await client.get(url_school, headers=world.headers("admin2"))).status_code == 404
    assert await audit_entries(app, "contact_cards.export") == []


async def test_a_card_is_never_split_across_printed_pages(client, world, app):
    for n in range(30):
        child = await make_child(app, world, name=f"学生{n:02d}", health="对青霉素过敏，" * (n % 4))
        for k in range(n % 4):
            await link(client, world, child, name=f"监护人{n}{k}", phone=f"1390739{n:02d}{k:02d}", relation="亲属")
    r = await client.get(f"/classes/{world['class11']}/contact-cards.xlsx", headers=world.headers("admin1"))
    ws = read_xlsx(r).active
    breaks = [b.id for b in ws.row_breaks.brk]
    assert breaks, "30 cards do not fit on one A4 page"
    child_rows = {
        cell.row for cell in ws["A"] if cell.row > TITLE_ROWS and cell.fill.fgColor.rgb in ("00FFF2CC", "FFFFF2CC")
    }
    assert len(child_rows) == 30
    # Each page starts with a child's row, and no page holds more than fits.
    assert all(b + 1 in child_rows for b in breaks)
    starts = [TITLE_ROWS + 1, *(b + 1 for b in breaks)]
    ends = [b for b in breaks] + [ws.max_row]
    for start, end in zip(starts, ends, strict=True):
        height = sum(ws.row_dimensions[r].height or 15 for r in range(start, end + 1))
        assert height <= PAGE_BODY_HEIGHT + 1
