"""工作总结 as text: the figures as labelled lines, and the whole summary as an editable Word document (pure)."""

import io
from datetime import date

from api.clock import SHANGHAI
from api.models.care_rhythm import RhythmKind
from api.models.term_summary import SummaryItem, SummaryView

RULE_LABELS = {
    RhythmKind.talk: "谈心",
    RhythmKind.home_visit: "家访",
    RhythmKind.guardian_contact: "与监护人沟通",
    RhythmKind.family_call: "亲情电话",
}


def percent(rate: float | None) -> str:
    return "—" if rate is None else f"{rate * 100:.1f}%"


def _day(day: date) -> str:
    return f"{day.year}年{day.month}月{day.day}日"


def figure_lines(view: SummaryView) -> list[tuple[str, str]]:
    """The counts as (label, value) rows, in the order a summary tells them."""
    f = view.figures
    c, care, a, i = f.children, f.care, f.activities, f.incidents
    lines = [
        ("在册学生", f"{c.on_file}人"),
        ("在册留守儿童", f"{c.left_behind}人"),
        ("档案完整（建档率）", f"{c.files_complete}人（{percent(c.files_rate)}）"),
        ("在结对帮扶", f"{care.pairings_active}对"),
        ("有代理家长的留守儿童", f"{care.paired_children}人（{percent(care.paired_rate)}）"),
        ("谈心", f"{care.talks}次"),
        ("家访", f"{care.home_visits}次"),
        ("与监护人沟通", f"{care.guardian_contacts}次"),
        ("与外出家长联系", f"{care.parent_contacts}次"),
        ("亲情电话（已通话）", f"{f.family_calls_completed}次"),
        ("关爱活动", f"{a.activities}次，参与{a.places}人次"),
        ("三个优先（留守儿童占活动名额）", f"{a.left_behind_places}人次（{percent(a.priority_share)}）"),
        ("突发事件", f"{i.incidents}起"),
        (
            "应急告知步骤",
            f"{i.steps}步：按时告知{i.told_in_time}步，超时告知{i.told_late}步，超时未告知{i.not_told}步，"
            f"仍在时限内{i.open}步",
        ),
    ]
    for rule in care.rules:
        lines.append(
            (
                f"{RULE_LABELS.get(rule.kind, rule.kind.value)}要求落实",
                f"{rule.done}/{rule.expected}（{percent(rule.rate)}）",
            )
        )
    return lines


def _item_line(item: SummaryItem) -> str:
    text = f"{item.month} {item.title}（{item.kind_label}）"
    if item.done_on is not None:
        text += f"，{_day(item.done_on)}完成"
    if item.done_note:
        text += f"：{item.done_note}"
    if item.dropped_reason:
        text += f"，取消原因：{item.dropped_reason}"
    return text


def render(view: SummaryView) -> bytes:
    """The summary as a .docx a leader can open and edit in Word or WPS."""
    from docx import Document  # where a document is written, not at start-up

    f = view.figures
    doc = Document()
    doc.add_heading(view.title, level=0)
    status = (
        f"已上报（{view.submitted_at.astimezone(SHANGHAI):%Y-%m-%d %H:%M}）"
        if view.submitted_at is not None
        else "草稿"
    )
    doc.add_paragraph(f"{view.school_name}　{_day(view.starts_on)}至{_day(view.ends_on)}　{status}")
    doc.add_paragraph(f"数据截至{f.as_of.astimezone(SHANGHAI):%Y-%m-%d %H:%M}，关爱要求统计至{_day(f.judged_until)}。")

    doc.add_heading("一、基本情况", level=1)
    lines = figure_lines(view)
    table = doc.add_table(rows=len(lines) + 1, cols=2)
    table.style = "Table Grid"
    table.cell(0, 0).text, table.cell(0, 1).text = "项目", "数量"
    for n, (label, value) in enumerate(lines, start=1):
        table.cell(n, 0).text, table.cell(n, 1).text = label, value

    doc.add_heading("二、计划落实情况", level=1)
    if f.plan is None:
        doc.add_paragraph("本总结未关联工作计划。")
    else:
        p = f.plan.progress
        doc.add_paragraph(
            f"《{f.plan.plan_name}》共{f.plan.items}项：已完成{p.done}项，逾期{p.late}项，已取消{p.dropped}项，"
            f"计划中{p.planned}项。"
        )
        for heading, items in (("已完成", f.plan.done), ("逾期未完成", f.plan.late), ("已取消", f.plan.dropped)):
            if items:
                doc.add_paragraph(heading)
                for item in items:
                    doc.add_paragraph(_item_line(item), style="List Bullet")

    doc.add_heading("三、工作亮点", level=1)
    doc.add_paragraph(view.highlights or "（待填写）")
    doc.add_heading("四、存在问题与改进", level=1)
    doc.add_paragraph(view.problems or "（待填写）")

    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


def file_name(view: SummaryView) -> str:
    return f"{view.title}.docx"
