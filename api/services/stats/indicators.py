"""THE registry of the bureau's indicators: each defined once — its Chinese name, what exactly it counts,
its numerator and denominator, rounding, whether it may identify a child — and the quantities it is computed
from. ``docs/statistics.md`` documents every one (a test fails on one missing there).

An indicator shows *quantities* (integer variables of a row, computed by :mod:`.queries`): a count shows
one, a rate its numerator and denominator, a duration (minutes) the number of steps it was measured over.
The same quantities feed the suppression's equations (:mod:`.suppression`): every quantity adds up over the
rows to the totals row, and each breakdown's categories add up to its parent.

Where a rule already exists elsewhere the quantities are computed by it, so that a school and the bureau
never disagree: 建档率 by :mod:`api.services.completeness`, pairing and care compliance by
:mod:`api.services.care.coverage` (:mod:`api.services.care.due`), the chain's deadlines by
:func:`api.services.emergency.decide.deadline_met`.
"""

from dataclasses import dataclass

from api.errors import Invalid, field_error
from api.models.care_rhythm import RhythmKind
from api.models.children import CHILD_FLAG_LABELS, PARENTS_AWAY_LABELS, ChildFlag, ParentsAway
from api.models.escalation import STEP_LABELS
from api.models.incidents import CATEGORY_LABELS, SEVERITY_LABELS, IncidentCategory, Severity
from api.models.stats import IndicatorDef, IndicatorKind, Measure
from api.services.care.due import RECORD_KIND
from api.services.stats.categories import AGE_BANDS, GRADES, GUARDIAN_TYPES, STAGES

BASIC, STRUCTURE, ARCHIVE, CARE, INCIDENTS, CHAIN = "基本情况", "结构", "建档", "帮扶关爱", "突发事件", "应急处置"
LB = "在册留守儿童"


@dataclass(frozen=True)
class Indicator:
    definition: IndicatorDef
    quantities: tuple[str, ...]  # count: (q,); rate: (numerator, denominator); minutes: (steps measured,)
    minutes: str | None = None  # the duration's name in the chain's results ("s1_median", "s1_worst")
    scale: int = 1  # a count shown as quantity / scale (the aid amount: fen → yuan)

    @property
    def key(self) -> str:
        return self.definition.key


REGISTRY: dict[str, Indicator] = {}
# Breakdowns: name → its categories, and the parent quantity they are a full partition of.
PARTITIONS: dict[str, tuple[str, ...]] = {}
BREAKDOWN_PARENT: dict[str, str] = {}
# Quantities that are not counts of children or events (shown, never suppressed for being small).
NOT_SUPPRESSIBLE: set[str] = set()
# A quantity hidden hides these too (same row).
TIES: list[tuple[str, str]] = []


def _add(indicator: Indicator) -> None:
    assert indicator.key not in REGISTRY, f"indicator {indicator.key} defined twice"
    REGISTRY[indicator.key] = indicator


def count(
    key: str, name: str, group: str, counts: str, *, measure: Measure, unit: str = "人", suppressible: bool = True
) -> None:
    definition = IndicatorDef(
        key=key,
        name=name,
        group=group,
        kind=IndicatorKind.count,
        measure=measure,
        unit=unit,
        numerator=counts,
        suppressible=suppressible,
    )
    _add(Indicator(definition, (key,)))
    if not suppressible:
        NOT_SUPPRESSIBLE.add(key)


def rate(key: str, name: str, group: str, num: tuple[str, str], den: tuple[str, str], *, measure: Measure) -> None:
    definition = IndicatorDef(
        key=key,
        name=name,
        group=group,
        kind=IndicatorKind.rate,
        measure=measure,
        unit="%",
        numerator=num[1],
        denominator=den[1],
        digits=1,
        suppressible=True,
    )
    _add(Indicator(definition, (num[0], den[0])))


def _partition(name: str, parent: str, categories: list[tuple[str, str, str]], group: str = "结构") -> None:
    """Counts per category (``(key, name, what)``), a full partition of the ``parent`` quantity."""
    for key, label, what in categories:
        count(
            key,
            label,
            group,
            what,
            measure=Measure.stock if group == "结构" else Measure.flow,
            unit="人" if group == "结构" else "起",
        )
    PARTITIONS[name] = tuple(key for key, _, _ in categories)
    BREAKDOWN_PARENT[name] = parent


# ---- 基本情况 ------------------------------------------------------------------------------------------------

count("left_behind", "留守儿童数", BASIC, f"{LB}人数 (enrolled left-behind children)", measure=Measure.stock)
count(
    "enrolled_pupils",
    "在校学生数",
    BASIC,
    "学校登记的本学期在校学生数 (enrolment a school records per term; else the school's pupil count)",
    measure=Measure.stock,
    suppressible=False,
)
rate(
    "left_behind_share",
    "留守儿童占比",
    BASIC,
    ("left_behind", f"{LB}人数"),
    ("enrolled_pupils", "在校学生数"),
    measure=Measure.stock,
)

# ---- 结构 (each a full partition of left_behind) -----------------------------------------------------------

_partition(
    "by_parents",
    "left_behind",
    [
        (f"lb_parents_{p.value}", PARENTS_AWAY_LABELS[p], f"{LB}中{PARENTS_AWAY_LABELS[p]}的人数")
        for p in (ParentsAway.both, ParentsAway.father, ParentsAway.mother)
    ]
    + [("lb_parents_other", "父母均在家(待核实)", f"{LB}中父母外出情况记为均在家的人数 (记录待核实)")],
)
_partition(
    "by_sex",
    "left_behind",
    [("lb_sex_male", "男", f"{LB}中男童人数"), ("lb_sex_female", "女", f"{LB}中女童人数")],
)
_partition(
    "by_age",
    "left_behind",
    [(f"lb_age_{k}", label, f"{LB}中统计期末年龄{label}的人数") for k, _, _, label in AGE_BANDS],
)
_partition(
    "by_stage",
    "left_behind",
    [(f"lb_stage_{k}", label, f"{LB}中{label}学段 ({lo}—{hi}年级) 人数") for k, lo, hi, label in STAGES]
    + [("lb_stage_unplaced", "未分班", f"{LB}中未分班 (或不在1—9年级) 的人数")],
)
_partition(
    "by_grade",
    "left_behind",
    [(f"lb_grade_{g}", f"{g}年级", f"{LB}中{g}年级人数") for g in GRADES]
    + [("lb_grade_unplaced", "未分班", f"{LB}中未分班的人数")],
)
_partition(
    "by_boarding",
    "left_behind",
    [("lb_boarding", "寄宿", f"{LB}中寄宿生人数"), ("lb_day", "走读", f"{LB}中走读生人数")],
)
_partition(
    "by_guardian",
    "left_behind",
    [(f"lb_guardian_{k}", label, f"{LB}中{label}的人数 (按第一委托监护人与儿童的关系)") for k, label in GUARDIAN_TYPES],
)
# 特殊情况: flags, a child may carry several (not a partition).
SPECIAL_FLAGS = (
    ChildFlag.special_hardship,
    ChildFlag.single_parent,
    ChildFlag.struggling_learner,
    ChildFlag.disability,
    ChildFlag.needs_individual_plan,
)
for _flag in SPECIAL_FLAGS:
    count(
        f"lb_{_flag.value}",
        CHILD_FLAG_LABELS[_flag],
        STRUCTURE,
        f"{LB}中标记为{CHILD_FLAG_LABELS[_flag]}的人数",
        measure=Measure.stock,
    )

# ---- 建档 -------------------------------------------------------------------------------------------------

count("archive_complete", "档案完整人数", ARCHIVE, f"{LB}中档案完整的人数 (一人一档完整性规则)", measure=Measure.stock)
rate(
    "archive_rate",
    "建档率",
    ARCHIVE,
    ("archive_complete", f"{LB}中档案完整的人数"),
    ("left_behind", f"{LB}人数"),
    measure=Measure.stock,
)

# ---- 帮扶关爱 ----------------------------------------------------------------------------------------------

count("paired", "有代理家长人数", CARE, f"{LB}中统计期末有代理家长的人数", measure=Measure.stock)
rate(
    "pairing_rate",
    "结对覆盖率",
    CARE,
    ("paired", f"{LB}中有代理家长的人数"),
    ("left_behind", f"{LB}人数"),
    measure=Measure.stock,
)
CARE_KINDS: tuple[tuple[RhythmKind, str], ...] = (
    (RhythmKind.talk, "谈心"),
    (RhythmKind.home_visit, "家访"),
    (RhythmKind.guardian_contact, "监护人沟通"),
    (RhythmKind.family_call, "亲情电话"),
)
assert {k for k, _ in CARE_KINDS} == set(RECORD_KIND)
for _kind, _label in CARE_KINDS:
    rate(
        f"care_{_kind.value}_rate",
        f"{_label}完成率",
        CARE,
        (f"care_{_kind.value}_done", f"统计期内已到期的{_label}周期中按时完成的 (儿童×周期) 数"),
        (f"care_{_kind.value}_expected", f"统计期内已到期的{_label}周期 (儿童×周期) 数, 按学校关爱节奏"),
        measure=Measure.flow,
    )
count("aid_children", "受资助人数", CARE, f"统计期内有资助记录的{LB}人数", measure=Measure.flow)
count("aid_records", "资助次数", CARE, "统计期内的资助记录条数", measure=Measure.flow, unit="次")
_add(
    Indicator(
        IndicatorDef(
            key="aid_amount_yuan",
            name="资助金额",
            group=CARE,
            kind=IndicatorKind.count,
            measure=Measure.flow,
            unit="元",
            numerator="统计期内资助记录的金额合计 (元)",
            digits=2,
            suppressible=False,
        ),
        ("aid_amount_fen",),
        scale=100,
    )
)
NOT_SUPPRESSIBLE.add("aid_amount_fen")
# The records and the amount of aid would tell about the children aided: hidden with their number.
TIES += [("aid_children", "aid_records"), ("aid_children", "aid_amount_fen")]

# ---- 突发事件 ----------------------------------------------------------------------------------------------

count("incidents", "突发事件数", INCIDENTS, "统计期内发生 (或发现) 的突发事件起数", measure=Measure.flow, unit="起")
_partition(
    "incidents_by_category",
    "incidents",
    [
        (f"incidents_{c.value}", CATEGORY_LABELS[c], f"统计期内类别为{CATEGORY_LABELS[c]}的突发事件起数")
        for c in IncidentCategory
    ],
    INCIDENTS,
)
_partition(
    "incidents_by_severity",
    "incidents",
    [
        (f"incidents_sev_{s.value}", f"{SEVERITY_LABELS[s]}事件", f"统计期内程度为{SEVERITY_LABELS[s]}的突发事件起数")
        for s in Severity
    ],
    INCIDENTS,
)

# ---- 应急处置: each step of the chain ---------------------------------------------------------------------

for _n in (1, 2, 3):
    _step = f"第{_n}步 ({STEP_LABELS[_n]})"
    rate(
        f"chain_s{_n}_on_time_rate",
        f"第{_n}步按时告知率",
        CHAIN,
        (f"chain_s{_n}_on_time", f"统计期内事件的{_step}在时限内告知的次数"),
        (f"chain_s{_n}_judged", f"统计期内事件的{_step}已有结论 (已告知, 或超时未告知) 的次数"),
        measure=Measure.flow,
    )
    for _stat, _label in (("median", "中位"), ("worst", "最长")):
        _add(
            Indicator(
                IndicatorDef(
                    key=f"chain_s{_n}_{_stat}_minutes",
                    name=f"第{_n}步告知用时({_label})",
                    group=CHAIN,
                    kind=IndicatorKind.minutes,
                    measure=Measure.flow,
                    unit="分钟",
                    numerator=f"统计期内事件的{_step}从发生 (发现) 到告知的分钟数的{_label}值 (仅计已告知的)",
                    denominator=f"统计期内事件的{_step}已告知的次数",
                    digits=0,
                    suppressible=True,
                ),
                (f"chain_s{_n}_told",),
                minutes=f"s{_n}_{_stat}",
            )
        )


def quantities_of(keys: list[str]) -> list[str]:
    """Every quantity the indicators need, in a stable order."""
    out: dict[str, None] = {}
    for key in keys:
        for q in REGISTRY[key].quantities:
            out[q] = None
    return list(out)


def definitions(keys: list[str] | None = None) -> list[IndicatorDef]:
    return [REGISTRY[k].definition for k in (keys if keys is not None else list(REGISTRY))]


def parse_keys(text: str | None, *, loc: str = "indicators") -> list[str]:
    """The indicators a comma-separated list names (all of them when empty); 422 ``indicator_unknown``."""
    if not text:
        return list(REGISTRY)
    keys = list(dict.fromkeys(k.strip() for k in text.split(",") if k.strip()))
    unknown = [k for k in keys if k not in REGISTRY]
    if unknown or not keys:
        shown = ", ".join(k[:40] for k in unknown[:5])
        message = f"未知的指标: {shown} (unknown indicator; see GET /stats/indicators)"
        raise Invalid(
            message, code="indicator_unknown", fields=[field_error(["query", loc], message, "indicator_unknown")]
        )
    return keys


# ---- across periods --------------------------------------------------------------------------------------------

# Quantities that add up over time: a quarter's (a term's, a year's…) is the sum of its months' — events and the
# care periods due, each counted in the one period it falls in. Stocks (counted on the period's last day) and
# distinct counts (children aided: a child aided in two months is one child in the quarter) are not.
ADDITIVE_OVER_TIME: frozenset[str] = frozenset(
    q
    for indicator in REGISTRY.values()
    if indicator.definition.measure == Measure.flow
    for q in indicator.quantities
    if q != "aid_children"
) | {"aid_records", "aid_amount_fen"}
# Quantities counted on the period's last day: a period ending with a month counts them as that month does.
STOCK: frozenset[str] = frozenset(
    q for indicator in REGISTRY.values() if indicator.definition.measure == Measure.stock for q in indicator.quantities
)
