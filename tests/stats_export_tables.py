"""Hand-made statistics tables and trends for the export tests: a county of two townships and four schools,
indicators of every kind (counts stock and flow, rates, minutes, a breakdown), suppressed cells, a rate with
no denominator. Suppressed cells carry a *leaked* value (as a careless producer might leave it) with numbers
found nowhere else, so a test can prove that no export ever writes them."""

import uuid
from datetime import UTC, date, datetime, timedelta

from api.models.stats import (
    Cell,
    IndicatorDef,
    IndicatorKind,
    Level,
    Measure,
    Period,
    PeriodKind,
    StatsRow,
    StatsTable,
    StatsTrend,
    TrendPoint,
)

AS_OF = datetime(2027, 1, 5, 2, 0, tzinfo=UTC)  # 10:00 in Shanghai
THRESHOLD = 5
COUNTY_ID = uuid.UUID("00000000-0000-4000-8000-000000000001")
TOWNSHIPS = {
    "石桥镇": uuid.UUID("00000000-0000-4000-8000-0000000000a1"),
    "=HYPERLINK(1)乡": uuid.UUID("00000000-0000-4000-8000-0000000000a2"),  # a hostile name stays text
}
SCHOOLS = {
    "石桥镇中心小学": (uuid.UUID("00000000-0000-4000-8000-0000000000b1"), "石桥镇"),
    "石桥镇第二完小": (uuid.UUID("00000000-0000-4000-8000-0000000000b2"), "石桥镇"),
    "柳树村小学": (uuid.UUID("00000000-0000-4000-8000-0000000000b3"), "=HYPERLINK(1)乡"),
    "河口教学点": (uuid.UUID("00000000-0000-4000-8000-0000000000b4"), "=HYPERLINK(1)乡"),
}


def _ind(key, name, group, kind, measure, unit, digits=0, suppressible=True):
    return IndicatorDef(
        key=key,
        name=name,
        group=group,
        kind=kind,
        measure=measure,
        unit=unit,
        numerator=f"{name}的分子",
        denominator=f"{name}的分母" if kind == IndicatorKind.rate else None,
        digits=digits,
        suppressible=suppressible,
    )


C, R, M = IndicatorKind.count, IndicatorKind.rate, IndicatorKind.minutes
STOCK, FLOW = Measure.stock, Measure.flow
INDICATORS = [
    _ind("left_behind", "留守儿童数", "基本情况", C, STOCK, "人"),
    _ind("enrolled_pupils", "在校学生数", "基本情况", C, STOCK, "人", suppressible=False),
    _ind("left_behind_share", "留守儿童占比", "基本情况", R, STOCK, "%", 1),
    _ind("lb_sex_male", "男", "结构", C, STOCK, "人"),
    _ind("lb_sex_female", "女", "结构", C, STOCK, "人"),
    _ind("archive_rate", "建档率", "建档", R, STOCK, "%", 1),
    _ind("care_talk_rate", "谈心完成率", "帮扶关爱", R, FLOW, "%", 2),
    _ind("incidents", "突发事件数", "突发事件", C, FLOW, "起"),
    _ind("incidents_safety", "安全事故", "突发事件", C, FLOW, "起"),
    _ind("chain_s1_median_minutes", "第1步告知用时(中位)", "应急处置", M, FLOW, "分钟"),
]
KEYS = [i.key for i in INDICATORS]
PARTS = {"incidents": ["incidents_safety"]}


def cell(value, num=None, den=None):
    return Cell(value=value, numerator=num, denominator=den)


def hidden(value, num=None, den=None):
    """A suppressed cell still carrying its figure: exports must never write it."""
    return Cell(value=value, numerator=num, denominator=den, suppressed=True)


def rate(num, den):
    return Cell(value=num / den if den else None, numerator=num, denominator=den)


def quarter():
    return Period(
        kind=PeriodKind.quarter,
        key="2026-Q4",
        label="2026年第四季度",
        starts_on=date(2026, 10, 1),
        ends_on=date(2026, 12, 31),
    )


# unit name → (current cells, previous cells); every key of KEYS present.
SCHOOL_CELLS = {
    "石桥镇中心小学": (
        {
            "left_behind": cell(122),
            "enrolled_pupils": cell(743),
            "left_behind_share": rate(122, 743),
            "lb_sex_male": cell(64),
            "lb_sex_female": cell(58),
            "archive_rate": rate(120, 122),
            "care_talk_rate": rate(350, 366),
            "incidents": cell(6),
            "incidents_safety": cell(6),
            "chain_s1_median_minutes": cell(12),
        },
        {
            "left_behind": cell(118),
            "enrolled_pupils": cell(740),
            "left_behind_share": rate(118, 740),
            "lb_sex_male": cell(61),
            "lb_sex_female": cell(57),
            "archive_rate": rate(110, 118),
            "care_talk_rate": rate(300, 354),
            "incidents": cell(9),
            "incidents_safety": cell(8),
            "chain_s1_median_minutes": cell(21),
        },
    ),
    "石桥镇第二完小": (
        {
            "left_behind": cell(61),
            "enrolled_pupils": cell(388),
            "left_behind_share": rate(61, 388),
            "lb_sex_male": cell(33),
            "lb_sex_female": cell(28),
            "archive_rate": rate(49, 61),
            "care_talk_rate": rate(150, 183),
            "incidents": hidden(2),
            "incidents_safety": hidden(2),
            "chain_s1_median_minutes": hidden(47),
        },
        {
            "left_behind": cell(66),
            "enrolled_pupils": cell(391),
            "left_behind_share": rate(66, 391),
            "lb_sex_male": cell(35),
            "lb_sex_female": cell(31),
            "archive_rate": rate(55, 66),
            "care_talk_rate": rate(160, 198),
            "incidents": cell(0),
            "incidents_safety": cell(0),
            "chain_s1_median_minutes": cell(None),
        },
    ),
    "柳树村小学": (
        {
            "left_behind": cell(19),
            "enrolled_pupils": cell(96),
            "left_behind_share": rate(19, 96),
            "lb_sex_male": hidden(3),
            "lb_sex_female": hidden(16),
            "archive_rate": rate(19, 19),
            "care_talk_rate": hidden(0.6789, 43, 63),
            "incidents": cell(0),
            "incidents_safety": cell(0),
            "chain_s1_median_minutes": cell(None),
        },
        {
            "left_behind": cell(20),
            "enrolled_pupils": cell(99),
            "left_behind_share": rate(20, 99),
            "lb_sex_male": cell(6),
            "lb_sex_female": cell(14),
            "archive_rate": rate(20, 20),
            "care_talk_rate": rate(51, 60),
            "incidents": cell(0),
            "incidents_safety": cell(0),
            "chain_s1_median_minutes": cell(None),
        },
    ),
    "河口教学点": (
        {
            "left_behind": cell(9),
            "enrolled_pupils": cell(31),
            "left_behind_share": rate(9, 31),
            "lb_sex_male": cell(5),
            "lb_sex_female": hidden(4),
            "archive_rate": rate(7, 9),
            "care_talk_rate": rate(20, 27),
            "incidents": cell(0),
            "incidents_safety": cell(0),
            "chain_s1_median_minutes": cell(None),
        },
        {
            "left_behind": cell(9),
            "enrolled_pupils": cell(30),
            "left_behind_share": rate(9, 30),
            "lb_sex_male": cell(5),
            "lb_sex_female": hidden(4),
            "archive_rate": rate(8, 9),
            "care_talk_rate": rate(25, 27),
            "incidents": cell(0),
            "incidents_safety": cell(0),
            "chain_s1_median_minutes": cell(None),
        },
    ),
}
# The leaked figures of the suppressed cells above, as a reader would see them: none may appear anywhere.
LEAKED = {"47", "16", "43", "63", "67.9", "67.89", "0.6789"}


def _sum(rows, key, previous=False):
    cells = [(r[1] if previous else r[0])[key] for r in rows]
    return cell(sum(c.value or 0 for c in cells))


def _total_cells(rows, previous=False):
    # Totals computed plainly; the "hidden" ones are hidden at the total too where the parts would reveal them.
    out = {}
    for key in ("left_behind", "enrolled_pupils", "incidents", "incidents_safety"):
        out[key] = _sum(rows, key, previous)
    lb, pupils = out["left_behind"].value, out["enrolled_pupils"].value
    out["left_behind_share"] = rate(lb, pupils)
    pick = 1 if previous else 0
    out["archive_rate"] = rate(
        sum(r[pick]["archive_rate"].numerator for r in rows), sum(r[pick]["archive_rate"].denominator for r in rows)
    )
    out["care_talk_rate"] = rate(
        sum(r[pick]["care_talk_rate"].numerator for r in rows),
        sum(r[pick]["care_talk_rate"].denominator for r in rows),
    )
    out["lb_sex_male"] = _sum(rows, "lb_sex_male", previous)
    out["lb_sex_female"] = _sum(rows, "lb_sex_female", previous)
    out["chain_s1_median_minutes"] = cell(12 if not previous else 21)
    return out


def _row(name, unit_id, level, parent_id, cells):
    return StatsRow(
        unit_id=unit_id, unit_name=name, level=level, parent_id=parent_id, cells=cells[0], previous=cells[1]
    )


def school_table(threshold=THRESHOLD, period=None) -> StatsTable:
    period = period or quarter()
    rows = [
        _row(name, uid, Level.school, TOWNSHIPS[township], SCHOOL_CELLS[name])
        for name, (uid, township) in SCHOOLS.items()
    ]
    all_cells = list(SCHOOL_CELLS.values())
    total = StatsRow(
        unit_id=None,
        unit_name="合计",
        level=Level.school,
        cells=_total_cells(all_cells),
        previous=_total_cells(all_cells, previous=True),
    )
    return _table(Level.school, rows, total, threshold, period)


def township_table(threshold=THRESHOLD, period=None) -> StatsTable:
    period = period or quarter()
    rows = []
    for township, uid in TOWNSHIPS.items():
        members = [SCHOOL_CELLS[n] for n, (_, t) in SCHOOLS.items() if t == township]
        cells = (_total_cells(members), _total_cells(members, previous=True))
        if township != "石桥镇":
            # its two schools' small counts would show through the township: hidden here as well
            cells[0]["lb_sex_female"] = hidden(20)
            cells[0]["care_talk_rate"] = hidden(0.6789, 43, 63)
        rows.append(_row(township, uid, Level.township, COUNTY_ID, cells))
    all_cells = list(SCHOOL_CELLS.values())
    total = StatsRow(
        unit_id=None,
        unit_name="合计",
        level=Level.township,
        cells=_total_cells(all_cells),
        previous=_total_cells(all_cells, previous=True),
    )
    return _table(Level.township, rows, total, threshold, period)


def _table(level, rows, total, threshold, period) -> StatsTable:
    previous = Period(
        kind=period.kind,
        key="2026-Q3",
        label="2026年第三季度",
        starts_on=date(2026, 7, 1),
        ends_on=date(2026, 9, 30),
    )
    return StatsTable(
        area_level=Level.county,
        area_id=COUNTY_ID,
        area_name="青山县",
        level=level,
        period=period,
        previous_period=previous,
        indicators=INDICATORS,
        rows=rows,
        total=total,
        threshold=threshold,
        as_of=AS_OF,
    )


def month(year, m):
    first = date(year, m, 1)
    nxt = date(year + (m == 12), m % 12 + 1, 1)
    return Period(
        kind=PeriodKind.month,
        key=f"{year}-{m:02d}",
        label=f"{year}年{m}月",
        starts_on=first,
        ends_on=nxt - timedelta(days=1),
    )


TREND_KEYS = [
    "archive_rate",
    "care_talk_rate",
    "care_home_visit_rate",
    "left_behind",
    "incidents",
    "chain_s1_median_minutes",
]
# A rate charted beside 谈心 (same group), not in the tables.
HOME_VISIT = _ind("care_home_visit_rate", "家访完成率", "帮扶关爱", R, FLOW, "%", 1)


def trend() -> StatsTrend:
    points = []
    for m in range(1, 13):
        cells = {
            "archive_rate": rate(180 + m, 211),
            "care_talk_rate": rate(500 + 10 * m, 640),
            "care_home_visit_rate": rate(30 + m, 60) if m != 2 else Cell(value=None, numerator=0, denominator=0),
            "left_behind": cell(200 + m),
            "incidents": cell(6 + m % 3) if m not in (4, 9) else hidden(2),
            "chain_s1_median_minutes": cell(30 + m) if m != 9 else hidden(47),
        }
        points.append(TrendPoint(period=month(2026, m), cells=cells))
    by_key = {i.key: i for i in [*INDICATORS, HOME_VISIT]}
    return StatsTrend(
        area_level=Level.county,
        area_id=COUNTY_ID,
        area_name="青山县",
        indicators=[by_key[k] for k in TREND_KEYS],
        points=points,
        threshold=THRESHOLD,
        as_of=AS_OF,
    )
