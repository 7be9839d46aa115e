"""A small hand-made county for the statistics tests, every figure counted by hand in DATASET below.

The test world's clock is Tuesday 24 November 2026, 10:00 in Shanghai. Two schools of 青山县 (school 1 in
石桥镇, school 2 in 柳河乡) and one of 白水县 (school 3, never counted for 青山县). School 1 gets a class
七年级1班 (grade 7) beside 三年级1班 and 三年级2班; school 2 has 四年级1班.

DATASET — the children (LB: left-behind; every one filed on 1 Sep 2026 unless said otherwise):

=====  ====  ======  ==========  ======  =======  ========  ============  ===============  =====================
child  sch.  sex     born        class   parents  boarding  1st guardian  flags            other
=====  ====  ======  ==========  ======  =======  ========  ============  ===============  =====================
A      1     male    2016-03-01  3(1)    both     yes       祖母 (phone)   特困              complete file; proxy
                                                                                           parent since 10 Sep
B      1     female  2021-06-01  3(1)    father   no        外公          单亲
C      1     female  2010-01-15  7(1)    mother   yes       叔叔          残疾              proxy since 1 Nov
D      1     male    2009-05-01  none    both     no        邻居          学困              proxy 1 Sep – 5 Nov
E      1     male    2015-01-01  3(2)    both     no        none                           left the roster 10 Nov
F      1     male    2016-01-01  3(1)    —        no        —                              not left-behind
G      1     male    2014-12-01  3(1)    both     no        爷爷                            filed 15 Nov 2026
H      1     female  2012-11-30  3(2)    father   no        母亲                            14 on 30 Nov, 13 on 31 Oct
I      2     female  2016-07-01  4(1)    both     yes       外婆 (phone)                    complete file
J      2     male    2020-12-01  4(1)    mother   no        祖父                            5 on 30 Nov
K      3     female  2016-01-01  —       both     no        —                              other county
=====  ====  ======  ==========  ======  =======  ========  ============  ===============  =====================

Aid: A twice in November (500 and 300 yuan), B once in October (200 yuan).
Incidents (times in Shanghai):

* X1 school 1, child A, injury/minor, 3 Nov 10:00 — step 1 told after 12 min (in time), step 2 after 75 min
  (late), step 3 never told and breached.
* X2 school 1, child C, missing/severe, 20 Nov 08:00 — step 1 after 20 min, step 2 after 40 min (both in time),
  step 3 still open (neither told nor breached: no verdict yet).
* X3 school 2, child I, illness/moderate, 1 Nov 00:30 (31 Oct 16:30 UTC: November in Shanghai) — steps after
  5, 30 and 100 minutes, all in time.
* X4 school 3, other county.

School 1 records 700 pupils for the autumn term 2026-2027-1; school 2 records none (its own count, 420).
"""

import uuid
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
from fastapi import FastAPI

from api.db import scoped_session
from api.models.care import CarePairing, PairingEndReason, PairingKind
from api.models.children import Child, ChildStatus, GuardianshipRating, ParentsAway, Sex
from api.models.escalation import EscalationStep, StepStatus
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.models.incidents import Incident, IncidentCategory, Severity
from api.models.organisations import SchoolClass
from api.scoping import SYSTEM
from tests.factories import World

SH = ZoneInfo("Asia/Shanghai")
FILED = datetime(2026, 9, 1, 1, 0, tzinfo=UTC)


@dataclass
class Dataset:
    children: dict[str, uuid.UUID] = field(default_factory=dict)
    class17: uuid.UUID | None = None
    names: list[str] = field(default_factory=list)


def sh(y: int, m: int, d: int, hh: int = 0, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=SH).astimezone(UTC)


async def build_dataset(app: FastAPI, client: httpx.AsyncClient, world: World) -> Dataset:
    ds = Dataset()
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        c17 = SchoolClass(school_id=world["school1"], grade=7, name="1班")
        s.add(c17)
        await s.flush()
        ds.class17 = c17.id
        c11, c12, c21 = world["class11"], world["class12"], world["class21"]
        both, father, mother = ParentsAway.both, ParentsAway.father, ParentsAway.mother
        boy, girl = Sex.male, Sex.female
        left_on_10_nov = {"status": ChildStatus.left, "status_changed_on": date(2026, 11, 10)}
        spec = [
            # key, school, class, sex, born, parents, boarding, relation, flags, extra
            ("A", "school1", c11, boy, date(2016, 3, 1), both, True, "祖母", {"special_hardship": True}),
            ("B", "school1", c11, girl, date(2021, 6, 1), father, False, "外公", {"single_parent": True}),
            ("C", "school1", c17.id, girl, date(2010, 1, 15), mother, True, "叔叔", {"disability": True}),
            ("D", "school1", None, boy, date(2009, 5, 1), both, False, "邻居", {"struggling_learner": True}),
            ("E", "school1", c12, boy, date(2015, 1, 1), both, False, None, left_on_10_nov),
            ("F", "school1", c11, boy, date(2016, 1, 1), ParentsAway.none, False, None, {"is_left_behind": False}),
            ("G", "school1", c11, boy, date(2014, 12, 1), both, False, "爷爷", {"created_at": sh(2026, 11, 15, 9)}),
            ("H", "school1", c12, girl, date(2012, 11, 30), father, False, "母亲", {}),
            ("I", "school2", c21, girl, date(2016, 7, 1), both, True, "外婆", {}),
            ("J", "school2", c21, boy, date(2020, 12, 1), mother, False, "祖父", {}),
            ("K", "school3", None, girl, date(2016, 1, 1), both, False, None, {}),
        ]  # fmt: skip
        for key, school, klass, sex, born, parents, boarding, relation, extra in spec:
            name = f"测试{key}娃"
            ds.names.append(name)
            values = {"created_at": FILED, **extra}
            child = Child(
                school_id=world[school],
                class_id=klass,
                name=name,
                sex=sex,
                birth_date=born,
                parents_away=parents,
                is_boarding=boarding,
                home_address="石桥镇某村" if key in "AI" else None,
                id_number_cipher="cipher-" + key if key in "AI" else None,
                guardianship_rating=GuardianshipRating.good if key in "AI" else None,
                left_behind_since=date(2020, 1, 1) if key in "AI" else None,
                **values,
            )
            s.add(child)
            await s.flush()
            ds.children[key] = child.id
            if relation is not None:
                guardian = Guardian(name=f"监护人{key}", phone="13800138000" if key in "AI" else None)
                s.add(guardian)
                await s.flush()
                s.add(
                    ChildGuardian(
                        child_id=child.id,
                        guardian_id=guardian.id,
                        role=GuardianRole.entrusted_guardian,
                        relation=relation,
                        contact_order=1,
                    )
                )
                # A second entrusted guardian later in the call order never decides the type.
                other = Guardian(name=f"邻居{key}")
                s.add(other)
                await s.flush()
                s.add(
                    ChildGuardian(
                        child_id=child.id,
                        guardian_id=other.id,
                        role=GuardianRole.entrusted_guardian,
                        relation="邻居" if relation != "邻居" else "祖母",
                        contact_order=5,
                    )
                )
            if key in "AI":
                parent = Guardian(name=f"家长{key}", phone="13900139000")
                s.add(parent)
                await s.flush()
                s.add(
                    ChildGuardian(
                        child_id=child.id, guardian_id=parent.id, role=GuardianRole.parent_away, relation="父亲"
                    )
                )
        for key, started, ended in (
            ("A", date(2026, 9, 10), None),
            ("C", date(2026, 11, 1), None),
            ("D", date(2026, 9, 1), date(2026, 11, 5)),
        ):
            s.add(
                CarePairing(
                    school_id=world["school1"],
                    child_id=ds.children[key],
                    kind=PairingKind.proxy_parent,
                    staff_id=world["teacher1"],
                    started_on=started,
                    ended_on=ended,
                    end_reason=PairingEndReason.reassigned if ended else None,
                )
            )
        await s.flush()

        def incident(key: str, school: str, child: str, klass, category, severity, at: datetime, steps) -> None:
            county = world["other_county"] if school == "school3" else world["county"]
            township = {"school1": "township1", "school2": "township2", "school3": "township3"}[school]
            row = Incident(
                case_code=f"T-{key}",
                county_id=county,
                township_id=world[township],
                school_id=world[school],
                child_id=ds.children[child],
                class_id=klass,
                category=category,
                severity=severity,
                summary="测试",
                location="学校",
                occurred_at=at,
                first_actions="处置",
                reported_at=at + timedelta(minutes=2),
                reported_by_id=world["admin1"],
                policy={},
                updated_at=at,
            )
            s.add(row)
            pending.append((row, at, steps))

        pending: list = []
        incident("X1", "school1", "A", world["class11"], IncidentCategory.injury, Severity.minor, sh(2026, 11, 3, 10),
                 [(1, 12, False), (2, 75, False), (3, None, True)])  # fmt: skip
        incident("X2", "school1", "C", ds.class17, IncidentCategory.missing, Severity.severe, sh(2026, 11, 20, 8),
                 [(1, 20, False), (2, 40, False), (3, None, False)])  # fmt: skip
        incident("X3", "school2", "I", world["class21"], IncidentCategory.illness, Severity.moderate,
                 sh(2026, 11, 1, 0, 30), [(1, 5, False), (2, 30, False), (3, 100, False)])  # fmt: skip
        incident("X4", "school3", "K", None, IncidentCategory.injury, Severity.minor, sh(2026, 11, 5, 9),
                 [(1, 3, False), (2, 3, False), (3, 3, False)])  # fmt: skip
        await s.flush()
        for row, at, steps in pending:
            for step_no, told_after, breached in steps:
                deadline = at + timedelta(minutes={1: 30, 2: 60, 3: 120}[step_no])
                s.add(
                    EscalationStep(
                        incident_id=row.id,
                        step_no=step_no,
                        deadline_minutes={1: 30, 2: 60, 3: 120}[step_no],
                        deadline_at=deadline,
                        starts_at=at,
                        status=StepStatus.told if told_after is not None else StepStatus.notifying,
                        started_at=at,
                        told_at=at + timedelta(minutes=told_after) if told_after is not None else None,
                        breached_at=deadline if breached else None,
                        ack_wait_seconds=300,
                        near_margin_seconds=600,
                        max_rounds=3,
                        round_pause_seconds=300,
                    )
                )
    for child, on, fen in (("A", "2026-11-05", 50000), ("A", "2026-11-18", 30000), ("B", "2026-10-12", 20000)):
        body = {"kind": "aid", "occurred_on": on, "content": {"amount_fen": fen, "source": "donation"}}
        r = await client.post(
            f"/children/{ds.children[child]}/care-records", json=body, headers=world.headers("admin1")
        )
        assert r.status_code == 201, r.text
    # Some care work, for the compliance rates (compared with the schools' own coverage report).
    for child, kind, on, content in (
        ("A", "talk", "2026-11-02", {"place": "教室", "topics": "学习", "mood": "good"}),
        ("B", "talk", "2026-11-10", {"place": "教室", "topics": "生活", "mood": "fair"}),
        ("A", "guardian_contact", "2026-11-03", {"channel": "phone", "summary": "近况"}),
        ("I", "parent_contact", "2026-11-08", {"channel": "video", "summary": "视频通话"}),
    ):
        who = "admin1" if child in "AB" else "admin2"
        body = {"kind": kind, "occurred_on": on, "content": content}
        r = await client.post(f"/children/{ds.children[child]}/care-records", json=body, headers=world.headers(who))
        assert r.status_code == 201, r.text
    r = await client.put(
        f"/schools/{world['school1']}/enrolment/2026-2027-1", json={"pupils": 700}, headers=world.headers("admin1")
    )
    assert r.status_code == 200, r.text
    return ds
