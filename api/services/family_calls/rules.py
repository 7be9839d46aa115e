"""Refusals with stable codes: whether a booking, a cancellation or a step of a call's life may happen.

Pure: each function takes what it needs and answers ``None`` (allowed) or a :class:`Refusal` whose ``code``
the mini-program shows a message for. What concurrency could break (a booth, a child's other call, the
weekly quota) is not decided here but by the database; its refusals use the codes below too.
"""

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from api.models.family_calls import CallStatus
from api.services.family_calls.hours import Interval
from api.services.family_calls.slots import LineTimes, bookable_window, slot_starts


@dataclass(frozen=True)
class Refusal:
    code: str
    message: str
    status: int = 409


SLOT_TAKEN = Refusal("slot_taken", "该时段已约满 (this slot has just been taken; pick another)")
CHILD_BUSY = Refusal("child_busy", "孩子在这个时间已有通话 (the child already has a call at that time)")
QUOTA_REACHED = Refusal("quota_reached", "本周预约次数已用完 (this week's calls for the child are all booked)")
NOT_THIS_CHILDS_FAMILY = Refusal(
    "not_this_childs_family", "只有孩子的家长或监护人可以预约 (only the child's own family can book)", 403
)
GUARDIAN_NOT_LINKED = Refusal(
    "not_this_childs_family", "该监护人不是这个孩子的家人 (this guardian is not one of the child's family)", 422
)
LINE_CLOSED = Refusal("line_closed", "该线路已停用 (this line is not in use)")
OUTSIDE_HOURS = Refusal("outside_hours", "不在开放时间内 (the line is not open then)", 422)
NOT_A_SLOT = Refusal("not_a_slot", "请选择列出的时段 (start at one of the offered slots)", 422)
TOO_SOON = Refusal("too_soon", "预约时间太近 (too soon: the school needs more notice)", 422)
TOO_FAR_AHEAD = Refusal("too_far_ahead", "只能预约近期的时段 (too far ahead)", 422)
PAST_CUTOFF = Refusal("past_cutoff", "已过取消截止时间, 请联系学校 (too late to cancel; call the school)")
REASON_REQUIRED = Refusal("reason_required", "学校取消须说明原因 (the school must give a reason)", 422)
NOT_STARTED = Refusal("not_started", "通话时间还没到 (the call has not started yet)")
CONFIRMATION_OFF = Refusal("confirmation_not_used", "本校预约无需确认 (this school does not confirm bookings)")
IDEMPOTENCY_KEY_REUSED = Refusal(
    "idempotency_key_reused", "同一请求编号用于不同的预约 (this Idempotency-Key was used for another booking)", 422
)


def booking_refusal(
    start: datetime, intervals: Iterable[Interval], line: LineTimes, *, now: datetime, is_active: bool = True
) -> Refusal | None:
    """Whether a call may be booked at ``start``: the line in use, the start one of its slots, within notice
    and horizon. Hours are checked before notice so that a start the line never offers says so."""
    if not is_active:
        return LINE_CLOSED
    intervals = list(intervals)
    if not any(open_at <= start < close_at for open_at, close_at in intervals):
        return OUTSIDE_HOURS
    if start not in {s for s, _ in slot_starts(intervals, line)}:
        return NOT_A_SLOT
    earliest, latest = bookable_window(now, line)
    if start < earliest:
        return TOO_SOON
    if start > latest:
        return TOO_FAR_AHEAD
    return None


# What may follow what; anything else answers ``call_not_open`` / ``wrong_status``.
_NEXT: dict[str, set[CallStatus]] = {
    "confirm": {CallStatus.booked},
    "complete": {CallStatus.booked, CallStatus.confirmed},
    "miss": {CallStatus.booked, CallStatus.confirmed},
    "cancel": {CallStatus.booked, CallStatus.confirmed},
    "reschedule": {CallStatus.booked, CallStatus.confirmed},
}


def step_refusal(
    action: str,
    status: CallStatus,
    *,
    now: datetime,
    starts_at: datetime,
    by_family: bool = False,
    cutoff_minutes: int = 0,
    reason: str | None = None,
    requires_confirmation: bool = True,
) -> Refusal | None:
    """Whether ``action`` (confirm, complete, miss, cancel, reschedule) may be done to a call in ``status``.

    A family cancels or moves a call up to the school's cut-off before it; the school cancels at any time
    before the call ends but must say why. A call is completed or marked missed once it has started."""
    if status not in _NEXT[action]:
        return Refusal("wrong_status", f"该通话当前状态为 {status.value}, 不能{action} (the call is {status.value})")
    if action == "confirm" and not requires_confirmation:
        return CONFIRMATION_OFF
    if action in ("complete", "miss") and now < starts_at:
        return NOT_STARTED
    if action in ("cancel", "reschedule"):
        if by_family and now > starts_at - timedelta(minutes=cutoff_minutes):
            return PAST_CUTOFF
        if not by_family and action == "cancel" and not reason:
            return REASON_REQUIRED
    return None
