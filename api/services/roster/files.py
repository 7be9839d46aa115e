"""花名册 files: reading XLSX and CSV into rows of cells, and writing the template, an export and CSV.

Reading is bounded (file size, unpacked size, columns) and fails with ``roster_*`` errors a clerk can act on.
"""

import csv
import io
import unicodedata
import zipfile
from collections.abc import Generator, Sequence
from datetime import date, datetime
from typing import Any

from api.errors import Invalid, LiushouError
from api.models.children import GuardianshipRating, ParentsAway, Sex
from api.models.organisations import GRADE_LABELS, SchoolClass
from api.services.roster.columns import (
    COLUMNS,
    HEADERS,
    INSTRUCTIONS_SHEET,
    PARENTS_AWAY_LABELS,
    RATING_LABELS,
    SEX_LABELS,
    SHEET_NAME,
    SLOT_LABELS,
    ChildRow,
    GuardianRow,
    Kind,
    LinkRow,
    yes_no,
)

MAX_FILE_BYTES = 10 * 1024 * 1024
MAX_ROWS = 20_000
# Uncompressed size an XLSX may unpack to: a 10 MB file of real rosters stays far below; a zip bomb does not.
MAX_XLSX_UNPACKED_BYTES = 300 * 1024 * 1024
# Columns beyond these are never read (a sheet can claim 16,384 columns).
MAX_COLUMNS = 80

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


class RosterTooLarge(LiushouError):
    status_code = 413
    code = "roster_too_large"
    message = f"文件太大：花名册不能超过 {MAX_FILE_BYTES // (1024 * 1024)} MB (file too large)"


class UnsupportedFile(LiushouError):
    status_code = 415
    code = "roster_unsupported_file"
    message = "无法读取该文件：请上传 Excel 表格（.xlsx）或 CSV 文件 (not a spreadsheet)"


def is_blank(cell: Any) -> bool:
    return cell is None or (isinstance(cell, str) and not cell.strip())


def cell_text(cell: Any) -> str:
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
    import openpyxl  # imported where a workbook is read or written, not at start-up (some 25 MB)

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


# ---- writing: template, export, CSV --------------------------------------------------------------------


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
        "是否寄宿": yes_no(child.is_boarding),
        "健康状况": child.health,
        "留守类型": PARENTS_AWAY_LABELS[ParentsAway(child.parents_away)],
        "留守开始时间": child.left_behind_since,
        "监护状况": RATING_LABELS[GuardianshipRating(child.guardianship_rating)] if child.guardianship_rating else "",
        "特困": yes_no(child.special_hardship),
        "单亲": yes_no(child.single_parent),
        "学困": yes_no(child.struggling_learner),
        "残疾": yes_no(child.disability),
        "需个别教育方案": yes_no(child.needs_individual_plan),
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


def read_cells(content: bytes) -> tuple[str, Generator[tuple[Any, ...], None, None]]:
    """The file's format and its rows of cells, row 1 first. Raises for a file too large or not a spreadsheet;
    close the generator when done (an XLSX source closes its workbook)."""
    if len(content) > MAX_FILE_BYTES:
        raise RosterTooLarge()
    file_format = detect_format(content)
    return file_format, _xlsx_rows(content) if file_format == "xlsx" else _csv_rows(content)


def _instruction_rows() -> list[list[str]]:
    rows: list[list[str]] = [["花名册填写说明"], []]
    rows += [[f"{i}. {note}"] for i, note in enumerate(GENERAL_NOTES, start=1)]
    rows += [[], ["列名", "是否必填", "怎么填", "示例"]]
    rows += [[c.header, "必填" if c.required else "选填", c.hint, c.example] for c in COLUMNS]
    return rows


_TEXT_COLUMNS = {c.header for c in COLUMNS if c.kind in (Kind.id_number, Kind.phone)}


def write_roster_xlsx(rows: Sequence[dict[str, Any]]) -> bytes:
    """A roster workbook (sheet 花名册 with the rows, sheet 填写说明) written in streaming mode."""
    import openpyxl
    from openpyxl.cell import WriteOnlyCell
    from openpyxl.styles import Font, PatternFill
    from openpyxl.utils import get_column_letter

    workbook = openpyxl.Workbook(write_only=True)
    sheet: Any = workbook.create_sheet(SHEET_NAME)
    for index, column in enumerate(COLUMNS, start=1):
        sheet.column_dimensions[get_column_letter(index)].width = column.width + 2
    sheet.freeze_panes = "C2"
    header = []
    for column in COLUMNS:
        cell = WriteOnlyCell(sheet, value=column.header)
        cell.font = Font(bold=True)
        if column.required:
            cell.fill = PatternFill("solid", fgColor="FDE9D9")
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
    import openpyxl
    from openpyxl.comments import Comment
    from openpyxl.styles import Alignment, Font, PatternFill
    from openpyxl.utils import get_column_letter
    from openpyxl.worksheet.datavalidation import DataValidation

    workbook = openpyxl.Workbook()
    sheet: Any = workbook.active
    sheet.title = SHEET_NAME
    last_row = MAX_ROWS + 1
    for index, column in enumerate(COLUMNS, start=1):
        letter = get_column_letter(index)
        cell = sheet.cell(row=1, column=index, value=column.header)
        cell.font = Font(bold=True)
        cell.alignment = Alignment(horizontal="center")
        if column.required:
            cell.fill = PatternFill("solid", fgColor="FDE9D9")
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
        writer.writerow(["" if row.get(h) is None else cell_text(row.get(h)) for h in HEADERS])
    return buffer.getvalue().encode(encoding)


def template_csv() -> bytes:
    return roster_csv([])
