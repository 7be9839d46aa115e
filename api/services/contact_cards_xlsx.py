"""联系卡 as a printable XLSX: one sheet per class, one card block per child, each block kept on one A4 page.

Apart from :mod:`api.services.contact_cards` so that openpyxl is imported when a workbook is built (in the
export's worker thread), not when the service starts: it and what it pulls in weigh some 25 MB.
"""

import io
import math
import unicodedata
from collections.abc import Sequence
from datetime import datetime

from openpyxl import Workbook
from openpyxl.styles import Alignment, Border, Font, NamedStyle, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.merge import MergedCellRange
from openpyxl.worksheet.pagebreak import Break
from openpyxl.worksheet.worksheet import Worksheet

from api.clock import SHANGHAI
from api.models.children import Sex
from api.models.guardians import (
    ContactCard,
    ContactCardGuardian,
)

NO_CLASS = "未分班"  # as api.services.contact_cards labels a child without a class
COLUMNS = [  # heading, width in characters (a CJK character is two)
    ("顺序", 6),
    ("联系人", 12),
    ("关系", 8),
    ("身份", 14),
    ("电话", 17),
    ("备用电话", 17),
    ("住址 / 务工城市 / 身体", 30),
]
LAST_COLUMN = len(COLUMNS)
LINE_HEIGHT = 15.0  # points per line of 10.5 pt text
# A4 portrait is 842 pt high; minus margins, header and footer and the repeated title rows, about this
# much is left for cards on each page. Blocks are never split across pages.
PAGE_BODY_HEIGHT = 640.0
TITLE_ROWS = 3

_thin = Side(style="thin", color="808080")
_BOX = Border(left=_thin, right=_thin, top=_thin, bottom=_thin)
_WRAP = Alignment(wrap_text=True, vertical="center")
_CENTER = Alignment(horizontal="center", vertical="center", wrap_text=True)
_FONT = Font(name="宋体", size=10.5)
_BOLD = Font(name="宋体", size=10.5, bold=True)
CHILD_FILL = "FFF2CC"


def _named_styles() -> list[NamedStyle]:
    """Registered once per workbook: cells then share a style id (per-cell fonts and borders are slow)."""
    text = {"font": _FONT, "border": _BOX, "alignment": _WRAP}
    return [
        NamedStyle("card_title", font=Font(name="黑体", size=14, bold=True), alignment=_CENTER),
        NamedStyle("card_subtitle", font=_FONT, alignment=_WRAP),
        NamedStyle(
            "card_heading", font=_BOLD, border=_BOX, alignment=_CENTER, fill=PatternFill("solid", fgColor="D9E1F2")
        ),
        NamedStyle(
            "card_child", font=_BOLD, border=_BOX, alignment=_WRAP, fill=PatternFill("solid", fgColor=CHILD_FILL)
        ),
        NamedStyle("card_note", **text),
        NamedStyle(
            "card_warning", font=Font(name="宋体", size=10.5, bold=True, color="C00000"), border=_BOX, alignment=_WRAP
        ),
        NamedStyle("card_text", **text),
        NamedStyle("card_center", font=_FONT, border=_BOX, alignment=_CENTER),
        # Phone numbers are text: Excel must not turn 13812345678 into 1.38E+10.
        NamedStyle("card_phone", font=_BOLD, border=_BOX, alignment=_WRAP, number_format="@"),
        NamedStyle("card_phone_alt", number_format="@", **text),
    ]


SEX_LABELS = {Sex.male: "男", Sex.female: "女"}
# Per column of a guardian row: order, name, relation, role, phone, alternative phone, where.
GUARDIAN_STYLES = ["card_center", "card_text", "card_center", "card_text", "card_phone", "card_phone_alt", "card_text"]


def _text_width(text: str) -> int:
    return sum(2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1 for ch in text)


def _lines(text: str, width: int) -> int:
    return max(1, sum(math.ceil(max(_text_width(part), 1) / max(width - 1, 1)) for part in text.split("\n")))


def _sheet_title(label: str, used: set[str]) -> str:
    clean = "".join("_" if ch in "[]:*?/\\" else ch for ch in label)[:28] or "Sheet"
    title, n = clean, 2
    while title in used:
        title, n = f"{clean[:25]}({n})", n + 1
    used.add(title)
    return title


def _merge(ws: Worksheet, row: int) -> None:
    """Merge columns A..G of a row. ``ws.merge_cells`` would also restyle the covered cells one by one,
    which costs ~8 ms per merge; the cells here are already styled alike, so only the range is recorded."""
    # Rows never overlap, so the linear overlap check of MultiCellRange.add (quadratic per sheet) is skipped.
    ws.merged_cells.ranges.add(MergedCellRange(ws, f"A{row}:{get_column_letter(LAST_COLUMN)}{row}"))


def _merged_row(ws: Worksheet, row: int, text: str, *, style: str) -> float:
    ws.cell(row=row, column=1, value=text)
    for column in range(1, LAST_COLUMN + 1):
        ws.cell(row=row, column=column).style = style
    _merge(ws, row)
    height = LINE_HEIGHT * _lines(text, sum(w for _, w in COLUMNS)) + 3
    ws.row_dimensions[row].height = height
    return height


def _child_line(card: ContactCard) -> str:
    parts = [card.child_name, SEX_LABELS.get(card.sex, ""), f"{card.age}岁", card.class_label or NO_CLASS]
    parts.append("寄宿" if card.is_boarding else "走读")
    return "　".join(p for p in parts if p)


def _notes_line(card: ContactCard) -> str:
    parts = [f"健康: {card.health or '未填写'}"]
    if card.disability:
        parts.append("残疾")
    if card.home_address:
        parts.append(f"家庭住址: {card.home_address}")
    if card.head_teacher_name:
        parts.append(f"班主任: {card.head_teacher_name} {card.head_teacher_phone or ''}".rstrip())
    if card.school_phone:
        parts.append(f"学校: {card.school_phone}")
    return "；".join(parts)


def _guardian_row(ws: Worksheet, row: int, g: ContactCardGuardian) -> float:
    where = "，".join(p for p in (g.where, g.health) if p)
    values = [g.order, g.name, g.relation, g.role_label, g.phone or "（无）", g.phone_alt or "", where]
    lines = 1
    for column, (value, (_, width)) in enumerate(zip(values, COLUMNS, strict=True), start=1):
        ws.cell(row=row, column=column, value=value).style = GUARDIAN_STYLES[column - 1]
        lines = max(lines, _lines(str(value), width))
    height = LINE_HEIGHT * lines + 3
    ws.row_dimensions[row].height = height
    return height


def _write_sheet(ws: Worksheet, title: str, cards: Sequence[ContactCard], generated: datetime) -> None:
    for index, (_, width) in enumerate(COLUMNS, start=1):
        ws.column_dimensions[get_column_letter(index)].width = width
    ws.cell(row=1, column=1, value=f"{title} 留守儿童联系卡").style = "card_title"
    _merge(ws, 1)
    ws.row_dimensions[1].height = 24
    phones = sorted({c.school_phone for c in cards if c.school_phone})
    subtitle = f"打印时间 {generated:%Y-%m-%d %H:%M}　共 {len(cards)} 人"
    if phones:
        subtitle = f"学校值班电话 {'、'.join(phones)}　" + subtitle
    subtitle += "　应急: 30分钟内告知委托监护人，1小时内告知在外务工家长"
    ws.cell(row=2, column=1, value=subtitle).style = "card_subtitle"
    _merge(ws, 2)
    ws.row_dimensions[2].height = LINE_HEIGHT * 2
    for index, (heading, _) in enumerate(COLUMNS, start=1):
        ws.cell(row=3, column=index, value=heading).style = "card_heading"
    ws.row_dimensions[3].height = LINE_HEIGHT + 3

    ws.print_title_rows = f"1:{TITLE_ROWS}"
    ws.page_setup.paperSize = ws.PAPERSIZE_A4
    ws.page_setup.orientation = ws.ORIENTATION_PORTRAIT
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_margins.left = ws.page_margins.right = 0.4
    ws.page_margins.top = ws.page_margins.bottom = 0.6
    ws.print_options.horizontalCentered = True
    ws.oddFooter.center.text = "第 &P 页 / 共 &N 页"
    ws.oddHeader.right.text = "内部资料 注意保密"

    row, used = TITLE_ROWS + 1, 0.0
    for card in cards:
        block_start = row
        heights = [_merged_row(ws, row, _child_line(card), style="card_child")]
        row += 1
        heights.append(_merged_row(ws, row, _notes_line(card), style="card_note"))
        row += 1
        if not card.guardians:
            heights.append(
                _merged_row(ws, row, "未登记在册监护人 — 请尽快补录 (no active guardian on file)", style="card_warning")
            )
            row += 1
        for g in card.guardians:
            heights.append(_guardian_row(ws, row, g))
            row += 1
        ws.row_dimensions[row].height = LINE_HEIGHT / 2  # a gap to cut along
        heights.append(LINE_HEIGHT / 2)
        row += 1
        block = sum(heights)
        if used and used + block > PAGE_BODY_HEIGHT:
            ws.row_breaks.append(Break(id=block_start - 1))
            used = 0.0
        used += block


def build_workbook(title: str, groups: Sequence[tuple[str, Sequence[ContactCard]]], now: datetime) -> bytes:
    """The printable XLSX: one sheet per group (class; at least one), one card block per child. Pure and
    blocking."""
    workbook = Workbook()
    for style in _named_styles():
        workbook.add_named_style(style)
    default = workbook.active
    used: set[str] = set()
    generated = now.astimezone(SHANGHAI)
    for label, cards in groups:
        ws = workbook.create_sheet(_sheet_title(label, used))
        heading = title if label in title else f"{title} {label}"
        _write_sheet(ws, heading, cards, generated)
    if default is not None:
        workbook.remove(default)
    workbook.properties.title = f"{title} 联系卡"
    workbook.properties.creator = "liushou"
    buffer = io.BytesIO()
    workbook.save(buffer)
    return buffer.getvalue()
