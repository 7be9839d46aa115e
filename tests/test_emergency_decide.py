"""The chain's decisions without a database, table by table: what a party does next, what happens when its
list is used up, what a step's time asks for, when the scheduler looks again, and the report's holds."""

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import pytest

from api.errors import Invalid
from api.models.escalation import PartyStatus, PolicyValues, StepStatus
from api.models.incidents import StepHold
from api.models.notifications import MessageStatus
from api.services.emergency import decide

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)
WAIT = 300  # the acknowledgement wait, seconds


def at(minutes: float) -> datetime:
    return NOW + timedelta(minutes=minutes)


@dataclass
class Message:
    status: MessageStatus
    next_attempt_at: datetime = NOW
    finished_at: datetime | None = None
    ack_wait_until: datetime | None = None
    sent_at: datetime | None = None
    delivered_at: datetime | None = None
    ack_wait_seconds: int = WAIT


@pytest.mark.parametrize(
    ("message", "expected"),
    [
        # still going out: wait one acknowledgement wait past its send time
        (Message(MessageStatus.pending), decide.PartyNext(wait_until=at(5))),
        (Message(MessageStatus.pending, next_attempt_at=at(2)), decide.PartyNext(wait_until=at(7))),
        (Message(MessageStatus.sending, next_attempt_at=at(-9)), decide.PartyNext(wait_until=at(5))),
        # out of the running: next channel or contact at once
        (Message(MessageStatus.failed), decide.PartyNext(reason="previous_failed")),
        (Message(MessageStatus.cancelled), decide.PartyNext(reason="previous_failed")),
        (Message(MessageStatus.unconfirmed), decide.PartyNext(reason="previous_failed")),
        # a call that ended without the 1 pressed: waiting longer is pointless
        (
            Message(MessageStatus.delivered, finished_at=at(-1), ack_wait_until=at(3)),
            decide.PartyNext(reason="call_ended_without_ack"),
        ),
        # sent, wait stored: wait until it ends, then move on
        (Message(MessageStatus.sent, ack_wait_until=at(3)), decide.PartyNext(wait_until=at(3))),
        (Message(MessageStatus.delivered, ack_wait_until=at(0)), decide.PartyNext(reason="no_ack_within_wait")),
        # no wait stored (an older row): anchored once to the first of sent / delivered, never to "now"
        (
            Message(MessageStatus.delivered, sent_at=at(-2), delivered_at=at(-1)),
            decide.PartyNext(wait_until=at(3), ack_wait_until=at(3)),
        ),
        (
            Message(MessageStatus.sent, sent_at=at(-6)),
            decide.PartyNext(reason="no_ack_within_wait", ack_wait_until=at(-1)),
        ),
        (Message(MessageStatus.sent), decide.PartyNext(wait_until=at(5), ack_wait_until=at(5))),
    ],
)
def test_what_a_party_does_next(message, expected):
    assert decide.party_next(message, ack_wait_seconds=WAIT, now=NOW) == expected


@pytest.mark.parametrize(
    ("live", "round_", "max_rounds", "expected"),
    [
        (False, 1, 3, decide.ListUsedUp(flag=PartyStatus.unreachable)),  # nobody usable: at once
        (False, 3, 3, decide.ListUsedUp(flag=PartyStatus.unreachable)),
        (True, 3, 3, decide.ListUsedUp(flag=PartyStatus.exhausted)),
        (True, 1, 3, decide.ListUsedUp(next_round=2, at=at(5))),
        (True, 2, 3, decide.ListUsedUp(next_round=3, at=at(5))),
        (True, 1, 1, decide.ListUsedUp(flag=PartyStatus.exhausted)),
    ],
)
def test_when_the_list_is_used_up(live, round_, max_rounds, expected):
    got = decide.after_last_target(
        any_live_target=live, round_=round_, max_rounds=max_rounds, round_pause_seconds=300, now=NOW
    )
    assert got == expected


@dataclass
class Step:
    status: StepStatus = StepStatus.notifying
    hold_until: datetime | None = None
    deadline_at: datetime = at(30)
    near_margin_seconds: int = 600
    near_alerted_at: datetime | None = None
    breached_at: datetime | None = None
    told_at: datetime | None = None


@pytest.mark.parametrize(
    ("step", "due", "next_check"),
    [
        (Step(), decide.StepDue(), at(20)),  # next: the near-deadline alert
        (Step(deadline_at=at(5)), decide.StepDue(near=True), at(-5)),
        (Step(deadline_at=at(5), near_alerted_at=at(-1)), decide.StepDue(), at(5)),
        (Step(deadline_at=at(0)), decide.StepDue(breach=True), at(-10)),  # never a near alert with it
        (Step(deadline_at=at(-3), breached_at=at(-3), near_alerted_at=at(-13)), decide.StepDue(), None),
        (Step(status=StepStatus.held, hold_until=at(0)), decide.StepDue(start=True), at(0)),
        (Step(status=StepStatus.held, hold_until=at(4)), decide.StepDue(), at(4)),
        (Step(status=StepStatus.told, told_at=at(-1), deadline_at=at(-2)), decide.StepDue(), None),
    ],
)
def test_what_a_steps_time_asks_for(step, due, next_check):
    assert decide.step_due(step, now=NOW) == due
    assert decide.next_step_check(step) == next_check


@pytest.mark.parametrize(
    ("step", "met"),
    [
        (Step(), None),
        (Step(told_at=at(29)), True),
        (Step(told_at=at(30)), True),
        (Step(told_at=at(31), breached_at=at(30)), False),
        (Step(breached_at=at(30)), False),
    ],
)
def test_deadline_met(step, met):
    assert decide.deadline_met(step) is met


POLICY = PolicyValues()  # 30 / 60 / 120 minutes, ack wait 5, at most 10 minutes held, 3 attempts


@pytest.mark.parametrize(
    ("occurred", "holds", "expected"),
    [
        (0, [], [(1, at(30), None), (2, at(60), None), (3, at(120), None)]),
        (-25, [], [(1, at(5), None), (2, at(35), None), (3, at(95), None)]),  # the clock starts when it happened
        (0, [StepHold(step_no=1, minutes=10)], [(1, at(30), at(10)), (2, at(60), None), (3, at(120), None)]),
        (0, [StepHold(step_no=1, minutes=11)], "hold_exceeds_policy"),
        (-10, [StepHold(step_no=1, minutes=10)], "hold_too_long"),  # 3 × 5 minutes no longer fit
        (0, [StepHold(step_no=2, minutes=5), StepHold(step_no=2, minutes=5)], "hold_duplicate"),
    ],
)
def test_the_reports_steps(occurred, holds, expected):
    def plan():
        return decide.plan_steps(POLICY, occurred_at=at(occurred), reported_at=NOW, holds=holds)

    if isinstance(expected, str):
        with pytest.raises(Invalid) as refused:
            plan()
        assert refused.value.code == expected
    else:
        assert plan() == expected
