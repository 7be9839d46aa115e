"""Deterministic demo people for one rural county: 湖南省邵阳市隆回县 (region code 430524, area code 0739).

Everything is drawn from the ``random.Random`` passed in, so the same seed gives the same people. Names,
ID numbers, phone numbers and addresses are made up but shaped like real ones: ID numbers carry correct
check digits and the sex digit matches the person, mobiles use real carrier prefixes. Being realistic,
a generated number may belong to a real person: never send real SMS or calls to demo data.
No database here; the seeding command turns these dataclasses into rows.
"""

import dataclasses
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from typing import TypeVar

from api.idcard import Sex, compute_check_digit

COUNTY = "隆回县"
REGION_CODE = "430524"  # 湖南省邵阳市隆回县
AREA_CODE = "0739"  # 邵阳

T = TypeVar("T")

TOWNS = (
    "桃洪镇", "小沙江镇", "金石桥镇", "司门前镇", "高平镇", "六都寨镇", "荷香桥镇", "横板桥镇",
    "周旺镇", "滩头镇", "鸭田镇", "西洋江镇", "岩口镇", "北山镇", "三阁司镇", "南岳庙镇", "七江镇",
)  # fmt: skip
VILLAGES = (
    "石门村", "高坪村", "白竹村", "杉木村", "桃花村", "龙泉村", "新田村", "大桥村", "长塘村", "金山村",
    "枫树村", "茶山村", "双江村", "竹园村", "青山村", "梅塘村", "田心村", "红岩村", "清水村", "荷叶村",
    "马鞍村", "楠木村", "水口村", "沙坪村", "兴隆村", "九龙村", "白水村", "檀山村",
)  # fmt: skip

# (ethnicity, weight): mostly Han; Longhui has Yao (花瑶) and Hui townships, Miao and Tujia nearby.
ETHNICITIES = (("汉族", 82), ("苗族", 6), ("瑶族", 6), ("土家族", 4), ("回族", 2))
_HAN_SURNAMES = (
    ("刘", 8), ("李", 6), ("王", 5), ("张", 4), ("陈", 4), ("杨", 4), ("罗", 4), ("周", 3), ("曾", 3),
    ("谭", 3), ("邓", 3), ("彭", 3), ("肖", 3), ("唐", 3), ("胡", 2), ("黄", 2), ("钟", 2), ("袁", 2),
    ("贺", 2), ("蒋", 2), ("廖", 2), ("戴", 2), ("伍", 1), ("申", 1), ("欧阳", 1), ("单", 1), ("解", 1),
)  # fmt: skip
_MINORITY_SURNAMES = {
    "苗族": ("龙", "杨", "吴", "石", "麻", "田"),
    "瑶族": ("盘", "奉", "沈", "赵", "邓"),
    "土家族": ("向", "田", "彭", "覃", "冉"),
    "回族": ("马", "撒", "海"),
}

# Given names by generation: children born 2010–2020, parents 1980–1995, grandparents 1945–1965.
_CHILD_NAMES = {
    Sex.male: ("子轩", "浩然", "宇轩", "俊杰", "梓豪", "皓轩", "沐阳", "一鸣", "锦程", "思远", "子墨",
               "宇航", "博文", "天佑", "浩宇", "明轩", "奕辰", "嘉豪", "文博", "睿", "航", "杰"),
    Sex.female: ("欣怡", "梓涵", "雨桐", "诗涵", "一诺", "梓萱", "思彤", "佳怡", "子涵", "可馨", "语桐",
                 "若汐", "紫涵", "雨萱", "欣妍", "诗琪", "梦瑶", "晨曦", "悦", "琪", "婧"),
}  # fmt: skip
_PARENT_NAMES = {
    Sex.male: ("伟", "磊", "勇", "军", "涛", "强", "斌", "志强", "建华", "海波", "文杰", "小兵", "俊",
               "鹏", "剑", "亮", "建军", "卫东"),
    Sex.female: ("丽", "娟", "敏", "静", "艳", "海燕", "红梅", "小红", "芳", "丽华", "春燕", "慧", "婷",
                 "霞", "琴", "玲"),
}  # fmt: skip
_GRANDPARENT_NAMES = {
    Sex.male: ("建国", "国华", "德明", "春生", "志明", "永福", "长根", "满生", "国庆", "和平", "跃进",
               "桂生", "德华", "金生", "正清", "伏生"),
    Sex.female: ("桂英", "秀英", "淑珍", "玉兰", "冬梅", "凤英", "金花", "桂兰", "秀兰", "春花", "菊花",
                 "翠兰", "满秀", "兰英"),
}  # fmt: skip

# Mobile prefixes of the three carriers (移动, 联通, 电信).
MOBILE_PREFIXES = (
    "134", "135", "136", "137", "138", "139", "147", "150", "151", "152", "157", "158", "159", "178",
    "182", "183", "187", "188", "198", "130", "131", "132", "155", "156", "166", "175", "176", "185",
    "186", "133", "153", "173", "177", "180", "181", "189", "191", "199",
)  # fmt: skip

WORK_CITIES = ("深圳", "东莞", "广州", "佛山", "中山", "杭州", "温州", "宁波", "长沙", "厦门", "苏州", "上海")
# (trade 工种, kind of employer); fathers and mothers tend to different work.
_TRADES = {
    Sex.male: (
        ("建筑工地", "建筑工程有限公司"),
        ("电子厂流水线", "电子有限公司"),
        ("货车司机", "物流有限公司"),
        ("装修工", "装饰工程有限公司"),
        ("快递员", "快递服务部"),
        ("五金厂", "五金制品有限公司"),
    ),
    Sex.female: (
        ("电子厂流水线", "电子有限公司"),
        ("服装厂", "服装有限公司"),
        ("餐饮服务", "餐饮管理有限公司"),
        ("鞋厂", "鞋业有限公司"),
        ("保洁", "物业服务有限公司"),
        ("玩具厂", "玩具有限公司"),
    ),
}
_EMPLOYER_BRANDS = (
    "宏达",
    "鑫源",
    "华盛",
    "永兴",
    "金辉",
    "恒通",
    "联创",
    "富华",
    "新锐",
    "伟业",
    "嘉利",
    "顺昌",
)

# (relation, sex of the guardian if the relation fixes it, weight)
GUARDIAN_RELATIONS: tuple[tuple[str, Sex | None, int], ...] = (
    ("祖父", Sex.male, 24), ("祖母", Sex.female, 32), ("外祖父", Sex.male, 8), ("外祖母", Sex.female, 12),
    ("叔叔", Sex.male, 6), ("姑姑", Sex.female, 7), ("舅舅", Sex.male, 5), ("邻居", None, 3),
)  # fmt: skip
HEALTH = ("健康", "良好", "一般", "较差", "患慢性病")
_ELDERLY_HEALTH_WEIGHTS = (18, 27, 30, 10, 15)
_YOUNGER_HEALTH_WEIGHTS = (60, 30, 8, 1, 1)
_CHILD_HEALTH_WEIGHTS = (80, 15, 4, 0, 1)
_EDUCATION = ("文盲", "小学", "初中", "高中", "中专", "大专")
_ELDERLY_EDUCATION_WEIGHTS = (20, 45, 28, 7, 0, 0)
_PARENT_EDUCATION_WEIGHTS = (0, 10, 58, 20, 8, 4)
CARE_RATINGS = ("好", "较好", "一般", "差")


@dataclass(frozen=True, slots=True)
class DemoPerson:
    name: str
    surname: str
    sex: Sex
    birth_date: date
    id_number: str
    ethnicity: str


@dataclass(frozen=True, slots=True)
class DemoChild:
    person: DemoPerson
    health: str
    boarding: bool  # 寄宿


@dataclass(frozen=True, slots=True)
class DemoParent:
    person: DemoPerson
    relation: str  # 父亲 / 母亲
    education: str
    phone: str  # normalised mobile
    away: bool  # 在外务工
    work_city: str | None
    employer: str | None
    trade: str | None


@dataclass(frozen=True, slots=True)
class DemoGuardian:
    person: DemoPerson
    relation: str  # 祖父, 祖母, 外祖父, 外祖母, 叔叔, 姑姑, 舅舅, 邻居
    education: str
    health: str
    occupation: str
    phone: str  # normalised mobile or landline
    care_rating: str  # 监护状况 好/较好/一般/差


@dataclass(frozen=True, slots=True)
class DemoFamily:
    address: str
    children: tuple[DemoChild, ...]
    father: DemoParent
    mother: DemoParent
    guardian: DemoGuardian

    @property
    def parents_away(self) -> tuple[DemoParent, ...]:
        return tuple(p for p in (self.father, self.mother) if p.away)


def _weighted(rng: random.Random, pairs: Sequence[tuple[T, int]]) -> T:
    return rng.choices([value for value, _ in pairs], weights=[weight for _, weight in pairs])[0]


def ethnicity(rng: random.Random) -> str:
    """An ethnicity (民族), mostly 汉族."""
    return _weighted(rng, ETHNICITIES)


def surname(rng: random.Random, ethnicity: str = "汉族") -> str:
    """A surname common in the county for people of ``ethnicity``."""
    minority = _MINORITY_SURNAMES.get(ethnicity)
    return rng.choice(minority) if minority else _weighted(rng, _HAN_SURNAMES)


def child_name(rng: random.Random, surname: str, *, sex: Sex | None = None) -> str:
    """A full name typical of children born 2010–2020; ``sex`` picks a fitting given name."""
    return surname + rng.choice(_CHILD_NAMES[sex or rng.choice((Sex.male, Sex.female))])


def adult_name(rng: random.Random, surname: str, sex: Sex, *, birth_year: int) -> str:
    """A full name typical of an adult born in ``birth_year`` (grandparents' names before 1970)."""
    pool = _GRANDPARENT_NAMES if birth_year < 1970 else _PARENT_NAMES
    return surname + rng.choice(pool[sex])


def birth_date(rng: random.Random, first_year: int, last_year: int) -> date:
    """A uniformly drawn date from 1 January ``first_year`` to 31 December ``last_year``."""
    start = date(first_year, 1, 1)
    return start + timedelta(days=rng.randrange((date(last_year, 12, 31) - start).days + 1))


def id_number(rng: random.Random, birth_date: date, sex: Sex, *, region_code: str = REGION_CODE) -> str:
    """A valid 18-character 居民身份证号 for someone born on ``birth_date`` registered in ``region_code``."""
    # The 17th digit is odd for men and even for women; the two before it just tell people apart.
    sex_digit = rng.choice("13579" if sex is Sex.male else "02468")
    first17 = f"{region_code}{birth_date:%Y%m%d}{rng.randrange(100):02d}{sex_digit}"
    return first17 + compute_check_digit(first17)


def _looks_contrived(digits: str) -> bool:
    # Numbers like 88888888 or 12345678 look fake on screen and are the expensive "lucky" ones in reality.
    for i in range(len(digits) - 3):
        window = [int(d) for d in digits[i : i + 4]]
        steps = {b - a for a, b in zip(window, window[1:], strict=False)}
        if steps in ({0}, {1}, {-1}):
            return True
    return len(set(digits)) < 4


def _digits(rng: random.Random, count: int, first: str = "0123456789") -> str:
    while True:
        drawn = rng.choice(first) + "".join(rng.choice("0123456789") for _ in range(count - 1))
        if not _looks_contrived(drawn):
            return drawn


def mobile(rng: random.Random) -> str:
    """A normalised mobile number with a real carrier prefix and an unremarkable subscriber part."""
    return rng.choice(MOBILE_PREFIXES) + _digits(rng, 8)


def landline(rng: random.Random, *, area_code: str = AREA_CODE) -> str:
    """A normalised landline number in the county, e.g. ``0739-5326871`` (local numbers have 7 digits)."""
    return f"{area_code}-{_digits(rng, 7, first='2345678')}"


def address(rng: random.Random) -> str:
    """A village address: 隆回县XX镇XX村X组."""
    return f"{COUNTY}{rng.choice(TOWNS)}{rng.choice(VILLAGES)}{rng.randint(1, 12)}组"


def adult(rng: random.Random, *, surname: str, sex: Sex, born: tuple[int, int], ethnicity: str) -> DemoPerson:
    """An adult born between the years ``born`` (inclusive) with a name fitting the generation."""
    birth = birth_date(rng, *born)
    return DemoPerson(
        name=adult_name(rng, surname, sex, birth_year=birth.year),
        surname=surname,
        sex=sex,
        birth_date=birth,
        id_number=id_number(rng, birth, sex),
        ethnicity=ethnicity,
    )


def child(rng: random.Random, *, surname: str, ethnicity: str, born: tuple[int, int] = (2010, 2020)) -> DemoChild:
    """A left-behind child born 2010–2020 (or within ``born``)."""
    sex = Sex.male if rng.random() < 0.52 else Sex.female
    birth = birth_date(rng, *born)
    person = DemoPerson(
        name=child_name(rng, surname, sex=sex),
        surname=surname,
        sex=sex,
        birth_date=birth,
        id_number=id_number(rng, birth, sex),
        ethnicity=ethnicity,
    )
    return DemoChild(
        person=person,
        health=rng.choices(HEALTH, weights=_CHILD_HEALTH_WEIGHTS)[0],
        boarding=rng.random() < 0.3,
    )


def parent(
    rng: random.Random, *, surname: str, sex: Sex, born: tuple[int, int], ethnicity: str, away: bool
) -> DemoParent:
    """A father or mother; one working away gets a work city, an employer and a trade (工种)."""
    person = adult(rng, surname=surname, sex=sex, born=born, ethnicity=ethnicity)
    work_city = employer = trade = None
    if away:
        work_city = rng.choice(WORK_CITIES)
        trade, employer_kind = rng.choice(_TRADES[sex])
        employer = f"{work_city}市{rng.choice(_EMPLOYER_BRANDS)}{employer_kind}"
    return DemoParent(
        person=person,
        relation="父亲" if sex is Sex.male else "母亲",
        education=rng.choices(_EDUCATION, weights=_PARENT_EDUCATION_WEIGHTS)[0],
        phone=mobile(rng),
        away=away,
        work_city=work_city,
        employer=employer,
        trade=trade,
    )


def _other_surname(rng: random.Random, ethnicity: str, avoid: set[str]) -> str:
    while True:
        drawn = surname(rng, ethnicity)
        if drawn not in avoid:
            return drawn


def entrusted_guardian(rng: random.Random, *, father: DemoPerson, mother: DemoPerson) -> DemoGuardian:
    """An entrusted guardian (委托监护人) whose surname, sex and age fit the relation to the child."""
    relation, relation_sex, _ = rng.choices(GUARDIAN_RELATIONS, weights=[w for *_, w in GUARDIAN_RELATIONS])[0]
    sex = relation_sex or rng.choice((Sex.male, Sex.female))
    if relation in ("祖父", "祖母", "外祖父", "外祖母"):
        child_of = father if relation in ("祖父", "祖母") else mother
        born = (max(1945, child_of.birth_date.year - 45), min(1965, child_of.birth_date.year - 20))
        ethnic = child_of.ethnicity
    elif relation == "邻居":
        born, ethnic = (1950, 1985), ethnicity(rng)
    else:
        sibling_of = father if relation in ("叔叔", "姑姑") else mother
        born, ethnic = (1975, 1995), sibling_of.ethnicity
    # Paternal kin carry the father's surname, maternal kin the mother's; grandmothers married in.
    if relation in ("祖父", "叔叔", "姑姑"):
        family_surname = father.surname
    elif relation in ("外祖父", "舅舅"):
        family_surname = mother.surname
    else:
        family_surname = _other_surname(rng, ethnic, {father.surname, mother.surname})
    person = adult(rng, surname=family_surname, sex=sex, born=born, ethnicity=ethnic)
    elderly = person.birth_date.year < 1970
    education_weights = _ELDERLY_EDUCATION_WEIGHTS if elderly else _PARENT_EDUCATION_WEIGHTS
    health_weights = _ELDERLY_HEALTH_WEIGHTS if elderly else _YOUNGER_HEALTH_WEIGHTS
    return DemoGuardian(
        person=person,
        relation=relation,
        education=rng.choices(_EDUCATION, weights=education_weights)[0],
        health=rng.choices(HEALTH, weights=health_weights)[0],
        occupation="务农" if elderly or rng.random() < 0.6 else rng.choice(("打零工", "个体经营", "养殖")),
        # Many elderly guardians have only the house phone.
        phone=landline(rng) if elderly and rng.random() < 0.35 else mobile(rng),
        care_rating=rng.choices(CARE_RATINGS, weights=(30, 40, 25, 5))[0],
    )


def family(rng: random.Random) -> DemoFamily:
    """A left-behind family: one or two children, both parents (one or both away) and a guardian."""
    father_ethnicity = ethnicity(rng)
    mother_ethnicity = father_ethnicity if rng.random() < 0.8 else ethnicity(rng)
    father_surname = surname(rng, father_ethnicity)
    mother_surname = father_surname
    while mother_surname == father_surname:
        mother_surname = surname(rng, mother_ethnicity)
    # Minority status is usually registered for the child if either parent has it.
    child_ethnicity = father_ethnicity if father_ethnicity != "汉族" else mother_ethnicity

    children = [child(rng, surname=father_surname, ethnicity=child_ethnicity)]
    if rng.random() < 0.3:
        sibling = child(rng, surname=father_surname, ethnicity=child_ethnicity)
        if sibling.person.name != children[0].person.name:
            children.append(sibling)
    children.sort(key=lambda c: c.person.birth_date)
    eldest, youngest = children[0].person.birth_date.year, children[-1].person.birth_date.year
    # Parents were between 20 and 42 when their children were born.
    parents_born = (max(1980, youngest - 42), min(1995, eldest - 20))

    away = _weighted(rng, (("both", 70), ("father", 22), ("mother", 8)))
    father = parent(
        rng, surname=father_surname, sex=Sex.male, born=parents_born, ethnicity=father_ethnicity,
        away=away in ("both", "father"),
    )  # fmt: skip
    mother = parent(
        rng, surname=mother_surname, sex=Sex.female, born=parents_born, ethnicity=mother_ethnicity,
        away=away in ("both", "mother"),
    )  # fmt: skip
    # Couples working away often share a city.
    if father.away and mother.away and rng.random() < 0.7 and father.work_city != mother.work_city:
        assert father.work_city is not None and mother.work_city is not None and mother.employer is not None
        employer = father.work_city + mother.employer.removeprefix(mother.work_city)
        mother = dataclasses.replace(mother, work_city=father.work_city, employer=employer)
    return DemoFamily(
        address=address(rng),
        children=tuple(children),
        father=father,
        mother=mother,
        guardian=entrusted_guardian(rng, father=father.person, mother=mother.person),
    )


def families(rng: random.Random, count: int) -> list[DemoFamily]:
    """``count`` families with no ID number or phone number used twice."""
    result: list[DemoFamily] = []
    seen_ids: set[str] = set()
    seen_phones: set[str] = set()
    while len(result) < count:
        candidate = family(rng)
        people = [c.person for c in candidate.children]
        people += [candidate.father.person, candidate.mother.person, candidate.guardian.person]
        ids = [p.id_number for p in people]
        phones = [candidate.father.phone, candidate.mother.phone, candidate.guardian.phone]
        # Rare collisions are simply redrawn; the sequence stays deterministic for a given seed.
        if len(set(ids)) < len(ids) or len(set(phones)) < len(phones):
            continue
        if seen_ids.intersection(ids) or seen_phones.intersection(phones):
            continue
        seen_ids.update(ids)
        seen_phones.update(phones)
        result.append(candidate)
    return result
