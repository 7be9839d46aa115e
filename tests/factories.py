"""Builders for test data: a small county world with an account of every role and ready tokens."""

import uuid
from dataclasses import dataclass, field
from datetime import datetime

from fastapi import FastAPI

from api.db import scoped_session
from api.models.accounts import Account, LoginSession, Role
from api.models.organisations import County, School, SchoolClass, Township
from api.scoping import SYSTEM
from api.security import issue_access_token

PASSWORD = "correct horse battery staple"


@dataclass
class World:
    ids: dict[str, uuid.UUID] = field(default_factory=dict)
    tokens: dict[str, str] = field(default_factory=dict)

    def headers(self, who: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.tokens[who]}"}

    def __getitem__(self, key: str) -> uuid.UUID:
        return self.ids[key]


async def build_world(app: FastAPI, now: datetime) -> World:
    world = World()
    password_hash = await app.state.passwords.hash(PASSWORD)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        county = County(name="青山县", code="430521")
        other_county = County(name="白水县", code="430522")
        s.add_all([county, other_county])
        await s.flush()
        t1 = Township(county_id=county.id, name="石桥镇")
        t2 = Township(county_id=county.id, name="柳河乡")
        t3 = Township(county_id=other_county.id, name="白沙镇")
        s.add_all([t1, t2, t3])
        await s.flush()
        s1 = School(county_id=county.id, township_id=t1.id, name="石桥镇中心小学", kind="中心小学", pupil_count=743)
        s2 = School(county_id=county.id, township_id=t2.id, name="柳河乡中心小学", kind="中心小学", pupil_count=420)
        s3 = School(county_id=other_county.id, township_id=t3.id, name="白沙镇完小", pupil_count=300)
        s.add_all([s1, s2, s3])
        await s.flush()
        world.ids.update(
            county=county.id,
            other_county=other_county.id,
            township1=t1.id,
            township2=t2.id,
            township3=t3.id,
            school1=s1.id,
            school2=s2.id,
            school3=s3.id,
        )

        def account(
            key: str,
            role: Role,
            name: str,
            school: School | None = None,
            township: Township | None = None,
            county_id: uuid.UUID | None = None,
        ) -> Account:
            if school is not None:
                county_id, township_id, school_id = school.county_id, school.township_id, school.id
            elif township is not None:
                county_id, township_id, school_id = township.county_id, township.id, None
            else:
                township_id, school_id = None, None
            a = Account(
                role=role,
                display_name=name,
                username=key,
                password_hash=password_hash,
                county_id=county_id,
                township_id=township_id,
                school_id=school_id,
            )
            s.add(a)
            return a

        accounts = {
            "platform": account("platform", Role.platform_admin, "平台管理员"),
            "bureau": account("bureau", Role.county_bureau, "青山县教育局", county_id=county.id),
            "other_bureau": account("other_bureau", Role.county_bureau, "白水县教育局", county_id=other_county.id),
            "official1": account("official1", Role.township_official, "石桥镇政府", township=t1),
            "official2": account("official2", Role.township_official, "柳河乡政府", township=t2),
            "admin1": account("admin1", Role.school_admin, "石桥校长", school=s1),
            "admin2": account("admin2", Role.school_admin, "柳河校长", school=s2),
            "admin3": account("admin3", Role.school_admin, "白沙校长", school=s3),
            "teacher1": account("teacher1", Role.teacher, "李老师", school=s1),
            "teacher1b": account("teacher1b", Role.teacher, "王老师", school=s1),
            "teacher2": account("teacher2", Role.teacher, "赵老师", school=s2),
        }
        await s.flush()
        c11 = SchoolClass(school_id=s1.id, grade=3, name="1班", head_teacher_id=accounts["teacher1"].id)
        c12 = SchoolClass(school_id=s1.id, grade=3, name="2班", head_teacher_id=accounts["teacher1b"].id)
        c21 = SchoolClass(school_id=s2.id, grade=4, name="1班", head_teacher_id=accounts["teacher2"].id)
        s.add_all([c11, c12, c21])
        await s.flush()
        world.ids.update(class11=c11.id, class12=c12.id, class21=c21.id)
        for key, a in accounts.items():
            assert key not in world.ids, f"world key {key} names two things"
            world.ids[key] = a.id
            world.tokens[key] = await login_token(s, app, a, now)
    return world


async def login_token(session: object, app: FastAPI, account: Account, now: datetime) -> str:
    """An access token for ``account`` without going through the password endpoint (tests of login do)."""
    login = LoginSession(account_id=account.id, method="password", created_at=now)
    session.add(login)  # type: ignore[attr-defined]
    await session.flush()  # type: ignore[attr-defined]
    return issue_access_token(
        app.state.settings, account_id=account.id, session_id=login.id, role=account.role.value, now=now
    )
