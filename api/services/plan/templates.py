"""典型计划: the typical plans a school starts from, built from the seeds' month-by-month schedules — pure.

Each item cites where it comes from: ``000 篇6 十月`` is the 具体活动安排 of 学校留守儿童工作计划 篇6 in seed
000, ``004 篇3`` the 工作安排 of 留守儿童工作计划2023 篇3 in seed 004, ``003 5～6月`` the bimonthly schedule in
seed 003 (范文五), ``001 总结四`` the 期初、期中、期末 home visits of the work summaries in seed 001, ``002 第五篇`` the
家长学校 of 关爱留守儿童工作计划 第五篇. Where a seed names the work but no month, the citation says
"(月份为本模板所定)" and the month is ours, chosen where the seeds' year puts such work.

:func:`instantiate` places a template's items in the months of a plan's dates.
"""

from dataclasses import dataclass
from datetime import date

from api.models.plan import WorkKind


@dataclass(frozen=True, slots=True)
class TemplateItem:
    month: int  # calendar month 1–12
    title: str
    kind: WorkKind
    owner_hint: str  # who usually does it, as the seeds say (负责人); the school picks the account
    source: str


@dataclass(frozen=True, slots=True)
class Template:
    key: str
    name: str
    months: tuple[int, ...]  # the calendar months it covers, in order
    goals: str
    goals_source: str
    items: tuple[TemplateItem, ...]


_GOALS = (
    "建立留守儿童档案，建档率达100%；落实班主任每月与留守儿童谈心一次、期初期中期末家访；"
    "每个留守儿童有结对帮扶教师；开通亲情电话，使留守儿童每周可以和父母通一次电话；"
    "在学习、生活、活动上对留守儿童三个优先；定期开展关爱活动，营造健康、快乐、平等、和谐的成长环境。"
)
_GOALS_SOURCE = "000 篇1 工作目标; 003 范文五 工作目标; 001 总结四; 003 范文一 五个一; 004 篇5 目标任务"

_A = WorkKind.activity
_NO_MONTH = "(月份为本模板所定)"

AUTUMN_ITEMS: tuple[TemplateItem, ...] = (
    TemplateItem(
        9,
        "留守儿童信息更新，建立本学期留守儿童信息管理库",
        WorkKind.archive_update,
        "班主任",
        "000 篇6 九月; 004 篇5 目标任务1",
    ),
    TemplateItem(
        9,
        "调整关爱留守儿童领导小组，讨论并制定本学期工作计划",
        WorkKind.organisation,
        "校长 (组长)",
        "004 篇3 九月; 000 篇6 十月",
    ),
    TemplateItem(
        9, "开展教师家访（期初）和学生谈心活动", WorkKind.home_visit_talk, "班主任", "000 篇6 九月; 001 总结四 期初家访"
    ),
    TemplateItem(9, "开通留守儿童亲情电话", WorkKind.family_phone, "留守儿童之家", "000 篇6 九月"),
    TemplateItem(
        9,
        "召开家长会，办好家长学校，培训委托监护人",
        WorkKind.guardian_training,
        "德育处",
        f"001 总结四 开学初家长会; 002 第五篇 家长学校 {_NO_MONTH}",
    ),
    TemplateItem(10, "留守儿童心理健康咨询会", WorkKind.psychological, "心理辅导教师", "000 篇6 十月"),
    TemplateItem(10, "中秋、国庆开展教师家访和学生谈心活动", WorkKind.home_visit_talk, "班主任", "004 篇3 十月"),
    TemplateItem(10, "举行留守儿童拔河比赛", _A, "体育组", "000 篇6 十月"),
    TemplateItem(11, "开展师生结对帮扶活动", WorkKind.pairing, "德育处", "000 篇6 十一月; 004 篇3 十一月"),
    TemplateItem(11, "开展留守儿童法制教育讲座", _A, "关工委 / 德育处", "000 篇6 十一月"),
    TemplateItem(11, "举行留守儿童讲故事比赛", _A, "语文组", "000 篇6 十一月"),
    TemplateItem(11, "期中家访", WorkKind.home_visit_talk, "班主任", f"001 总结四 期中家访 {_NO_MONTH}"),
    TemplateItem(12, "举行留守儿童乒乓球比赛、跳绳比赛", _A, "体育组", "000 篇6 十二月"),
    TemplateItem(12, "留守儿童主题班会活动", _A, "班主任", "000 篇6 十二月"),
    TemplateItem(12, "继续开展师生结对活动", WorkKind.pairing, "结对教师", "004 篇3 十二月"),
    TemplateItem(1, "举行留守儿童朗诵及书法比赛", _A, "语文组", "000 篇6 元月"),
    TemplateItem(1, "期末家访", WorkKind.home_visit_talk, "班主任", f"001 总结四 期末家访 {_NO_MONTH}"),
    TemplateItem(
        1, "班级及学校留守儿童工作总结", WorkKind.summary_archiving, "校长 (组长)", "000 篇6 元月; 004 篇3 元月"
    ),
    TemplateItem(1, "留守儿童工作档案整理", WorkKind.summary_archiving, "德育处", "000 篇6 元月; 004 篇3 元月"),
)

SPRING_ITEMS: tuple[TemplateItem, ...] = (
    TemplateItem(
        3,
        "留守儿童信息更新，建立本学期留守儿童信息管理库",
        WorkKind.archive_update,
        "班主任",
        f"004 篇5 目标任务1; 001 总结八 每学期伊始摸底造册 {_NO_MONTH}",
    ),
    TemplateItem(
        3, "开展教师家访（期初）和学生谈心活动", WorkKind.home_visit_talk, "班主任", f"001 总结四 期初家访 {_NO_MONTH}"
    ),
    TemplateItem(
        3, "三八节前开通免费亲情热线", WorkKind.family_phone, "留守儿童之家", "000 篇7 三八节前一天开通亲情热线"
    ),
    TemplateItem(
        3,
        "家长学校：委托监护人科学监护培训",
        WorkKind.guardian_training,
        "德育处",
        f"002 第五篇 家长学校; 001 总结五 监护人培训 {_NO_MONTH}",
    ),
    TemplateItem(4, "组织春游等社会实践活动", _A, "少先队", f"004 篇5 目标任务6 春游; 000 篇6 社会实践 {_NO_MONTH}"),
    TemplateItem(
        4,
        "留守儿童心理健康咨询与辅导",
        WorkKind.psychological,
        "心理辅导教师",
        f"003 范文一 心理健康关爱行动 {_NO_MONTH}",
    ),
    TemplateItem(5, "举办演讲、征文、画画比赛", _A, "少先队", f"004 篇5 目标任务6 {_NO_MONTH}"),
    TemplateItem(5, "期中家访", WorkKind.home_visit_talk, "班主任", f"001 总结四 期中家访 {_NO_MONTH}"),
    TemplateItem(
        5,
        "结对帮扶回访，领导组成员每人帮扶1-2名留守儿童",
        WorkKind.pairing,
        "领导小组",
        f"004 篇5 目标任务7 {_NO_MONTH}",
    ),
    TemplateItem(
        6,
        "各校组织庆“六一”活动，表彰优秀、自强留守儿童",
        WorkKind.activity,
        "少先队",
        "003 范文五 5～6月; 000 篇6 六一表彰",
    ),
    TemplateItem(6, "深入学校向特困留守儿童送温暖", WorkKind.aid, "妇联 / 工会", "003 范文五 5～6月"),
    TemplateItem(6, "举办体育比赛", _A, "体育组", f"004 篇5 目标任务6 {_NO_MONTH}"),
    TemplateItem(
        7,
        "期末家访，布置暑期安全与帮困",
        WorkKind.home_visit_talk,
        "班主任",
        "001 总结四 期末家访; 003 范文五 7～8月 暑期帮困",
    ),
    TemplateItem(
        7,
        "学期留守儿童工作总结",
        WorkKind.summary_archiving,
        "校长 (组长)",
        f"001 总结篇十 每学期一次工作总结; 002 第五篇 {_NO_MONTH}",
    ),
    TemplateItem(
        7, "留守儿童工作档案整理与学年交接", WorkKind.summary_archiving, "德育处", f"DOMAIN 每学年末交接 {_NO_MONTH}"
    ),
)

TEMPLATES: dict[str, Template] = {
    t.key: t
    for t in (
        Template(
            "autumn_term", "秋季学期关爱留守儿童工作计划", (9, 10, 11, 12, 1), _GOALS, _GOALS_SOURCE, AUTUMN_ITEMS
        ),
        Template("spring_term", "春季学期关爱留守儿童工作计划", (3, 4, 5, 6, 7), _GOALS, _GOALS_SOURCE, SPRING_ITEMS),
        Template(
            "school_year",
            "学年关爱留守儿童工作计划",
            (9, 10, 11, 12, 1, 3, 4, 5, 6, 7),
            _GOALS,
            _GOALS_SOURCE,
            AUTUMN_ITEMS + SPRING_ITEMS,
        ),
    )
}


@dataclass(frozen=True, slots=True)
class PlacedItem:
    month: date  # first day of the month in the plan
    item: TemplateItem
    moved: bool  # the template's month is outside the plan: placed at its nearest end


def months_between(starts_on: date, ends_on: date) -> list[date]:
    """The first days of every month from ``starts_on``'s to ``ends_on``'s, in order."""
    out: list[date] = []
    year, month = starts_on.year, starts_on.month
    while (year, month) <= (ends_on.year, ends_on.month):
        out.append(date(year, month, 1))
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return out


class TemplateDoesNotFit(ValueError):
    """None of the template's months falls within the plan's dates (a spring template for an autumn term)."""


def instantiate(template: Template, starts_on: date, ends_on: date) -> list[PlacedItem]:
    """The template's items in the months of ``starts_on``–``ends_on``, in the template's order.

    An item whose month is in the plan's span goes to that month (a span of more than a year uses the first
    occurrence). An item whose month is not goes to the plan's first month if it comes, in the template's
    order, before every month the plan has, otherwise to the last month — so a short term keeps the whole
    schedule, squeezed, rather than losing work silently; such items say ``moved``."""
    months = months_between(starts_on, ends_on)
    first_of: dict[int, date] = {}
    for m in months:
        first_of.setdefault(m.month, m)
    order = {month: i for i, month in enumerate(template.months)}
    fitting = [order[m] for m in first_of if m in order]
    if not fitting:
        raise TemplateDoesNotFit(template.key)
    earliest = min(fitting)
    placed: list[PlacedItem] = []
    for item in template.items:
        if item.month in first_of:
            placed.append(PlacedItem(first_of[item.month], item, moved=False))
        else:
            target = months[0] if order[item.month] < earliest else months[-1]
            placed.append(PlacedItem(target, item, moved=True))
    return placed
