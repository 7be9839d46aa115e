"""What the chain does next — pure decisions, no I/O (the chain applies them under its locks).

- :func:`party_next`: a notifying party looks at the message it waits on: wait (until when), or move on
  (why: it failed, the call ended, nobody acknowledged within the wait).
- :func:`after_last_target`: the party's list is used up: flag it (nobody usable left, or the rounds are used
  up) or start another round after a pause.
- :func:`step_due`: what a step's time asks for: end its hold, alert near the deadline, record the breach.
- :func:`next_step_check`, :func:`deadline_met`, :func:`plan_steps`: a step's next look, its verdict, and
  the deadlines and holds of a report.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Protocol

from api.errors import Invalid, field_error
from api.models.escalation import PartyStatus, PolicyValues, StepStatus
from api.models.incidents import StepHold
from api.models.notifications import MessageStatus


def step_deadline_minutes(policy: PolicyValues, step_no: int) -> int:
    return {
        1: policy.guardian_deadline_minutes,
        2: policy.parents_deadline_minutes,
        3: policy.authorities_deadline_minutes,
    }[step_no]


# ---- a party ---------------------------------------------------------------------------------------------


class WaitedMessage(Protocol):
    """What :func:`party_next` reads of the message a party waits on (an ``OutboundMessage``)."""

    @property
    def status(self) -> MessageStatus: ...
    @property
    def next_attempt_at(self) -> datetime: ...
    @property
    def finished_at(self) -> datetime | None: ...
    @property
    def ack_wait_until(self) -> datetime | None: ...
    @property
    def sent_at(self) -> datetime | None: ...
    @property
    def delivered_at(self) -> datetime | None: ...
    @property
    def ack_wait_seconds(self) -> int: ...


@dataclass(frozen=True)
class PartyNext:
    """``wait_until`` set: look again then. Otherwise move on to the next target, because of ``reason``.
    ``ack_wait_until``: the end of the acknowledgement wait to store on the message, if it had none."""

    wait_until: datetime | None = None
    reason: str | None = None
    ack_wait_until: datetime | None = None


def party_next(message: WaitedMessage, *, ack_wait_seconds: int, now: datetime) -> PartyNext:
    """A notifying party's look at the message it waits on."""
    if message.status in (MessageStatus.pending, MessageStatus.sending):
        return PartyNext(wait_until=max(message.next_attempt_at, now) + timedelta(seconds=ack_wait_seconds))
    if message.status in (MessageStatus.failed, MessageStatus.cancelled, MessageStatus.unconfirmed):
        return PartyNext(reason="previous_failed")
    if message.finished_at is not None:
        return PartyNext(reason="call_ended_without_ack")
    anchor = None
    wait_until = message.ack_wait_until
    if wait_until is None:
        # Whichever of the send's answer and the receipt came first sets it; should neither have (an older
        # row), anchor it once to what is stored, never to "now" again on every look.
        known = [t for t in (message.sent_at, message.delivered_at) if t is not None]
        anchor = wait_until = min(known, default=now) + timedelta(seconds=message.ack_wait_seconds)
    if now < wait_until:
        return PartyNext(wait_until=wait_until, ack_wait_until=anchor)
    return PartyNext(reason="no_ack_within_wait", ack_wait_until=anchor)


@dataclass(frozen=True)
class ListUsedUp:
    """``flag`` set: flag the party so (to the school's leaders). Otherwise round ``next_round`` at ``at``."""

    flag: PartyStatus | None = None
    next_round: int | None = None
    at: datetime | None = None


def after_last_target(
    *, any_live_target: bool, round_: int, max_rounds: int, round_pause_seconds: int, now: datetime
) -> ListUsedUp:
    """Every target of this round was tried: nobody usable left is unreachable at once; rounds used up are
    exhausted; otherwise the list starts again after the pause."""
    if not any_live_target:
        return ListUsedUp(flag=PartyStatus.unreachable)
    if round_ >= max_rounds:
        return ListUsedUp(flag=PartyStatus.exhausted)
    return ListUsedUp(next_round=round_ + 1, at=now + timedelta(seconds=round_pause_seconds))


# ---- a step ----------------------------------------------------------------------------------------------


class StepTimes(Protocol):
    """What the step rules read of an ``EscalationStep``."""

    @property
    def status(self) -> StepStatus: ...
    @property
    def hold_until(self) -> datetime | None: ...
    @property
    def deadline_at(self) -> datetime: ...
    @property
    def near_margin_seconds(self) -> int: ...
    @property
    def near_alerted_at(self) -> datetime | None: ...
    @property
    def breached_at(self) -> datetime | None: ...
    @property
    def told_at(self) -> datetime | None: ...


@dataclass(frozen=True)
class StepDue:
    start: bool = False  # its hold is over
    breach: bool = False  # its deadline passed untold (alert the leaders)
    near: bool = False  # its deadline is near and it is not told (alert the leaders)


def step_due(step: StepTimes, *, now: datetime) -> StepDue:
    """What a step's time asks for now. A breach and a near alert never come together: once the deadline
    passed, only the breach is told."""
    start = step.status == StepStatus.held and step.hold_until is not None and step.hold_until <= now
    if step.status == StepStatus.told or step.breached_at is not None:
        return StepDue(start=start)
    if now >= step.deadline_at:
        return StepDue(start=start, breach=True)
    near = step.near_alerted_at is None and now >= step.deadline_at - timedelta(seconds=step.near_margin_seconds)
    return StepDue(start=start, near=near)


def next_step_check(step: StepTimes) -> datetime | None:
    """When the step needs the scheduler again: end of hold, near-deadline alert, deadline; none once told."""
    if step.status == StepStatus.told:
        return None
    moments = []
    if step.status == StepStatus.held and step.hold_until is not None:
        moments.append(step.hold_until)
    if step.breached_at is None:
        moments.append(step.deadline_at)
        if step.near_alerted_at is None:
            near = step.deadline_at - timedelta(seconds=step.near_margin_seconds)
            moments.append(near)
    return min(moments) if moments else None


def deadline_met(step: StepTimes) -> bool | None:
    """True / False once known (told, or breached untold); None while it is still open and in time."""
    if step.told_at is not None:
        return step.told_at <= step.deadline_at
    return False if step.breached_at is not None else None


# ---- the report ------------------------------------------------------------------------------------------


def plan_steps(
    policy: PolicyValues, *, occurred_at: datetime, reported_at: datetime, holds: Sequence[StepHold]
) -> list[tuple[int, datetime, datetime | None]]:
    """(step_no, deadline_at, hold_until) for each step; refuses a hold that would not leave room for
    ``min_attempts_before_deadline`` acknowledgement waits before the deadline."""
    by_step: dict[int, int] = {}
    for i, hold in enumerate(holds):
        if hold.step_no in by_step:
            raise Invalid(
                "同一步骤只能暂缓一次 (one hold per step)",
                code="hold_duplicate",
                fields=[field_error(["body", "holds", i], "重复的步骤", "hold_duplicate")],
            )
        by_step[hold.step_no] = hold.minutes
    plan = []
    for step_no in (1, 2, 3):
        deadline_at = occurred_at + timedelta(minutes=step_deadline_minutes(policy, step_no))
        hold_until = None
        minutes = by_step.get(step_no)
        if minutes is not None:
            loc: list[str | int] = ["body", "holds", [h.step_no for h in holds].index(step_no)]
            if minutes > policy.max_hold_minutes:
                raise Invalid(
                    f"第{step_no}步最多暂缓{policy.max_hold_minutes}分钟 (hold longer than the county allows)",
                    code="hold_exceeds_policy",
                    fields=[field_error(loc, f"最多{policy.max_hold_minutes}分钟", "hold_exceeds_policy")],
                )
            hold_until = reported_at + timedelta(minutes=minutes)
            needed = timedelta(minutes=policy.min_attempts_before_deadline * policy.ack_wait_minutes)
            if hold_until + needed > deadline_at:
                latest = max(0, int((deadline_at - needed - reported_at).total_seconds() // 60))
                raise Invalid(
                    f"第{step_no}步暂缓后来不及在时限前完成通知和重试，最多可暂缓{latest}分钟"
                    " (the hold leaves too little time before the deadline)",
                    code="hold_too_long",
                    fields=[field_error(loc, f"最多可暂缓{latest}分钟", "hold_too_long")],
                )
        plan.append((step_no, deadline_at, hold_until))
    return plan
