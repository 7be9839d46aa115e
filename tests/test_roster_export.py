"""花名册 export: the template's columns, ID numbers masked unless a school admin asks, every export audited,
and an exported roster imports back without changing anything."""

import io
from pathlib import Path
from urllib.parse import unquote

import openpyxl
from sqlalchemy import select

from api.db import scoped_session
from api.models.audit import AuditEntry
from api.models.children import Child, ChildStatus
from api.scoping import SYSTEM
from api.services.roster.columns import HEADERS, INSTRUCTIONS_SHEET, SHEET_NAME
from tests.test_roster_import import child_row, count, csv_file, upload


def read_xlsx(content: bytes) -> tuple[list[str], list[dict[str, object]]]:
    workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True)
    sheet = workbook[SHEET_NAME]
    rows = list(sheet.iter_rows(values_only=True))
    headers = [str(h) for h in rows[0]]
    return headers, [dict(zip(headers, r, strict=False)) for r in rows[1:]]


async def export(client, world, *, who="admin1", school="school1", **params):
    return await client.get(
        f"/schools/{world[school]}/roster.xlsx",
        params={k: str(v).lower() if isinstance(v, bool) else str(v) for k, v in params.items()},
        headers=world.headers(who),
    )


async def seed(client, world, n=4):
    rows = [child_row(i, 班级="2班" if i % 2 else "1班") for i in range(n)]
    r = await upload(client, world, csv_file(rows))
    assert r.status_code == 200, r.text
    return rows


async def test_the_export_has_the_templates_columns_with_id_numbers_masked(client, world):
    rows = await seed(client, world)
    r = await export(client, world)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("application/vnd.openxmlformats-officedocument.spreadsheetml")
    assert "石桥镇中心小学-花名册-20261124.xlsx" in unquote(r.headers["content-disposition"])
    headers, exported = read_xlsx(r.content)
    assert headers == list(HEADERS)
    assert len(exported) == 4
    # Sorted by class, then by name: 三年级1班 first.
    assert [e["班级"] for e in exported] == ["1班", "1班", "2班", "2班"]
    first = next(e for e in exported if e["姓名"] == "刘子轩")
    number = rows[0]["身份证号"]
    assert first["身份证号"] == number[:4] + "*" * 10 + number[-4:]
    assert first["年级"] == "三年级" and first["性别"] == "男" and first["留守类型"] == "父母均外出"
    assert first["委托监护人关系"] == "祖父" and first["委托监护人年龄"] == 66 and first["父亲电话"] == "13800000000"
    assert all(number not in str(v) for e in exported for v in e.values())


async def test_a_school_admin_may_reveal_id_numbers_and_the_choice_is_audited(app, client, world):
    rows = await seed(client, world)
    r = await export(client, world, reveal_id_numbers=True)
    assert r.status_code == 200, r.text
    _, exported = read_xlsx(r.content)
    assert sorted(e["身份证号"] for e in exported) == sorted(row["身份证号"] for row in rows)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        entry = (await s.execute(select(AuditEntry).where(AuditEntry.action == "roster.export"))).scalar_one()
    assert entry.account_id == world["admin1"] and entry.school_id == world["school1"]
    assert entry.changes == {"reveal_id_numbers": True, "class_id": None, "status": "enrolled", "rows": 4}


async def test_the_county_bureau_exports_masked_but_may_not_reveal(app, client, world):
    await seed(client, world)
    r = await export(client, world, who="bureau")
    assert r.status_code == 200, r.text
    _, exported = read_xlsx(r.content)
    assert all("*" in e["身份证号"] for e in exported)
    r = await export(client, world, who="bureau", reveal_id_numbers=True)
    assert r.status_code == 403 and r.json()["error"]["code"] == "reveal_forbidden"
    assert await count(app, AuditEntry, AuditEntry.action == "roster.export") == 1


async def test_teachers_cannot_export_and_other_schools_are_not_found(client, world):
    await seed(client, world)
    assert (await export(client, world, who="teacher1")).status_code == 403
    assert (await export(client, world, who="official1")).status_code == 403
    r = await export(client, world, who="admin2")
    assert r.status_code == 404 and r.json()["error"]["code"] == "school_not_found"
    assert (await export(client, world, who="other_bureau")).status_code == 404


async def test_the_export_can_be_limited_to_a_class_or_a_status(app, client, world):
    await seed(client, world)
    _, exported = read_xlsx((await export(client, world, class_id=world["class12"])).content)
    assert {e["班级"] for e in exported} == {"2班"} and len(exported) == 2
    r = await export(client, world, class_id=world["class21"])
    assert r.status_code == 404 and r.json()["error"]["code"] == "class_not_found"
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        child = (await s.execute(select(Child).where(Child.name == "王欣怡"))).scalar_one()
        child.status = ChildStatus.left
    _, enrolled = read_xlsx((await export(client, world)).content)
    _, left = read_xlsx((await export(client, world, status="left")).content)
    assert "王欣怡" not in {e["姓名"] for e in enrolled} and [e["姓名"] for e in left] == ["王欣怡"]


async def test_an_exported_roster_imports_back_without_changing_anything(app, client, world):
    await seed(client, world)
    for reveal in (True, False):
        r = await export(client, world, reveal_id_numbers=reveal)
        writes_before = await count(app, AuditEntry, AuditEntry.action.notin_(["roster.import", "roster.export"]))
        r = await upload(client, world, r.content, name="export.xlsx")
        assert r.status_code == 200, (reveal, r.text)
        report = r.json()
        assert (report["children_unchanged"], report["children_updated"], report["children_created"]) == (4, 0, 0)
        assert (report["guardians_created"], report["guardians_updated"]) == (0, 0)
        after = await count(app, AuditEntry, AuditEntry.action.notin_(["roster.import", "roster.export"]))
        assert after == writes_before, reveal


async def test_an_edited_masked_export_updates_the_children_it_names(app, client, world):
    await seed(client, world)
    workbook = openpyxl.load_workbook(io.BytesIO((await export(client, world)).content))
    sheet = workbook[SHEET_NAME]
    column = list(HEADERS).index("健康状况") + 1
    sheet.cell(row=2, column=column, value="近视")
    buffer = io.BytesIO()
    workbook.save(buffer)
    r = await upload(client, world, buffer.getvalue(), name="edited.xlsx")
    assert r.status_code == 200, r.text
    assert (r.json()["children_updated"], r.json()["children_unchanged"]) == (1, 3)
    # A masked number that matches no child on file cannot be a new child.
    sheet.cell(row=2, column=1, value="另一个人")
    buffer = io.BytesIO()
    workbook.save(buffer)
    r = await upload(client, world, buffer.getvalue(), name="edited.xlsx")
    assert r.status_code == 422
    assert [(f["loc"][1], f["type"]) for f in r.json()["error"]["fields"]] == [(2, "id_number_masked_unknown")]


async def test_the_template_has_every_column_an_instructions_sheet_and_no_example_rows(client, world):
    r = await client.get("/roster/template.xlsx", headers=world.headers("teacher1"))
    assert r.status_code == 200, r.text
    workbook = openpyxl.load_workbook(io.BytesIO(r.content))
    assert workbook.sheetnames == [SHEET_NAME, INSTRUCTIONS_SHEET]
    sheet = workbook[SHEET_NAME]
    assert [c.value for c in sheet[1]] == list(HEADERS) and sheet.max_row == 1
    assert sheet.column_dimensions["E"].number_format == "@"  # 身份证号 is text
    assert any("男,女" in (v.formula1 or "") for v in sheet.data_validations.dataValidation)
    instructions = [row for row in workbook[INSTRUCTIONS_SHEET].iter_rows(values_only=True) if row and row[0]]
    documented = {row[0] for row in instructions}
    assert set(HEADERS) <= documented
    r = await client.get("/roster/template.csv", headers=world.headers("admin1"))
    assert r.status_code == 200 and r.content.startswith(b"\xef\xbb\xbf")
    assert r.content.decode("utf-8-sig").strip() == ",".join(HEADERS)
    assert (await client.get("/roster/template.csv")).status_code == 401


async def test_the_empty_template_imports_as_an_empty_roster_not_a_crash(client, world):
    template = (await client.get("/roster/template.xlsx", headers=world.headers("admin1"))).content
    r = await upload(client, world, template, name="花名册模板.xlsx")
    assert r.status_code == 422 and r.json()["error"]["code"] == "roster_empty"


def test_the_clerks_guide_documents_every_column():
    guide = (Path(__file__).resolve().parent.parent / "docs" / "roster-template.md").read_text(encoding="utf-8")
    missing = [header for header in HEADERS if f"| {header} |" not in guide]
    assert missing == [], f"docs/roster-template.md lacks the columns {missing}"
