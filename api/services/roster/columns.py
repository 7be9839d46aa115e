"""花名册 columns: the one spec the template, the export, the importer and ``docs/roster-template.md`` follow,
and what the guardian columns mean for a child's links (father, mother, entrusted guardian)."""

import enum
import re
import unicodedata
from dataclasses import dataclass
from typing import Any

from api.models.children import GuardianshipRating, ParentsAway, Sex
from api.models.guardians import GuardianRole

SHEET_NAME = "花名册"
INSTRUCTIONS_SHEET = "填写说明"


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
COLUMN_ORDER = {c.header: i for i, c in enumerate(COLUMNS)}
# A serial-number column is in nearly every roster a school keeps; it is read past.
IGNORED_HEADERS = frozenset({"序号", "编号"})
SLOTS = ("entrusted", "father", "mother")
SLOT_LABELS = {"father": "父亲", "mother": "母亲", "entrusted": "委托监护人"}


def header_key(text: str) -> str:
    """A header as a clerk may have typed it, folded: no spaces, no required marks, no (必填)."""
    folded = "".join(unicodedata.normalize("NFKC", text).split())
    folded = re.sub(r"\((必填|选填|必填项|可选)\)", "", folded)
    return folded.strip("*:")


def _header_lookup() -> dict[str, Column]:
    lookup: dict[str, Column] = {}
    for column in COLUMNS:
        for spelling in (column.header, *column.aliases):
            assert header_key(spelling) not in lookup, f"header {spelling} is defined twice"
            lookup[header_key(spelling)] = column
    return lookup


HEADER_LOOKUP = _header_lookup()
BY_TARGET = {c.target: c for c in COLUMNS}

# What an import or export reads of the archive: rows with a table's columns as attributes, streamed in
# batches. ORM objects cost several times as much to build for a whole school and would hold the event loop;
# they are loaded only for the rows an import changes (so the audit log sees each change).
ChildRow = Any
LinkRow = Any
GuardianRow = Any


FATHER_RELATIONS = frozenset({"父亲", "爸爸", "父"})
MOTHER_RELATIONS = frozenset({"母亲", "妈妈", "母"})

AWAY_SLOTS = {
    ParentsAway.both: frozenset({"father", "mother"}),
    ParentsAway.father: frozenset({"father"}),
    ParentsAway.mother: frozenset({"mother"}),
    ParentsAway.none: frozenset(),
}


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
    return GuardianRole.parent_away if slot in AWAY_SLOTS[parents_away] else GuardianRole.parent_home


def yes_no(value: bool) -> str:
    return "是" if value else "否"
