"""联系卡 — the one page a teacher needs in an emergency: who to call, in which order, with which number.

A card shows the child, class and school, boarding, what matters medically, and the active guardians in
call order with full numbers (it is an emergency card, so staff who can see the child see the numbers;
every read and export is audited). Cards print from XLSX: one block per child, A4 portrait, kept on one
page. The workbook is built in a worker thread so the event loop never waits on openpyxl.
"""

import io
import math
import unicodedata
import uuid
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import anyio
import sqlalchemy as sa
from openpyxl import Workbook
from openpyxl.styles import Alignment, Border, Font, NamedStyle, PatternFill, Side
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.merge import MergedCellRange
from openpyxl.worksheet.pagebreak import Break
from openpyxl.worksheet.worksheet import Worksheet
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col, select

from api import audit
from api.clock import SHANGHAI
from api.errors import Forbidden, NotFound
from api.models.accounts import Account, Role
from api.models.children import Child, ChildStatus, Sex
from api.models.guardians import (
    GUARDIAN_ROLE_LABELS,
    ChildGuardian,
    ContactCard,
    ContactCardGuardian,
    Guardian,
    GuardianRole,
)
from api.models.organisations import School, SchoolClass, class_label
from api.scoping import Principal, as_system
from api.services.children.rules import today_in_china
from api.services.guardians.records import CHILD_NOT_FOUND

XLSX_MEDIA_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
NO_CLASS = "未分班"


@dataclass(frozen=True)
class Export:
    filename: str
    content: bytes
    count: int


# ---- collecting the cards (SQL: five queries for any number of children) ---------------------------------

# Plain columns, not ORM objects: a school export reads thousands of rows, and building identity-mapped
# objects for them would hold the event loop for the better part of a second.
CARD_CHILD_COLUMNS = (
    col(Child.id),
    col(Child.name),
    col(Child.sex),
    col(Child.birth_date),
    col(Child.school_id),
    col(Child.class_id),
    col(Child.is_boarding),
    col(Child.health),
    col(Child.disability),
    col(Child.home_address),
)


@dataclass(frozen=True)
class CardRows:
    """Everything a set of cards is made of, as fetched; turned into cards by :func:`assemble` (pure)."""

    children: Sequence[Any]
    schools: dict[uuid.UUID, str]
    classes: dict[uuid.UUID, Any]
    heads: dict[uuid.UUID, Any]
    school_phones: dict[uuid.UUID, str]
    guardians: dict[uuid.UUID, list[Any]]
    now: datetime


async def _collect(session: AsyncSession, children: Sequence[Any], *, now: datetime) -> CardRows:
    """The rows behind the cards of ``children`` (rows of :data:`CARD_CHILD_COLUMNS` from a scoped query):
    four more queries, whatever the number of children."""
    child_ids = [c.id for c in children]
    school_ids = {c.school_id for c in children}
    class_ids = {c.class_id for c in children if c.class_id is not None}
    if not children:
        return CardRows(children, {}, {}, {}, {}, {}, now)

    school_rows = (
        await session.execute(select(School.id, School.name, School.duty_phone).where(col(School.id).in_(school_ids)))
    ).all()
    schools = {row.id: row.name for row in school_rows}
    # The school's duty phone as the school admin sets it; a school without one falls back to the number its
    # admins keep on their accounts (值班/联系电话), oldest first.
    school_phones: dict[uuid.UUID, str] = {row.id: row.duty_phone for row in school_rows if row.duty_phone}
    classes = {
        row.id: row
        for row in await session.execute(
            select(SchoolClass.id, SchoolClass.grade, SchoolClass.name, SchoolClass.head_teacher_id).where(
                col(SchoolClass.id).in_(class_ids)
            )
        )
    }
    head_ids = {k.head_teacher_id for k in classes.values() if k.head_teacher_id is not None}
    staff = await session.execute(
        sa.select(
            col(Account.id), col(Account.role), col(Account.display_name), col(Account.phone), col(Account.school_id)
        )
        .where(
            sa.or_(
                col(Account.id).in_(head_ids),
                sa.and_(
                    col(Account.school_id).in_(school_ids),
                    col(Account.role) == Role.school_admin,
                    col(Account.phone).is_not(None),
                ),
            ),
            col(Account.is_active),
        )
        .order_by(col(Account.created_at))
    )
    heads: dict[uuid.UUID, Any] = {}
    for account in staff:
        if account.id in head_ids:
            heads[account.id] = account
        if account.role == Role.school_admin and account.phone and account.school_id is not None:
            school_phones.setdefault(account.school_id, account.phone)

    guardians: dict[uuid.UUID, list[Any]] = defaultdict(list)
    # SYSTEM: the guardians of children that were themselves found through a scoped query. The policies would
    # only repeat that (a link or guardian is visible through a visible child), as subqueries nested inside
    # the join; without table statistics (right after a roster import) PostgreSQL may then plan a nested loop
    # that took minutes for a school of 1,500 children. Keyed by those child ids, the look-up needs no policy.
    async with as_system(session):
        links: Any = (
            await session.execute(
                sa.select(
                    col(ChildGuardian.child_id),
                    col(ChildGuardian.role),
                    col(ChildGuardian.relation),
                    col(Guardian.id).label("guardian_id"),
                    col(Guardian.name),
                    col(Guardian.phone),
                    col(Guardian.phone_alt),
                    col(Guardian.work_city),
                    col(Guardian.address),
                    col(Guardian.health),
                )
                .join(Guardian, col(Guardian.id) == ChildGuardian.guardian_id)
                .where(col(ChildGuardian.child_id).in_(child_ids), col(ChildGuardian.is_active))
                .order_by(col(ChildGuardian.child_id), col(ChildGuardian.contact_order), col(ChildGuardian.created_at))
            )
        ).all()
    for link in links:
        guardians[link.child_id].append(link)
    return CardRows(children, schools, classes, heads, school_phones, guardians, now)


def assemble(rows: CardRows) -> list[ContactCard]:
    """The cards, in the order of ``rows.children``. Pure: exports run it in the worker thread."""
    today = today_in_china(rows.now)
    generated_at = rows.now.astimezone(SHANGHAI)
    cards = []
    for child in rows.children:
        klass = rows.classes.get(child.class_id) if child.class_id else None
        head = rows.heads.get(klass.head_teacher_id) if klass and klass.head_teacher_id else None
        born = child.birth_date
        cards.append(
            ContactCard(
                child_id=child.id,
                child_name=child.name,
                sex=child.sex,
                age=today.year - born.year - ((today.month, today.day) < (born.month, born.day)),
                school_id=child.school_id,
                school_name=rows.schools[child.school_id],
                school_phone=rows.school_phones.get(child.school_id),
                class_id=child.class_id,
                class_label=class_label(klass.grade, klass.name) if klass else None,
                head_teacher_name=head.display_name if head else None,
                head_teacher_phone=head.phone if head else None,
                is_boarding=child.is_boarding,
                health=child.health,
                disability=child.disability,
                home_address=child.home_address,
                guardians=[
                    ContactCardGuardian(
                        order=number,
                        guardian_id=g.guardian_id,
                        name=g.name,
                        relation=g.relation,
                        role=g.role,
                        role_label=GUARDIAN_ROLE_LABELS[g.role],
                        phone=g.phone,
                        phone_alt=g.phone_alt,
                        where=g.work_city if g.role == GuardianRole.parent_away and g.work_city else g.address,
                        health=g.health,
                    )
                    # Numbered 1..n as printed, whatever gaps the stored order may have.
                    for number, g in enumerate(rows.guardians[child.id], start=1)
                ],
                generated_at=generated_at,
            )
        )
    return cards


async def contact_card(
    session: AsyncSession, principal: Principal, *, child_id: uuid.UUID, now: datetime
) -> ContactCard:
    """The contact card of one child (any staff who can see the child; audited)."""
    child = (await session.execute(sa.select(*CARD_CHILD_COLUMNS).where(col(Child.id) == child_id))).one_or_none()
    if child is None:
        raise NotFound(CHILD_NOT_FOUND, code="child_not_found")
    (card,) = assemble(await _collect(session, [child], now=now))
    audit.record(
        session,
        action="contact_card.read",
        resource_type="child",
        resource_id=child.id,
        school_id=child.school_id,
    )
    return card


def _enrolled() -> list[Any]:
    return [col(Child.status) == ChildStatus.enrolled]


async def export_class(session: AsyncSession, principal: Principal, *, class_id: uuid.UUID, now: datetime) -> Export:
    """The cards of every enrolled child of a class, for the class's teachers and the school's admins."""
    klass = await session.get(SchoolClass, class_id)
    if klass is None:
        raise NotFound("班级不存在 (class not found)", code="class_not_found")
    if principal.role == Role.teacher and klass.id not in principal.class_ids:
        raise Forbidden(
            "只能导出自己任教班级的联系卡 (teachers export the cards of their own classes)",
            code="contact_cards_forbidden",
        )
    children = (
        await session.execute(
            sa.select(*CARD_CHILD_COLUMNS)
            .where(col(Child.class_id) == klass.id, *_enrolled())
            .order_by(col(Child.name_pinyin), col(Child.name))
        )
    ).all()
    rows = await _collect(session, children, now=now)
    school = await session.get(School, klass.school_id)
    assert school is not None
    label = class_label(klass.grade, klass.name)
    content = await anyio.to_thread.run_sync(_workbook, f"{school.name} {label}", rows, label)
    _audit_export(session, scope="class", scope_id=klass.id, school_id=school.id, count=len(children))
    return Export(filename=f"联系卡-{school.name}-{label}.xlsx", content=content, count=len(children))


async def export_school(session: AsyncSession, principal: Principal, *, school_id: uuid.UUID, now: datetime) -> Export:
    """The cards of every enrolled child of a school, one sheet per class (school admins)."""
    school = await session.get(School, school_id)
    if school is None:
        raise NotFound("学校不存在 (school not found)", code="school_not_found")
    children = (
        await session.execute(
            sa.select(*CARD_CHILD_COLUMNS)
            .outerjoin(SchoolClass, col(SchoolClass.id) == Child.class_id)
            .where(col(Child.school_id) == school.id, *_enrolled())
            .order_by(
                col(SchoolClass.grade).nulls_last(),
                col(SchoolClass.name),
                col(Child.name_pinyin),
                col(Child.name),
            )
        )
    ).all()
    rows = await _collect(session, children, now=now)
    content = await anyio.to_thread.run_sync(_workbook, school.name, rows, None)
    _audit_export(session, scope="school", scope_id=school.id, school_id=school.id, count=len(children))
    return Export(filename=f"联系卡-{school.name}.xlsx", content=content, count=len(children))


def _workbook(title: str, rows: CardRows, only_group: str | None) -> bytes:
    """Worker-thread side of an export: cards, one group (sheet) per class in the rows' order, workbook."""
    groups: dict[str, list[ContactCard]] = {}
    for card in assemble(rows):
        groups.setdefault(only_group or card.class_label or NO_CLASS, []).append(card)
    if only_group is not None and not groups:
        groups[only_group] = []
    return build_workbook(title, list(groups.items()), rows.now)


def _audit_export(session: AsyncSession, *, scope: str, scope_id: uuid.UUID, school_id: uuid.UUID, count: int) -> None:
    audit.record(
        session,
        action="contact_cards.export",
        resource_type=scope,
        resource_id=scope_id,
        school_id=school_id,
        detail={"format": "xlsx", "cards": count},
    )


# ---- the printable workbook (pure, runs in a worker thread) ---------------------------------------------

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
    """The printable XLSX: one sheet per group (class), one card block per child. Pure and blocking."""
    workbook = Workbook()
    for style in _named_styles():
        workbook.add_named_style(style)
    default = workbook.active
    used: set[str] = set()
    generated = now.astimezone(SHANGHAI)
    for label, cards in groups or [(NO_CLASS, [])]:
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
