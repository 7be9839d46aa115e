"""花名册 checks: each cell parsed and each row checked as pure functions (no database, no clock).

:func:`parse_roster` reads a file (:mod:`.files`) and checks every row against the columns (:mod:`.columns`),
collecting every error with the row number the clerk sees in Excel. CPU-bound: the service runs it in a thread.
"""

import hashlib
import itertools
import re
import unicodedata
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Any

from api.crypto import FieldCipher
from api.errors import FieldError, Invalid, field_error
from api.idcard import IdNumber, IdNumberError, validate_id_number
from api.models.children import GuardianshipRating, ParentsAway, Sex
from api.phones import PhoneError, normalize_phone
from api.services.identity import id_number_index, name_keys
from api.services.roster import files
from api.services.roster.columns import (
    BY_TARGET,
    COLUMN_ORDER,
    COLUMNS,
    ETHNIC_GROUPS,
    HEADER_LOOKUP,
    IGNORED_HEADERS,
    NO,
    PARENTS_AWAY_LABELS,
    PARENTS_AWAY_VALUES,
    RATING_LABELS,
    SEX_LABELS,
    SEX_VALUES,
    SLOT_LABELS,
    YES,
    Column,
    Kind,
    header_key,
)
from api.services.roster.files import cell_text, is_blank

# Excel keeps formatting in rows nobody uses; after this many blank rows in a row the sheet is taken to end.
MAX_BLANK_RUN = 1000
# A clerk needs the first errors to start; a file with 10,000 broken rows gets the first of them.
MAX_REPORTED_ERRORS = 1000
HEADER_SEARCH_ROWS = 10


# ---- reading cells -------------------------------------------------------------------------------------


class CellError(ValueError):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _folded(cell: Any) -> str:
    return "".join(unicodedata.normalize("NFKC", cell_text(cell)).split()).lower()


def _text(cell: Any, column: Column) -> str:
    value = cell_text(cell)
    if column.max_length is not None and len(value) > column.max_length:
        raise CellError("too_long", f"{column.header}不能超过{column.max_length}个字（现有{len(value)}个字）")
    return value


def _name(cell: Any, column: Column) -> str:
    # Rosters often pad two-character names to line up with three-character ones: 王  芳.
    value = "".join(cell_text(cell).split())
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
    text = unicodedata.normalize("NFKC", cell_text(cell)).strip()
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
    raise CellError(code, f"{column.header}“{cell_text(cell)[:20]}”无法识别，请填 {wanted}")


def _flag(cell: Any, column: Column) -> bool:
    if is_blank(cell):
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
    value = "".join(cell_text(cell).split())
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
        raise CellError("grade_format", f"年级“{cell_text(cell)[:10]}”无法识别，请填 三年级 或数字 3（初一填 七年级）")
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
    name = normalize_class_name(cell_text(cell))
    if not name:
        raise CellError("required", "班级不能为空")
    if len(name) > 32:
        raise CellError("too_long", "班级不能超过32个字")
    return name


def _phone(cell: Any, column: Column) -> str:
    try:
        return normalize_phone(cell_text(cell)).normalized
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


def parse_cell(cell: Any, column: Column) -> Any:
    """One non-blank cell of ``column`` as the value to store; raises :class:`CellError` with a code and the
    clerk's message. (Blank cells and ID numbers are handled by :func:`parse_row`.)"""
    return _PARSERS[column.kind](cell, column)


_MASKED = re.compile(r"\d{4}\*{10}\d{3}[\dX]")

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


def _column_letter(index: int) -> str:
    """A, B, … Z, AA, … for a 1-based column, as the spreadsheet names it (openpyxl is not needed for this)."""
    letters = ""
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def _read_header(cells: tuple[Any, ...]) -> dict[int, Column]:
    """Map cell positions to columns, or raise one error naming every missing, unknown or repeated column."""
    positions: dict[int, Column] = {}
    seen: dict[str, int] = {}
    unknown: list[tuple[int, str]] = []
    repeated: list[tuple[int, str]] = []
    for index, cell in enumerate(cells):
        text = cell_text(cell)
        key = header_key(text)
        if not key or key in IGNORED_HEADERS:
            continue
        column = HEADER_LOOKUP.get(key)
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
        parts.append("无法识别的列 " + "、".join(f"{text}（第{_column_letter(i + 1)}列）" for i, text in unknown))
        fields += [
            field_error(["header", text], f"无法识别的列“{text}”（第{_column_letter(i + 1)}列）", "column_unknown")
            for i, text in unknown
        ]
    if repeated:
        parts.append("重复的列 " + "、".join(text for _, text in repeated))
        fields += [
            field_error(["header", text], f"列“{text}”出现了两次（第{_column_letter(i + 1)}列）", "column_duplicate")
            for i, text in repeated
        ]
    raise _header_error(
        "花名册表头有误：" + "；".join(parts) + "。请使用花名册模板的列名 (roster columns do not match the template)",
        fields,
    )


_SCIENTIFIC = re.compile(r"\d(?:\.\d+)?E\+?\d+")


def _read_id_number(row: RosterRow, cell: Any, *, cipher: FieldCipher, today: date) -> RowError | None:
    column = BY_TARGET["id_number"]
    text = "".join(unicodedata.normalize("NFKC", cell_text(cell)).split()).upper()
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


def parse_row(
    number: int, cells: tuple[Any, ...], positions: dict[int, Column], *, cipher: FieldCipher, today: date
) -> tuple[RosterRow, list[RowError]]:
    """Row ``number`` of the file (its cells, placed by ``positions``) as the values it gives, with every error
    of its own: cells that do not parse, required cells left blank, dates against the ID number and today,
    guardians half filled in. Checks across rows (duplicates) and against the archive come later."""
    row = RosterRow(row=number, child={})
    errors: list[RowError] = []

    def fail(target: str, code: str, message: str) -> None:
        errors.append(RowError(number, BY_TARGET[target].header, code, message))

    for index, column in positions.items():
        cell = cells[index] if index < len(cells) else None
        if column.kind is not Kind.flag and is_blank(cell):
            if column.required:
                fail(column.target, "required", f"{column.header}不能为空")
            continue
        if column.kind is Kind.id_number:
            error = _read_id_number(row, cell, cipher=cipher, today=today)
            if error is not None:
                errors.append(error)
            continue
        try:
            value = parse_cell(cell, column)
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
        if entry.name is None and BY_TARGET[f"{slot}.name"].header in failed:
            del row.guardians[slot]
        elif entry.name is None:
            fail(f"{slot}.name", "guardian_name_missing", f"填写了{label}的其他信息，但没有填写{label}姓名")
            del row.guardians[slot]
        elif slot == "entrusted" and entry.relation is None:
            fail("entrusted.relation", "guardian_relation_missing", "请填写委托监护人与学生的关系，如 祖母、外公、姑姑")
    return row, errors


def _names_the_child(cells: tuple[Any, ...]) -> bool:
    return any(HEADER_LOOKUP.get(header_key(cell_text(c))) is COLUMNS[0] for c in cells)


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
        header_at = next((i for i, (_, cells) in enumerate(head) if not all(is_blank(c) for c in cells)), None)
    if header_at is None:
        raise Invalid("文件是空的，请选择填好的花名册 (empty file)", code="roster_empty")
    positions = _read_header(head[header_at][1])

    rows: list[RosterRow] = []
    errors: list[RowError] = []
    first_row: dict[Any, int] = {}
    blank_run = 0
    for number, cells in itertools.chain(head[header_at + 1 :], numbered):
        if all(is_blank(c) for c in cells):
            blank_run += 1
            if blank_run >= MAX_BLANK_RUN:
                break
            continue
        blank_run = 0
        if len(rows) >= max_rows:
            raise Invalid(
                f"一次最多导入 {max_rows} 名学生，请分成几个文件导入 (too many rows)", code="roster_too_many_rows"
            )
        row, row_errors = parse_row(number, cells, positions, cipher=cipher, today=today)
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
    """Read an XLSX or CSV roster (:func:`.files.read_cells`) and check every row; raises only for a file that
    cannot be read at all (or whose header is wrong). Row problems are collected in ``errors``. CPU-bound: call it
    in a thread."""
    max_rows = files.MAX_ROWS if max_rows is None else max_rows
    file_format, source = files.read_cells(content)
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


def identity_errors(row: RosterRow, parsed: IdNumber) -> list[RowError]:
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


def roster_invalid(errors: list[RowError]) -> Invalid:
    """The one answer to a roster with errors: every error with its row and column (the first 1,000)."""
    errors = sorted(errors, key=lambda e: (e.row, COLUMN_ORDER.get(e.column, len(COLUMNS)), e.code))
    rows = len({e.row for e in errors})
    shown = errors[:MAX_REPORTED_ERRORS]
    message = f"花名册中有 {len(errors)} 处错误（涉及 {rows} 行），没有导入任何数据；请按行号改正后重新上传"
    if len(shown) < len(errors):
        message += f"（这里列出前 {len(shown)} 处）"
    return Invalid(message + " (the roster has errors; nothing was imported)", code="roster_invalid",
                   fields=[e.as_field() for e in shown])  # fmt: skip
