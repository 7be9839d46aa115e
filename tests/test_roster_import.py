"""花名册 import: every row is checked, errors name the row a clerk sees in Excel, nothing is written unless
the whole file is right, and importing the same roster again updates instead of duplicating."""

import io
import random
import zipfile
from datetime import date, datetime, timedelta

import openpyxl
from sqlalchemy import func, select
from sqlmodel import col

from api.db import scoped_session
from api.demo.roster import demo_roster
from api.idcard import compute_check_digit
from api.models.audit import AuditEntry
from api.models.children import Child, ChildEvent, ChildStatus
from api.models.guardians import ChildGuardian, Guardian
from api.models.organisations import SchoolClass
from api.models.roster import ImportBatch
from api.scoping import SYSTEM
from api.services.roster import files as roster_files
from api.services.roster.columns import HEADERS
from api.services.roster.files import roster_csv

TODAY = date(2026, 11, 24)  # the frozen clock of tests/conftest.py, in Asia/Shanghai


def id_number(birth: date, *, male: bool = True, seq: int = 12, region: str = "430524") -> str:
    first17 = f"{region}{birth:%Y%m%d}{seq:02d}{'1' if male else '2'}"
    return first17 + compute_check_digit(first17)


def cn(n: int) -> str:
    """A number in Chinese digits, to tell test people apart (names have no Arabic digits)."""
    return "".join("零一二三四五六七八九"[int(d)] for d in str(n))


def child_row(n: int, **overrides: object) -> dict[str, object]:
    """A well-filled row for child number ``n`` of 三年级1班 (every value as a clerk would type it)."""
    birth = date(2017, 1, 1) + timedelta(days=7 * n)
    male = n % 2 == 0
    row: dict[str, object] = {
        "姓名": ["刘子轩", "王欣怡", "张浩然", "李雨桐", "陈俊杰", "杨梓涵"][n % 6] + ("" if n < 6 else cn(n)),
        "性别": "男" if male else "女",
        "出生日期": birth.isoformat(),
        "民族": "汉族",
        "身份证号": id_number(birth, male=male, seq=n % 100),
        "年级": "三年级",
        "班级": "1班",
        "户籍": "湖南省隆回县",
        "家庭住址": f"隆回县桃洪镇石门村{n % 12 + 1}组",
        "是否寄宿": "否",
        "健康状况": "健康",
        "留守类型": "父母均外出",
        "留守开始时间": "2020-09-01",
        "监护状况": "较好",
        "特困": "",
        "单亲": "否",
        "学困": "",
        "残疾": "",
        "需个别教育方案": "",
        "父亲姓名": f"刘伟{cn(n)}",
        "父亲电话": f"138{n:08d}",
        "父亲务工城市": "深圳",
        "父亲工作单位": "深圳市宏达电子有限公司",
        "父亲工种": "电子厂流水线",
        "母亲姓名": f"王丽{cn(n)}",
        "母亲电话": f"139{n:08d}",
        "母亲务工城市": "东莞",
        "母亲工作单位": "东莞市鑫源服装有限公司",
        "母亲工种": "服装厂",
        "委托监护人姓名": f"刘建国{cn(n)}",
        "委托监护人关系": "祖父",
        "委托监护人电话": f"0739-52{n:05d}",
        "委托监护人年龄": "66",
        "委托监护人身体状况": "一般",
        "委托监护人住址": "",
        "备注": "",
    }
    row.update(overrides)
    return row


def csv_file(rows, *, headers=HEADERS, encoding="utf-8-sig") -> bytes:
    if list(headers) == list(HEADERS):
        return roster_csv(rows, encoding=encoding)
    lines = [",".join(headers)] + [",".join(str(r.get(h, "") or "") for h in headers) for r in rows]
    return ("\n".join(lines) + "\n").encode(encoding)


async def upload(client, world, content, *, name="花名册.csv", who="admin1", school="school1", **params):
    return await client.post(
        f"/schools/{world[school]}/roster/import",
        files={"file": (name, content, "application/octet-stream")},
        params={k: str(v).lower() for k, v in params.items()},
        headers=world.headers(who),
    )


def row_errors(response) -> list[tuple[int, str, str]]:
    assert response.status_code == 422, response.text
    body = response.json()["error"]
    assert body["code"] == "roster_invalid", body
    return [(f["loc"][1], f["loc"][2], f["type"]) for f in body["fields"]]


async def count(app, model, *where) -> int:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        return (await s.execute(select(func.count()).select_from(model).where(*where))).scalar_one()


async def children_of(app, school_id) -> list[Child]:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        rows = await s.execute(select(Child).where(Child.school_id == school_id).order_by(Child.name))
        return list(rows.scalars())


async def links_of(app, child_id) -> list[tuple[ChildGuardian, Guardian]]:
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        rows = await s.execute(
            select(ChildGuardian, Guardian)
            .join(Guardian, col(Guardian.id) == ChildGuardian.guardian_id)
            .where(ChildGuardian.child_id == child_id)
            .order_by(ChildGuardian.contact_order)
        )
        return [(link, guardian) for link, guardian in rows]


# ---- a good roster ---------------------------------------------------------------------------------------


async def test_a_good_csv_roster_files_every_child_with_guardians_in_call_order(app, client, world):
    rows = [child_row(0), child_row(1, 留守类型="父亲外出", 班级="2班"), child_row(2, 是否寄宿="√", 特困="是")]
    r = await upload(client, world, csv_file(rows))
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] is False and report["batch_id"]
    assert (report["rows"], report["children_created"], report["children_updated"]) == (3, 3, 0)
    assert (report["guardians_created"], report["guardians_reused"]) == (9, 0)

    children = {c.name: c for c in await children_of(app, world["school1"])}
    liu = children["刘子轩"]
    assert liu.birth_date == date(2017, 1, 1) and liu.sex == "male" and liu.class_id == world["class11"]
    assert liu.id_number_masked == "4305**********" + rows[0]["身份证号"][-4:]
    assert liu.id_number_cipher and rows[0]["身份证号"] not in liu.id_number_cipher
    assert liu.name_initials == "lzx" and liu.status == ChildStatus.enrolled and liu.is_left_behind
    assert children["王欣怡"].parents_away == "father" and children["王欣怡"].class_id == world["class12"]
    assert children["张浩然"].is_boarding and children["张浩然"].special_hardship

    links = await links_of(app, liu.id)
    assert [(link.contact_order, link.role, link.relation, g.name) for link, g in links] == [
        (1, "entrusted_guardian", "祖父", "刘建国零"),
        (2, "parent_away", "父亲", "刘伟零"),
        (3, "parent_away", "母亲", "王丽零"),
    ]
    grandfather = links[0][1]
    assert grandfather.phone == "0739-5200000" and grandfather.birth_year == 1960 and grandfather.sex == "male"
    # The mother of a child whose father alone works away is at home.
    roles = {g.name: link.role for link, g in await links_of(app, children["王欣怡"].id)}
    assert roles == {"刘建国一": "entrusted_guardian", "刘伟一": "parent_away", "王丽一": "parent_home"}

    assert await count(app, ChildEvent, ChildEvent.kind == "enrolled") == 3
    assert await count(app, ImportBatch, ImportBatch.school_id == world["school1"]) == 1


async def test_every_written_row_is_audited_without_the_id_number(app, client, world):
    row = child_row(0)
    r = await upload(client, world, csv_file([row]))
    assert r.status_code == 200, r.text
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        entries = list((await s.execute(select(AuditEntry).order_by(AuditEntry.id))).scalars())
    actions = [e.action for e in entries]
    assert actions.count("child.create") == 1 and actions.count("guardian.create") == 3
    assert actions.count("child_guardian.create") == 3 and actions.count("roster.import") == 1
    child_entry = next(e for e in entries if e.action == "child.create")
    assert child_entry.school_id == world["school1"] and child_entry.account_id == world["admin1"]
    assert child_entry.changes["id_number_cipher"] == "***" and child_entry.changes["name"] == "刘子轩"
    assert all(row["身份证号"] not in str(e.changes) for e in entries)


async def test_a_clerks_xlsx_with_a_title_row_excel_dates_and_number_cells_imports(app, client, world):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.title = "Sheet1"
    sheet.append(["石桥镇中心小学留守儿童花名册（2026年秋季）"])
    headers = ["序号", "姓 名", "性别*", "出生日期(必填)", "身份证号码", "年级", "班级", "父亲姓名", "父亲电话",
               "委托监护人姓名", "委托监护人关系", "委托监护人电话", "是否寄宿"]  # fmt: skip
    sheet.append(headers)
    birth = date(2016, 5, 4)
    sheet.append([1, "王  芳", "女", datetime(2016, 5, 4), id_number(birth, male=False), 3, "（2）班", "王建军",
                  13812345678, "刘桂英", "祖母", "0739 5221234", True])  # fmt: skip
    sheet.append([])
    sheet.append([2, "欧阳子墨", "男", "2016/6/1", id_number(date(2016, 6, 1)), "三年级", 1])
    buffer = io.BytesIO()
    workbook.save(buffer)
    r = await upload(client, world, buffer.getvalue(), name="C:\\fakepath\\三年级花名册.xlsx")
    assert r.status_code == 200, r.text
    assert r.json()["file_format"] == "xlsx" and r.json()["children_created"] == 2
    children = {c.name: c for c in await children_of(app, world["school1"])}
    assert set(children) == {"王芳", "欧阳子墨"}
    assert children["王芳"].class_id == world["class12"] and children["王芳"].is_boarding
    assert children["欧阳子墨"].birth_date == date(2016, 6, 1) and children["欧阳子墨"].class_id == world["class11"]
    relations = {(link.relation, g.phone) for link, g in await links_of(app, children["王芳"].id)}
    assert relations == {("父亲", "13812345678"), ("祖母", "0739-5221234")}
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        batch = (await s.execute(select(ImportBatch))).scalar_one()
    assert batch.file_name == "三年级花名册.xlsx" and batch.file_format == "xlsx" and batch.row_count == 2


async def test_a_gb18030_csv_saved_by_excel_on_chinese_windows_imports(app, client, world):
    rows = [child_row(0, 姓名="龙睿", 民族="苗", 委托监护人关系="外婆")]
    r = await upload(client, world, csv_file(rows, encoding="gb18030"))
    assert r.status_code == 200, r.text
    [child] = await children_of(app, world["school1"])
    assert child.name == "龙睿" and child.ethnicity == "苗族"
    assert {link.relation for link, _ in await links_of(app, child.id)} == {"外婆", "父亲", "母亲"}


async def test_common_ways_of_writing_dates_flags_and_classes_are_understood(app, client, world):
    variants = [
        child_row(0, 出生日期="2017/1/1", 是否寄宿="是", 班级="(1)班", 年级="3"),
        child_row(1, 出生日期="2017.1.8", 是否寄宿="√", 班级="一班", 年级="3年级", 留守开始时间="2021年3月"),
        child_row(2, 出生日期="20170115", 是否寄宿="否", 班级="1", 留守开始时间="2021-03"),
        child_row(3, 出生日期="2017年1月22日", 是否寄宿="", 班级="三年级1班", 父亲电话="+86 138-0000-0003"),
    ]
    r = await upload(client, world, csv_file(variants))
    assert r.status_code == 200, r.text
    children = sorted(await children_of(app, world["school1"]), key=lambda c: c.birth_date)
    assert [c.birth_date.day for c in children] == [1, 8, 15, 22]
    assert [c.is_boarding for c in children] == [True, True, False, False]
    assert {c.class_id for c in children} == {world["class11"]}
    assert children[1].left_behind_since == date(2021, 3, 1)
    phones = {g.phone for _, g in await links_of(app, children[3].id)}
    assert "13800000003" in phones


async def test_siblings_in_one_roster_share_their_parents_and_guardian(app, client, world):
    family = {k: v for k, v in child_row(0).items() if k.startswith(("父亲", "母亲", "委托监护人"))}
    rows = [child_row(0), child_row(1, **family)]
    r = await upload(client, world, csv_file(rows))
    assert r.status_code == 200, r.text
    assert r.json()["guardians_created"] == 3
    a, b = await children_of(app, world["school1"])
    assert {g.id for _, g in await links_of(app, a.id)} == {g.id for _, g in await links_of(app, b.id)}


async def test_a_guardian_without_a_phone_is_the_same_person_at_the_same_home_address(app, client, world):
    shared = {
        "家庭住址": "隆回县桃洪镇石门村3组",
        "委托监护人电话": "",
        "委托监护人姓名": "刘桂英",
        "委托监护人关系": "祖母",
    }
    rows = [
        child_row(0, **shared),
        child_row(1, **shared),
        child_row(2, 委托监护人电话="", 委托监护人姓名="刘桂英", 家庭住址="隆回县桃洪镇高坪村1组"),
    ]
    r = await upload(client, world, csv_file(rows))
    assert r.status_code == 200, r.text
    assert await count(app, Guardian, Guardian.name == "刘桂英") == 2  # a namesake elsewhere is someone else


# ---- importing again -------------------------------------------------------------------------------------


async def test_reimporting_the_same_roster_changes_nothing(app, client, world):
    content = csv_file([child_row(n) for n in range(5)])
    assert (await upload(client, world, content)).status_code == 200
    audit_before = await count(app, AuditEntry, AuditEntry.action != "roster.import")
    r = await upload(client, world, content)
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["children_created"], report["children_updated"], report["children_unchanged"]) == (0, 0, 5)
    assert (report["guardians_created"], report["guardians_reused"], report["guardians_updated"]) == (0, 15, 0)
    assert await count(app, Child) == 5 and await count(app, Guardian) == 15 and await count(app, ChildGuardian) == 15
    assert await count(app, AuditEntry, AuditEntry.action != "roster.import") == audit_before
    assert await count(app, ImportBatch) == 2


async def test_reimport_updates_only_what_changed_and_records_the_class_change(app, client, world):
    assert (await upload(client, world, csv_file([child_row(0), child_row(1)]))).status_code == 200
    changed = child_row(0, 健康状况="哮喘，需随身带药", 班级="2班", 父亲电话="13700000000")
    r = await upload(client, world, csv_file([changed, child_row(1)]))
    assert r.status_code == 200, r.text
    report = r.json()
    assert (report["children_updated"], report["children_unchanged"], report["guardians_updated"]) == (1, 1, 1)
    child = next(c for c in await children_of(app, world["school1"]) if c.name == "刘子轩")
    assert child.health == "哮喘，需随身带药" and child.class_id == world["class12"]
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        updates = list(
            (
                await s.execute(select(AuditEntry).where(AuditEntry.action.in_(["child.update", "guardian.update"])))
            ).scalars()
        )
        event = (await s.execute(select(ChildEvent).where(ChildEvent.kind == "class_changed"))).scalar_one()
    child_update = next(e for e in updates if e.action == "child.update")
    assert set(child_update.changes) - {"updated_at"} == {"health", "class_id"}
    guardian_update = next(e for e in updates if e.action == "guardian.update")
    assert guardian_update.changes["phone"] == {"old": "13800000000", "new": "13700000000"}
    assert (event.child_id, event.from_class_id, event.to_class_id) == (child.id, world["class11"], world["class12"])
    # The father kept his record (same name, new phone): still three guardians for the child.
    assert len(await links_of(app, child.id)) == 3


async def test_a_blank_optional_cell_keeps_what_is_on_file(app, client, world):
    assert (await upload(client, world, csv_file([child_row(0)]))).status_code == 200
    r = await upload(client, world, csv_file([child_row(0, 健康状况="", 家庭住址="", 父亲务工城市="")]))
    assert r.status_code == 200 and r.json()["children_unchanged"] == 1
    [child] = await children_of(app, world["school1"])
    assert child.health == "健康" and child.home_address == "隆回县桃洪镇石门村1组"


async def test_a_different_entrusted_guardian_replaces_the_old_one_in_the_call_order(app, client, world):
    assert (await upload(client, world, csv_file([child_row(0)]))).status_code == 200
    aunt = child_row(0, 委托监护人姓名="刘红梅", 委托监护人关系="姑姑", 委托监护人电话="13600000000")
    r = await upload(client, world, csv_file([aunt]))
    assert r.status_code == 200 and r.json()["children_updated"] == 1
    [child] = await children_of(app, world["school1"])
    links = await links_of(app, child.id)
    active = [(link.contact_order, g.name) for link, g in links if link.is_active]
    assert active == [(1, "刘红梅"), (2, "刘伟零"), (3, "王丽零")]
    [old] = [link for link, g in links if g.name == "刘建国零"]
    assert not old.is_active and old.until == TODAY


async def test_parents_coming_home_changes_their_role_and_records_the_event(app, client, world):
    assert (await upload(client, world, csv_file([child_row(0)]))).status_code == 200
    r = await upload(client, world, csv_file([child_row(0, 留守类型="非留守")]))
    assert r.status_code == 200, r.text
    [child] = await children_of(app, world["school1"])
    assert not child.is_left_behind and child.parents_away == "none"
    assert {link.relation: link.role for link, _ in await links_of(app, child.id)}["父亲"] == "parent_home"
    assert await count(app, ChildEvent, ChildEvent.kind == "parents_returned") == 1


async def test_a_child_who_had_left_is_back_on_the_roster(app, client, world):
    assert (await upload(client, world, csv_file([child_row(0)]))).status_code == 200
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        child = (await s.execute(select(Child))).scalar_one()
        child.status, child.status_reason = ChildStatus.left, "转学"
    r = await upload(client, world, csv_file([child_row(0)]))
    assert r.status_code == 200 and r.json()["children_re_enrolled"] == 1
    [child] = await children_of(app, world["school1"])
    assert child.status == ChildStatus.enrolled and child.status_reason is None
    assert await count(app, ChildEvent, ChildEvent.kind == "re_enrolled") == 1


async def test_a_child_filed_without_an_id_number_gets_it_from_the_roster(app, client, world):
    row = child_row(0)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        s.add(Child(school_id=world["school1"], class_id=world["class11"], name="刘子轩", sex="male",
                    birth_date=date(2017, 1, 1)))  # fmt: skip
    r = await upload(client, world, csv_file([row]))
    assert r.status_code == 200, r.text
    assert r.json()["children_created"] == 0 and r.json()["children_updated"] == 1
    [child] = await children_of(app, world["school1"])
    assert child.id_number_masked is not None and child.id_number_index is not None


# ---- rows with errors ------------------------------------------------------------------------------------


async def test_row_errors_name_the_row_the_clerk_sees_and_nothing_is_written(app, client, world):
    bad_check = id_number(date(2017, 1, 8), male=False, seq=1)
    bad_check = bad_check[:-1] + ("0" if bad_check[-1] != "0" else "1")
    rows = [
        child_row(0),
        child_row(1, 身份证号=bad_check),
        child_row(2, 出生日期="2017-13-01"),
        child_row(3, 出生日期="去年春天"),
        child_row(4, 父亲电话="12345"),
        child_row(5, 性别="男"),
        child_row(6, 出生日期="2017-01-01"),
        child_row(7, 留守类型="爷爷外出", 是否寄宿="大概"),
        child_row(8, 姓名="", 班级=""),
        child_row(9, 父亲姓名="", 委托监护人关系=""),
    ]
    r = await upload(client, world, csv_file(rows))
    errors = row_errors(r)
    assert errors == [
        (3, "身份证号", "id_number_check_digit"),
        (4, "出生日期", "date_invalid"),
        (5, "出生日期", "date_format"),
        (6, "父亲电话", "phone_format"),
        (7, "性别", "sex_mismatch"),
        (8, "出生日期", "birth_date_mismatch"),
        (9, "是否寄宿", "flag_format"),
        (9, "留守类型", "parents_away_format"),
        (10, "姓名", "required"),
        (10, "班级", "required"),
        (11, "父亲姓名", "guardian_name_missing"),
        (11, "委托监护人关系", "guardian_relation_missing"),
    ]
    body = r.json()["error"]
    assert body["message"].startswith("花名册中有 12 处错误（涉及 9 行），没有导入任何数据")
    check_digit = next(f for f in body["fields"] if f["type"] == "id_number_check_digit")
    assert check_digit["loc"] == ["row", 3, "身份证号"] and check_digit["message"].startswith("身份证号校验位错误")
    assert await count(app, Child) == 0 and await count(app, Guardian) == 0
    assert await count(app, AuditEntry, AuditEntry.resource_type.in_(["child", "guardian", "import_batch"])) == 0


async def test_the_same_id_number_twice_in_the_file_is_an_error_on_the_second_row(client, world):
    rows = [
        child_row(0),
        child_row(1),
        child_row(2, 身份证号=child_row(0)["身份证号"], 出生日期="2017-01-01", 性别="男"),
    ]
    r = await upload(client, world, csv_file(rows))
    assert row_errors(r) == [(4, "身份证号", "id_number_duplicate")]
    assert "第2行" in r.json()["error"]["fields"][0]["message"]


async def test_a_child_filed_at_another_school_cannot_be_filed_again_and_the_school_stays_unnamed(app, client, world):
    other = child_row(0, 年级="四年级", 班级="1班")
    assert (await upload(client, world, csv_file([other]), who="admin2", school="school2")).status_code == 200
    r = await upload(client, world, csv_file([child_row(1), child_row(0)]))
    assert row_errors(r) == [(3, "身份证号", "id_number_other_school")]
    assert "柳河" not in r.text
    assert await count(app, Child, Child.school_id == world["school1"]) == 0


async def test_an_id_number_excel_turned_into_a_number_is_explained(client, world):
    workbook = openpyxl.Workbook()
    sheet = workbook.active
    sheet.append(["姓名", "性别", "出生日期", "身份证号", "年级", "班级"])
    sheet.append(["刘子轩", "男", "2017-01-01", 4.30524201701011e17, "三年级", "1班"])
    buffer = io.BytesIO()
    workbook.save(buffer)
    r = await upload(client, world, buffer.getvalue(), name="roster.xlsx")
    assert row_errors(r) == [(2, "身份证号", "id_number_number_cell")]
    assert "文本" in r.json()["error"]["fields"][0]["message"]


async def test_a_class_the_school_does_not_have_is_an_error_unless_classes_may_be_created(app, client, world):
    rows = [child_row(0, 年级="五年级", 班级="3班"), child_row(1, 年级="五年级", 班级="(3)班")]
    r = await upload(client, world, csv_file(rows))
    assert row_errors(r) == [(2, "班级", "class_not_found"), (3, "班级", "class_not_found")]
    assert "五年级3班" in r.json()["error"]["fields"][0]["message"]
    r = await upload(client, world, csv_file(rows), create_classes=True)
    assert r.status_code == 200, r.text
    assert r.json()["classes_created"] == ["五年级3班"]
    assert await count(app, SchoolClass, SchoolClass.school_id == world["school1"], SchoolClass.grade == 5) == 1


async def test_wrong_missing_or_repeated_columns_are_named_in_one_error(client, world):
    headers = ["姓名", "出生地", "性别", "身份证号", "年级", "班级", "姓名", "爱好"]
    r = await upload(client, world, csv_file([], headers=headers))
    assert r.status_code == 422
    body = r.json()["error"]
    assert body["code"] == "roster_columns"
    assert {(f["loc"][1], f["type"]) for f in body["fields"]} == {
        ("出生日期", "column_missing"),
        ("姓名", "column_duplicate"),
        ("出生地", "column_unknown"),
        ("爱好", "column_unknown"),
    }
    assert "缺少必填列 出生日期" in body["message"] and "爱好（第H列）" in body["message"]


async def test_a_file_that_is_not_a_roster_gets_a_clear_answer(client, world):
    png = b"\x89PNG\r\n\x1a\n" + b"\x00" * 64
    r = await upload(client, world, png, name="photo.png")
    assert r.status_code == 415 and r.json()["error"]["code"] == "roster_unsupported_file"

    docx = io.BytesIO()
    with zipfile.ZipFile(docx, "w") as z:
        z.writestr("word/document.xml", "<w:document/>")
    r = await upload(client, world, docx.getvalue(), name="通知.docx")
    assert r.status_code == 415 and r.json()["error"]["code"] == "roster_not_spreadsheet"

    r = await upload(client, world, b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 100, name="old.xls")
    assert r.status_code == 415 and r.json()["error"]["code"] == "roster_xls_unsupported"

    r = await upload(client, world, "请假条：本人因病请假一天。\n".encode(), name="note.txt")
    assert r.status_code == 422 and r.json()["error"]["code"] == "roster_columns"


async def test_an_empty_file_or_a_template_without_children_is_refused(client, world):
    for content in (b"", b"\n\n", roster_csv([])):
        r = await upload(client, world, content)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "roster_empty"


async def test_a_file_over_the_size_limit_is_refused_with_413(client, world, monkeypatch):
    monkeypatch.setattr(roster_files, "MAX_FILE_BYTES", 1000)
    r = await upload(client, world, b"x" * 1001)
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "roster_too_large" and r.json()["error"]["message"].startswith("文件太大")


async def test_a_roster_over_the_row_limit_is_refused_before_any_row_is_written(app, client, world, monkeypatch):
    monkeypatch.setattr(roster_files, "MAX_ROWS", 2)
    r = await upload(client, world, csv_file([child_row(0), child_row(1), child_row(2)]))
    assert r.status_code == 422 and r.json()["error"]["code"] == "roster_too_many_rows"
    assert await count(app, Child) == 0


async def test_a_body_over_the_upload_limit_is_cut_off_before_it_is_read(client, world):
    r = await upload(client, world, b"x" * (roster_files.MAX_FILE_BYTES + 200 * 1024))
    assert r.status_code == 413 and r.json()["error"]["code"] == "roster_too_large"


async def test_a_streamed_upload_without_a_length_is_cut_off_at_the_limit(client, world):
    sent = 0

    async def body():
        nonlocal sent
        yield b'--cut\r\nContent-Disposition: form-data; name="file"; filename="big.csv"\r\n\r\n'
        for _ in range(50):
            sent += 1
            yield b"x" * (1024 * 1024)

    r = await client.post(
        f"/schools/{world['school1']}/roster/import",
        content=body(),
        headers={**world.headers("admin1"), "content-type": "multipart/form-data; boundary=cut"},
    )
    assert "content-length" not in r.request.headers
    assert r.status_code == 413 and r.json()["error"]["code"] == "roster_too_large"
    assert sent <= roster_files.MAX_FILE_BYTES // (1024 * 1024) + 1  # not read to the end


# ---- dry run, roles and scope ----------------------------------------------------------------------------


async def test_a_dry_run_reports_what_would_happen_and_writes_nothing(app, client, world):
    audit_before = await count(app, AuditEntry)
    r = await upload(client, world, csv_file([child_row(0), child_row(1)]), dry_run=True)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["dry_run"] is True and report["batch_id"] is None
    assert (report["children_created"], report["guardians_created"]) == (2, 6)
    for model in (Child, Guardian, ChildGuardian, ChildEvent, ImportBatch):
        assert await count(app, model) == 0, model
    assert await count(app, AuditEntry) == audit_before
    r = await upload(client, world, csv_file([child_row(0, 出生日期="2017-02-30")]), dry_run=True)
    assert row_errors(r) == [(2, "出生日期", "date_invalid")]


async def test_only_a_school_admin_imports_and_only_into_their_own_school(client, world):
    content = csv_file([child_row(0)])
    for who in ("teacher1", "bureau", "official1"):
        r = await upload(client, world, content, who=who)
        assert r.status_code == 403, (who, r.text)
    r = await upload(client, world, content, who="admin2")
    assert r.status_code == 404 and r.json()["error"]["code"] == "school_not_found"
    r = await client.post(f"/schools/{world['school1']}/roster/import", files={"file": ("a.csv", content)})
    assert r.status_code == 401


async def test_the_import_history_is_for_the_schools_admins(client, world):
    assert (await upload(client, world, csv_file([child_row(0)]))).status_code == 200
    r = await client.get(f"/schools/{world['school1']}/roster/imports", headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    [batch] = r.json()["data"]
    assert batch["children_created"] == 1 and batch["account_id"] == str(world["admin1"])
    r = await client.get(f"/schools/{world['school1']}/roster/imports", headers=world.headers("bureau"))
    assert r.status_code == 200 and r.json()["count"] == 1
    r = await client.get(f"/schools/{world['school1']}/roster/imports", headers=world.headers("admin2"))
    assert r.status_code == 404
    r = await client.get(f"/schools/{world['school1']}/roster/imports", headers=world.headers("teacher1"))
    assert r.status_code == 403


# ---- a county-sized roster -------------------------------------------------------------------------------


def big_roster(count: int) -> list[dict[str, object]]:
    return demo_roster(random.Random(2026), count, classes=[(3, "1班"), (3, "2班")], today=TODAY)


async def test_ten_thousand_children_import_and_one_bad_last_row_stops_them_all(app, client, world):
    rows = big_roster(10_000)
    bad = dict(rows[-1], 身份证号=rows[-1]["身份证号"][:-1] + ("0" if rows[-1]["身份证号"][-1] != "0" else "1"))
    r = await upload(client, world, csv_file([*rows[:-1], bad]))
    assert row_errors(r) == [(10_001, "身份证号", "id_number_check_digit")]
    assert await count(app, Child) == 0 and await count(app, AuditEntry, AuditEntry.resource_type == "child") == 0

    r = await upload(client, world, csv_file(rows))
    assert r.status_code == 200, r.text
    assert r.json()["children_created"] == 10_000
    assert await count(app, Child, Child.school_id == world["school1"]) == 10_000
    assert await count(app, AuditEntry, AuditEntry.action == "child.create") == 10_000


async def test_only_the_guardians_a_roster_names_are_counted_as_reused(client, world):
    assert (await upload(client, world, csv_file([child_row(n) for n in range(3)]))).status_code == 200
    r = await upload(client, world, csv_file([child_row(1)]))
    assert r.status_code == 200, r.text
    assert (r.json()["guardians_reused"], r.json()["children_unchanged"]) == (3, 1)
