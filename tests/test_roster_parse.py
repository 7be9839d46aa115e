"""花名册 row checks as pure functions: each cell a clerk may type, each row's validity, the one error answer.

No database and no server: these are the decisions :mod:`api.services.roster.parse` makes before an import
touches the archive (``tests/test_roster_import.py`` drives the same rules through the API)."""

import csv
import io
from datetime import date, datetime
from typing import Any

import pytest

from api.crypto import FieldCipher
from api.errors import Invalid
from api.idcard import validate_id_number
from api.models.children import GuardianshipRating, ParentsAway, Sex
from api.services.roster.columns import COLUMNS, HEADER_LOOKUP, HEADERS, header_key
from api.services.roster.files import roster_csv
from api.services.roster.parse import (
    MAX_REPORTED_ERRORS,
    CellError,
    RosterRow,
    RowError,
    identity_errors,
    normalize_class_name,
    parse_cell,
    parse_grade,
    parse_roster,
    parse_row,
    roster_invalid,
)
from tests.test_roster_import import TODAY, child_row, id_number

CIPHER = FieldCipher({"k1": bytes(range(32))}, "k1")
POSITIONS = dict(enumerate(COLUMNS))


def column(header: str):
    return HEADER_LOOKUP[header_key(header)]


# ---- cells ----------------------------------------------------------------------------------------------

CELLS_UNDERSTOOD: list[tuple[str, Any, Any]] = [
    ("姓名", "王  芳", "王芳"),  # padded to line up with three-character names
    ("性别", "男", Sex.male),
    ("性别", "女生", Sex.female),
    ("性别", "F", Sex.female),
    ("出生日期", "2017-01-01", date(2017, 1, 1)),
    ("出生日期", "2017/1/1", date(2017, 1, 1)),
    ("出生日期", "2017.1.8", date(2017, 1, 8)),
    ("出生日期", "20170115", date(2017, 1, 15)),
    ("出生日期", "2017年1月22日", date(2017, 1, 22)),
    ("出生日期", "2017-01-22 00:00:00", date(2017, 1, 22)),
    ("出生日期", datetime(2017, 3, 8, 0, 0), date(2017, 3, 8)),  # an Excel date cell
    ("出生日期", date(2017, 3, 8), date(2017, 3, 8)),
    ("留守开始时间", "2021年3月", date(2021, 3, 1)),  # a month is enough here
    ("留守开始时间", "2021-03", date(2021, 3, 1)),
    ("留守开始时间", "202103", date(2021, 3, 1)),
    ("是否寄宿", "是", True),
    ("是否寄宿", "√", True),
    ("是否寄宿", "Yes", True),
    ("是否寄宿", "否", False),
    ("是否寄宿", "×", False),
    ("是否寄宿", "", False),  # blank is 否
    ("是否寄宿", None, False),
    ("年级", "三年级", 3),
    ("年级", "3", 3),
    ("年级", 3.0, 3),  # a number cell
    ("年级", "3年级", 3),
    ("年级", "初一", 7),
    ("年级", "高二", 11),
    ("年级", "十二年级", 12),
    ("班级", "1班", "1班"),
    ("班级", "(1)班", "1班"),
    ("班级", "（1）班", "1班"),
    ("班级", "一班", "1班"),
    ("班级", "1", "1班"),
    ("班级", 1.0, "1班"),
    ("班级", "三年级1班", "1班"),
    ("班级", "火箭班", "火箭班"),
    ("民族", "汉族", "汉族"),
    ("民族", "汉", "汉族"),
    ("民族", "苗族", "苗族"),
    ("留守类型", "父母均外出", ParentsAway.both),
    ("留守类型", "父外出", ParentsAway.father),
    ("留守类型", "母亲外出", ParentsAway.mother),
    ("留守类型", "非留守", ParentsAway.none),
    ("监护状况", "较好", GuardianshipRating.fairly_good),
    ("监护状况", "无人监护", GuardianshipRating.none),
    ("父亲电话", "+86 138-0000-0003", "13800000003"),
    ("父亲电话", 13800000003.0, "13800000003"),
    ("委托监护人年龄", "66", 66),
    ("委托监护人年龄", "66岁", 66),
    ("委托监护人年龄", "66周岁", 66),
    ("家庭住址", "  石门村3组 ", "石门村3组"),
]


@pytest.mark.parametrize(("header", "cell", "expected"), CELLS_UNDERSTOOD)
def test_a_cell_written_the_ways_clerks_write_it_is_understood(header, cell, expected):
    assert parse_cell(cell, column(header)) == expected


CELLS_REFUSED: list[tuple[str, Any, str]] = [
    ("姓名", "张3", "name_format"),
    ("姓名", "张" * 33, "too_long"),
    ("性别", "未知", "sex_format"),
    ("出生日期", "去年春天", "date_format"),
    ("出生日期", "2017-13-01", "date_invalid"),
    ("出生日期", "2017-02-30", "date_invalid"),
    ("出生日期", "2017-03", "date_format"),  # a birth date needs the day
    ("是否寄宿", "大概", "flag_format"),
    ("年级", "十三年级", "grade_format"),
    ("年级", "大班", "grade_format"),
    ("班级", "班" * 40, "too_long"),
    ("民族", "火星族", "ethnicity_unknown"),
    ("留守类型", "爷爷外出", "parents_away_format"),
    ("监护状况", "很好", "rating_format"),
    ("父亲电话", "12345", "phone_format"),
    ("委托监护人年龄", "5", "age_format"),
    ("委托监护人年龄", "六十", "age_format"),
    ("家庭住址", "村" * 300, "too_long"),
]


@pytest.mark.parametrize(("header", "cell", "code"), CELLS_REFUSED)
def test_a_cell_that_cannot_be_understood_is_refused_with_a_code_and_the_column_named(header, cell, code):
    with pytest.raises(CellError) as refused:
        parse_cell(cell, column(header))
    assert refused.value.code == code
    assert refused.value.message


@pytest.mark.parametrize(
    ("cell", "grade"),
    [("一年级", 1), ("6", 6), ("六年级", 6), ("初三", 9), ("高三", 12), ("0", None), ("13", None), ("幼儿园", None)],
)
def test_a_grade_is_a_number_from_one_to_twelve(cell, grade):
    assert parse_grade(cell) == grade


@pytest.mark.parametrize(
    ("text", "name"),
    [("1班", "1班"), ("(2)班", "2班"), ("【3】班", "3班"), ("十二班", "12班"), ("二十", "20班"), ("实验班", "实验班")],
)
def test_class_names_are_folded_so_the_same_class_is_found(text, name):
    assert normalize_class_name(text) == name


# ---- rows -----------------------------------------------------------------------------------------------


def check(n: int = 0, **overrides: object) -> tuple[RosterRow, list[tuple[str, str]]]:
    values = child_row(n, **overrides)
    cells = tuple(values.get(header) for header in HEADERS)
    row, errors = parse_row(5, cells, POSITIONS, cipher=CIPHER, today=TODAY)
    assert all(e.row == 5 for e in errors)
    return row, [(e.column, e.code) for e in errors]


ROWS: list[tuple[str, dict[str, object], list[tuple[str, str]]]] = [
    ("a well-filled row", {}, []),
    ("the child's name left blank", {"姓名": ""}, [("姓名", "required")]),
    ("class and grade left blank", {"班级": "", "年级": None}, [("年级", "required"), ("班级", "required")]),
    ("sex against the ID number", {"性别": "女"}, [("性别", "sex_mismatch")]),
    ("birth date against the ID number", {"出生日期": "2017-01-02"}, [("出生日期", "birth_date_mismatch")]),
    ("a birth date in the future", {"身份证号": None, "出生日期": "2027-01-01", "留守开始时间": ""},
     [("身份证号", "required"), ("出生日期", "date_in_future")]),
    ("left behind in the future", {"留守开始时间": "2027-01"}, [("留守开始时间", "date_in_future")]),
    ("left behind before birth", {"留守开始时间": "2016-01"}, [("留守开始时间", "date_before_birth")]),
    ("an ID number Excel made a number", {"身份证号": 4.30524201701011e17}, [("身份证号", "id_number_number_cell")]),
    ("an ID number in scientific notation", {"身份证号": "4.30524E+17"}, [("身份证号", "id_number_number_cell")]),
    ("a wrong check digit", {"身份证号": id_number(date(2017, 1, 1), seq=0)[:-1] + "0"},
     [("身份证号", "id_number_check_digit")]),
    ("a masked number with the wrong stars", {"身份证号": "4305*****1234"}, [("身份证号", "id_number_format")]),
    ("a father with a phone but no name", {"父亲姓名": ""}, [("父亲姓名", "guardian_name_missing")]),
    ("an entrusted guardian without a relation", {"委托监护人关系": ""},
     [("委托监护人关系", "guardian_relation_missing")]),
    ("a father's name that does not parse is reported once", {"父亲姓名": "刘伟3"}, [("父亲姓名", "name_format")]),
    ("several cells at once", {"是否寄宿": "大概", "留守类型": "爷爷外出"},
     [("是否寄宿", "flag_format"), ("留守类型", "parents_away_format")]),
]  # fmt: skip


@pytest.mark.parametrize(("case", "overrides", "errors"), ROWS, ids=[case for case, _, _ in ROWS])
def test_a_rows_own_errors(case, overrides, errors):
    _, found = check(**overrides)
    assert sorted(found) == sorted(errors)


def test_a_good_row_gives_the_child_its_class_and_its_guardians():
    row, errors = check(0)
    assert errors == []
    assert row.child["name"] == "刘子轩" and row.child["sex"] == Sex.male
    assert row.child["name_pinyin"] and row.child["name_initials"]
    assert (row.grade, row.class_name) == (3, "1班")
    assert row.id_number is not None and row.id_index is not None and row.masked_id is None
    assert set(row.guardians) == {"father", "mother", "entrusted"}
    entrusted = row.guardians["entrusted"]
    assert (entrusted.relation, entrusted.age, entrusted.phone) == ("祖父", 66, "0739-5200000")
    assert row.guardians["father"].details == {
        "work_city": "深圳",
        "employer": "深圳市宏达电子有限公司",
        "trade": "电子厂流水线",
    }


def test_blank_optional_cells_give_nothing_so_the_stored_value_stays():
    row, errors = check(
        0, 健康状况="", 父亲务工城市="", 母亲姓名="", 母亲电话="", 母亲务工城市="", 母亲工作单位="", 母亲工种=""
    )
    assert errors == []
    assert "health" not in row.child
    assert "work_city" not in row.guardians["father"].details
    assert "mother" not in row.guardians


def test_a_masked_number_from_an_export_is_kept_for_matching_on_file():
    row, errors = check(0, 身份证号="4305**********1234")
    assert errors == [] and row.masked_id == "4305**********1234" and row.id_number is None


IDENTITY = [
    ("agrees", {"birth_date": date(2017, 1, 1), "sex": Sex.male}, []),
    ("birth date differs", {"birth_date": date(2017, 1, 2), "sex": Sex.male}, ["birth_date_mismatch"]),
    ("sex differs", {"birth_date": date(2017, 1, 1), "sex": Sex.female}, ["sex_mismatch"]),
    ("both differ", {"birth_date": date(2016, 1, 1), "sex": Sex.female}, ["birth_date_mismatch", "sex_mismatch"]),
    ("neither given", {}, []),
]


@pytest.mark.parametrize(("case", "child", "codes"), IDENTITY, ids=[case for case, _, _ in IDENTITY])
def test_a_masked_rows_birth_date_and_sex_must_agree_with_the_number_on_file(case, child, codes):
    stored = validate_id_number(id_number(date(2017, 1, 1), male=True), today=TODAY)
    errors = identity_errors(RosterRow(row=7, child=child), stored)
    assert [e.code for e in errors] == codes and all(e.row == 7 for e in errors)


# ---- the file and the one answer -------------------------------------------------------------------------


def csv_of(rows: list[list[object]]) -> bytes:
    buffer = io.StringIO()
    csv.writer(buffer).writerows(rows)
    return buffer.getvalue().encode("utf-8")


def test_the_header_may_sit_under_a_title_row_and_row_numbers_are_the_ones_excel_shows():
    good = child_row(0)
    content = csv_of([["青山小学三年级花名册"], list(HEADERS), [good[h] or "" for h in HEADERS], [], ["", ""]])
    parsed = parse_roster(content, cipher=CIPHER, today=TODAY)
    assert parsed.file_format == "csv" and [r.row for r in parsed.rows] == [3] and parsed.errors == []


def test_the_same_child_twice_in_a_file_is_an_error_on_the_second_row():
    parsed = parse_roster(roster_csv([child_row(0), child_row(1), child_row(0)]), cipher=CIPHER, today=TODAY)
    assert [(e.row, e.column, e.code) for e in parsed.errors] == [(4, "身份证号", "id_number_duplicate")]


HEADER_FAULTS = [
    ("a required column missing", [h for h in HEADERS if h != "性别"], [("性别", "column_missing")]),
    ("an unknown column", [*HEADERS, "爱好"], [("爱好", "column_unknown")]),
    ("a column twice", [*HEADERS, "姓名"], [("姓名", "column_duplicate")]),
    ("an alias twice", [*HEADERS, "学生姓名"], [("学生姓名", "column_duplicate")]),
]


@pytest.mark.parametrize(("case", "headers", "fields"), HEADER_FAULTS, ids=[c for c, _, _ in HEADER_FAULTS])
def test_a_wrong_header_is_one_error_naming_each_column(case, headers, fields):
    with pytest.raises(Invalid) as refused:
        parse_roster(csv_of([headers, ["刘子轩"]]), cipher=CIPHER, today=TODAY)
    assert refused.value.code == "roster_columns"
    assert [(f.loc[1], f.type) for f in refused.value.fields] == fields


@pytest.mark.parametrize(
    "headers", [["序号", *HEADERS], [f" {h} " for h in HEADERS], [f"{h}(必填)" if c.required else h
                                                                   for h, c in zip(HEADERS, COLUMNS, strict=True)]]
)  # fmt: skip
def test_serial_numbers_spaces_and_required_marks_in_the_header_are_read_past(headers):
    good = child_row(0)
    values = [good[h] or "" for h in HEADERS]
    content = csv_of([headers, ["1", *values] if headers[0] == "序号" else values])
    assert parse_roster(content, cipher=CIPHER, today=TODAY).errors == []


def test_errors_are_answered_in_row_then_column_order_and_at_most_a_thousand_are_listed():
    errors = [RowError(row, column, "x", "m") for row in (9, 2) for column in ("班级", "姓名", "父亲电话")]
    answer = roster_invalid(errors)
    assert answer.code == "roster_invalid" and answer.message.startswith("花名册中有 6 处错误（涉及 2 行）")
    order = [(f.loc[1], f.loc[2]) for f in answer.fields]
    assert order == [(2, "姓名"), (2, "班级"), (2, "父亲电话"), (9, "姓名"), (9, "班级"), (9, "父亲电话")]

    many = [RowError(row, "姓名", "required", "姓名不能为空") for row in range(2, MAX_REPORTED_ERRORS + 12)]
    answer = roster_invalid(many)
    assert len(answer.fields) == MAX_REPORTED_ERRORS
    assert f"这里列出前 {MAX_REPORTED_ERRORS} 处" in answer.message
