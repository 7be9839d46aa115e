"""A synthetic county for the bureau's statistics: 15 townships, 300 schools, 100,000 left-behind children.

    .venv/bin/python -m bench.county [--small] [--seed 13] [--keep DIR]

Starts an embedded PostgreSQL (in ``--keep DIR`` to keep and reuse it, else a temporary folder), migrates it
with the app's migrations and writes, with COPY, in the order the foreign keys need:

* the county, its townships (镇) and schools — 中心小学, 完小, 教学点, 初级中学, 九年一贯制 — with classes,
  terms and holidays, and the staff: the bureau, a township official per township, a head of each school,
  its teachers (each class has a head teacher), and per-school care settings;
* every pupil enrolled, left-behind or not (the left-behind share varies by school, 25–55 %), with the fields
  the indicators read — sex, birth date by grade, boarding, ethnicity, how the parents are away, special
  situations, guardianship — and a file that is complete or not (schools differ in how carefully they fill
  them in); guardians and their links: the entrusted guardian (grandparents mostly, other relatives, the
  parent at home) and the parents working away;
* proxy-parent pairings (代理家长) within the default cap of five children per teacher;
* two years of care records — talks and guardian contacts monthly, home visits at the term points, calls
  with the parents, aid for children in hardship — each kept or missed by the diligence of the school and the
  child's carer, so compliance varies by school; every school's records form a valid hash chain (the
  service's own hashing, :mod:`api.services.care.chain`) with its chain head;
* family-call lines (亲情电话) and two years of their calls — completed, missed, cancelled;
* incidents with their escalation chains as the engine leaves them: three steps with the county's deadlines
  (:func:`api.services.emergency.decide.plan_steps`), their parties, acknowledgements, told times (some late,
  a few never) and timeline events.

Everything is deterministic from ``--seed`` (ids included). ``--small`` writes a county of 12 schools and
4,000 left-behind children for a quick run. Prints row counts and how long generating and COPY took.
:func:`build` is what ``bench/stats.py`` calls.
"""

import argparse
import asyncio
import json
import math
import random
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from datetime import time as dtime
from pathlib import Path
from typing import Any

import asyncpg

from api.clock import SHANGHAI
from api.crypto import FieldCipher
from api.demo import people as demo_people
from api.embedded_pg import asyncpg_url, ensure_database, socket_dir, start_embedded
from api.idcard import Sex
from api.migrations import upgrade_to_head
from api.models.escalation import DEFAULT_POLICY
from api.models.incidents import StepHold
from api.services import identity
from api.services.care import chain
from api.services.emergency.chain import STEP_AUDIENCES
from api.services.emergency.decide import plan_steps, step_deadline_minutes
from api.services.emergency.policy import snapshot_policy
from api.settings import DEV_FIELD_KEYS

NOW = datetime(2026, 11, 24, 2, 0, tzinfo=UTC)  # Tuesday 10:00 in Shanghai, as the other benches
TODAY = date(2026, 11, 24)
START = date(2024, 11, 25)  # two years of records
TERMS = (
    ("2024年秋季学期", date(2024, 9, 1), date(2025, 1, 17)),
    ("2025年春季学期", date(2025, 2, 17), date(2025, 7, 4)),
    ("2025年秋季学期", date(2025, 9, 1), date(2026, 1, 16)),
    ("2026年春季学期", date(2026, 2, 23), date(2026, 7, 3)),
    ("2026年秋季学期", date(2026, 9, 1), date(2027, 1, 20)),
)
HOLIDAYS = (
    ("国庆节", date(2025, 10, 1), date(2025, 10, 8)),
    ("劳动节", date(2026, 5, 1), date(2026, 5, 5)),
    ("国庆节", date(2026, 10, 1), date(2026, 10, 7)),
)
TOWNSHIP_NAMES = (
    "桃洪镇", "小沙江镇", "金石桥镇", "司门前镇", "高平镇", "六都寨镇", "荷香桥镇", "横板桥镇", "周旺镇",
    "滩头镇", "鸭田镇", "西洋江镇", "岩口镇", "北山镇", "三阁司镇", "罗洪镇", "山界回族乡", "虎形山瑶族乡",
)  # fmt: skip
# (kind, grades, share of the county's schools, relative size of its left-behind roll)
SCHOOL_KINDS = (
    ("中心小学", range(1, 7), 1, 6.0),
    ("初级中学", range(7, 10), 1, 5.0),
    ("九年一贯制学校", range(1, 10), 1, 4.0),
    ("完小", range(1, 7), 11, 1.2),
    ("教学点", range(1, 4), 6, 0.15),
)
CLASS_SIZE = 45
PROXY_CAP = 5  # the default care setting: children per proxy parent
ENTRUSTED = (  # (relation, weight, is a grandparent)
    ("祖母", 30), ("祖父", 18), ("外祖母", 14), ("外祖父", 8),
    ("伯父", 4), ("叔叔", 4), ("姑姑", 4), ("舅舅", 3), ("姨妈", 3), ("哥哥", 1), ("邻居", 1),
)  # fmt: skip
CATEGORIES = (
    ("injury", 35), ("illness", 25), ("missing", 8), ("safety", 10),
    ("violence_bullying", 8), ("psychological_crisis", 9), ("other", 5),
)  # fmt: skip
SEVERITIES = (("minor", 50), ("moderate", 30), ("severe", 15), ("critical", 5))
ACK_ROUTES = (("mini_program", 30), ("link", 20), ("sms_reply", 20), ("voice_dtmf", 15), ("staff_call", 15))


@dataclass(frozen=True)
class Size:
    townships: int
    schools: int
    left_behind: int


FULL = Size(townships=15, schools=300, left_behind=100_000)
SMALL = Size(townships=3, schools=12, left_behind=4_000)


@dataclass
class County:
    """What the statistics bench needs to know about the county it measures."""

    county_id: uuid.UUID
    bureau_id: uuid.UUID  # the bureau's account
    township_ids: list[uuid.UUID]
    official_ids: list[uuid.UUID]  # a township official's account per township, in the same order
    school_ids: list[uuid.UUID]
    admin_ids: list[uuid.UUID]  # the school admin's account per school, in the same order
    counts: dict[str, int] = field(default_factory=dict)


COLUMNS: dict[str, tuple[str, ...]] = {
    "county": ("id", "name", "code", "created_at"),
    "township": ("id", "county_id", "name", "created_at"),
    "school": ("id", "county_id", "township_id", "name", "kind", "pupil_count", "created_at"),
    "account": (
        "id", "role", "display_name", "username", "county_id", "township_id", "school_id", "is_active",
        "created_at", "is_counsellor",
    ),
    "school_class": ("id", "school_id", "grade", "name", "head_teacher_id", "is_active", "created_at"),
    "care_setting": ("school_id", "proxy_parent_cap", "mentor_cap", "edit_window_minutes", "updated_at"),
    "school_term": ("id", "school_id", "name", "starts_on", "ends_on", "created_at"),
    "school_holiday": ("id", "school_id", "name", "starts_on", "ends_on", "created_at"),
    "child": (
        "id", "school_id", "class_id", "name", "name_pinyin", "name_initials", "sex", "birth_date", "ethnicity",
        "id_number_cipher", "id_number_index", "id_number_masked", "home_address", "is_boarding", "health",
        "is_left_behind", "parents_away", "left_behind_since", "guardianship_rating", "special_hardship",
        "single_parent", "struggling_learner", "disability", "needs_individual_plan", "status",
        "status_changed_on", "created_at", "updated_at",
    ),
    "guardian": ("id", "name", "sex", "phone", "work_city", "created_at", "updated_at"),
    "child_guardian": ("id", "child_id", "guardian_id", "role", "relation", "contact_order", "is_active", "created_at"),
    "care_pairing": ("id", "school_id", "child_id", "kind", "staff_id", "started_on", "created_at"),
    "call_line": (
        "id", "school_id", "name", "kind", "room", "capacity", "slot_minutes", "buffer_minutes",
        "min_notice_minutes", "horizon_days", "is_active", "created_at",
    ),
    "call_line_window": ("id", "line_id", "weekday", "starts", "ends"),
    "care_record": (
        "id", "school_id", "child_id", "kind", "occurred_on", "author_id", "created_at", "content", "version",
        "updated_at", "chain_seq", "prev_hash", "content_hash", "row_hash",
    ),
    "care_chain_head": ("school_id", "seq", "head_hash", "updated_at"),
    "family_call": (
        "id", "line_id", "school_id", "child_id", "guardian_id", "booked_by", "booth", "starts_at", "ends_at",
        "blocked_until", "status", "duration_minutes", "brought_by", "missed_by", "cancelled_by", "created_at",
        "updated_at",
    ),
    "incident": (
        "id", "case_code", "county_id", "township_id", "school_id", "child_id", "class_id", "category", "severity",
        "summary", "location", "occurred_at", "time_basis", "first_actions", "reported_at", "reported_by_id",
        "status", "outcome", "closed_at", "closed_by_id", "closure_summary", "policy", "updated_at",
    ),
    "escalation_step": (
        "id", "incident_id", "step_no", "deadline_minutes", "deadline_at", "hold_until", "starts_at", "status",
        "started_at", "told_at", "breached_at", "next_check_at", "ack_wait_seconds", "near_margin_seconds",
        "max_rounds", "round_pause_seconds",
    ),
    "escalation_party": (
        "id", "incident_id", "step_id", "audience", "status", "round", "cursor", "told_at", "told_route",
        "flagged_at",
    ),
    "acknowledgement": (
        "id", "incident_id", "school_id", "step_id", "party_id", "route", "contact_label", "acknowledged_at",
        "recorded_at", "recorded_by_id",
    ),
    "incident_event": ("incident_id", "at", "kind", "step_no", "actor_account_id", "detail"),
}  # fmt: skip

# The order COPY writes the tables in (every foreign key points to a table written before).
ORDER = tuple(COLUMNS)

TALKS = [
    {"place": place, "topics": topics, "mood": mood, "mood_note": None, "follow_up_needed": mood in ("low", "very_low"),
     "follow_up": "一周后再谈" if mood in ("low", "very_low") else None}
    for place in ("教室", "办公室", "操场", "留守儿童之家")
    for topics, mood in (("学习和生活", "good"), ("想念父母", "fair"), ("与同学相处", "good"), ("考试压力", "low"),
                         ("假期安排", "very_good"), ("身体不适", "fair"), ("家里的事", "very_low"))
]  # fmt: skip
CONTACTS = [
    {"channel": channel, "with_whom": whom, "summary": summary}
    for channel in ("phone", "phone", "video", "in_person")
    for whom, summary in (("祖母", "在校表现"), ("祖父", "作业完成情况"), ("父亲", "近期情况"), ("母亲", "生活安排"))
]  # fmt: skip
CALLS = [
    {"channel": channel, "with_whom": whom, "summary": summary}
    for channel in ("phone", "phone", "video", "letter")
    for whom, summary in (("父亲", "孩子和父亲通话"), ("母亲", "视频聊天"), ("父母", "说了学习情况"))
]  # fmt: skip
VISITS = [
    {"met": met, "living_conditions": living, "guardian_situation": situation, "notes": None}
    for met, living in (("祖母", "整洁"), ("祖父", "一般"), ("母亲", "较好"), ("祖母、父亲视频", "简陋"))
    for situation in ("身体尚可", "年事已高", "忙于农活")
]  # fmt: skip
AIDS = [
    {"amount_fen": amount, "source": source, "donor": donor, "note": None}
    for amount, source, donor in ((50_000, "two_exemptions_one_subsidy", None), (30_000, "government", None),
                                  (20_000, "donation", "爱心企业"), (10_000, "school", None))
]  # fmt: skip
CONTENTS = {
    "talk": [(c, json.dumps(c, ensure_ascii=False)) for c in TALKS],
    "guardian_contact": [(c, json.dumps(c, ensure_ascii=False)) for c in CONTACTS],
    "parent_contact": [(c, json.dumps(c, ensure_ascii=False)) for c in CALLS],
    "home_visit": [(c, json.dumps(c, ensure_ascii=False)) for c in VISITS],
    "aid": [(c, json.dumps(c, ensure_ascii=False)) for c in AIDS],
}
CALL_WINDOWS = ((dtime(12, 0), dtime(13, 30)), (dtime(18, 0), dtime(21, 0)))


def _weighted(rng: random.Random, pairs: tuple[tuple[str, int], ...]) -> str:
    return rng.choices([p[0] for p in pairs], weights=[p[1] for p in pairs])[0]


def _months(lo: date, hi: date) -> Iterator[tuple[date, date]]:
    """(first day, last day) of each calendar month from ``lo``'s to ``hi``'s."""
    month = date(lo.year, lo.month, 1)
    while month <= hi:
        nxt = date(month.year + (month.month == 12), month.month % 12 + 1, 1)
        yield month, nxt - timedelta(days=1)
        month = nxt


@dataclass
class Kid:
    """A left-behind child, as the per-school generation of records needs it."""

    id: uuid.UUID
    class_id: uuid.UUID
    carer: uuid.UUID  # the proxy parent, else the head teacher: who writes the records
    entrusted: uuid.UUID | None  # guardian ids
    parent: uuid.UUID | None
    hardship: bool
    until: date  # the last day the child is on the roll (today, or the day the child left)


@dataclass
class SchoolPlan:
    id: uuid.UUID
    township_id: uuid.UUID
    admin: uuid.UUID
    teachers: list[uuid.UUID]
    line: uuid.UUID | None
    diligence: float  # how reliably its staff keep the care rhythm, 0.35–0.97
    promptness: float  # how quickly its staff get the chain's parties told (1: fast)
    kids: list[Kid] = field(default_factory=list)


class Generator:
    """The county's rows, deterministic from the seed (ids included)."""

    def __init__(self, seed: int, size: Size) -> None:
        self.rng = random.Random(seed)
        self.size = size
        self.cipher = FieldCipher.from_config(DEV_FIELD_KEYS)
        self.name_keys: dict[str, tuple[str, str]] = {}
        self.seen_numbers: set[str] = set()
        self.case_no = 0

    def uid(self) -> uuid.UUID:
        return uuid.UUID(int=self.rng.getrandbits(128), version=4)

    # ---- the fixed part: organisations, staff, pupils, guardians, pairings ----------------------------------

    def county(self) -> tuple[County, list[SchoolPlan], dict[str, list[tuple[Any, ...]]]]:
        rng, size = self.rng, self.size
        t: dict[str, list[tuple[Any, ...]]] = {name: [] for name in ORDER}
        county_id, bureau = self.uid(), self.uid()
        t["county"].append((county_id, "隆回县", "430524", NOW))
        t["account"].append((bureau, "county_bureau", "县教育局", "bureau", county_id, None, None, True, NOW, False))
        township_ids, official_ids = [], []
        for i in range(size.townships):
            township, official = self.uid(), self.uid()
            township_ids.append(township)
            official_ids.append(official)
            t["township"].append((township, county_id, TOWNSHIP_NAMES[i], NOW))
            t["account"].append(
                (official, "township_official", f"{TOWNSHIP_NAMES[i]}专干", f"township{i + 1}", county_id, township,
                 None, True, NOW, False)
            )  # fmt: skip
        # Schools: each township its central school, junior middle school and nine-year school, then 完小 and
        # 教学点 in the ratio of SCHOOL_KINDS; left-behind rolls shared out by kind, with some spread.
        kinds: list[tuple[str, range, float]] = []
        per_township = size.schools // size.townships
        pattern = [k for k in SCHOOL_KINDS for _ in range(k[2])]
        for n in range(size.schools):
            kind, grades, _, weight = pattern[(n % per_township) % len(pattern)] if per_township else pattern[0]
            kinds.append((kind, grades, weight * rng.uniform(0.6, 1.5)))
        total_weight = sum(k[2] for k in kinds)
        rolls = [max(8, int(size.left_behind * k[2] / total_weight)) for k in kinds]
        rolls[0] += size.left_behind - sum(rolls)
        plans: list[SchoolPlan] = []
        counters: dict[tuple[uuid.UUID, str], int] = {}
        for n, ((kind, grades, _), roll) in enumerate(zip(kinds, rolls, strict=True)):
            ti = n % size.townships
            township = township_ids[ti]
            school = self.uid()
            share = rng.uniform(0.25, 0.55)
            pupils = max(roll, round(roll / share))
            number = counters[(township, kind)] = counters.get((township, kind), 0) + 1
            town = TOWNSHIP_NAMES[ti]
            name = f"{town}{kind}" if number == 1 else f"{town}第{number}{kind}"
            t["school"].append((school, county_id, township, name, kind, pupils, NOW))
            admin = self.uid()
            t["account"].append(
                (admin, "school_admin", f"{name[:20]}校长", f"admin{n + 1}", county_id, township, school, True, NOW,
                 False)
            )  # fmt: skip
            t["care_setting"].append((school, PROXY_CAP, 5, 1440, NOW))
            for term, a, b in TERMS:
                t["school_term"].append((self.uid(), school, term, a, b, NOW))
            for holiday, a, b in HOLIDAYS:
                t["school_holiday"].append((self.uid(), school, holiday, a, b, NOW))
            teachers = [self.uid() for _ in range(max(2, math.ceil(pupils / 13)))]
            for k, teacher in enumerate(teachers):
                t["account"].append(
                    (teacher, "teacher", f"教师{k + 1}", None, county_id, township, school, True, NOW, k == 0)
                )
            line = None
            if kind != "教学点" or rng.random() < 0.3:
                line = self.uid()
                t["call_line"].append((line, school, "亲情电话", "phone", "留守儿童之家", 1, 15, 5, 120, 31, True, NOW))
                for weekday in range(7):
                    for a, b in CALL_WINDOWS:
                        t["call_line_window"].append((self.uid(), line, weekday, a, b))
            plan = SchoolPlan(
                id=school,
                township_id=township,
                admin=admin,
                teachers=teachers,
                line=line,
                diligence=rng.uniform(0.35, 0.97),
                promptness=rng.uniform(0.3, 1.0),
            )
            plans.append(plan)
            self._pupils(t, plan, grades, pupils, roll)
        county = County(
            county_id=county_id,
            bureau_id=bureau,
            township_ids=township_ids,
            official_ids=official_ids,
            school_ids=[p.id for p in plans],
            admin_ids=[p.admin for p in plans],
        )
        return county, plans, t

    def _pupils(
        self, t: dict[str, list[tuple[Any, ...]]], plan: SchoolPlan, grades: range, pupils: int, roll: int
    ) -> None:
        rng = self.rng
        per_grade = math.ceil(pupils / len(grades))
        classes: list[tuple[uuid.UUID, int, uuid.UUID]] = []
        teachers = iter(plan.teachers)
        for grade in grades:
            for number in range(1, math.ceil(per_grade / CLASS_SIZE) + 1):
                klass, head = self.uid(), next(teachers, plan.teachers[-1])
                classes.append((klass, grade, head))
                t["school_class"].append((klass, plan.id, grade, f"{number}班", head, True, NOW))
        careful = rng.uniform(0.6, 1.0)  # how carefully this school fills in its files
        boarding = 0.7 if grades.start >= 7 else 0.45 if len(grades) == 9 else 0.02 if len(grades) == 3 else 0.2
        left_behind = set(rng.sample(range(pupils), roll))
        coverage = rng.uniform(0.55, 1.0)  # the share of left-behind children it pairs with a proxy parent
        proxies = plan.teachers[: max(1, len(plan.teachers) * 4 // 5)]
        load = dict.fromkeys(proxies, 0)
        for i in range(pupils):
            child = self.uid()
            klass, grade, head = classes[i % len(classes)]
            sex = Sex.male if rng.random() < 0.52 else Sex.female
            age = grade + 6 + (rng.random() < 0.08)  # on 1 September of this school year (a few held back)
            born = date(2026 - age - 1, 9, 1) + timedelta(days=rng.randrange(365))
            ethnicity = demo_people.ethnicity(rng)
            name = demo_people.child_name(rng, demo_people.surname(rng, ethnicity), sex=sex)
            if name not in self.name_keys:
                self.name_keys[name] = identity.name_keys(name)
            pinyin, initials = self.name_keys[name]
            stored = None
            if rng.random() < careful + 0.05:
                number = demo_people.id_number(rng, born, sex)
                while number in self.seen_numbers:
                    number = demo_people.id_number(rng, born, sex)
                self.seen_numbers.add(number)
                stored = identity.store_id_number(self.cipher, number, today=TODAY)
            lb = i in left_behind
            away = rng.choices(("both", "father", "mother"), weights=(55, 30, 15))[0] if lb else "none"
            status, changed = "enrolled", None
            if rng.random() < 0.015:
                status, changed = "left", TODAY - timedelta(days=rng.randrange(20, 500))
            flags = (rng.random() < 0.05, rng.random() < 0.07, rng.random() < 0.12, rng.random() < 0.01,
                     rng.random() < 0.02)  # fmt: skip
            created = datetime.combine(START - timedelta(days=rng.randrange(0, 400)), dtime(1), UTC)
            t["child"].append(
                (child, plan.id, klass, name, pinyin, initials, sex.value, born, ethnicity,
                 stored.cipher if stored else None, stored.index if stored else None,
                 stored.masked if stored else None,
                 demo_people.address(rng) if rng.random() < careful + 0.1 else None, rng.random() < boarding,
                 "健康", lb, away, min(born + timedelta(days=rng.randrange(300, 2500)), START) if lb else None,
                 rng.choices(("good", "fairly_good", "average", "poor"), weights=(40, 35, 20, 5))[0] if lb else None,
                 *flags, status, changed, created, created)
            )  # fmt: skip
            surname = name[0]
            if not lb:
                if rng.random() < 0.5:
                    parent = self.uid()
                    t["guardian"].append((parent, f"{surname}某", None, demo_people.mobile(rng), None, NOW, NOW))
                    t["child_guardian"].append((self.uid(), child, parent, "parent_home", "母亲", 1, True, NOW))
                continue
            entrusted = parent = None
            if rng.random() < careful + 0.08:
                entrusted = self.uid()
                relation = (
                    ("母亲" if away == "father" else "父亲")
                    if away != "both" and rng.random() < 0.8
                    else _weighted(rng, ENTRUSTED)
                )
                phone = demo_people.mobile(rng) if rng.random() < careful + 0.1 else None
                t["guardian"].append((entrusted, f"{surname}某某", None, phone, None, NOW, NOW))
                t["child_guardian"].append((self.uid(), child, entrusted, "entrusted_guardian", relation, 1, True, NOW))
            if rng.random() < careful + 0.1:
                parent = self.uid()
                relation = "母亲" if away == "mother" else "父亲"
                city = rng.choice(demo_people.WORK_CITIES)
                t["guardian"].append((parent, f"{surname}某", None, demo_people.mobile(rng), city, NOW, NOW))
                t["child_guardian"].append((self.uid(), child, parent, "parent_away", relation, 2, True, NOW))
            carer = head
            if status == "enrolled" and rng.random() < coverage:
                free = [p for p in proxies if load[p] < PROXY_CAP]
                if free:
                    carer = free[0] if rng.random() < 0.7 else rng.choice(free)
                    load[carer] += 1
                    started = rng.choice((date(2024, 9, 10), date(2025, 3, 1), date(2025, 9, 10), date(2026, 9, 10)))
                    t["care_pairing"].append((self.uid(), plan.id, child, "proxy_parent", carer, started, NOW))
            plan.kids.append(Kid(child, klass, carer, entrusted, parent, flags[0], changed or TODAY))

    # ---- per school: two years of care records and calls, incidents ---------------------------------------

    def records(self, plan: SchoolPlan) -> tuple[list[tuple[Any, ...]], tuple[Any, ...] | None]:
        """The school's care records in the order they were written, chained, and its chain head."""
        rng = self.rng
        planned: list[tuple[date, str, uuid.UUID, uuid.UUID]] = []  # (on, kind, child, author)
        months = list(_months(START, TODAY - timedelta(days=1)))
        last = TODAY - timedelta(days=1)
        for kid in plan.kids:
            d = min(0.99, max(0.05, plan.diligence + rng.uniform(-0.2, 0.15)))  # the carer's own diligence
            end = min(kid.until, last)
            for first, final in months:
                if first > end:
                    break
                span = (final if final < end else end) - max(first, START)
                for kind in ("talk", "guardian_contact"):
                    if rng.random() < d:
                        planned.append((max(first, START) + timedelta(days=rng.randint(0, span.days)), kind,
                                        kid.id, kid.carer))  # fmt: skip
            for _, a, b in TERMS:
                third = (b - a).days // 3
                for k in range(3):
                    lo = max(a + timedelta(days=k * third), START)
                    hi = min(a + timedelta(days=(k + 1) * third - 1), end)
                    if lo <= hi and rng.random() < d * 0.9:
                        planned.append((lo + timedelta(days=rng.randint(0, (hi - lo).days)), "home_visit", kid.id,
                                        kid.carer))  # fmt: skip
                if kid.hardship and a <= end and rng.random() < 0.8:
                    planned.append((max(a, START) + timedelta(days=rng.randint(0, 30)), "aid", kid.id, plan.admin))
            # Calls with the parents away kept by a teacher's record (the rest by the school's phone, below).
            week = START
            p = d * (0.35 if plan.line else 0.7)
            while week <= end:
                if rng.random() < p:
                    planned.append((week + timedelta(days=rng.randrange(7)), "parent_contact", kid.id, kid.carer))
                week += timedelta(days=7)
        planned = [p for p in planned if p[0] <= last]
        planned.sort(key=lambda p: p[0])
        rows: list[tuple[Any, ...]] = []
        prev, seq, school = chain.GENESIS, 0, plan.id
        state_hashes: dict[tuple[date, str, int], str] = {}
        for on, kind, child, author in planned:
            seq += 1
            pick = rng.randrange(len(CONTENTS[kind]))
            content, text = CONTENTS[kind][pick]
            key = (on, kind, pick)
            state = state_hashes.get(key)
            if state is None:
                state = state_hashes[key] = chain.state_hash(on, content)
            record = self.uid()
            at = datetime.combine(on, dtime(7), UTC) + timedelta(seconds=rng.randrange(36_000))
            content_hash = chain.record_content_hash(
                record_id=record, school_id=school, child_id=child, kind=kind, author_id=author, created_at=at,
                first_state_hash=state,
            )  # fmt: skip
            row = chain.link_hash(seq, prev, content_hash)
            rows.append((record, school, child, kind, on, author, at, text, 1, at, seq, prev, content_hash, row))
            prev = row
        head = (school, seq, prev, NOW) if seq else None
        return rows, head

    def calls(self, plan: SchoolPlan) -> list[tuple[Any, ...]]:
        """Two years of the school's family calls: its phone line, one booth, 15-minute slots."""
        if plan.line is None:
            return []
        rng = self.rng
        rows: list[tuple[Any, ...]] = []
        taken: set[datetime] = set()
        for kid in plan.kids:
            p = min(0.95, plan.diligence * rng.uniform(0.2, 0.6))
            day = START + timedelta(days=rng.randrange(7))
            end = min(kid.until, TODAY - timedelta(days=1))
            while day <= end:
                if rng.random() < p:
                    a, b = CALL_WINDOWS[rng.randrange(2)]
                    slots = (b.hour * 60 + b.minute - a.hour * 60 - a.minute) // 20
                    starts = datetime.combine(day, a, SHANGHAI) + timedelta(minutes=20 * rng.randrange(slots))
                    if starts not in taken:
                        taken.add(starts)
                        starts = starts.astimezone(UTC)
                        ends = starts + timedelta(minutes=15)
                        status = rng.choices(("completed", "missed", "cancelled"), weights=(82, 11, 7))[0]
                        created = starts - timedelta(days=rng.randrange(1, 6))
                        rows.append(
                            (self.uid(), plan.line, plan.id, kid.id, kid.parent, kid.carer, 1, starts, ends,
                             ends + timedelta(minutes=5), status,
                             rng.randrange(5, 16) if status == "completed" else None,
                             "班主任" if status == "completed" else None,
                             rng.choice(("family", "child", "line_fault")) if status == "missed" else None,
                             rng.choice(("family", "school")) if status == "cancelled" else None,
                             created, ends if status != "cancelled" else created)
                        )  # fmt: skip
                day += timedelta(days=7)
        return rows

    def incidents(self, county: County, plan: SchoolPlan) -> dict[str, list[tuple[Any, ...]]]:
        """The school's emergencies over two years (about 1.2 % of its left-behind children a year), each with
        the chain as the engine leaves it: steps, parties, acknowledgements, events; some told late, a few
        never."""
        rng = self.rng
        t: dict[str, list[tuple[Any, ...]]] = {
            k: [] for k in ("incident", "escalation_step", "escalation_party", "acknowledgement", "incident_event")
        }
        policy_json = json.dumps(snapshot_policy(DEFAULT_POLICY, None))
        n = sum(rng.random() < 0.024 for _ in plan.kids)
        for _ in range(n):
            kid = rng.choice(plan.kids)
            last = min(kid.until, TODAY)
            day = START + timedelta(days=rng.randrange(max(1, (last - START).days)))
            occurred = datetime.combine(day, dtime(rng.randrange(0, 14), rng.randrange(60)), UTC)
            reported = occurred + timedelta(minutes=rng.choice((1, 2, 3, 5, 8, 12, 20)))
            if reported > NOW:
                continue
            incident = self.uid()
            self.case_no += 1
            category, severity = _weighted(rng, CATEGORIES), _weighted(rng, SEVERITIES)
            closed = reported < NOW - timedelta(days=3) or rng.random() < 0.5
            closed_at = reported + timedelta(hours=rng.randrange(2, 72)) if closed else None
            if closed_at and closed_at > NOW:
                closed_at = NOW - timedelta(minutes=5)
            reporter = kid.carer
            t["incident"].append(
                (incident, f"{day:%Y%m%d}-{self.case_no:05d}", county.county_id, plan.township_id, plan.id, kid.id,
                 kid.class_id, category, severity, "情况说明", "学校", occurred,
                 "occurred" if rng.random() < 0.8 else "discovered", "已采取初步措施", reported, reporter,
                 "closed" if closed else "open", "handed_to_family" if closed else None, closed_at,
                 plan.admin if closed else None, "已处置完毕" if closed else None, policy_json,
                 closed_at or reported)
            )  # fmt: skip
            t["incident_event"].append((incident, reported, "reported", None, reporter, "{}"))
            held = rng.random() < 0.1
            # A school may hold step 1 while it phones the family first — only while that leaves the chain
            # time for its attempts before the deadline (plan_steps refuses it otherwise).
            holds = [StepHold(step_no=1, minutes=5)] if held and reported - occurred <= timedelta(minutes=8) else []
            for step_no, deadline_at, hold_until in plan_steps(
                DEFAULT_POLICY, occurred_at=occurred, reported_at=reported, holds=holds
            ):
                step = self.uid()
                starts = hold_until or reported
                # Minutes from the step's start to the last party's acknowledgement: quick at a prompt
                # school, with a long tail; a few parties are never reached before the case is closed.
                told_at: datetime | None = None
                never = rng.random() < 0.03 * (1.5 - plan.promptness)
                party_times = []
                for audience in STEP_AUDIENCES[step_no]:
                    minutes = rng.lognormvariate(math.log(4 + 18 * (1 - plan.promptness) * step_no), 0.8)
                    at = starts + timedelta(minutes=minutes)
                    party_times.append((audience, None if never or at > NOW else at))
                reached = [a for _, a in party_times]
                if all(reached):
                    told_at = max(a for a in reached if a)
                breached = told_at is None or told_at > deadline_at
                breached_at = deadline_at if breached and deadline_at <= NOW else None
                status = "told" if told_at else "notifying"
                t["escalation_step"].append(
                    (step, incident, step_no, step_deadline_minutes(DEFAULT_POLICY, step_no), deadline_at, hold_until,
                     starts, status, starts, told_at, breached_at,
                     None if told_at or closed else NOW + timedelta(minutes=1), 300, 600, 3, 300)
                )  # fmt: skip
                t["incident_event"].append((incident, starts, "step_started", step_no, None, "{}"))
                for audience, at in party_times:
                    party = self.uid()
                    route = _weighted(rng, ACK_ROUTES) if at else None
                    t["escalation_party"].append(
                        (party, incident, step, audience, "told" if at else "exhausted", 1 if at else 3, 0, at, route,
                         None if at else deadline_at)
                    )  # fmt: skip
                    if at:
                        label = {"entrusted_guardian": "委托监护人", "parents_away": "父亲",
                                 "county_bureau": "县教育局", "township": "镇政府"}[audience]  # fmt: skip
                        t["acknowledgement"].append(
                            (self.uid(), incident, plan.id, step, party, route, label, at, at,
                             plan.admin if route == "staff_call" else None)
                        )  # fmt: skip
                        t["incident_event"].append((incident, at, "acknowledged", step_no, None, "{}"))
                if told_at:
                    t["incident_event"].append((incident, told_at, "step_told", step_no, None, "{}"))
                if breached_at:
                    t["incident_event"].append((incident, breached_at, "breach", step_no, None, "{}"))
            if closed_at:
                t["incident_event"].append((incident, closed_at, "closed", None, plan.admin, "{}"))
        return t


async def _copy(conn: asyncpg.Connection, table: str, rows: list[tuple[Any, ...]], counts: dict[str, int]) -> None:
    if rows:
        await conn.copy_records_to_table(table, records=rows, columns=list(COLUMNS[table]))
        counts[table] = counts.get(table, 0) + len(rows)


async def build(socket: str, database: str, *, seed: int, size: Size) -> County:
    """Generate the county and COPY it into ``database`` (migrated, empty), table after table in the order
    the foreign keys need; then VACUUM ANALYZE, as autovacuum would have by the time the bureau asks."""
    gen = Generator(seed, size)
    counts: dict[str, int] = {}
    t0 = time.perf_counter()
    county, plans, fixed = gen.county()
    t_gen = time.perf_counter() - t0
    conn = await asyncpg.connect(host=socket, user="postgres", database=database)
    try:
        t1 = time.perf_counter()
        for table in ORDER:
            await _copy(conn, table, fixed[table], counts)
        t_copy = time.perf_counter() - t1
        for plan in plans:
            t2 = time.perf_counter()
            records, head = gen.records(plan)
            calls = gen.calls(plan)
            emergencies = gen.incidents(county, plan)
            t3 = time.perf_counter()
            t_gen += t3 - t2
            await _copy(conn, "care_record", records, counts)
            await _copy(conn, "care_chain_head", [head] if head else [], counts)
            await _copy(conn, "family_call", calls, counts)
            for table, rows in emergencies.items():
                await _copy(conn, table, rows, counts)
            t_copy += time.perf_counter() - t3
        t4 = time.perf_counter()
        await conn.execute("VACUUM ANALYZE")
        t_vacuum = time.perf_counter() - t4
    finally:
        await conn.close()
    county.counts = counts
    print(
        f"county: {size.townships} townships, {len(plans)} schools, "
        f"{sum(len(p.kids) for p in plans):,} left-behind of {counts['child']:,} pupils; "
        + ", ".join(f"{table} {n:,}" for table, n in counts.items() if table not in ("county",))
    )
    print(f"generated in {t_gen:.1f} s, COPY {t_copy:.1f} s, VACUUM ANALYZE {t_vacuum:.1f} s")
    return county


# The enrolment each school records per term (在校学生数, the denominator of the left-behind share): its pupil
# count now, a little lower in the terms before (rolls grow slowly), and its boarders in proportion.
ENROLMENT_TERMS = (("2024-2025-1", 0.96), ("2024-2025-2", 0.97), ("2025-2026-1", 0.98), ("2025-2026-2", 0.99),
                   ("2026-2027-1", 1.0))  # fmt: skip


async def record_enrolment(conn: asyncpg.Connection) -> int:
    """Each school's enrolment for the county's terms, where the schema has it and none is recorded yet."""
    if not await conn.fetchval("SELECT to_regclass('school_enrolment') IS NOT NULL"):
        return 0
    if await conn.fetchval("SELECT EXISTS (SELECT FROM school_enrolment)"):
        return 0
    status = await conn.execute(
        """
        INSERT INTO school_enrolment (school_id, term_key, pupils, boarders, updated_at)
        SELECT s.id, t.key, round(s.pupil_count * t.factor)::int,
               least(round(s.pupil_count * t.factor)::int,
                     round(t.factor * (SELECT count(*) FROM child c WHERE c.school_id = s.id AND c.is_boarding))::int),
               $3
        FROM school s CROSS JOIN unnest($1::text[], $2::float8[]) AS t(key, factor)
        """,
        [k for k, _ in ENROLMENT_TERMS],
        [f for _, f in ENROLMENT_TERMS],
        NOW,
    )
    return int(status.split()[-1])


async def existing(socket: str, database: str) -> County | None:
    """The county already written to ``database`` (a kept folder), or None."""
    conn = await asyncpg.connect(host=socket, user="postgres", database=database)
    try:
        county_id = await conn.fetchval("SELECT id FROM county")
        if county_id is None:
            return None
        bureau = await conn.fetchval("SELECT id FROM account WHERE role = 'county_bureau'")
        towns = await conn.fetch(
            "SELECT t.id, a.id FROM township t JOIN account a ON a.township_id = t.id AND a.role = 'township_official'"
            " ORDER BY a.username"
        )
        schools = await conn.fetch(
            "SELECT s.id, a.id FROM school s JOIN account a ON a.school_id = s.id AND a.role = 'school_admin'"
            " ORDER BY length(a.username), a.username"
        )
        counts = {
            table: await conn.fetchval(f"SELECT count(*) FROM {table}")
            for table in ("child", "care_record", "family_call", "incident")
        }
        return County(
            county_id=county_id,
            bureau_id=bureau,
            township_ids=[r[0] for r in towns],
            official_ids=[r[1] for r in towns],
            school_ids=[r[0] for r in schools],
            admin_ids=[r[1] for r in schools],
            counts=counts,
        )
    finally:
        await conn.close()


async def prepare(data_dir: Path, *, small: bool, seed: int) -> tuple[str, str, County]:
    """A running embedded server in ``data_dir`` holding the county (built now, or found from an earlier
    run): (libpq URI, database name, the county)."""
    uri = await asyncio.to_thread(start_embedded, data_dir)
    database = f"county_{'small' if small else 'full'}_{seed}"
    await ensure_database(uri, database)
    await upgrade_to_head(asyncpg_url(uri, database))
    county = await existing(socket_dir(uri), database)
    if county is None:
        t0 = time.perf_counter()
        county = await build(socket_dir(uri), database, seed=seed, size=SMALL if small else FULL)
        print(f"the county written in {time.perf_counter() - t0:.1f} s")
    else:
        print(f"reusing the county kept in {data_dir} ({database}): {county.counts}")
    conn = await asyncpg.connect(host=socket_dir(uri), user="postgres", database=database)
    try:
        if written := await record_enrolment(conn):
            await conn.execute("ANALYZE school_enrolment")
            print(f"recorded {written} terms of enrolment")
    finally:
        await conn.close()
    return uri, database, county


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", action="store_true", help="12 schools, 4,000 left-behind children")
    parser.add_argument("--seed", type=int, default=13)
    parser.add_argument("--keep", type=Path, help="data folder to keep (and reuse) instead of a temporary one")
    args = parser.parse_args()
    data_dir = args.keep or Path(tempfile.mkdtemp(prefix="liushou-county-"))
    await prepare(data_dir, small=args.small, seed=args.seed)


if __name__ == "__main__":
    asyncio.run(main())
