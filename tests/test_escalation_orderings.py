"""Whatever order receipts, send answers and crashes come in, every party is followed up within its wait,
and the timeline tells what really happened, in its real order (the send, then the delivery)."""

from datetime import timedelta

import pytest
import sqlalchemy as sa

from api.db import scoped_session
from api.models.guardians import GuardianRole
from api.models.notifications import (
    MessageStatus,
    OutboundMessage,
)
from api.scoping import SYSTEM
from tests.test_escalation_support import MOTHER, MOTHER_ONLY, Kit, attempts, e164, escalation_settings, kinds

STORY = ("message_queued", "message_sent", "message_delivered", "message_failed", "no_ack_within_wait")


@pytest.fixture
def settings():
    return escalation_settings()


async def messages(kit: Kit) -> list[OutboundMessage]:
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        stmt = sa.select(OutboundMessage).where(OutboundMessage.address == e164(MOTHER))
        return list((await s.execute(stmt.order_by(OutboundMessage.created_at))).scalars())


async def story(kit: Kit, incident_id: str) -> list[tuple[str, str | None]]:
    """The mother's lines of the timeline, in the order it shows them."""
    entries = kinds(await kit.timeline(incident_id), *STORY)
    return [(e["kind"], e["channel"]) for e in entries if e["step_no"] == 2]


async def sent_but_not_recorded(kit: Kit, worker_id: str = "doomed"):
    """A worker claims the mother's SMS and sends it; the provider has answered, nothing is recorded yet."""
    doomed = kit.new_worker(worker_id=worker_id)
    [claimed] = [c for c in await doomed.dispatcher.claim(10) if c.address == e164(MOTHER)]
    outcome = await doomed.dispatcher.send(claimed)
    assert outcome.kind == "sent"
    return doomed, claimed, outcome


async def test_a_receipt_before_the_answer_then_a_crash_still_moves_the_party_on_within_its_wait(kit):
    family = await kit.family(MOTHER_ONLY)
    incident = await kit.report(family.child_id)
    await sent_but_not_recorded(kit)
    await kit.relay.settle()
    await kit.forward()  # "delivered" lands; then the worker dies without recording the provider's answer
    [sms] = await messages(kit)
    assert sms.status == MessageStatus.delivered and sms.sent_at == kit.clock.now()
    assert sms.ack_wait_until == sms.sent_at + timedelta(minutes=5)
    assert await story(kit, incident["id"]) == [
        ("message_queued", "sms"),
        ("message_sent", "sms"),
        ("message_delivered", "sms"),
    ]
    # Nobody acknowledges: after the wait, and however often the scheduler looks meanwhile, it moves on.
    for _ in range(5):
        kit.advance(minutes=1)
        await kit.settle()
    kit.advance(seconds=1)
    await kit.settle()
    assert (await story(kit, incident["id"]))[3:5] == [("no_ack_within_wait", "sms"), ("message_queued", "voice")]
    assert ("voice", e164(MOTHER), "accepted") in await attempts(kit, MOTHER)


async def test_a_receipt_before_the_answer_then_the_answer_tells_the_send_once(kit):
    family = await kit.family(MOTHER_ONLY)
    incident = await kit.report(family.child_id)
    doomed, claimed, outcome = await sent_but_not_recorded(kit)
    await kit.relay.settle()
    await kit.forward()
    kit.advance(seconds=2)
    await doomed.dispatcher.record([(claimed, outcome)])
    [sms] = await messages(kit)
    assert (sms.status, sms.sent_at, sms.provider_message_id) == (
        MessageStatus.delivered,
        kit.clock.now() - timedelta(seconds=2),
        outcome.provider_message_id,
    )
    assert await story(kit, incident["id"]) == [
        ("message_queued", "sms"),
        ("message_sent", "sms"),
        ("message_delivered", "sms"),
    ]


async def test_the_answer_then_the_receipt_is_the_ordinary_story(kit):
    family = await kit.family(MOTHER_ONLY)
    incident = await kit.report(family.child_id)
    doomed, claimed, outcome = await sent_but_not_recorded(kit)
    await doomed.dispatcher.record([(claimed, outcome)])
    kit.advance(seconds=3)
    await kit.relay.settle()
    await kit.forward()
    [sms] = await messages(kit)
    assert sms.status == MessageStatus.delivered
    # The wait counts from the send, the first of the two.
    assert sms.ack_wait_until == sms.sent_at + timedelta(minutes=5) == kit.clock.now() + timedelta(seconds=297)
    assert await story(kit, incident["id"]) == [
        ("message_queued", "sms"),
        ("message_sent", "sms"),
        ("message_delivered", "sms"),
    ]


@pytest.mark.parametrize("answer_recorded", [True, False], ids=["then-the-answer", "then-a-crash"])
async def test_a_bounce_before_the_answer_is_told_after_the_send_and_moves_on_at_once(kit, answer_recorded):
    family = await kit.family(MOTHER_ONLY)
    await kit.script("sms/numbers", number=e164(MOTHER), receipt="failed")
    incident = await kit.report(family.child_id)
    doomed, claimed, outcome = await sent_but_not_recorded(kit)
    await kit.relay.settle()
    await kit.forward()
    if answer_recorded:
        await doomed.dispatcher.record([(claimed, outcome)])
    [sms] = await messages(kit)
    assert (sms.status, sms.error_code) == (MessageStatus.failed, "undeliverable") and sms.sent_at is not None
    await kit.settle()
    assert (await story(kit, incident["id"]))[:4] == [
        ("message_queued", "sms"),
        ("message_sent", "sms"),
        ("message_failed", "sms"),
        ("message_queued", "voice"),
    ]
    assert ("voice", e164(MOTHER), "accepted") in await attempts(kit, MOTHER)


async def test_a_keypress_before_the_answer_tells_the_call_then_the_acknowledgement(kit):
    family = await kit.family(
        [
            {
                "key": "grandma",
                "role": GuardianRole.entrusted_guardian,
                "relation": "祖母",
                "name": "王桂英",
                "phone": MOTHER,
            }
        ]
    )
    incident = await kit.report(family.child_id)
    await sent_but_not_recorded(kit)  # the call: answered, 1 pressed, ended — all before the answer is recorded
    await kit.relay.settle()
    await kit.forward()
    [call] = await messages(kit)
    assert call.status == MessageStatus.delivered and call.sent_at is not None
    entries = [(e["kind"], e["channel"]) for e in await kit.timeline(incident["id"]) if e["step_no"] == 1]
    wanted = ["message_sent", "call_answered", "acknowledged", "party_told", "call_ended"]
    assert [k for k, _ in entries if k in wanted] == wanted
    assert (await kit.party(incident["id"], "entrusted_guardian"))["status"] == "told"


async def test_a_message_left_delivered_without_its_send_time_is_still_followed_up(kit):
    """Rows written before the wait was anchored (delivered, no sent_at, no ack_wait_until): the scheduler
    anchors the wait once to what is stored, instead of "now + wait" on every look."""
    family = await kit.family(MOTHER_ONLY)
    incident = await kit.report(family.child_id)
    await kit.settle()
    async with scoped_session(kit.app.state.sessionmaker, SYSTEM) as s:
        await s.execute(
            sa.update(OutboundMessage)
            .where(OutboundMessage.address == e164(MOTHER))
            .values(sent_at=None, ack_wait_until=None)
        )
    for _ in range(5):
        kit.advance(minutes=1, seconds=1)
        await kit.settle()
    lines = await story(kit, incident["id"])
    moved_on = lines.index(("no_ack_within_wait", "sms"))
    assert lines[moved_on + 1] == ("message_queued", "voice")
