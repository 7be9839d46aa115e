"""亲情电话, the pure decisions: opening hours in Asia/Shanghai, free slots, and the refusals with their codes."""

import random
from datetime import UTC, date, datetime, time, timedelta

import pytest

from api.clock import SHANGHAI
from api.models.family_calls import CallStatus
from api.services.family_calls import rules
from api.services.family_calls.hours import Hours, Window, open_intervals, week_start, windows_on
from api.services.family_calls.slots import Held, LineTimes, free_slots, slot_starts


def sh(day: date, hhmm: str) -> datetime:
    """A Shanghai wall time as an aware UTC instant."""
    return datetime.combine(day, time.fromisoformat(hhmm), SHANGHAI).astimezone(UTC)


W = Window.parse
MON, TUE, SAT, SUN = date(2026, 11, 23), date(2026, 11, 24), date(2026, 11, 28), date(2026, 11, 29)
LIUYI = date(2027, 6, 1)  # 六一, a Tuesday

HOURS = Hours(
    weekly={
        0: [W("07:00", "08:00"), W("12:00", "13:30")],  # Monday
        1: [W("12:00", "13:30"), W("14:00", "16:00"), W("15:30", "17:00")],  # Tuesday: overlapping windows
        5: [W("22:00", "01:00")],  # Saturday night, past midnight
        6: [W("09:00", "11:00")],  # Sunday
    },
    overrides={
        date(2026, 11, 30): [],  # a Monday closed for exams
        date(2026, 12, 7): [W("16:00", "17:00")],  # a Monday with moved hours
        date(2027, 6, 8): [],  # closed on a Tuesday that the county calls a festival day: the school wins
    },
    festivals={LIUYI: [W("18:00", "21:00")], date(2027, 6, 8): [W("18:00", "21:00")]},
)


@pytest.mark.parametrize(
    ("day", "expected"),
    [
        (MON, [("07:00", "08:00"), ("12:00", "13:30")]),
        (TUE, [("12:00", "13:30"), ("14:00", "17:00")]),  # 14–16 and 15:30–17 are one stretch
        (date(2026, 11, 25), []),  # a Wednesday with no windows
        (date(2026, 11, 30), []),  # override: closed
        (date(2026, 12, 7), [("16:00", "17:00")]),  # override replaces the weekly hours
        (LIUYI, [("12:00", "13:30"), ("14:00", "17:00"), ("18:00", "21:00")]),  # festival adds hours
        (date(2027, 6, 8), []),  # the school's override beats the festival
        (SUN, [("09:00", "11:00")]),
    ],
)
def test_the_hours_of_a_date(day: date, expected: list[tuple[str, str]]) -> None:
    assert windows_on(HOURS, day) == [(sh(day, a), sh(day, b)) for a, b in expected]


def test_a_window_past_midnight_belongs_to_the_day_it_starts_and_ends_the_next() -> None:
    assert windows_on(HOURS, SAT) == [(sh(SAT, "22:00"), sh(SUN, "01:00"))]
    # Asked from Sunday on, the Saturday window is not Sunday's (the day before is fetched by the caller).
    assert open_intervals(HOURS, SUN, SUN) == [(sh(SUN, "09:00"), sh(SUN, "11:00"))]
    assert open_intervals(HOURS, SAT, SUN) == [
        (sh(SAT, "22:00"), sh(SUN, "01:00")),
        (sh(SUN, "09:00"), sh(SUN, "11:00")),
    ]


def test_shanghai_wall_time_is_utc_plus_eight_all_year() -> None:
    assert sh(date(2026, 7, 1), "07:00") == datetime(2026, 6, 30, 23, 0, tzinfo=UTC)
    assert sh(date(2026, 1, 1), "07:00") == datetime(2025, 12, 31, 23, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("moment", "monday"),
    [
        (sh(SUN, "23:59"), MON),  # Sunday night in Shanghai is still the week of Monday the 23rd
        (sh(date(2026, 11, 30), "00:00"), date(2026, 11, 30)),  # though it is Sunday 16:00 in UTC
        (sh(TUE, "12:00"), MON),
    ],
)
def test_the_quota_week_is_monday_to_sunday_in_shanghai(moment: datetime, monday: date) -> None:
    assert week_start(moment) == monday


PHONE = LineTimes(slot_minutes=15, buffer_minutes=5, capacity=1, min_notice_minutes=120, horizon_days=14)
ROOM = LineTimes(slot_minutes=15, buffer_minutes=5, capacity=3, min_notice_minutes=120, horizon_days=14)


def test_slots_step_by_length_plus_buffer_and_end_by_the_close() -> None:
    starts = [s for s, _ in slot_starts([(sh(MON, "07:00"), sh(MON, "08:00"))], PHONE)]
    assert starts == [sh(MON, "07:00"), sh(MON, "07:20"), sh(MON, "07:40")]  # 07:40–07:55 fits; 08:00 does not


def test_slots_run_past_midnight() -> None:
    starts = [s for s, _ in slot_starts(windows_on(HOURS, SAT), PHONE)]
    assert starts[-1] == sh(SUN, "00:40") and len(starts) == 9


NOW = sh(MON, "06:00")


@pytest.mark.parametrize(
    ("line", "held", "expected"),
    [
        (PHONE, [], {"08:00": 1, "08:20": 1, "08:40": 1}),
        (PHONE, [("08:20", "08:40", 1)], {"08:00": 1, "08:40": 1}),
        # A call off the grid (hours changed after booking) blocks every slot it overlaps, buffer included.
        (PHONE, [("08:30", "08:50", 1)], {"08:00": 1}),
        (ROOM, [("08:20", "08:40", 1), ("08:20", "08:40", 2)], {"08:00": 3, "08:20": 1, "08:40": 3}),
        (ROOM, [("08:20", "08:40", b) for b in (1, 2, 3)], {"08:00": 3, "08:40": 3}),
        # A booth beyond a capacity that was lowered since does not count against the booths there are.
        (PHONE, [("08:00", "08:20", 2)], {"08:00": 1, "08:20": 1, "08:40": 1}),
    ],
)
def test_free_slots_subtract_the_booths_held(line, held, expected) -> None:  # type: ignore[no-untyped-def]
    intervals = [(sh(MON, "08:00"), sh(MON, "09:00"))]
    holds = [Held(sh(MON, a), sh(MON, b), booth) for a, b, booth in held]
    slots = free_slots(intervals, holds, line, now=NOW)
    assert {s.starts_at.astimezone(SHANGHAI).strftime("%H:%M"): s.free for s in slots} == expected


@pytest.mark.parametrize(
    ("now", "first", "last"),
    [
        (sh(MON, "06:00"), "08:00", "08:40"),
        (sh(MON, "06:01"), "08:20", "08:40"),  # 08:00 is now less than 2 hours away
        (sh(MON, "06:40"), "08:40", "08:40"),
    ],
)
def test_notice_hides_the_slots_too_soon(now: datetime, first: str, last: str) -> None:
    slots = free_slots([(sh(MON, "08:00"), sh(MON, "09:00"))], [], PHONE, now=now)
    assert (slots[0].starts_at, slots[-1].starts_at) == (sh(MON, first), sh(MON, last))


def test_the_horizon_hides_the_slots_too_far_ahead() -> None:
    intervals = open_intervals(HOURS, MON, MON + timedelta(days=20))
    slots = free_slots(intervals, [], PHONE, now=NOW)
    assert max(s.starts_at for s in slots) <= NOW + timedelta(days=14)
    assert any(s.starts_at > NOW + timedelta(days=13) for s in slots)


def naive_free_slots(intervals, held, line, *, now, since, until):  # type: ignore[no-untyped-def]
    """Every slot of every interval checked against every hold: slow, obviously right, for comparison."""
    grid = set()
    for open_at, close_at in intervals:
        start = open_at
        while start + line.slot <= close_at:
            grid.add(start)
            start += line.step
    out = []
    for start in sorted(grid):
        if start < max(now + timedelta(minutes=line.min_notice_minutes), since) or start >= until:
            continue
        if start > now + timedelta(days=line.horizon_days):
            continue
        blocked = start + line.step
        booths = {
            h.booth for h in held if h.starts_at < blocked and start < h.blocked_until and h.booth <= line.capacity
        }
        if len(booths) < line.capacity:
            out.append((start, start + line.slot, line.capacity - len(booths)))
    return out


@pytest.mark.parametrize("seed", range(40))
def test_free_slots_agree_with_checking_every_slot_against_every_hold(seed: int) -> None:
    """Random hours (windows past midnight and overlapping ones included), holds on and off the grid,
    capacities lowered under old booths, notice, horizon and a range that starts and ends mid-interval."""
    rng = random.Random(seed)
    weekly = {}
    for weekday in range(7):
        windows = []
        for _ in range(rng.randint(0, 3)):
            a = time(rng.randint(0, 23), rng.choice((0, 10, 15, 30, 45)))
            b = time(rng.randint(0, 23), rng.choice((0, 20, 30, 50)))
            windows.append(Window(a, b))
        weekly[weekday] = windows
    line = LineTimes(rng.choice((10, 15, 20)), rng.choice((0, 5, 10)), rng.randint(1, 4), rng.choice((0, 120)), 14)
    hours = Hours(weekly=weekly, overrides={}, festivals={})
    intervals = open_intervals(hours, MON - timedelta(days=1), MON + timedelta(days=16))
    held = []
    for _ in range(rng.randint(0, 200)):
        start = sh(MON, "00:00") + timedelta(minutes=5 * rng.randint(0, 16 * 24 * 12))
        held.append(Held(start, start + timedelta(minutes=rng.choice((15, 20, 25, 40))), rng.randint(1, 5)))
    now = sh(MON, "00:00") + timedelta(minutes=rng.randint(0, 3 * 24 * 60))
    since = sh(MON, "00:00") + timedelta(minutes=rng.randint(0, 2 * 24 * 60))
    until = since + timedelta(minutes=rng.randint(60, 14 * 24 * 60))
    fast = free_slots(intervals, held, line, now=now, since=since, until=until)
    expected = naive_free_slots(intervals, held, line, now=now, since=since, until=until)
    assert [(s.starts_at, s.ends_at, s.free) for s in fast] == expected


INTERVALS = [(sh(MON, "08:00"), sh(MON, "09:00"))]


@pytest.mark.parametrize(
    ("start", "now", "active", "code"),
    [
        (sh(MON, "08:20"), NOW, True, None),
        (sh(MON, "08:20"), NOW, False, "line_closed"),
        (sh(MON, "09:00"), NOW, True, "outside_hours"),
        (sh(MON, "07:59"), NOW, True, "outside_hours"),
        (sh(MON, "08:10"), NOW, True, "not_a_slot"),
        (sh(MON, "08:00"), sh(MON, "06:30"), True, "too_soon"),
        (sh(MON, "08:00"), sh(MON, "08:30"), True, "too_soon"),  # in the past
        (sh(MON, "08:00"), NOW - timedelta(days=15), True, "too_far_ahead"),
    ],
)
def test_booking_refusals(start: datetime, now: datetime, active: bool, code: str | None) -> None:
    refusal = rules.booking_refusal(start, INTERVALS, PHONE, now=now, is_active=active)
    assert (refusal.code if refusal else None) == code


START = sh(TUE, "12:00")


@pytest.mark.parametrize(
    ("action", "status", "now", "kw", "code"),
    [
        ("confirm", CallStatus.booked, NOW, {}, None),
        ("confirm", CallStatus.booked, NOW, {"requires_confirmation": False}, "confirmation_not_used"),
        ("confirm", CallStatus.confirmed, NOW, {}, "wrong_status"),
        ("complete", CallStatus.confirmed, START, {}, None),
        ("complete", CallStatus.booked, START - timedelta(minutes=1), {}, "not_started"),
        ("complete", CallStatus.cancelled, START, {}, "wrong_status"),
        ("miss", CallStatus.booked, START + timedelta(minutes=30), {}, None),
        ("miss", CallStatus.completed, START, {}, "wrong_status"),
        # The family cancels up to the cut-off (2 hours before) and not a minute after.
        ("cancel", CallStatus.booked, START - timedelta(hours=2), {"by_family": True, "cutoff_minutes": 120}, None),
        (
            "cancel",
            CallStatus.booked,
            START - timedelta(hours=2) + timedelta(minutes=1),
            {"by_family": True, "cutoff_minutes": 120},
            "past_cutoff",
        ),
        ("reschedule", CallStatus.confirmed, START, {"by_family": True, "cutoff_minutes": 120}, "past_cutoff"),
        # The school cancels at any time, with a reason.
        ("cancel", CallStatus.confirmed, START - timedelta(minutes=5), {"reason": "停电"}, None),
        ("cancel", CallStatus.confirmed, START, {}, "reason_required"),
        ("cancel", CallStatus.cancelled, NOW, {"reason": "x"}, "wrong_status"),
        ("reschedule", CallStatus.booked, START - timedelta(minutes=5), {}, None),
    ],
)
def test_steps_of_a_call(action: str, status: CallStatus, now: datetime, kw: dict, code: str | None) -> None:
    refusal = rules.step_refusal(action, status, now=now, starts_at=START, **kw)
    assert (refusal.code if refusal else None) == code
