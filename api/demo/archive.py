"""The demo archive: a few hundred left-behind children of the demo schools, with their guardians.

Families come from :mod:`api.demo.people` (names, valid ID numbers, plausible phones), drawn from a fixed
seed, so every run plans the same children; each is placed in the class of their age for the school year
that starts on 1 September 2026. About one file in seven is left incomplete on purpose (a guardian without
a phone, no address…) so that 建档率 and the list of incomplete files have something to show; a few
children have special situations, and some have parents who came home.

The plan is computed first without the database; seeding then inserts only the rows that are missing, so
a second run changes nothing. Rows are written directly (this is the seeder, not the guardian service).
"""

import random
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.crypto import FieldCipher
from api.demo import people
from api.demo.context import DemoContext, demo_id
from api.models.children import Child, ChildEvent, ChildEventKind, GuardianshipRating, ParentsAway, Sex
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.organisations import SchoolClass
from api.services import identity
from api.settings import get_settings

SEED = 20260901
# Ages fit the grades of this school year (entry to grade 1 in the September after the 6th birthday).
SCHOOL_YEAR = 2026
ENROLLED_ON = date(SCHOOL_YEAR, 9, 1)
CHILDREN_PER_CLASS = (11, 17)
INCOMPLETE_SHARE = 0.15
PARENTS_RETURNED_SHARE = 0.05

RATINGS = {
    "好": GuardianshipRating.good,
    "较好": GuardianshipRating.fairly_good,
    "一般": GuardianshipRating.average,
    "差": GuardianshipRating.poor,
}
CHARACTERS = (
    "开朗活泼",
    "内向，话不多",
    "懂事，爱帮助同学",
    "胆小，怕生",
    "倔强，有主见",
    "安静，爱看书",
    "好动，注意力不集中",
)
HABITS = ("作业按时完成", "爱玩手机，睡得晚", "生活能自理", "卫生习惯较差", "早上常迟到", "自己洗衣做饭")
INTERESTS = ("画画", "打篮球", "唱歌", "看课外书", "跳绳", "下象棋", "做手工", "踢足球")
STUDY = ("成绩中上，学习主动", "数学较弱，需要辅导", "成绩波动大", "学习动力不足", "成绩优秀，是班干部", "阅读能力较弱")
RELATIONSHIPS = ("与奶奶很亲", "与爷爷沟通少", "听外婆的话", "与监护人关系一般", "常与监护人顶嘴")
CONTACT_FREQUENCY = ("每周视频一次", "每月电话两三次", "很少联系", "每天微信语音", "逢年过节联系")
# Ways a demo file is left incomplete, each a thing the completeness rule names.
DEFECTS = (
    "no_guardian_phone",
    "no_address",
    "no_id_number",
    "no_rating",
    "no_since",
    "no_parent_phone",
    "no_guardian",
)


@dataclass
class PlannedGuardian:
    key: str
    name: str
    sex: Sex
    birth_year: int
    education: str
    occupation: str | None
    phone: str | None
    address: str | None
    health: str | None = None
    work_city: str | None = None
    employer: str | None = None
    trade: str | None = None


@dataclass
class PlannedLink:
    guardian_key: str
    role: GuardianRole
    relation: str
    contact_order: int


@dataclass
class PlannedChild:
    key: str
    school_id: uuid.UUID
    class_id: uuid.UUID
    person: people.DemoPerson
    health: str
    boarding: bool
    address: str | None
    household_registration: str
    parents_away: ParentsAway
    left_behind_since: date | None
    rating: GuardianshipRating | None
    with_id_number: bool
    returned_on: date | None
    flags: dict[str, bool]
    notes: dict[str, str]
    links: list[PlannedLink] = field(default_factory=list)


@dataclass
class ArchivePlan:
    children: list[PlannedChild]
    guardians: dict[str, PlannedGuardian]


def grade_of(born: date) -> int:
    """The primary grade of a child born on ``born`` in the demo school year (≤0 too young, >6 too old)."""
    entry_year = born.year + 6 if born.month < 9 else born.year + 7
    return SCHOOL_YEAR - entry_year + 1


def plan_archive(classes: dict[uuid.UUID, list[tuple[uuid.UUID, int]]], *, seed: int = SEED) -> ArchivePlan:
    """Children for the given classes (school id → [(class id, grade)]), without touching the database."""
    rng = random.Random(seed)
    targets = {class_id: rng.randint(*CHILDREN_PER_CLASS) for rows in classes.values() for class_id, _ in rows}
    wanted = sum(targets.values())
    by_grade = {
        school_id: {grade: [c for c, g in rows if g == grade] for _, grade in rows}
        for school_id, rows in classes.items()
    }
    filled = dict.fromkeys(targets, 0)
    schools = list(classes)
    plan = ArchivePlan(children=[], guardians={})
    # Enough families for every class; the extra ones are simply not used.
    for f_index, family in enumerate(people.families(rng, wanted * 2)):
        if len(plan.children) >= wanted:
            break
        school_id = schools[f_index % len(schools)]
        placed: list[tuple[people.DemoChild, uuid.UUID]] = []
        for kid in family.children:
            options = [
                c for c in by_grade[school_id].get(grade_of(kid.person.birth_date), []) if filled[c] < targets[c]
            ]
            if options:
                class_id = rng.choice(options)
                filled[class_id] += 1
                placed.append((kid, class_id))
        if not placed:
            continue
        _plan_family(rng, plan, f"f{f_index}", family, school_id, placed)
    return plan


def _plan_family(
    rng: random.Random,
    plan: ArchivePlan,
    key: str,
    family: people.DemoFamily,
    school_id: uuid.UUID,
    placed: list[tuple[people.DemoChild, uuid.UUID]],
) -> None:
    away = ParentsAway.both if family.father.away and family.mother.away else (
        ParentsAway.father if family.father.away else ParentsAway.mother
    )  # fmt: skip
    defect = rng.choice(DEFECTS) if rng.random() < INCOMPLETE_SHARE else None
    returned = rng.random() < PARENTS_RETURNED_SHARE
    g = family.guardian
    plan.guardians[f"{key}-guardian"] = PlannedGuardian(
        key=f"{key}-guardian",
        name=g.person.name,
        sex=Sex(g.person.sex.value),
        birth_year=g.person.birth_date.year,
        education=g.education,
        occupation=g.occupation,
        phone=None if defect == "no_guardian_phone" else g.phone,
        address=family.address,
        health=g.health,
    )
    for role_key, parent in (("father", family.father), ("mother", family.mother)):
        plan.guardians[f"{key}-{role_key}"] = PlannedGuardian(
            key=f"{key}-{role_key}",
            name=parent.person.name,
            sex=Sex(parent.person.sex.value),
            birth_year=parent.person.birth_date.year,
            education=parent.education,
            occupation=parent.trade if parent.away else "务农",
            phone=None if defect == "no_parent_phone" and parent.away else parent.phone,
            address=None if parent.away else family.address,
            work_city=parent.work_city,
            employer=parent.employer,
            trade=parent.trade,
        )
    town = family.address.split("镇", 1)[0] + "镇"
    for n, (kid, class_id) in enumerate(placed):
        born = kid.person.birth_date
        since = min(born + timedelta(days=rng.randint(180, 365 * 4)), ENROLLED_ON - timedelta(days=30))
        child = PlannedChild(
            key=f"{key}-c{n}",
            school_id=school_id,
            class_id=class_id,
            person=kid.person,
            health=kid.health,
            boarding=kid.boarding,
            address=None if defect == "no_address" else family.address,
            household_registration=f"湖南省邵阳市{town}",
            parents_away=away,
            left_behind_since=None if defect == "no_since" else since,
            rating=None if defect == "no_rating" else RATINGS[g.care_rating],
            with_id_number=defect != "no_id_number",
            returned_on=ENROLLED_ON + timedelta(days=rng.randint(20, 70)) if returned else None,
            flags={
                "special_hardship": rng.random() < 0.06,
                "single_parent": rng.random() < 0.05,
                "struggling_learner": rng.random() < 0.12,
                "disability": rng.random() < 0.01,
                "needs_individual_plan": rng.random() < 0.03,
            },
            notes={
                "character": rng.choice(CHARACTERS),
                "habits": rng.choice(HABITS),
                "interests": "、".join(rng.sample(INTERESTS, 2)),
                "study_notes": rng.choice(STUDY),
                "guardian_relationship": rng.choice(RELATIONSHIPS),
                "parent_contact_frequency": rng.choice(CONTACT_FREQUENCY),
            },
        )
        order = 1
        if defect != "no_guardian":
            child.links.append(PlannedLink(f"{key}-guardian", GuardianRole.entrusted_guardian, g.relation, order))
            order += 1
        for role_key, parent in (("father", family.father), ("mother", family.mother)):
            role = GuardianRole.parent_away if parent.away and not returned else GuardianRole.parent_home
            child.links.append(PlannedLink(f"{key}-{role_key}", role, parent.relation, order))
            order += 1
        plan.children.append(child)


def _cipher() -> FieldCipher:
    # The same key ring the app builds from the settings (create_app), so the app can read what is seeded.
    settings = get_settings()
    return FieldCipher.from_config(settings.field_keys, active=settings.field_key_active)


async def seed_archive(session: AsyncSession, ctx: DemoContext, *, cipher: FieldCipher | None = None) -> None:
    """Insert the planned demo children, guardians, links and events that are not there yet."""
    cipher = cipher or _cipher()
    class_ids = [c for ids in ctx.class_ids.values() for c in ids]
    rows = await session.execute(
        sa.select(col(SchoolClass.id), col(SchoolClass.school_id), col(SchoolClass.grade)).where(
            col(SchoolClass.id).in_(class_ids)
        )
    )
    grades = {class_id: (school_id, grade) for class_id, school_id, grade in rows.all()}
    classes: dict[uuid.UUID, list[tuple[uuid.UUID, int]]] = {}
    for school_id in ctx.school_ids:
        classes[school_id] = [(c, grades[c][1]) for c in ctx.class_ids.get(school_id, []) if c in grades]
    plan = plan_archive(classes)

    async def existing(model: type, ids: list[uuid.UUID]) -> set[uuid.UUID]:
        id_column = model.id  # type: ignore[attr-defined]
        return set((await session.execute(sa.select(id_column).where(id_column.in_(ids)))).scalars())

    guardian_ids = {key: demo_id(f"guardian-{key}") for key in plan.guardians}
    have = await existing(Guardian, list(guardian_ids.values()))
    for key, g in plan.guardians.items():
        if guardian_ids[key] not in have:
            session.add(
                Guardian(
                    id=guardian_ids[key],
                    name=g.name,
                    sex=g.sex,
                    birth_year=g.birth_year,
                    education=g.education,
                    occupation=g.occupation,
                    phone=g.phone,
                    address=g.address,
                    health=g.health,
                    work_city=g.work_city,
                    employer=g.employer,
                    trade=g.trade,
                    contact_method="电话/微信" if g.work_city else "电话",
                )
            )
    await session.flush()

    child_ids = {c.key: demo_id(f"child-{c.key}") for c in plan.children}
    have = await existing(Child, list(child_ids.values()))
    stored = {
        c.key: identity.store_id_number(cipher, c.person.id_number, today=ENROLLED_ON)
        for c in plan.children
        if c.with_id_number and child_ids[c.key] not in have
    }
    # A number already on file for another child (a real entry, an import) is left off the demo child.
    taken = set(
        (
            await session.execute(
                sa.select(col(Child.id_number_index)).where(
                    col(Child.id_number_index).in_([s.index for s in stored.values()])
                )
            )
        ).scalars()
    )
    for c in plan.children:
        child_id = child_ids[c.key]
        if child_id in have:
            continue
        number = stored.get(c.key)
        if number is not None and number.index in taken:
            number = None
        pinyin, initials = identity.name_keys(c.person.name)
        returned = c.returned_on is not None
        row = Child(
            id=child_id,
            school_id=c.school_id,
            class_id=c.class_id,
            name=c.person.name,
            name_pinyin=pinyin,
            name_initials=initials,
            sex=Sex(c.person.sex.value),
            birth_date=c.person.birth_date,
            ethnicity=c.person.ethnicity,
            id_number_cipher=number.cipher if number else None,
            id_number_index=number.index if number else None,
            id_number_masked=number.masked if number else None,
            household_registration=c.household_registration,
            home_address=c.address,
            is_boarding=c.boarding,
            health=c.health,
            is_left_behind=not returned,
            parents_away=ParentsAway.none if returned else c.parents_away,
            left_behind_since=None if returned else c.left_behind_since,
            guardianship_rating=c.rating,
            # The files were entered when the demo's care history starts, so that history counts.
            created_at=ctx.history_starts,
            updated_at=ctx.history_starts,
        )
        for key, value in {**c.flags, **c.notes}.items():
            setattr(row, key, value)
        session.add(row)
    await session.flush()

    link_ids = {
        (c.key, link.guardian_key): demo_id(f"link-{c.key}-{link.guardian_key}")
        for c in plan.children
        for link in c.links
    }
    have = await existing(ChildGuardian, list(link_ids.values()))
    events: dict[uuid.UUID, ChildEvent] = {}
    for c in plan.children:
        for link in c.links:
            link_id = link_ids[(c.key, link.guardian_key)]
            if link_id not in have:
                session.add(
                    ChildGuardian(
                        id=link_id,
                        child_id=child_ids[c.key],
                        guardian_id=guardian_ids[link.guardian_key],
                        role=link.role,
                        relation=link.relation,
                        contact_order=link.contact_order,
                        since=c.left_behind_since,
                    )
                )
        events[demo_id(f"event-{c.key}-enrolled")] = ChildEvent(
            id=demo_id(f"event-{c.key}-enrolled"),
            child_id=child_ids[c.key],
            kind=ChildEventKind.enrolled,
            effective_on=ENROLLED_ON,
            to_school_id=c.school_id,
            to_class_id=c.class_id,
        )
        if c.returned_on is not None:
            events[demo_id(f"event-{c.key}-returned")] = ChildEvent(
                id=demo_id(f"event-{c.key}-returned"),
                child_id=child_ids[c.key],
                kind=ChildEventKind.parents_returned,
                effective_on=c.returned_on,
                reason="父母返乡务工创业",
            )
    have = await existing(ChildEvent, list(events))
    session.add_all(event for event_id, event in events.items() if event_id not in have)
    await session.flush()
