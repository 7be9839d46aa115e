"""The weekly care digest, sent by the worker through the outbox to the fake providers: once per teacher and
week however often the worker runs (or crashes before committing), counts only on WeChat, SMS when WeChat has
no subscription left, and each item overdue by more than a week told to the leaders once — not every week."""

from datetime import UTC, date, datetime, timedelta

import pytest
import sqlalchemy as sa

from api.db import scoped_session
from api.models.accounts import Account
from api.models.care_rhythm import CareDigestRun, CareOverdueFlag
from api.models.children import Child, Sex
from api.models.notifications import OutboundMessage, Topic
from api.scoping import SYSTEM, set_principal
from api.services.care.digest import digest_week, send_school_digest
from tests.test_escalation_support import LEADER, e164, escalation_settings

TEACHER_PHONE = "13500135011"
TEACHER_B_PHONE = "13500135012"
NAMES = ["欧阳小雨", "司马小川", "上官小月"]


@pytest.fixture
def settings():
    return escalation_settings()


@pytest.fixture
async def school(kit):
    """Three children of class 3(1), on file since 20 August with nothing recorded; 李老师 (teacher1) on WeChat
    and SMS, 王老师 (teacher1b) the proxy parent of one of them on SMS only; the principal (admin1) on SMS."""
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        children = []
        for name in NAMES:
            child = Child(
                school_id=kit.world["school1"],
                class_id=kit.world["class11"],
                name=name,
                sex=Sex.male,
                birth_date=date(2016, 1, 1),
                created_at=datetime(2026, 8, 20, 2, 0, tzinfo=UTC),
            )
            s.add(child)
            children.append(child)
        teacher = await s.get_one(Account, kit.world["teacher1"])
        teacher.wechat_openid, teacher.phone = "o-teacher-li", TEACHER_PHONE
        other = await s.get_one(Account, kit.world["teacher1b"])
        other.phone = TEACHER_B_PHONE
        await s.flush()
        ids = [c.id for c in children]
    await kit.leader_phone(LEADER)
    r = await kit.client.post(
        f"/children/{ids[2]}/care-pairings",
        json={"kind": "proxy_parent", "staff_id": str(kit.world["teacher1b"]), "started_on": "2026-09-01"},
        headers=await kit.headers("admin1"),
    )
    assert r.status_code == 201, r.text
    return ids


async def care_messages(kit) -> list[OutboundMessage]:
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        stmt = sa.select(OutboundMessage).where(OutboundMessage.topic == Topic.care_digest)
        return list((await s.execute(stmt.order_by(OutboundMessage.created_at))).scalars())


def test_the_digest_goes_out_from_monday_seven_in_shanghai():
    assert digest_week(datetime(2026, 11, 22, 22, 59, tzinfo=UTC)) is None  # Monday 06:59 in Shanghai
    assert digest_week(datetime(2026, 11, 22, 23, 0, tzinfo=UTC)) == date(2026, 11, 23)  # 07:00
    assert digest_week(datetime(2026, 11, 29, 15, 59, tzinfo=UTC)) == date(2026, 11, 23)  # Sunday 23:59
    assert digest_week(datetime(2026, 11, 29, 16, 0, tzinfo=UTC)) is None  # Monday 00:00, before 07:00


async def test_one_digest_per_teacher_per_week_with_counts_only(kit, school):
    await kit.settle()
    await kit.settle()  # the worker runs again: nothing new
    await kit.new_worker(worker_id="second").run_once()  # and another worker
    box = await kit.outbox()
    wechat = [m for m in box["wechat_messages"] if m["touser"] == "o-teacher-li"]
    assert len(wechat) == 1
    fields = {k: v["value"] for k, v in wechat[0]["data"].items()}
    assert fields["thing1"] == "本周关爱工作待办" and fields["character_string4"] == "2026-W48"
    assert int(fields["number2"]) > 0  # overdue items of his class
    assert wechat[0]["template_id"] == kit.app.state.settings.wechat_care_digest_template_id
    assert not any(name in str(m) for m in box["wechat_messages"] for name in NAMES)
    # 王老师 has no WeChat: his digest is an SMS with counts, without names
    sms_b = await kit.sent_to(TEACHER_B_PHONE)
    assert len(sms_b) == 1 and "已逾期" in sms_b[0][1] and not any(n in sms_b[0][1] for n in NAMES)
    assert await kit.sent_to(TEACHER_PHONE) == []  # WeChat worked: no SMS
    # the principal: one alert about the items overdue by more than a week
    leader = await kit.sent_to(LEADER)
    assert len(leader) == 1 and "涉及3名儿童" in leader[0][1]
    messages = await care_messages(kit)
    assert len(messages) == 3 and len({m.dedupe_key for m in messages}) == 3


async def test_no_subscription_left_falls_back_to_sms(kit, school):
    await kit.script("wechat/users", openid="o-teacher-li", subscriptions=0)
    await kit.settle()
    sms = await kit.sent_to(TEACHER_PHONE)
    assert len(sms) == 1 and sms[0][1].startswith("【留守儿童关爱】李老师")


async def test_a_crash_before_commit_leaves_nothing_and_the_next_pass_sends_once(kit, school):
    now = kit.clock.now()
    async with kit.app.state.sessionmaker() as s:
        await set_principal(s, SYSTEM)  # as the worker's sessions are
        outcome = await send_school_digest(
            s, school_id=kit.world["school1"], monday=date(2026, 11, 23), now=now, settings=kit.app.state.settings
        )
        assert outcome is not None and outcome.digests == 2 and outcome.flagged > 0
        await s.rollback()  # the worker died before its commit
    assert await care_messages(kit) == []
    await kit.settle()
    assert len(await care_messages(kit)) == 3
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        again = await send_school_digest(
            s, school_id=kit.world["school1"], monday=date(2026, 11, 23), now=now, settings=kit.app.state.settings
        )
    assert again is None  # the week is taken


async def test_leaders_hear_of_an_overdue_item_once_not_every_week(kit, school):
    await kit.settle()
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        flags = (await s.execute(sa.select(sa.func.count()).select_from(CareOverdueFlag))).scalar_one()
    assert flags > 0
    kit.clock.advance(timedelta(days=7))  # the next Tuesday: the same items are still overdue
    await kit.settle()
    assert len(await kit.sent_to(LEADER)) == 1  # no second alert
    assert len(await kit.sent_to(TEACHER_B_PHONE)) == 2  # but a new weekly digest
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        runs = (await s.execute(sa.select(CareDigestRun).order_by(CareDigestRun.week_start))).scalars().all()
        assert [r.week_start for r in runs if r.school_id == kit.world["school1"]] == [
            date(2026, 11, 23),
            date(2026, 11, 30),
        ]
        assert (await s.execute(sa.select(sa.func.count()).select_from(CareOverdueFlag))).scalar_one() == flags
    assert e164(LEADER).startswith("+86")
