"""Short transactions, one lock order, bounded sends: one bad row never stalls the engine; workers,
escalate-now, acknowledgements and callbacks on the same incident at once never deadlock nor answer 500;
a lock not granted in time is a clear 503; a send never outlives its lease."""

import asyncio
import logging
import re
import time
import uuid

import pytest
import sqlalchemy as sa
from pydantic import ValidationError

from api.db import scoped_session
from api.models.escalation import EscalationStep
from api.models.notifications import (
    MessageStatus,
    OutboundMessage,
)
from api.scoping import SYSTEM
from api.settings import Settings
from tests.test_escalation_support import (
    GRANDMA,
    GRANDPA,
    MOTHER,
    MOTHER_ONLY,
    SIGNATURE_HEADER,
    Kit,
    attempts,
    e164,
    escalation_settings,
    kinds,
)


@pytest.fixture
def settings():
    return escalation_settings(db_pool_size=20)


async def sms_to(kit: Kit, national: str) -> list[OutboundMessage]:
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        stmt = sa.select(OutboundMessage).where(OutboundMessage.address == e164(national))
        return list((await s.execute(stmt.order_by(OutboundMessage.created_at))).scalars())


# ---- 3. one bad row ---------------------------------------------------------------------------------------


async def test_a_step_whose_check_changes_it_and_then_fails_does_not_stall_the_engine(kit, caplog):
    """An incident whose frozen policy lacks a value (as written by an older version): ending its hold
    changes the step (notifying, started) and then fails while queueing the first message. The other rows
    of the same batch, and every later report, still move and their messages still go out."""
    first = await kit.family(MOTHER_ONLY)
    second = await kit.family(MOTHER_ONLY)
    broken = await kit.report(first.child_id, holds=[{"step_no": 2, "minutes": 5}])
    healthy = await kit.report(second.child_id, holds=[{"step_no": 2, "minutes": 5}])
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        await s.execute(
            sa.text("UPDATE incident SET policy = policy - 'max_send_attempts' WHERE id = :id"), {"id": broken["id"]}
        )
    await kit.settle()
    kit.advance(minutes=5, seconds=1)
    with caplog.at_level(logging.ERROR, logger="liushou.escalation.scheduler"):
        await kit.settle()
    assert any(broken["id"] in r.getMessage() or "could not be processed" in r.getMessage() for r in caplog.records)
    assert (await kit.step(healthy["id"], 2))["status"] == "notifying"
    assert (await kit.step(broken["id"], 2))["status"] == "held"  # rolled back alone, retried a minute later
    assert [m.status for m in await sms_to(kit, MOTHER)] == [MessageStatus.delivered]
    # And the engine goes on: a new report is sent at once, the broken row comes back a minute later.
    third = await kit.family(MOTHER_ONLY)
    await kit.report(third.child_id)
    await kit.settle()
    assert len(await sms_to(kit, MOTHER)) == 2
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        step = (
            await s.execute(
                sa.select(EscalationStep).where(
                    EscalationStep.incident_id == uuid.UUID(broken["id"]), EscalationStep.step_no == 2
                )
            )
        ).scalar_one()
        assert step.next_check_at is not None and (step.next_check_at - kit.clock.now()).total_seconds() <= 60


# ---- 4. one lock order ------------------------------------------------------------------------------------


async def post_callback(kit: Kit, path: str, signature: str | None, body: bytes) -> int:
    headers = {"Content-Type": "application/json", **({SIGNATURE_HEADER: signature} if signature else {})}
    return (await kit.client.post(path, content=body, headers=headers)).status_code


async def test_workers_staff_families_officials_and_callbacks_on_one_incident_at_once_never_deadlock(kit, caplog):
    await kit.duty()
    for number in (GRANDMA, GRANDPA):
        await kit.script("voice/numbers", number=e164(number), outcome="no_answer")
    statuses: list[int] = []
    for round_ in range(4):
        family = await kit.family()
        incident = await kit.report(family.child_id)
        iid = incident["id"]
        await kit.settle()  # first calls unanswered, SMS with links out; the providers' receipts are held
        await kit.worker.run_once()
        await kit.relay.settle()
        held, kit.relay.received[:] = list(kit.relay.received), []
        [sms] = [m for m in await sms_to(kit, GRANDMA) if m.channel == "sms" and m.incident_id == uuid.UUID(iid)]
        link = re.search(r"(/ack/[A-Za-z0-9_\-]+)", sms.body)
        assert link is not None
        kit.advance(minutes=5, seconds=1)  # every party is due again
        workers = [kit.new_worker(worker_id=f"w{round_}-{i}") for i in range(3)]
        headers = {
            who: await kit.headers(who_id)
            for who, who_id in (
                ("teacher1", "teacher1"),
                ("father", family.accounts["father"]),
                ("bureau", "bureau"),
                ("official1", "official1"),
            )
        }

        async def post(path: str, who: str, headers: dict[str, dict[str, str]] = headers) -> int:
            return (await kit.client.post(path, headers=headers[who])).status_code

        with caplog.at_level(logging.WARNING, logger="liushou"):
            results = await asyncio.wait_for(
                asyncio.gather(
                    *(w.run_once() for w in workers),
                    post(f"/incidents/{iid}/escalate", "teacher1"),
                    post(f"/incidents/{iid}/acknowledge", "father"),
                    post(f"/incidents/{iid}/acknowledge", "bureau"),
                    post(f"/incidents/{iid}/acknowledge", "official1"),
                    kit.client.post(link.group(1), headers={"Accept": "application/json"}),
                    *(post_callback(kit, *item) for item in held),
                    return_exceptions=True,
                ),
                timeout=60,
            )
        failures = [r for r in results if isinstance(r, BaseException)]
        assert not failures, failures
        statuses += [r if isinstance(r, int) else r.status_code for r in results[3:]]
        await kit.settle()
        told = [p["status"] for s in (await kit.incident(iid))["steps"] for p in s["parties"]]
        assert told.count("told") >= 4, told  # guardian (link), parents (father), bureau and township
    assert all(code < 500 for code in statuses), statuses
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], [r.getMessage() for r in caplog.records]
    assert not [r for r in caplog.records if "deadlock" in r.getMessage().lower()]


async def test_a_request_that_cannot_get_its_lock_in_time_answers_503_retry_after(kit):
    family = await kit.family()
    await kit.duty()
    incident = await kit.report(family.child_id)
    await kit.settle()
    bureau = await kit.headers("bureau")
    # Something holds the incident's steps (a stuck transaction); the engine waits a bounded time, not forever.
    async with kit.app.state.engine.connect() as conn:
        await conn.execute(
            sa.text("SELECT id FROM escalation_step WHERE incident_id = :id FOR UPDATE"), {"id": incident["id"]}
        )
        try:
            began = time.monotonic()
            r = await asyncio.wait_for(
                kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=bureau), timeout=20
            )
            escalate = await asyncio.wait_for(
                kit.client.post(f"/incidents/{incident['id']}/escalate", headers=await kit.headers("teacher1")),
                timeout=20,
            )
        finally:
            await conn.rollback()
    assert time.monotonic() - began < 15
    for answer in (r, escalate):
        assert answer.status_code == 503, answer.text
        assert answer.headers["Retry-After"] == "1" and answer.json()["error"]["code"] == "database_busy"
    # Retried once the rows are free: it works, and nothing of the refused attempt was kept.
    r = await kit.client.post(f"/incidents/{incident['id']}/acknowledge", headers=bureau)
    assert r.status_code == 200 and len(r.json()) == 1
    acks = kinds(await kit.timeline(incident["id"]), "acknowledged")
    assert [a["detail"]["route"] for a in acks].count("mini_program") == 1


# ---- 7. a send never outlives its lease ----------------------------------------------------------------------


def test_a_send_deadline_that_does_not_end_well_inside_the_lease_is_refused():
    with pytest.raises(ValidationError, match="SEND_DEADLINE"):
        Settings(escalation_lease_seconds=60, escalation_send_deadline_seconds=50)
    assert Settings(escalation_lease_seconds=60).send_deadline_seconds == 30
    assert Settings(escalation_lease_seconds=60, escalation_send_deadline_seconds=45).send_deadline_seconds == 45
    with pytest.raises(ValidationError):
        Settings(escalation_lease_seconds=5, escalation_send_deadline_seconds=4)


@pytest.mark.parametrize(
    "settings",
    [
        escalation_settings(
            escalation_send_concurrency=1,
            escalation_lease_seconds=5,
            escalation_send_deadline_seconds=1.0,
            http_timeout_seconds=3.0,
        )
    ],
)
async def test_a_send_is_cut_at_its_deadline_and_one_still_waiting_for_a_slot_is_released_unsent(kit):
    # Two mothers' SMS claimed together, one slot; the provider takes 1.5 s to answer (longer than the
    # deadline, shorter than the HTTP timeout): without the deadline the second would go out after 1.5 s,
    # past the point where another worker may take its lease over.
    for _ in range(2):
        await kit.report((await kit.family(MOTHER_ONLY)).child_id)
    await kit.script("sms/numbers", number=e164(MOTHER), delay_seconds=1.5)
    began = time.monotonic()
    assert await kit.worker.dispatcher.run_once(10) == 2
    assert time.monotonic() - began < 5  # all done, recorded too, inside the lease
    first, second = sorted(await sms_to(kit, MOTHER), key=lambda m: m.attempts, reverse=True)
    # Handed over at once, cut at the deadline: retried later with the same key (the provider had it).
    assert (first.status, first.attempts, first.error_code) == (MessageStatus.pending, 1, "deadline")
    # Never handed over: released as it was, no attempt counted, nothing sent.
    assert (second.status, second.attempts, second.lease_until) == (MessageStatus.pending, 0, None)
    assert await attempts(kit, MOTHER) == [("sms", e164(MOTHER), "accepted")]
