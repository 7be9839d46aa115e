"""花名册: import a school's roster from XLSX or CSV, export it as XLSX, and serve the template.

An import is all-or-nothing. Reading and checking the file is pure work done off the event loop
(:func:`parse_roster`); every row is checked and every error collected, with the row number the clerk sees in
Excel. Checks that need the database (classes, ID numbers on file in this or another school) follow. Only a
file without a single error is written, in one transaction, with set-based SQL: the school's children,
guardians and links are read in a few streamed queries, new rows are inserted in bulk (with their audit entries),
and existing rows change only where the roster says something different, so re-importing the same roster
changes nothing.

The columns are defined once, in :data:`COLUMNS`; the template, the export, the importer and
``docs/roster-template.md`` all follow them, so an exported roster imports again as a no-op.
"""

import csv
import enum
import hashlib
import io
import itertools
import random
import re
import unicodedata
import uuid
import zipfile
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from functools import partial
from typing import Any

import anyio
import openpyxl
import sqlalchemy as sa
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit, demo_people
from api.audit import REDACTED
from api.clock import SHANGHAI
from api.crypto import FieldCipher
from api.errors import Conflict, FieldError, Forbidden, Invalid, LiushouError, NotFound, field_error
from api.idcard import IdNumber, IdNumberError, mask_id_number, validate_id_number
from api.models.accounts import Role
from api.models.audit import AuditEntry
from api.models.base import Page
from api.models.children import Child, ChildEvent, ChildEventKind, ChildStatus, GuardianshipRating, ParentsAway, Sex
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.organisations import GRADE_LABELS, School, SchoolClass, class_label
from api.models.roster import ImportBatch, ImportBatchPublic, RosterImportReport
from api.phones import PhoneError, normalize_phone
from api.scoping import Principal, as_system
from api.services.identity import ID_NUMBER_CONTEXT, id_number_index, name_keys, reveal_id_number

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ROWS = 20_000
# Uncompressed size an XLSX may unpack to: a 10 MB file of real rosters stays far below; a zip bomb does not.
MAX_XLSX_UNPACKED_BYTES = 300 * 1024 * 1024
# Columns beyond these are never read (a sheet can claim 16,384 columns).
MAX_COLUMNS = 80
# Excel keeps formatting in rows nobody uses; after this many blank rows in a row the sheet is taken to end.
MAX_BLANK_RUN = 1000
# A clerk needs the first errors to start; a file with 10,000 broken rows gets the first of them.
MAX_REPORTED_ERRORS = 1000
HEADER_SEARCH_ROWS = 10

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
SHEET_NAME = "花名册"
INSTRUCTIONS_SHEET = "填写说明"
IMPORT_REASON = "花名册导入"
# Rows per bulk insert statement: small enough that building one batch never holds the event loop for long.
_CHUNK = 1000
# An import that adds this many rows refreshes the planner's statistics of the archive tables.
_ANALYZE_AFTER = 1000
# Namespace of the advisory lock that serialises imports into one school.
_LOCK_NAMESPACE = 0x526F7374


class RosterTooLarge(LiushouError):
    status_code = 413
    code = "roster_too_large"
    message = f"文件太大：花名册不能超过 {MAX_FILE_BYTES // (1024 * 1024)} MB (file too large)"


class UnsupportedFile(LiushouError):
    status_code = 415
    code = "roster_unsupported_file"
    message = "无法读取该文件：请上传 Excel 表格（.xlsx）或 CSV 文件 (not a spreadsheet)"


# ---- the columns ----------------------------------------------------------------------------------------


class Kind(enum.StrEnum):
    text = "text"
    name = "name"
    sex = "sex"
    date = "date"
    month = "month"  # a date where a month is enough (留守开始时间)
    id_number = "id_number"
    grade = "grade"
    klass = "class"
    flag = "flag"
    parents_away = "parents_away"
    rating = "rating"
    phone = "phone"
    age = "age"
    ethnicity = "ethnicity"


@dataclass(frozen=True)
class Column:
    header: str
    kind: Kind
    target: str  # a child attribute, or "<slot>.<guardian attribute>"
    max_length: int | None = None
    required: bool = False
    aliases: tuple[str, ...] = ()
    hint: str = ""
    example: str = ""
    width: int = 10
    choices: tuple[str, ...] = ()

    @property
    def slot(self) -> str | None:
        return self.target.split(".")[0] if "." in self.target else None

    @property
    def attribute(self) -> str:
        return self.target.split(".")[-1]


YES = ("是", "√", "✓", "✔", "y", "yes", "true", "1", "有")
NO = ("否", "×", "✗", "✘", "n", "no", "false", "0", "无", "不是")
PARENTS_AWAY_VALUES = {
    ParentsAway.both: ("父母均外出", "父母都外出", "父母外出", "父母双方外出", "双亲外出", "均外出"),
    ParentsAway.father: ("父亲外出", "父外出", "父亲"),
    ParentsAway.mother: ("母亲外出", "母外出", "母亲"),
    ParentsAway.none: ("非留守", "父母均在家", "均不外出", "不留守"),
}
PARENTS_AWAY_LABELS = {away: values[0] for away, values in PARENTS_AWAY_VALUES.items()}
RATING_LABELS = {
    GuardianshipRating.good: "好",
    GuardianshipRating.fairly_good: "较好",
    GuardianshipRating.average: "一般",
    GuardianshipRating.poor: "差",
    GuardianshipRating.none: "无人监护",
}
SEX_VALUES = {Sex.male: ("男", "男性", "男生", "m", "male"), Sex.female: ("女", "女性", "女生", "f", "female")}
SEX_LABELS = {Sex.male: "男", Sex.female: "女"}
# GB 3304: the 56 recognised groups, plus the codes for people not (yet) assigned to one.
ETHNIC_GROUPS = frozenset(
    "汉族 蒙古族 回族 藏族 维吾尔族 苗族 彝族 壮族 布依族 朝鲜族 满族 "
    "侗族 瑶族 白族 土家族 哈尼族 哈萨克族 傣族 黎族 傈僳族 佤族 畲族 "
    "高山族 拉祜族 水族 东乡族 纳西族 景颇族 柯尔克孜族 土族 达斡尔族 "
    "仫佬族 羌族 布朗族 撒拉族 毛南族 仡佬族 锡伯族 阿昌族 普米族 塔吉克族 "
    "怒族 乌孜别克族 俄罗斯族 鄂温克族 德昂族 保安族 裕固族 京族 塔塔尔族 "
    "独龙族 鄂伦春族 赫哲族 门巴族 珞巴族 基诺族 其他 外国血统中国籍人士".split()
)
_FLAG_HINT = "是 / 否（也可打 √，留空视为“否”）"


def _guardian_columns(prefix: str, slot: str, examples: tuple[str, str, str, str, str]) -> list[Column]:
    name, phone, city, employer, trade = examples
    return [
        Column(
            f"{prefix}姓名",
            Kind.name,
            f"{slot}.name",
            32,
            hint="兄弟姐妹的家长请写相同的姓名和电话，系统会认作同一人",
            example=name,
            width=10,
        ),
        Column(
            f"{prefix}电话",
            Kind.phone,
            f"{slot}.phone",
            aliases=(f"{prefix}联系电话", f"{prefix}手机", f"{prefix}手机号"),
            hint="手机号或带区号的固定电话，如 13812345678、0739-5221234",
            example=phone,
            width=14,
        ),
        Column(
            f"{prefix}务工城市",
            Kind.text,
            f"{slot}.work_city",
            64,
            aliases=(f"{prefix}务工地点", f"{prefix}务工地"),
            hint="在外务工的城市；在家可留空",
            example=city,
        ),
        Column(f"{prefix}工作单位", Kind.text, f"{slot}.employer", 128, hint="单位全称", example=employer, width=20),
        Column(f"{prefix}工种", Kind.text, f"{slot}.trade", 64, hint="做什么工作", example=trade),
    ]


def _entrusted(suffix: str) -> tuple[str, ...]:
    return (f"临时监护人{suffix}", f"监护人{suffix}")


COLUMNS: tuple[Column, ...] = (
    Column("姓名", Kind.name, "name", 32, True, ("学生姓名",), "学生姓名，与户口簿一致", "刘子轩", 10),
    Column(
        "性别",
        Kind.sex,
        "sex",
        required=True,
        hint="男 / 女，须与身份证号一致",
        example="男",
        width=6,
        choices=("男", "女"),
    ),
    Column(
        "出生日期",
        Kind.date,
        "birth_date",
        required=True,
        aliases=("出生年月日", "生日"),
        hint="如 2015-03-08（也可写 2015/3/8、2015.3.8、20150308），须与身份证号一致",
        example="2015-03-08",
        width=12,
    ),
    Column(
        "民族",
        Kind.ethnicity,
        "ethnicity",
        16,
        hint="如 汉族、苗族、瑶族；留空的新学生记为汉族",
        example="汉族",
        width=8,
    ),
    Column(
        "身份证号",
        Kind.id_number,
        "id_number",
        required=True,
        aliases=("身份证号码", "公民身份号码", "居民身份证号", "身份证", "学生身份证号"),
        hint="18位居民身份证号；请把该列设为“文本”格式，否则 Excel 会把末几位变成 0",
        example="430524201503081236",
        width=21,
    ),
    Column("年级", Kind.grade, "grade", required=True, hint="如 三年级、3、初一", example="三年级", width=8),
    Column(
        "班级",
        Kind.klass,
        "class",
        required=True,
        aliases=("班别", "班"),
        hint="如 1班、(1)班、1",
        example="1班",
        width=7,
    ),
    Column(
        "户籍",
        Kind.text,
        "household_registration",
        128,
        aliases=("户籍所在地", "户口所在地"),
        hint="户口所在地",
        example="湖南省隆回县",
        width=14,
    ),
    Column(
        "家庭住址",
        Kind.text,
        "home_address",
        256,
        aliases=("家庭地址", "住址", "现住址"),
        hint="写到村、组",
        example="隆回县桃洪镇石门村3组",
        width=22,
    ),
    Column(
        "是否寄宿",
        Kind.flag,
        "is_boarding",
        aliases=("寄宿", "寄宿生"),
        hint=_FLAG_HINT,
        example="否",
        width=8,
        choices=("是", "否"),
    ),
    Column(
        "健康状况",
        Kind.text,
        "health",
        256,
        aliases=("身体状况",),
        hint="如 健康、哮喘（需随身带药）",
        example="健康",
        width=10,
    ),
    Column(
        "留守类型",
        Kind.parents_away,
        "parents_away",
        aliases=("留守情况", "外出情况"),
        hint="父母均外出 / 父亲外出 / 母亲外出；父母都已回家填 非留守；留空的新学生记为父母均外出",
        example="父母均外出",
        width=11,
        choices=tuple(PARENTS_AWAY_LABELS.values()),
    ),
    Column(
        "留守开始时间",
        Kind.month,
        "left_behind_since",
        aliases=("留守起始时间", "何时开始留守"),
        hint="如 2019-09-01，只知道月份可写 2019-09",
        example="2019-09",
        width=12,
    ),
    Column(
        "监护状况",
        Kind.rating,
        "guardianship_rating",
        aliases=("监护情况",),
        hint="好 / 较好 / 一般 / 差 / 无人监护",
        example="较好",
        width=9,
        choices=tuple(RATING_LABELS.values()),
    ),
    Column(
        "特困",
        Kind.flag,
        "special_hardship",
        aliases=("是否特困",),
        hint=_FLAG_HINT,
        example="否",
        width=6,
        choices=("是", "否"),
    ),
    Column(
        "单亲",
        Kind.flag,
        "single_parent",
        aliases=("是否单亲",),
        hint=_FLAG_HINT,
        example="否",
        width=6,
        choices=("是", "否"),
    ),
    Column(
        "学困",
        Kind.flag,
        "struggling_learner",
        aliases=("学困生", "是否学困生"),
        hint=_FLAG_HINT,
        example="否",
        width=6,
        choices=("是", "否"),
    ),
    Column(
        "残疾",
        Kind.flag,
        "disability",
        aliases=("是否残疾",),
        hint=_FLAG_HINT,
        example="否",
        width=6,
        choices=("是", "否"),
    ),
    Column(
        "需个别教育方案",
        Kind.flag,
        "needs_individual_plan",
        aliases=("需个别教育管理方案", "个别教育方案"),
        hint=_FLAG_HINT + "；成绩骤降、性格或品德发展有问题等需要个别教育管理方案的学生填 是",
        example="否",
        width=8,
        choices=("是", "否"),
    ),
    *_guardian_columns("父亲", "father", ("刘伟", "13812345678", "深圳", "深圳市宏达电子有限公司", "电子厂流水线")),
    *_guardian_columns("母亲", "mother", ("王丽", "13912345678", "东莞", "东莞市鑫源服装有限公司", "服装厂")),
    Column(
        "委托监护人姓名",
        Kind.name,
        "entrusted.name",
        32,
        aliases=_entrusted("姓名"),
        hint="实际照料孩子的人（祖父母、亲戚等）；父亲或母亲在家照料时可不填",
        example="刘建国",
        width=10,
    ),
    Column(
        "委托监护人关系",
        Kind.text,
        "entrusted.relation",
        16,
        aliases=(*_entrusted("关系"), "与学生关系", "委托监护人与学生关系"),
        hint="委托监护人是学生的什么人：祖父、祖母、外祖父、外祖母、叔叔、姑姑、舅舅、邻居…（填了委托监护人姓名就必填）",
        example="祖父",
        width=9,
    ),
    Column(
        "委托监护人电话",
        Kind.phone,
        "entrusted.phone",
        aliases=_entrusted("电话"),
        hint="手机号或带区号的固定电话；没有电话可留空",
        example="0739-5221234",
        width=14,
    ),
    Column(
        "委托监护人年龄",
        Kind.age,
        "entrusted.age",
        aliases=_entrusted("年龄"),
        hint="周岁，如 65",
        example="65",
        width=8,
    ),
    Column(
        "委托监护人身体状况",
        Kind.text,
        "entrusted.health",
        64,
        aliases=_entrusted("身体状况"),
        hint="如 健康、一般、患慢性病",
        example="一般",
        width=10,
    ),
    Column(
        "委托监护人住址",
        Kind.text,
        "entrusted.address",
        256,
        aliases=_entrusted("住址"),
        hint="与学生同住可留空",
        example="隆回县桃洪镇石门村3组",
        width=22,
    ),
    Column("备注", Kind.text, "notes", 2048, hint="其他需要学校了解的情况", width=20),
)
HEADERS = tuple(c.header for c in COLUMNS)
_COLUMN_ORDER = {c.header: i for i, c in enumerate(COLUMNS)}
# A serial-number column is in nearly every roster a school keeps; it is read past.
IGNORED_HEADERS = frozenset({"序号", "编号"})
SLOTS = ("entrusted", "father", "mother")
SLOT_LABELS = {"father": "父亲", "mother": "母亲", "entrusted": "委托监护人"}


def _header_key(text: str) -> str:
    """A header as a clerk may have typed it, folded: no spaces, no required marks, no (必填)."""
    folded = "".join(unicodedata.normalize("NFKC", text).split())
    folded = re.sub(r"\((必填|选填|必填项|可选)\)", "", folded)
    return folded.strip("*:")


def _header_lookup() -> dict[str, Column]:
    lookup: dict[str, Column] = {}
    for column in COLUMNS:
        for spelling in (column.header, *column.aliases):
            assert _header_key(spelling) not in lookup, f"header {spelling} is defined twice"
            lookup[_header_key(spelling)] = column
    return lookup


_HEADER_LOOKUP = _header_lookup()


# ---- reading cells -------------------------------------------------------------------------------------


class CellError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _is_blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def _cell_text(cell: Any) -> str:
    """A cell as the text a clerk sees (numbers without a trailing .0, Excel dates as YYYY-MM-DD)."""
    if cell is None:
        return ""
    if isinstance(cell, bool):
        return "是" if cell else "否"
    if isinstance(cell, float) and cell.is_integer():
        return str(int(cell))
    if isinstance(cell, datetime):
        return cell.date().isoformat()
    if isinstance(cell, date):
        return cell.isoformat()
    return str(cell).strip()


def _folded(cell: Any) -> str:
    return "".join(unicodedata.normalize("NFKC", _cell_text(cell)).split()).lower()


def _text(cell: Any, column: Column) -> str:
    value = _cell_text(cell)
    if column.max_length is not None and len(value) > column.max_length:
        raise CellError("too_long", f"{column.header}不能超过{column.max_length}个字（现有{len(value)}个字）")
    return value


def _name(cell: Any, column: Column) -> str:
    # Rosters often pad two-character names to line up with three-character ones: 王  芳.
    value = "".join(_cell_text(cell).split())
    if column.max_length is not None and len(value) > column.max_length:
        raise CellError("too_long", f"{column.header}不能超过{column.max_length}个字")
    if any(ch.isdigit() for ch in value):
        raise CellError("name_format", f"{column.header}中不应有数字，请检查是否填错了列")
    return value


_DATE = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*[-/.月]\s*(\d{1,2})\s*日?(?:\s+\d{1,2}:\d{2}(?::\d{2})?)?")
_COMPACT_DATE = re.compile(r"(\d{4})(\d{2})(\d{2})")
_MONTH = re.compile(r"(\d{4})\s*[-/.年]\s*(\d{1,2})\s*月?")
_COMPACT_MONTH = re.compile(r"(\d{4})(\d{2})")


def _date(cell: Any, column: Column) -> date:
    if isinstance(cell, datetime):
        return cell.date()
    if isinstance(cell, date):
        return cell
    text = unicodedata.normalize("NFKC", _cell_text(cell)).strip()
    parts: tuple[str, ...] | None = None
    for pattern in (_DATE, _COMPACT_DATE):
        match = pattern.fullmatch(text)
        if match:
            parts = match.groups()
            break
    if parts is None and column.kind is Kind.month:
        for pattern in (_MONTH, _COMPACT_MONTH):
            match = pattern.fullmatch(text)
            if match:
                parts = (*match.groups(), "1")
                break
    if parts is None:
        example = "2019-09-01 或 2019-09" if column.kind is Kind.month else "2015-03-08"
        raise CellError("date_format", f"{column.header}“{text[:20]}”无法识别，请写成 {example} 这样的日期")
    try:
        return date(int(parts[0]), int(parts[1]), int(parts[2]))
    except ValueError:
        raise CellError("date_invalid", f"{column.header}“{text[:20]}”不是一个存在的日期") from None


def _choice(cell: Any, column: Column, options: Mapping[Any, Sequence[str]], code: str, wanted: str) -> Any:
    folded = _folded(cell)
    for value, spellings in options.items():
        if folded in spellings:
            return value
    raise CellError(code, f"{column.header}“{_cell_text(cell)[:20]}”无法识别，请填 {wanted}")


def _flag(cell: Any, column: Column) -> bool:
    if _is_blank(cell):
        return False
    result: bool = _choice(cell, column, {True: YES, False: NO}, "flag_format", "是 或 否（也可打 √ 或留空）")
    return result


def _sex(cell: Any, column: Column) -> Sex:
    result: Sex = _choice(cell, column, SEX_VALUES, "sex_format", "男 或 女")
    return result


def _parents_away(cell: Any, column: Column) -> ParentsAway:
    wanted = "、".join(PARENTS_AWAY_LABELS.values())
    result: ParentsAway = _choice(cell, column, PARENTS_AWAY_VALUES, "parents_away_format", wanted)
    return result


def _rating(cell: Any, column: Column) -> GuardianshipRating:
    options = {rating: (label,) for rating, label in RATING_LABELS.items()}
    result: GuardianshipRating = _choice(cell, column, options, "rating_format", "、".join(RATING_LABELS.values()))
    return result


def _ethnicity(cell: Any, column: Column) -> str:
    value = "".join(_cell_text(cell).split())
    if value not in ETHNIC_GROUPS and value + "族" in ETHNIC_GROUPS:
        value += "族"  # 汉 → 汉族
    if value not in ETHNIC_GROUPS:
        raise CellError("ethnicity_unknown", f"民族“{value[:16]}”无法识别，请填写如 汉族、苗族、瑶族")
    return value


_CHINESE_NUMERALS = {"一": 1, "二": 2, "三": 3, "四": 4, "五": 5, "六": 6, "七": 7, "八": 8, "九": 9, "十": 10}
_GRADE_WORDS = {f"初{k}": 6 + v for k, v in (("一", 1), ("二", 2), ("三", 3))} | {
    f"高{k}": 9 + v for k, v in (("一", 1), ("二", 2), ("三", 3))
}


def _small_number(text: str) -> int | None:
    """1–99 written as digits or as Chinese numerals (三, 十二, 二十)."""
    if text.isdigit():
        return int(text)
    if not text or any(ch not in _CHINESE_NUMERALS for ch in text):
        return None
    if text == "十":
        return 10
    if text.startswith("十"):
        return 10 + _CHINESE_NUMERALS[text[1]] if len(text) == 2 else None
    if len(text) == 1:
        return _CHINESE_NUMERALS[text]
    if len(text) == 2 and text[1] == "十":
        return _CHINESE_NUMERALS[text[0]] * 10
    if len(text) == 3 and text[1] == "十":
        return _CHINESE_NUMERALS[text[0]] * 10 + _CHINESE_NUMERALS[text[2]]
    return None


def parse_grade(cell: Any) -> int | None:
    """三年级, 3, 3年级, 初一 (7), 高二 (11) → the grade number; None if it is not a grade."""
    text = _folded(cell)
    text = text.removesuffix("年级")
    number = _GRADE_WORDS.get(text) or _small_number(text)
    return number if number is not None and 1 <= number <= 12 else None


def _grade(cell: Any, column: Column) -> int:
    grade = parse_grade(cell)
    if grade is None:
        raise CellError("grade_format", f"年级“{_cell_text(cell)[:10]}”无法识别，请填 三年级 或数字 3（初一填 七年级）")
    return grade


_GRADE_PREFIX = re.compile(r"^(?:[一二三四五六七八九十\d]{1,3}年级|[初高][一二三])")


def normalize_class_name(text: str) -> str:
    """1班, (1)班, （1）班, 一班, 1, 三年级1班 → 1班; other names (火箭班) are kept as written."""
    folded = "".join(unicodedata.normalize("NFKC", text).split())
    folded = _GRADE_PREFIX.sub("", folded)
    bare = re.sub(r"[()\[\]【】]", "", folded).removesuffix("班")
    number = _small_number(bare)
    if number is not None:
        return f"{number}班"
    return folded


def _klass(cell: Any, column: Column) -> str:
    name = normalize_class_name(_cell_text(cell))
    if not name:
        raise CellError("required", "班级不能为空")
    if len(name) > 32:
        raise CellError("too_long", "班级不能超过32个字")
    return name


def _phone(cell: Any, column: Column) -> str:
    try:
        return normalize_phone(_cell_text(cell)).normalized
    except PhoneError as exc:
        raise CellError(exc.code, f"{column.header}：{exc.message_zh}") from None


def _age(cell: Any, column: Column) -> int:
    text = _folded(cell).removesuffix("周岁").removesuffix("岁")
    if not text.isdigit() or not 10 <= int(text) <= 120:
        raise CellError("age_format", f"{column.header}请填周岁数字，如 65")
    return int(text)


_PARSERS: dict[Kind, Any] = {
    Kind.text: _text,
    Kind.name: _name,
    Kind.sex: _sex,
    Kind.date: _date,
    Kind.month: _date,
    Kind.grade: _grade,
    Kind.klass: _klass,
    Kind.flag: _flag,
    Kind.parents_away: _parents_away,
    Kind.rating: _rating,
    Kind.phone: _phone,
    Kind.age: _age,
    Kind.ethnicity: _ethnicity,
}

_MASKED = re.compile(r"\d{4}\*{10}\d{3}[\dX]")


# ---- reading files -------------------------------------------------------------------------------------


def _xlsx_rows(content: bytes) -> Generator[tuple[Any, ...], None, None]:
    """The rows of the roster sheet, row 1 first; missing rows come as empty tuples so numbers stay right."""
    try:
        with zipfile.ZipFile(io.BytesIO(content)) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
    except zipfile.BadZipFile:
        raise UnsupportedFile(
            "文件已损坏，无法作为 Excel 表格打开 (damaged xlsx)", code="roster_not_spreadsheet"
        ) from None
    if unpacked > MAX_XLSX_UNPACKED_BYTES:
        raise RosterTooLarge("表格解压后过大，请删除多余的工作表和格式后重试 (xlsx unpacks too large)")
    try:
        workbook = openpyxl.load_workbook(io.BytesIO(content), read_only=True, data_only=True)
    except Exception:
        # A zip that is not a workbook (.docx, .zip) or a broken workbook: openpyxl raises many kinds.
        raise UnsupportedFile(
            "该文件不是 Excel 表格：请上传 .xlsx 或 .csv 文件 (zip but not xlsx)", code="roster_not_spreadsheet"
        ) from None
    try:
        sheets = [ws for ws in workbook.worksheets if ws.title == SHEET_NAME]
        sheets = sheets or [ws for ws in workbook.worksheets if ws.title != INSTRUCTIONS_SHEET]
        if not sheets:
            raise Invalid("表格中没有工作表 (no worksheet)", code="roster_empty")
        sheet: Any = sheets[0]
        if hasattr(sheet, "reset_dimensions"):
            # Some programs write a wrong size into the file; read what is really there.
            sheet.reset_dimensions()
        for row in sheet.iter_rows(max_col=MAX_COLUMNS, values_only=True):
            yield tuple(row)
    except LiushouError:
        raise
    except Exception:
        raise UnsupportedFile("Excel 表格已损坏，无法读取 (damaged xlsx)", code="roster_not_spreadsheet") from None
    finally:
        workbook.close()


def _decode_text(content: bytes) -> str:
    if content.startswith(b"\xef\xbb\xbf"):
        candidates = ["utf-8-sig"]
    elif content.startswith((b"\xff\xfe", b"\xfe\xff")):
        candidates = ["utf-16"]  # Excel's "Unicode text"
    else:
        # Excel on Chinese Windows saves CSV in GBK; GB18030 reads GBK and everything else of Chinese.
        candidates = ["utf-8", "gb18030"]
    for encoding in candidates:
        try:
            text = content.decode(encoding)
        except UnicodeDecodeError:
            continue
        sample = text[:4096]
        if any(unicodedata.category(ch) == "Cc" and ch not in "\t\r\n" for ch in sample):
            break  # control characters: binary data that happened to decode
        return text
    raise UnsupportedFile(
        "无法识别文件内容：请上传 Excel 表格（.xlsx）或 CSV 文件（UTF-8 或 GBK 编码）", code="roster_not_spreadsheet"
    )


def _csv_rows(content: bytes) -> Generator[tuple[Any, ...], None, None]:
    text = _decode_text(content)
    first_line = text.split("\n", 1)[0]
    delimiter = max((",", "\t", ";"), key=first_line.count)
    try:
        for record in csv.reader(io.StringIO(text, newline=""), delimiter=delimiter):
            yield tuple(record[:MAX_COLUMNS])
    except csv.Error:
        raise UnsupportedFile("CSV 文件格式有误，无法读取 (malformed csv)", code="roster_not_spreadsheet") from None


def detect_format(content: bytes) -> str:
    if not content.strip():
        raise Invalid("文件是空的，请选择填好的花名册 (empty file)", code="roster_empty")
    if content.startswith(b"PK\x03\x04"):
        return "xlsx"
    if content.startswith(b"\xd0\xcf\x11\xe0"):
        raise UnsupportedFile(
            "不支持旧版 Excel（.xls）文件：请在 Excel 中“另存为” Excel 工作簿（.xlsx）后再上传 (xls not supported)",
            code="roster_xls_unsupported",
        )
    if b"\x00" in content[:4096] and not content.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise UnsupportedFile()
    return "csv"


# ---- checking rows (pure: runs off the event loop) -------------------------------------------------------


@dataclass(frozen=True)
class RowError:
    row: int
    column: str
    code: str
    message: str

    def as_field(self) -> FieldError:
        return field_error(["row", self.row, self.column], self.message, self.code)


@dataclass
class GuardianEntry:
    """A parent or the entrusted guardian as one row of the roster describes them."""

    slot: str
    name: str | None = None
    phone: str | None = None
    relation: str | None = None
    age: int | None = None
    details: dict[str, Any] = field(default_factory=dict)  # work_city, employer, trade, health, address


@dataclass
class RosterRow:
    row: int
    child: dict[str, Any]  # child attributes the row gives (blank text cells leave the stored value alone)
    id_number: IdNumber | None = None
    id_index: str | None = None
    masked_id: str | None = None  # a masked number from an export (the child must already be on file)
    grade: int | None = None
    class_name: str | None = None
    guardians: dict[str, GuardianEntry] = field(default_factory=dict)


@dataclass
class ParsedRoster:
    file_format: str
    sha256: str
    columns: list[str]
    rows: list[RosterRow]
    errors: list[RowError]


def _header_error(message: str, fields: list[FieldError]) -> Invalid:
    return Invalid(message, code="roster_columns", fields=fields)


def _read_header(cells: tuple[Any, ...]) -> dict[int, Column]:
    """Map cell positions to columns, or raise one error naming every missing, unknown or repeated column."""
    positions: dict[int, Column] = {}
    seen: dict[str, int] = {}
    unknown: list[tuple[int, str]] = []
    repeated: list[tuple[int, str]] = []
    for index, cell in enumerate(cells):
        text = _cell_text(cell)
        key = _header_key(text)
        if not key or key in IGNORED_HEADERS:
            continue
        column = _HEADER_LOOKUP.get(key)
        if column is None:
            unknown.append((index, text))
        elif column.header in seen:
            repeated.append((index, text))
        else:
            seen[column.header] = index
            positions[index] = column
    missing = [c.header for c in COLUMNS if c.required and c.header not in seen]
    if not (missing or unknown or repeated):
        return positions
    fields: list[FieldError] = []
    parts: list[str] = []
    if missing:
        parts.append("缺少必填列 " + "、".join(missing))
        fields += [field_error(["header", name], f"缺少必填列“{name}”", "column_missing") for name in missing]
    if unknown:
        parts.append("无法识别的列 " + "、".join(f"{text}（第{get_column_letter(i + 1)}列）" for i, text in unknown))
        fields += [
            field_error(["header", text], f"无法识别的列“{text}”（第{get_column_letter(i + 1)}列）", "column_unknown")
            for i, text in unknown
        ]
    if repeated:
        parts.append("重复的列 " + "、".join(text for _, text in repeated))
        fields += [
            field_error(["header", text], f"列“{text}”出现了两次（第{get_column_letter(i + 1)}列）", "column_duplicate")
            for i, text in repeated
        ]
    raise _header_error(
        "花名册表头有误：" + "；".join(parts) + "。请使用花名册模板的列名 (roster columns do not match the template)",
        fields,
    )


_BY_TARGET = {c.target: c for c in COLUMNS}
_SCIENTIFIC = re.compile(r"\d(?:\.\d+)?E\+?\d+")


def _read_id_number(row: RosterRow, cell: Any, *, cipher: FieldCipher, today: date) -> RowError | None:
    column = _BY_TARGET["id_number"]
    text = "".join(unicodedata.normalize("NFKC", _cell_text(cell)).split()).upper()
    if isinstance(cell, float) or _SCIENTIFIC.fullmatch(text):
        return RowError(
            row.row,
            column.header,
            "id_number_number_cell",
            "身份证号被 Excel 存成了数字，后几位已经丢失；请把该列设为“文本”格式后重新填写",
        )
    if "*" in text:
        if _MASKED.fullmatch(text):
            row.masked_id = text
            return None
        return RowError(row.row, column.header, "id_number_format", "身份证号格式不正确（隐去的位数不对）")
    try:
        parsed = validate_id_number(text, today=today)
    except IdNumberError as exc:
        return RowError(row.row, column.header, exc.code, exc.message_zh)
    row.id_number = parsed
    row.id_index = id_number_index(cipher, parsed.number)
    return None


def _parse_row(
    number: int, cells: tuple[Any, ...], positions: dict[int, Column], *, cipher: FieldCipher, today: date
) -> tuple[RosterRow, list[RowError]]:
    row = RosterRow(row=number, child={})
    errors: list[RowError] = []

    def fail(target: str, code: str, message: str) -> None:
        errors.append(RowError(number, _BY_TARGET[target].header, code, message))

    for index, column in positions.items():
        cell = cells[index] if index < len(cells) else None
        if column.kind is not Kind.flag and _is_blank(cell):
            if column.required:
                fail(column.target, "required", f"{column.header}不能为空")
            continue
        if column.kind is Kind.id_number:
            error = _read_id_number(row, cell, cipher=cipher, today=today)
            if error is not None:
                errors.append(error)
            continue
        try:
            value = _PARSERS[column.kind](cell, column)
        except CellError as exc:
            fail(column.target, exc.code, exc.message)
            continue
        if column.kind in (Kind.name, Kind.text) and not value:
            continue
        slot = column.slot
        if slot is not None:
            entry = row.guardians.setdefault(slot, GuardianEntry(slot))
            if column.attribute in ("name", "phone", "relation", "age"):
                setattr(entry, column.attribute, value)
            else:
                entry.details[column.attribute] = value
        elif column.target == "grade":
            row.grade = value
        elif column.target == "class":
            row.class_name = value
        else:
            row.child[column.target] = value

    child = row.child
    if "name" in child:
        child["name_pinyin"], child["name_initials"] = name_keys(child["name"])
    parsed = row.id_number
    birth = child.get("birth_date")
    if parsed is not None and birth is not None and birth != parsed.birth_date:
        fail(
            "birth_date",
            "birth_date_mismatch",
            f"出生日期与身份证号不一致（身份证号中为 {parsed.birth_date:%Y-%m-%d}）",
        )
    elif birth is not None and birth > today:
        fail("birth_date", "date_in_future", "出生日期晚于今天")
    if parsed is not None and "sex" in child and child["sex"] != parsed.sex.value:
        fail("sex", "sex_mismatch", f"性别与身份证号不一致（身份证号第17位表示{SEX_LABELS[Sex(parsed.sex.value)]}）")
    since = child.get("left_behind_since")
    if since is not None and since > today:
        fail("left_behind_since", "date_in_future", "留守开始时间晚于今天")
    elif since is not None and birth is not None and since < birth:
        fail("left_behind_since", "date_before_birth", "留守开始时间早于出生日期")

    failed = {e.column for e in errors}
    for slot, entry in list(row.guardians.items()):
        label = SLOT_LABELS[slot]
        if entry.name is None and _BY_TARGET[f"{slot}.name"].header in failed:
            del row.guardians[slot]
        elif entry.name is None:
            fail(f"{slot}.name", "guardian_name_missing", f"填写了{label}的其他信息，但没有填写{label}姓名")
            del row.guardians[slot]
        elif slot == "entrusted" and entry.relation is None:
            fail("entrusted.relation", "guardian_relation_missing", "请填写委托监护人与学生的关系，如 祖母、外公、姑姑")
    return row, errors


def _names_the_child(cells: tuple[Any, ...]) -> bool:
    return any(_HEADER_LOOKUP.get(_header_key(_cell_text(c))) is COLUMNS[0] for c in cells)


def _read_rows(
    source: Iterator[tuple[Any, ...]],
    *,
    cipher: FieldCipher,
    today: date,
    max_rows: int,
) -> tuple[dict[int, Column], list[RosterRow], list[RowError]]:
    numbered = enumerate(source, start=1)
    # The header is the first row naming 姓名 (a title row above it is common); failing that, the first row.
    head: list[tuple[int, tuple[Any, ...]]] = []
    for number, cells in numbered:
        head.append((number, cells))
        if len(head) >= HEADER_SEARCH_ROWS:
            break
    header_at = next((i for i, (_, cells) in enumerate(head) if _names_the_child(cells)), None)
    if header_at is None:
        header_at = next((i for i, (_, cells) in enumerate(head) if not all(_is_blank(c) for c in cells)), None)
    if header_at is None:
        raise Invalid("文件是空的，请选择填好的花名册 (empty file)", code="roster_empty")
    positions = _read_header(head[header_at][1])

    rows: list[RosterRow] = []
    errors: list[RowError] = []
    first_row: dict[Any, int] = {}
    blank_run = 0
    for number, cells in itertools.chain(head[header_at + 1 :], numbered):
        if all(_is_blank(c) for c in cells):
            blank_run += 1
            if blank_run >= MAX_BLANK_RUN:
                break
            continue
        blank_run = 0
        if len(rows) >= max_rows:
            raise Invalid(
                f"一次最多导入 {max_rows} 名学生，请分成几个文件导入 (too many rows)", code="roster_too_many_rows"
            )
        row, row_errors = _parse_row(number, cells, positions, cipher=cipher, today=today)
        identity: Any = row.id_number.number if row.id_number else None
        if identity is None and row.masked_id is not None:
            identity = (row.masked_id, row.child.get("name"))
        if identity is not None:
            first = first_row.setdefault(identity, number)
            if first != number:
                message = f"身份证号与第{first}行重复（每名学生只能有一行）"
                row_errors.append(RowError(number, "身份证号", "id_number_duplicate", message))
        rows.append(row)
        errors.extend(row_errors)
    return positions, rows, errors


def parse_roster(content: bytes, *, cipher: FieldCipher, today: date, max_rows: int | None = None) -> ParsedRoster:
    """Read an XLSX or CSV roster and check every row; raises only for a file that cannot be read at all
    (or whose header is wrong). Row problems are collected in ``errors``. CPU-bound: call it in a thread."""
    if len(content) > MAX_FILE_BYTES:
        raise RosterTooLarge()
    max_rows = MAX_ROWS if max_rows is None else max_rows
    file_format = detect_format(content)
    source = _xlsx_rows(content) if file_format == "xlsx" else _csv_rows(content)
    try:
        positions, rows, errors = _read_rows(source, cipher=cipher, today=today, max_rows=max_rows)
    finally:
        source.close()  # an XLSX source closes its workbook
    if not rows:
        raise Invalid("花名册中没有学生：表头下面是空的 (no rows)", code="roster_empty")
    return ParsedRoster(
        file_format=file_format,
        sha256=hashlib.sha256(content).hexdigest(),
        columns=[c.header for c in positions.values()],
        rows=rows,
        errors=errors,
    )


# ---- what is on file for the school -----------------------------------------------------------------------

FATHER_RELATIONS = frozenset({"父亲", "爸爸", "父"})
MOTHER_RELATIONS = frozenset({"母亲", "妈妈", "母"})
# The sex a relation implies, for a new guardian record.
_MALE_RELATIONS = ("祖父", "爷爷", "外祖父", "外公", "姥爷", "叔叔", "伯伯", "伯父", "舅舅", "姑父", "姨父", "哥哥")
_FEMALE_RELATIONS = ("祖母", "奶奶", "外祖母", "外婆", "姥姥", "婶婶", "伯母", "姑姑", "姨妈", "舅妈", "姐姐")
RELATION_SEX = {**dict.fromkeys(_MALE_RELATIONS, Sex.male), **dict.fromkeys(_FEMALE_RELATIONS, Sex.female)}
_AWAY_SLOTS = {
    ParentsAway.both: frozenset({"father", "mother"}),
    ParentsAway.father: frozenset({"father"}),
    ParentsAway.mother: frozenset({"mother"}),
    ParentsAway.none: frozenset(),
}


# What an import or export reads of the archive: rows with a table's columns as attributes, streamed in
# batches. ORM objects cost several times as much to build for a whole school and would hold the event loop;
# they are loaded only for the rows an import changes (so the audit log sees each change).
ChildRow = Any
LinkRow = Any
GuardianRow = Any


def _columns(model: Any) -> list[Any]:
    """Every column of ``model`` as an ORM attribute (so the session's scope rules still apply)."""
    return [getattr(model, column.key) for column in model.__table__.columns]


async def _stream_rows(session: AsyncSession, stmt: Any) -> list[Any]:
    """All rows of ``stmt``, fetched in batches so that other requests run in between."""
    result = await session.stream(stmt.execution_options(yield_per=_CHUNK))
    rows: list[Any] = []
    async for batch in result.partitions():
        rows.extend(batch)
    return rows


def slot_of(link: LinkRow) -> str | None:
    """Which roster column group a link fills: the father, the mother or the entrusted guardian."""
    if link.role == GuardianRole.entrusted_guardian:
        return "entrusted"
    if link.role in (GuardianRole.parent_away, GuardianRole.parent_home):
        if link.relation in FATHER_RELATIONS:
            return "father"
        if link.relation in MOTHER_RELATIONS:
            return "mother"
    return None


def parent_role(slot: str, parents_away: ParentsAway) -> GuardianRole:
    return GuardianRole.parent_away if slot in _AWAY_SLOTS[parents_away] else GuardianRole.parent_home


@dataclass
class _SchoolState:
    school: School
    classes: list[SchoolClass]
    children: list[ChildRow]
    links: dict[uuid.UUID, list[LinkRow]]  # child id → links (active or not), in contact order
    guardians: dict[uuid.UUID, GuardianRow]

    @classmethod
    async def load(cls, session: AsyncSession, school: School) -> "_SchoolState":
        """Everything of the school an import compares with: its classes, children, links and guardians."""
        classes = (await session.execute(select(SchoolClass).where(SchoolClass.school_id == school.id))).scalars()
        of_school = select(Child.id).where(Child.school_id == school.id)
        children = await _stream_rows(session, select(*_columns(Child)).where(Child.school_id == school.id))
        link_rows = await _stream_rows(
            session,
            select(*_columns(ChildGuardian))
            .where(col(ChildGuardian.child_id).in_(of_school))
            .order_by(col(ChildGuardian.contact_order), col(ChildGuardian.created_at)),
        )
        linked = select(ChildGuardian.guardian_id).where(col(ChildGuardian.child_id).in_(of_school))
        guardians = await _stream_rows(session, select(*_columns(Guardian)).where(col(Guardian.id).in_(linked)))
        links: dict[uuid.UUID, list[LinkRow]] = {}
        for link in link_rows:
            links.setdefault(link.child_id, []).append(link)
        return cls(
            school=school,
            classes=list(classes),
            children=children,
            links=links,
            guardians={g.id: g for g in guardians},
        )


def _class_key(grade: int, name: str) -> tuple[int, str]:
    return grade, normalize_class_name(name)


def _class_sort_key(klass: SchoolClass | None) -> tuple[int, int, str]:
    if klass is None:
        return 99, 0, ""
    number = re.match(r"(\d+)", klass.name)
    return klass.grade, int(number.group(1)) if number else 999, klass.name


# ---- planning an import ----------------------------------------------------------------------------------


class _Person:
    """A guardian the roster names: one on file (its changes are collected) or a new record."""

    def __init__(self, *, record: GuardianRow | None = None, values: dict[str, Any] | None = None) -> None:
        self.record = record
        self.values = values or {}
        self.changes: dict[str, Any] = {}
        self.id: uuid.UUID = record.id if record is not None else self.values["id"]

    @property
    def is_new(self) -> bool:
        return self.record is None

    def get(self, attribute: str) -> Any:
        if self.record is None:
            return self.values.get(attribute)
        return self.changes.get(attribute, getattr(self.record, attribute))

    def set(self, attribute: str, value: Any) -> None:
        if self.record is None:
            self.values[attribute] = value
        elif getattr(self.record, attribute) == value:
            self.changes.pop(attribute, None)
        else:
            self.changes[attribute] = value


_ROW_TEMPLATES: dict[Any, dict[str, Any]] = {}


def _new_row(model: Any, **values: Any) -> dict[str, Any]:
    """A full row of ``model`` for a bulk insert: every column, with the model's declared defaults (so every
    row has the same keys). Values made by a factory (ids, timestamps) are the caller's to give."""
    template = _ROW_TEMPLATES.get(model)
    if template is None:
        template = {}
        for column in model.__table__.columns:
            info = model.model_fields.get(column.key)
            usable = info is not None and info.default_factory is None and not info.is_required()
            template[column.key] = info.default if usable and info is not None else None
        _ROW_TEMPLATES[model] = template
    row = dict(template)
    row.update(values)
    return row


@dataclass
class _Plan:
    new_classes: list[SchoolClass] = field(default_factory=list)
    new_children: list[dict[str, Any]] = field(default_factory=list)
    child_changes: list[tuple[ChildRow, dict[str, Any]]] = field(default_factory=list)
    people: dict[uuid.UUID, _Person] = field(default_factory=dict)
    new_links: list[dict[str, Any]] = field(default_factory=list)
    link_changes: dict[uuid.UUID, tuple[LinkRow, dict[str, Any]]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)
    updated: int = 0
    unchanged: int = 0
    re_enrolled: int = 0

    def change_link(self, link: LinkRow, **changes: Any) -> None:
        pending = self.link_changes.setdefault(link.id, (link, {}))[1]
        for key, value in changes.items():
            current = pending.get(key, getattr(link, key))
            if current != value:
                pending[key] = value
        if not pending:
            del self.link_changes[link.id]

    def link_value(self, link: LinkRow, key: str) -> Any:
        pending = self.link_changes.get(link.id)
        return pending[1].get(key, getattr(link, key)) if pending else getattr(link, key)


class _Planner:
    """Turns checked rows into the writes an import makes; nothing is written here (a dry run stops after)."""

    def __init__(
        self,
        state: _SchoolState,
        *,
        cipher: FieldCipher,
        principal: Principal,
        now: datetime,
        today: date,
    ) -> None:
        self.state = state
        self.cipher = cipher
        self.principal = principal
        self.now = now
        self.today = today
        self.plan = _Plan()
        # Children already on file: (id, own cells changed, guardians the row names), settled in finish().
        self._existing: list[tuple[uuid.UUID, bool, list[_Person]]] = []
        self.classes = {c.id: c for c in state.classes}
        self.by_phone: dict[tuple[str, str], _Person] = {}
        self.by_home: dict[tuple[str, str], _Person] = {}
        # Every guardian of the school, wrapped once; only those the roster names end up in the plan.
        self.known: dict[uuid.UUID, _Person] = {}
        children = {c.id: c for c in state.children}
        for child_id, links in state.links.items():
            for link in links:
                person = self.person(state.guardians[link.guardian_id])
                phone, home = person.get("phone"), children[child_id].home_address
                if phone:
                    self.by_phone.setdefault((person.get("name"), phone), person)
                elif home:
                    self.by_home.setdefault((person.get("name"), home), person)

    def person(self, guardian: GuardianRow) -> _Person:
        found = self.known.get(guardian.id)
        if found is None:
            found = self.known[guardian.id] = _Person(record=guardian)
        return found

    # -- children

    def add_row(self, row: RosterRow, child: ChildRow | None, class_id: uuid.UUID) -> None:
        given = row.child
        parents_away: ParentsAway = given.get("parents_away") or (
            ParentsAway(child.parents_away) if child is not None else ParentsAway.both
        )
        home = given.get("home_address") or (child.home_address if child is not None else None)
        if child is None:
            child_id = self._new_child(row, class_id, parents_away)
            self._guardians(row, child_id, None, parents_away, home)
            return
        changed = self._update_child(row, child, class_id, parents_away)
        named = self._guardians(row, child.id, child, parents_away, home)
        self._existing.append((child.id, changed, named))

    def _new_child(self, row: RosterRow, class_id: uuid.UUID, parents_away: ParentsAway) -> uuid.UUID:
        assert row.id_number is not None and row.id_index is not None
        values = _new_row(Child, **row.child)
        child_id = uuid.uuid4()
        values.update(
            id=child_id,
            school_id=self.state.school.id,
            class_id=class_id,
            id_number_cipher=self.cipher.encrypt(row.id_number.number, context=ID_NUMBER_CONTEXT),
            id_number_index=row.id_index,
            id_number_masked=mask_id_number(row.id_number.number),
            parents_away=parents_away,
            is_left_behind=parents_away != ParentsAway.none,
            status=ChildStatus.enrolled,
            created_at=self.now,
            updated_at=self.now,
        )
        self.plan.new_children.append(values)
        self._event(child_id, ChildEventKind.enrolled, to_school_id=self.state.school.id, to_class_id=class_id)
        return child_id

    def _update_child(self, row: RosterRow, child: ChildRow, class_id: uuid.UUID, parents_away: ParentsAway) -> bool:
        changes = {key: value for key, value in row.child.items() if getattr(child, key) != value}
        is_left_behind = parents_away != ParentsAway.none
        if child.is_left_behind != is_left_behind:
            changes["is_left_behind"] = is_left_behind
            kind = ChildEventKind.became_left_behind if is_left_behind else ChildEventKind.parents_returned
            self._event(child.id, kind)
        if child.class_id != class_id:
            changes["class_id"] = class_id
            old, new = self.classes.get(child.class_id) if child.class_id else None, self.classes.get(class_id)
            promoted = old is not None and new is not None and new.grade == old.grade + 1
            self._event(
                child.id,
                ChildEventKind.promoted if promoted else ChildEventKind.class_changed,
                from_class_id=child.class_id,
                to_class_id=class_id,
            )
        if child.status != ChildStatus.enrolled:
            changes.update(status=ChildStatus.enrolled, status_reason=None, status_changed_on=self.today)
            self.plan.re_enrolled += 1
            self._event(child.id, ChildEventKind.re_enrolled, to_school_id=child.school_id, to_class_id=class_id)
        if child.id_number_index is None and row.id_number is not None:
            # A file first made without an ID number gets it from the roster.
            changes.update(
                id_number_cipher=self.cipher.encrypt(row.id_number.number, context=ID_NUMBER_CONTEXT),
                id_number_index=row.id_index,
                id_number_masked=mask_id_number(row.id_number.number),
            )
        if not changes:
            return False
        changes["updated_at"] = self.now
        self.plan.child_changes.append((child, changes))
        return True

    def _event(self, child_id: uuid.UUID, kind: ChildEventKind, **values: Any) -> None:
        event = _new_row(
            ChildEvent,
            id=uuid.uuid4(),
            child_id=child_id,
            kind=kind,
            effective_on=self.today,
            reason=IMPORT_REASON,
            recorded_at=self.now,
            recorded_by_id=self.principal.account_id,
            **values,
        )
        self.plan.events.append(event)

    # -- guardians and links

    def _resolve(self, entry: GuardianEntry, in_slot: list[GuardianRow], home: str | None) -> _Person:
        """Same school + same name + same phone is the same person; so is the person already in this place
        for the child under the same name (their phone changed); without a phone, the same name at the same
        home address (siblings' grandmother). Anyone else is a new record."""
        assert entry.name is not None
        if entry.phone:
            found = self.by_phone.get((entry.name, entry.phone))
            if found is not None:
                return found
        for guardian in in_slot:
            if guardian.name == entry.name:
                return self.person(guardian)
        if not entry.phone and home:
            found = self.by_home.get((entry.name, home))
            if found is not None:
                return found
        values = _new_row(Guardian, id=uuid.uuid4(), name=entry.name, created_at=self.now, updated_at=self.now)
        return _Person(values=values)

    def _merge(self, person: _Person, entry: GuardianEntry, home: str | None) -> None:
        if entry.phone and entry.phone != person.get("phone"):
            person.set("phone", entry.phone)
        for attribute, value in entry.details.items():
            if value != person.get(attribute):
                person.set(attribute, value)
        if entry.age is not None:
            born = person.get("birth_year")
            # Ages are rough (birthdays, last year's roster): a year either way keeps the recorded year.
            if born is None or abs(self.today.year - born - entry.age) > 1:
                person.set("birth_year", self.today.year - entry.age)
        if person.get("sex") is None:
            sex = {"father": Sex.male, "mother": Sex.female}.get(entry.slot) or RELATION_SEX.get(entry.relation or "")
            if sex is not None:
                person.set("sex", sex)
        phone = person.get("phone")
        if phone:
            self.by_phone[(person.get("name"), phone)] = person
        elif home:
            self.by_home.setdefault((person.get("name"), home), person)

    def _guardians(
        self,
        row: RosterRow,
        child_id: uuid.UUID,
        child: ChildRow | None,
        parents_away: ParentsAway,
        home: str | None,
    ) -> list[_Person]:
        links = self.state.links.get(child_id, []) if child is not None else []
        active_in_slot = {slot: [link for link in links if link.is_active and slot_of(link) == slot] for slot in SLOTS}
        chosen: dict[str, _Person] = {}
        for slot in SLOTS:
            entry = row.guardians.get(slot)
            if entry is None:
                continue
            current = [self.state.guardians[link.guardian_id] for link in active_in_slot[slot]]
            person = self._resolve(entry, current, home)
            self._merge(person, entry, home)
            self.plan.people[person.id] = person
            chosen[slot] = person
        entrusted = chosen.get("entrusted")
        if entrusted is not None and any(entrusted is chosen.get(s) for s in ("father", "mother")):
            # A parent at home who is also written in as the guardian: one link, as the parent.
            del chosen["entrusted"]

        chosen_ids = {person.id for person in chosen.values()}
        by_guardian = {link.guardian_id: link for link in links}
        new_links: list[tuple[str, _Person, GuardianRole, str, int | None]] = []
        for slot, person in chosen.items():
            role = GuardianRole.entrusted_guardian if slot == "entrusted" else parent_role(slot, parents_away)
            entry = row.guardians[slot]
            relation = entry.relation if slot == "entrusted" and entry.relation else SLOT_LABELS[slot]
            link = by_guardian.get(person.id)
            in_place = link is not None and any(link is old for old in active_in_slot[slot])
            replaced = None
            if not in_place:
                # The roster names someone else for this place: the first person there is replaced.
                replaced = next((old for old in active_in_slot[slot] if old.guardian_id not in chosen_ids), None)
                if replaced is not None:
                    self.plan.change_link(
                        replaced, is_active=False, until=self.today, end_reason=f"{IMPORT_REASON}：已更换"
                    )
            order = self.plan.link_value(replaced, "contact_order") if replaced is not None else None
            if link is not None:
                reactivate = {} if link.is_active else {"is_active": True, "until": None, "end_reason": None}
                if order is not None:
                    reactivate["contact_order"] = order
                self.plan.change_link(link, role=role, relation=relation, **reactivate)
            else:
                new_links.append((slot, person, role, relation, order))

        # Parents whose columns are blank still follow 留守类型: away or at home.
        for slot in ("father", "mother"):
            if slot not in chosen:
                for link in active_in_slot[slot]:
                    self.plan.change_link(link, role=parent_role(slot, parents_away))

        self._add_links(child_id, child, links, new_links)
        return list(chosen.values())

    def _add_links(
        self,
        child_id: uuid.UUID,
        child: ChildRow | None,
        links: list[LinkRow],
        new_links: list[tuple[str, _Person, GuardianRole, str, int | None]],
    ) -> None:
        """New links get a place in the emergency call order: the entrusted guardian first, then a parent at
        home, then the parents away. A link replacing another takes its place; existing orders stay."""
        rank = {GuardianRole.entrusted_guardian: 0, GuardianRole.parent_home: 1, GuardianRole.parent_away: 2}
        new_links.sort(key=lambda item: (rank[item[2]], SLOTS.index(item[0])))
        active = [link for link in links if self.plan.link_value(link, "is_active")]
        highest = max((self.plan.link_value(link, "contact_order") for link in active), default=0)
        for _slot, person, role, relation, order in new_links:
            if order is None and child is not None and role == GuardianRole.entrusted_guardian and active:
                # A first entrusted guardian for a child already on file is called first; the others move down.
                for link in active:
                    self.plan.change_link(link, contact_order=min(99, self.plan.link_value(link, "contact_order") + 1))
                highest += 1
                order = 1
            elif order is None:
                highest += 1
                order = min(99, highest)
            values = _new_row(
                ChildGuardian,
                id=uuid.uuid4(),
                child_id=child_id,
                guardian_id=person.id,
                role=role,
                relation=relation,
                contact_order=order,
                is_active=True,
                since=self.today,
                created_at=self.now,
            )
            self.plan.new_links.append(values)

    def finish(self) -> _Plan:
        """Count the children on file that change: their own cells, their links, or a guardian they share."""
        plan = self.plan
        with_new_links = {values["child_id"] for values in plan.new_links}
        with_changed_links = {link.child_id for link, changes in plan.link_changes.values() if changes}
        for child_id, changed, named in self._existing:
            if changed or child_id in with_new_links or child_id in with_changed_links:
                plan.updated += 1
            elif any(person.changes for person in named):
                plan.updated += 1
            else:
                plan.unchanged += 1
        return plan


# ---- importing -----------------------------------------------------------------------------------------


def _identity_errors(row: RosterRow, parsed: IdNumber) -> list[RowError]:
    """Birth date and sex must agree with the ID number (checked in the parser for full numbers)."""
    errors = []
    birth = row.child.get("birth_date")
    if birth is not None and birth != parsed.birth_date:
        errors.append(
            RowError(
                row.row,
                "出生日期",
                "birth_date_mismatch",
                f"出生日期与身份证号不一致（身份证号中为 {parsed.birth_date:%Y-%m-%d}）",
            )
        )
    if "sex" in row.child and row.child["sex"] != parsed.sex.value:
        label = SEX_LABELS[Sex(parsed.sex.value)]
        errors.append(RowError(row.row, "性别", "sex_mismatch", f"性别与身份证号不一致（身份证号第17位表示{label}）"))
    return errors


async def _indexes_in_other_schools(session: AsyncSession, school_id: uuid.UUID, indexes: list[str]) -> set[str]:
    """Which of these ID numbers are on file at another school. The check crosses scope on purpose (a
    child is filed once in the county and beyond) and answers only yes or no, never which school."""
    found: set[str] = set()
    async with as_system(session):  # SYSTEM: the check crosses scope on purpose (above)
        for start in range(0, len(indexes), 5000):
            chunk = indexes[start : start + 5000]
            result = await session.execute(
                select(Child.id_number_index).where(
                    col(Child.id_number_index).in_(chunk), col(Child.school_id) != school_id
                )
            )
            found.update(value for value in result.scalars() if value is not None)
    return found


@dataclass
class _Matched:
    children: dict[int, ChildRow | None]  # row number → the child on file (None: a new child)
    class_ids: dict[int, uuid.UUID]
    new_classes: list[SchoolClass]
    errors: list[RowError]


async def _match(
    session: AsyncSession,
    parsed: ParsedRoster,
    state: _SchoolState,
    *,
    cipher: FieldCipher,
    today: date,
    create_classes: bool,
) -> _Matched:
    """Find each row's child and class on file; the checks that need the database."""
    errors: list[RowError] = []
    by_index = {c.id_number_index: c for c in state.children if c.id_number_index}
    by_masked: dict[tuple[str | None, str], list[ChildRow]] = {}
    without_number: dict[tuple[str, str, date], list[ChildRow]] = {}
    for c in state.children:
        if c.id_number_index:
            by_masked.setdefault((c.id_number_masked, c.name), []).append(c)
        else:
            without_number.setdefault((c.name, str(c.sex), c.birth_date), []).append(c)
    unknown = [r.id_index for r in parsed.rows if r.id_index and r.id_index not in by_index]
    elsewhere = await _indexes_in_other_schools(session, state.school.id, unknown) if unknown else set()

    children: dict[int, ChildRow | None] = {}
    first_row: dict[uuid.UUID, int] = {}
    for row in parsed.rows:
        child: ChildRow | None = None
        if row.id_index is not None:
            if row.id_index in elsewhere:
                errors.append(
                    RowError(
                        row.row,
                        "身份证号",
                        "id_number_other_school",
                        "该学生已在其他学校建档；转入的学生请由原学校或县教育局办理转学，不能重复建档",
                    )
                )
                continue
            child = by_index.get(row.id_index)
            if child is None and "name" in row.child and row.id_number is not None:
                key = (row.child["name"], row.id_number.sex.value, row.id_number.birth_date)
                candidates = without_number.get(key, [])
                child = candidates[0] if len(candidates) == 1 else None
        elif row.masked_id is not None:
            candidates = by_masked.get((row.masked_id, row.child.get("name", "")), [])
            if len(candidates) != 1 or candidates[0].id_number_cipher is None:
                errors.append(
                    RowError(
                        row.row,
                        "身份证号",
                        "id_number_masked_unknown",
                        "身份证号中间已隐去，且找不到对应的已建档学生；新学生请填写完整的18位身份证号",
                    )
                )
                continue
            child = candidates[0]
            assert child.id_number_cipher is not None
            stored = validate_id_number(reveal_id_number(cipher, child.id_number_cipher), today=today)
            row.id_number, row.id_index = stored, child.id_number_index
            mismatch = _identity_errors(row, stored)
            if mismatch:
                errors.extend(mismatch)
                continue
        else:
            continue  # the parser already reported the missing or broken number
        if child is not None:
            first = first_row.setdefault(child.id, row.row)
            if first != row.row:
                errors.append(
                    RowError(
                        row.row, "身份证号", "id_number_duplicate", f"与第{first}行是同一名学生（每名学生只能有一行）"
                    )
                )
                continue
        children[row.row] = child

    class_ids, new_classes = _match_classes(parsed, state, create_classes=create_classes, errors=errors)
    return _Matched(children=children, class_ids=class_ids, new_classes=new_classes, errors=errors)


def _match_classes(
    parsed: ParsedRoster, state: _SchoolState, *, create_classes: bool, errors: list[RowError]
) -> tuple[dict[int, uuid.UUID], list[SchoolClass]]:
    """Each row's class (年级 + 班级) among the school's classes, or a new one if the caller allows it."""
    active: dict[tuple[int, str], SchoolClass] = {}
    inactive: dict[tuple[int, str], SchoolClass] = {}
    for existing in state.classes:
        (active if existing.is_active else inactive).setdefault(_class_key(existing.grade, existing.name), existing)
    class_ids: dict[int, uuid.UUID] = {}
    new_classes: dict[tuple[int, str], SchoolClass] = {}
    for row in parsed.rows:
        if row.grade is None or row.class_name is None:
            continue
        key = _class_key(row.grade, row.class_name)
        label = class_label(row.grade, key[1])
        klass = active.get(key) or new_classes.get(key)
        if klass is None and key in inactive:
            errors.append(RowError(row.row, "班级", "class_inactive", f"{label}已停用；请先在系统中恢复该班级"))
            continue
        if klass is None and create_classes:
            klass = new_classes[key] = SchoolClass(
                id=uuid.uuid4(), school_id=state.school.id, grade=row.grade, name=key[1], is_active=True
            )
        if klass is None:
            errors.append(
                RowError(
                    row.row,
                    "班级",
                    "class_not_found",
                    f"本校还没有{label}；请先在系统中建班，或导入时选择“自动新建班级”(create_classes)",
                )
            )
            continue
        class_ids[row.row] = klass.id
    return class_ids, list(new_classes.values())


def roster_invalid(errors: list[RowError]) -> Invalid:
    """The one answer to a roster with errors: every error with its row and column (the first 1,000)."""
    errors = sorted(errors, key=lambda e: (e.row, _COLUMN_ORDER.get(e.column, len(COLUMNS)), e.code))
    rows = len({e.row for e in errors})
    shown = errors[:MAX_REPORTED_ERRORS]
    message = f"花名册中有 {len(errors)} 处错误（涉及 {rows} 行），没有导入任何数据；请按行号改正后重新上传"
    if len(shown) < len(errors):
        message += f"（这里列出前 {len(shown)} 处）"
    return Invalid(message + " (the roster has errors; nothing was imported)", code="roster_invalid",
                   fields=[e.as_field() for e in shown])  # fmt: skip


def _jsonable(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, enum.Enum):
        return value.value
    return value


async def _insert_audited(
    session: AsyncSession, model: Any, resource_type: str, rows: list[dict[str, Any]], *, school: School, now: datetime
) -> None:
    """Insert rows in bulk, each with the audit entry a single ORM insert would have had (``<type>.create``
    with the new values, sensitive columns redacted)."""
    if not rows:
        return
    template = audit.make_entry(session, action=f"{resource_type}.create", resource_type=resource_type)
    sensitive = {c.key for c in model.__table__.columns if c.info.get("sensitive")}
    for start in range(0, len(rows), _CHUNK):
        chunk = rows[start : start + _CHUNK]
        await session.execute(sa.insert(model), chunk)
        entries = [
            {
                "at": now,
                "account_id": template.account_id,
                "role": template.role,
                "action": template.action,
                "resource_type": resource_type,
                "resource_id": str(values["id"]),
                "school_id": school.id,
                "county_id": school.county_id,
                "request_id": template.request_id,
                "client_ip": template.client_ip,
                "changes": {
                    key: REDACTED if key in sensitive else _jsonable(value)
                    for key, value in values.items()
                    if value is not None
                },
            }
            for values in chunk
        ]
        await session.execute(sa.insert(AuditEntry), entries)


async def _lock_school(session: AsyncSession, school_id: uuid.UUID) -> None:
    """Imports into one school wait for each other (until commit), so two uploads cannot both create a child."""
    key = int.from_bytes(school_id.bytes[:4], "big", signed=True)
    await session.execute(sa.text("SELECT pg_advisory_xact_lock(:namespace, :key)"), {"namespace": _LOCK_NAMESPACE,
                                                                                      "key": key})  # fmt: skip


async def _get_school(session: AsyncSession, school_id: uuid.UUID) -> School:
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    return school


def _file_name(name: str | None) -> str:
    base = re.split(r"[\\/]", name or "")[-1].strip()
    return (base or "花名册")[:255]


async def import_roster(
    session: AsyncSession,
    principal: Principal,
    *,
    cipher: FieldCipher,
    school_id: uuid.UUID,
    content: bytes,
    file_name: str | None,
    now: datetime,
    dry_run: bool = False,
    create_classes: bool = False,
) -> RosterImportReport:
    """Import a roster into a school, all or nothing (see the module docstring).

    Raises ``Invalid`` (``roster_invalid``) with every row error, ``roster_columns`` for a wrong header,
    ``RosterTooLarge``/``UnsupportedFile`` for files that cannot be read, and ``Conflict`` if the archive
    changed under the import.
    """
    if principal.role not in (Role.school_admin, Role.platform_admin) and not principal.is_system:
        raise Forbidden("只有学校管理员可以导入花名册 (only school admins import the roster)", code="role_forbidden")
    school = await _get_school(session, school_id)
    today = now.astimezone(SHANGHAI).date()
    parsed = await anyio.to_thread.run_sync(partial(parse_roster, content, cipher=cipher, today=today))
    if not dry_run:
        await _lock_school(session, school.id)
    state = await _SchoolState.load(session, school)
    matched = await _match(session, parsed, state, cipher=cipher, today=today, create_classes=create_classes)
    errors = parsed.errors + matched.errors
    if errors:
        raise roster_invalid(errors)

    def make_plan() -> _Plan:
        # Pure work on rows already loaded; the session is not touched while it runs.
        planner = _Planner(state, cipher=cipher, principal=principal, now=now, today=today)
        for row in parsed.rows:
            planner.add_row(row, matched.children[row.row], matched.class_ids[row.row])
        return planner.finish()

    plan = await anyio.to_thread.run_sync(make_plan)
    plan.new_classes = matched.new_classes
    people = list(plan.people.values())
    report = RosterImportReport(
        dry_run=dry_run,
        batch_id=None,
        file_format=parsed.file_format,
        rows=len(parsed.rows),
        children_created=len(plan.new_children),
        children_updated=plan.updated,
        children_unchanged=plan.unchanged,
        children_re_enrolled=plan.re_enrolled,
        guardians_created=sum(1 for p in people if p.is_new),
        guardians_reused=sum(1 for p in people if not p.is_new),
        guardians_updated=sum(1 for p in people if not p.is_new and p.changes),
        classes_created=[class_label(c.grade, c.name) for c in plan.new_classes],
    )
    if dry_run:
        return report
    try:
        report.batch_id = await _write(session, plan, principal=principal, school=school, now=now)
    except IntegrityError:
        raise Conflict(
            "导入时档案被同时修改（例如同一学生刚被建档），没有导入任何数据；请重新导入"
            " (the archive changed during import)",
            code="roster_conflict",
        ) from None
    batch = ImportBatch(
        id=report.batch_id,
        school_id=school.id,
        account_id=principal.account_id,
        file_name=_file_name(file_name),
        file_format=parsed.file_format,
        file_sha256=parsed.sha256,
        row_count=report.rows,
        children_created=report.children_created,
        children_updated=report.children_updated,
        children_unchanged=report.children_unchanged,
        children_re_enrolled=report.children_re_enrolled,
        guardians_created=report.guardians_created,
        guardians_reused=report.guardians_reused,
        guardians_updated=report.guardians_updated,
        classes_created=len(report.classes_created),
        created_at=now,
    )
    session.add(batch)
    audit.record(
        session,
        action="roster.import",
        resource_type="import_batch",
        resource_id=batch.id,
        school_id=school.id,
        county_id=school.county_id,
        detail=report.model_dump(mode="json", exclude={"dry_run", "batch_id"}),
    )
    await session.flush()
    return report


async def _write(
    session: AsyncSession, plan: _Plan, *, principal: Principal, school: School, now: datetime
) -> uuid.UUID:
    for klass in plan.new_classes:
        session.add(klass)
    if plan.new_classes:
        await session.flush()
    await _insert_audited(session, Child, "child", plan.new_children, school=school, now=now)
    new_people = [p.values for p in plan.people.values() if p.is_new]
    await _insert_audited(session, Guardian, "guardian", new_people, school=school, now=now)
    # Changes to rows on file go through the ORM, so the audit log records each changed field.
    guardian_changes = {
        p.id: {**p.changes, "updated_at": now} for p in plan.people.values() if p.record is not None and p.changes
    }
    pending: list[tuple[Any, dict[uuid.UUID, dict[str, Any]]]] = [
        (Child, {child.id: values for child, values in plan.child_changes}),
        (Guardian, guardian_changes),
        (ChildGuardian, {link_id: values for link_id, (_, values) in plan.link_changes.items()}),
    ]
    for model, changes in pending:
        ids = list(changes)
        for start in range(0, len(ids), _CHUNK):
            records = await session.execute(select(model).where(col(model.id).in_(ids[start : start + _CHUNK])))
            for record in records.scalars():
                for key, value in changes[record.id].items():
                    setattr(record, key, value)
            await session.flush()
    await _insert_audited(session, ChildGuardian, "child_guardian", plan.new_links, school=school, now=now)
    for start in range(0, len(plan.events), _CHUNK):
        await session.execute(sa.insert(ChildEvent), plan.events[start : start + _CHUNK])
    if len(plan.new_children) + len(plan.new_links) >= _ANALYZE_AFTER:
        # Fresh statistics, or the planner takes the new rows for a handful and the next queries of the
        # school (their scope subqueries especially) run as nested loops over tens of thousands of rows.
        await session.execute(sa.text("ANALYZE child, guardian, child_guardian"))
    return uuid.uuid4()


async def list_imports(
    session: AsyncSession, *, school_id: uuid.UUID, offset: int, limit: int
) -> Page[ImportBatchPublic]:
    await _get_school(session, school_id)
    stmt = select(ImportBatch).where(ImportBatch.school_id == school_id)
    count = (await session.execute(select(sa.func.count()).select_from(stmt.subquery()))).scalar_one()
    rows = await session.execute(
        stmt.order_by(col(ImportBatch.created_at).desc(), col(ImportBatch.id)).offset(offset).limit(limit)
    )
    return Page(data=[ImportBatchPublic.model_validate(b, from_attributes=True) for b in rows.scalars()], count=count)


# ---- exporting --------------------------------------------------------------------------------------------


def _yes_no(value: bool) -> str:
    return "是" if value else "否"


def export_row(
    child: ChildRow,
    klass: SchoolClass | None,
    slots: dict[str, tuple[LinkRow, GuardianRow]],
    *,
    id_number: str | None,
    today: date,
) -> dict[str, Any]:
    """One child as a roster row, in the template's columns (what the importer reads back unchanged)."""
    row: dict[str, Any] = {
        "姓名": child.name,
        "性别": SEX_LABELS[Sex(child.sex)],
        "出生日期": child.birth_date,
        "民族": child.ethnicity,
        "身份证号": id_number or "",
        "年级": f"{GRADE_LABELS.get(klass.grade, str(klass.grade))}年级" if klass else "",
        "班级": klass.name if klass else "",
        "户籍": child.household_registration,
        "家庭住址": child.home_address,
        "是否寄宿": _yes_no(child.is_boarding),
        "健康状况": child.health,
        "留守类型": PARENTS_AWAY_LABELS[ParentsAway(child.parents_away)],
        "留守开始时间": child.left_behind_since,
        "监护状况": RATING_LABELS[GuardianshipRating(child.guardianship_rating)] if child.guardianship_rating else "",
        "特困": _yes_no(child.special_hardship),
        "单亲": _yes_no(child.single_parent),
        "学困": _yes_no(child.struggling_learner),
        "残疾": _yes_no(child.disability),
        "需个别教育方案": _yes_no(child.needs_individual_plan),
        "备注": child.notes,
    }
    for slot in ("father", "mother"):
        prefix = SLOT_LABELS[slot]
        _, parent = slots.get(slot, (None, None))
        row[f"{prefix}姓名"] = parent.name if parent else None
        row[f"{prefix}电话"] = parent.phone if parent else None
        row[f"{prefix}务工城市"] = parent.work_city if parent else None
        row[f"{prefix}工作单位"] = parent.employer if parent else None
        row[f"{prefix}工种"] = parent.trade if parent else None
    link, guardian = slots.get("entrusted", (None, None))
    row["委托监护人姓名"] = guardian.name if guardian else None
    row["委托监护人关系"] = link.relation if link else None
    row["委托监护人电话"] = guardian.phone if guardian else None
    row["委托监护人年龄"] = today.year - guardian.birth_year if guardian and guardian.birth_year else None
    row["委托监护人身体状况"] = guardian.health if guardian else None
    row["委托监护人住址"] = guardian.address if guardian else None
    return {header: row.get(header) for header in HEADERS}


async def export_roster(
    session: AsyncSession,
    principal: Principal,
    *,
    cipher: FieldCipher,
    school_id: uuid.UUID,
    class_id: uuid.UUID | None,
    status: ChildStatus,
    reveal_id_numbers: bool,
    now: datetime,
) -> tuple[str, bytes]:
    """The roster of a school as XLSX (file name, bytes): the template's columns, so it imports back as a no-op.

    ID numbers are masked unless a school admin asks for them; every export is audited with that choice.
    """
    if principal.role not in (Role.school_admin, Role.county_bureau, Role.platform_admin):
        raise Forbidden("只有学校管理员和县教育局可以导出花名册 (cannot export the roster)", code="role_forbidden")
    if reveal_id_numbers and principal.role != Role.school_admin:
        raise Forbidden(
            "只有本校管理员可以导出完整身份证号 (only the school's admin may export full ID numbers)",
            code="reveal_forbidden",
        )
    school = await _get_school(session, school_id)
    if class_id is not None:
        klass = await session.get(SchoolClass, class_id)
        if klass is None or klass.school_id != school.id:
            raise NotFound("班级不存在 (class not found)", code="class_not_found")
    today = now.astimezone(SHANGHAI).date()
    filters = [col(Child.school_id) == school.id, col(Child.status) == status]
    if class_id is not None:
        filters.append(col(Child.class_id) == class_id)
    classes = {
        c.id: c
        for c in (await session.execute(select(SchoolClass).where(SchoolClass.school_id == school.id))).scalars()
    }
    children = await _stream_rows(session, select(*_columns(Child)).where(*filters))
    links = await _stream_rows(
        session,
        select(*_columns(ChildGuardian))
        .where(col(ChildGuardian.child_id).in_(select(Child.id).where(*filters)), col(ChildGuardian.is_active))
        .order_by(col(ChildGuardian.contact_order), col(ChildGuardian.created_at)),
    )
    guardian_ids = select(ChildGuardian.guardian_id).where(
        col(ChildGuardian.child_id).in_(select(Child.id).where(*filters)), col(ChildGuardian.is_active)
    )
    guardians = {
        g.id: g
        for g in await _stream_rows(session, select(*_columns(Guardian)).where(col(Guardian.id).in_(guardian_ids)))
    }
    slots: dict[uuid.UUID, dict[str, tuple[LinkRow, GuardianRow]]] = {}
    for link in links:
        slot = slot_of(link)
        if slot is not None and link.guardian_id in guardians:
            slots.setdefault(link.child_id, {}).setdefault(slot, (link, guardians[link.guardian_id]))

    def sort_key(child: ChildRow) -> tuple[Any, ...]:
        return (
            *_class_sort_key(classes.get(child.class_id) if child.class_id else None),
            child.name_pinyin,
            child.name,
        )

    children.sort(key=sort_key)

    def build() -> bytes:
        rows = []
        for child in children:
            if reveal_id_numbers and child.id_number_cipher:
                number: str | None = reveal_id_number(cipher, child.id_number_cipher)
            else:
                number = child.id_number_masked
            klass = classes.get(child.class_id) if child.class_id else None
            rows.append(export_row(child, klass, slots.get(child.id, {}), id_number=number, today=today))
        return write_roster_xlsx(rows)

    content = await anyio.to_thread.run_sync(build)
    audit.record(
        session,
        action="roster.export",
        resource_type="school",
        resource_id=school.id,
        school_id=school.id,
        county_id=school.county_id,
        detail={
            "reveal_id_numbers": reveal_id_numbers,
            "class_id": str(class_id) if class_id else None,
            "status": status.value,
            "rows": len(children),
        },
    )
    return f"{school.name}-花名册-{today:%Y%m%d}.xlsx", content


# ---- files: template, export, CSV ----------------------------------------------------------------------

GENERAL_NOTES = (
    "每名学生一行。第一行是列名，请不要改动列名；不用的选填列可以删去，列的顺序可以调整。",
    "必填列：姓名、性别、出生日期、身份证号、年级、班级。性别和出生日期须与身份证号一致。",
    "身份证号和电话两列请设为“文本”格式（模板已设好），否则 Excel 会把身份证号末几位变成 0。",
    "再次导入时按身份证号更新已有档案，不会重复建档；内容没有变化的学生不会被改动。",
    "空白单元格不会清除系统中已有的内容；是/否 列例外，留空视为“否”。",
    "兄弟姐妹的家长、监护人请写相同的姓名和电话，系统会认作同一人。",
    "导入时逐行检查：只要有一处错误，整份花名册都不导入，系统会列出每处错误的行号和列名，改正后重新上传即可。",
    "文件格式：Excel 工作簿（.xlsx）或 CSV（UTF-8 或 GBK 编码），不超过 10 MB、20000 名学生。",
    "示例只写在本页；“花名册”工作表里请只填真实学生。",
)


def _instruction_rows() -> list[list[str]]:
    rows: list[list[str]] = [["花名册填写说明"], []]
    rows += [[f"{i}. {note}"] for i, note in enumerate(GENERAL_NOTES, start=1)]
    rows += [[], ["列名", "是否必填", "怎么填", "示例"]]
    rows += [[c.header, "必填" if c.required else "选填", c.hint, c.example] for c in COLUMNS]
    return rows


_HEADER_FONT = Font(bold=True)
_REQUIRED_FILL = PatternFill("solid", fgColor="FDE9D9")
_TEXT_COLUMNS = {c.header for c in COLUMNS if c.kind in (Kind.id_number, Kind.phone)}


def write_roster_xlsx(rows: Sequence[dict[str, Any]]) -> bytes:
    """A roster workbook (sheet 花名册 with the rows, sheet 填写说明) written in streaming mode."""
    from openpyxl.cell import WriteOnlyCell

    workbook = openpyxl.Workbook(write_only=True)
    sheet: Any = workbook.create_sheet(SHEET_NAME)
    for index, column in enumerate(COLUMNS, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = column.width + 2
    sheet.freeze_panes = "C2"
    header = []
    for column in COLUMNS:
        cell = WriteOnlyCell(sheet, value=column.header)
        cell.font = _HEADER_FONT
        if column.required:
            cell.fill = _REQUIRED_FILL
        header.append(cell)
    sheet.append(header)
    for row in rows:
        cells = []
        for column in COLUMNS:
            value = row.get(column.header)
            if column.header in _TEXT_COLUMNS and value not in (None, ""):
                cell = WriteOnlyCell(sheet, value=str(value))
                cell.number_format = "@"
                cells.append(cell)
            else:
                cells.append(value)
        sheet.append(cells)
    _write_instructions(workbook.create_sheet(INSTRUCTIONS_SHEET))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def _write_instructions(sheet: Any) -> None:
    for letter, width in zip("ABCD", (20, 10, 70, 24), strict=True):
        sheet.column_dimensions[letter].width = width
    for row in _instruction_rows():
        sheet.append(row)


def template_xlsx() -> bytes:
    """The empty template: headers (required ones shaded, each with a note), drop-down lists for the fixed
    answers, ID and phone columns formatted as text, and the 填写说明 sheet with an example per column."""
    workbook = openpyxl.Workbook()
    sheet: Any = workbook.active
    sheet.title = SHEET_NAME
    last_row = MAX_ROWS + 1
    for index, column in enumerate(COLUMNS, start=1):
        letter = get_column_letter(index)
        cell = sheet.cell(row=1, column=index, value=column.header)
        cell.font = _HEADER_FONT
        cell.alignment = Alignment(horizontal="center")
        if column.required:
            cell.fill = _REQUIRED_FILL
        note = ("必填。" if column.required else "选填。") + (column.hint or "")
        if column.example:
            note += f"\n示例：{column.example}"
        cell.comment = Comment(note, "留守")
        sheet.column_dimensions[letter].width = column.width + 2
        if column.header in _TEXT_COLUMNS:
            sheet.column_dimensions[letter].number_format = "@"
        if column.choices:
            validation = DataValidation(
                type="list",
                formula1='"' + ",".join(column.choices) + '"',
                allow_blank=True,
                showErrorMessage=True,
                errorTitle=column.header,
                error=f"请从下拉列表中选择：{'、'.join(column.choices)}",
            )
            validation.add(f"{letter}2:{letter}{last_row}")
            sheet.add_data_validation(validation)
    sheet.freeze_panes = "C2"
    _write_instructions(workbook.create_sheet(INSTRUCTIONS_SHEET))
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()


def roster_csv(rows: Sequence[dict[str, Any]], *, encoding: str = "utf-8-sig") -> bytes:
    """A roster as CSV in the template's columns; UTF-8 with a BOM so that Excel shows the Chinese."""
    buffer = io.StringIO(newline="")
    writer = csv.writer(buffer)
    writer.writerow(HEADERS)
    for row in rows:
        writer.writerow(["" if row.get(h) is None else _cell_text(row.get(h)) for h in HEADERS])
    return buffer.getvalue().encode(encoding)


def template_csv() -> bytes:
    return roster_csv([])


# ---- a demo roster ---------------------------------------------------------------------------------------


def demo_roster(
    rng: random.Random, count: int, *, classes: Sequence[tuple[int, str]], today: date
) -> list[dict[str, Any]]:
    """``count`` roster rows of made-up families from :mod:`api.demo_people`, spread over ``classes``
    ((grade, class name) pairs), as a clerk would type them. For demos, tests and benchmarks."""
    rows: list[dict[str, Any]] = []
    for family in demo_people.families(rng, count):
        away = (family.father.away, family.mother.away)
        parents_away = {
            (True, True): ParentsAway.both,
            (True, False): ParentsAway.father,
            (False, True): ParentsAway.mother,
        }.get(away, ParentsAway.none)
        guardian = family.guardian
        for kid in family.children:
            grade, class_name = classes[len(rows) % len(classes)]
            person = kid.person
            since = max(person.birth_date, date(today.year - rng.randint(1, 6), 9, 1))
            rows.append(
                {
                    "姓名": person.name,
                    "性别": SEX_LABELS[Sex(person.sex.value)],
                    "出生日期": person.birth_date.isoformat(),
                    "民族": person.ethnicity,
                    "身份证号": person.id_number,
                    "年级": f"{GRADE_LABELS.get(grade, str(grade))}年级",
                    "班级": class_name,
                    "户籍": f"湖南省{demo_people.COUNTY}",
                    "家庭住址": family.address,
                    "是否寄宿": _yes_no(kid.boarding),
                    "健康状况": kid.health,
                    "留守类型": PARENTS_AWAY_LABELS[parents_away],
                    "留守开始时间": since.isoformat() if since < today else None,
                    "监护状况": guardian.care_rating,
                    "特困": _yes_no(rng.random() < 0.05),
                    "单亲": "否",
                    "学困": _yes_no(rng.random() < 0.1),
                    "残疾": _yes_no(rng.random() < 0.01),
                    "需个别教育方案": "否",
                    "父亲姓名": family.father.person.name,
                    "父亲电话": family.father.phone,
                    "父亲务工城市": family.father.work_city,
                    "父亲工作单位": family.father.employer,
                    "父亲工种": family.father.trade,
                    "母亲姓名": family.mother.person.name,
                    "母亲电话": family.mother.phone,
                    "母亲务工城市": family.mother.work_city,
                    "母亲工作单位": family.mother.employer,
                    "母亲工种": family.mother.trade,
                    "委托监护人姓名": guardian.person.name,
                    "委托监护人关系": guardian.relation,
                    "委托监护人电话": guardian.phone,
                    "委托监护人年龄": today.year - guardian.person.birth_date.year,
                    "委托监护人身体状况": guardian.health,
                    "委托监护人住址": None,
                    "备注": None,
                }
            )
            if len(rows) == count:
                return rows
    return rows
