"""The floor of the statistics bench: the bureau's indicators for one area, level and period (with the
previous period beside it) as hand-written SQL over the same rows, straight through asyncpg.

Four statements, each grouped by the level's unit and by period (0: the period asked for, 1: the one before):

* ``stock`` — the roll as of the period's last day (or today): pupils, left-behind children by how the parents
  are away, sex, age band (0–5, 6–13, 14–16), school stage, boarding, guardian type and special situation,
  complete files (建档率: ID number, birth date, address, class, an entrusted guardian with a mobile number,
  a parent away on file) and proxy-parent pairing coverage;
* ``care`` — the rhythm kept over the period: children × months with a talk / a guardian contact, children ×
  term points (期初/期中/期末) with a home visit, children × weeks with a call with the parents (a record of a
  phone or video call, or a completed booked call), and the aid given (records, amount);
* ``incidents`` — incidents by category and severity;
* ``chain`` — for each step of the chain: steps started, told, told by the deadline, and the median and worst
  minutes from the step's start to "told".

This is what PostgreSQL alone costs for the figures: no ORM, no row-level security, no suppression, no Python
shaping — the API's answer should cost at most a small multiple of it.
"""

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

import asyncpg

from api.models.stats import PeriodKind
from api.services.stats import periods

UNIT = {
    "county": "s.county_id",
    "township": "s.township_id",
    "school": "s.id",
    "class": "c.class_id",
}

# A mobile number as the archive's completeness check accepts it.
MOBILE = "'^1[3-9][0-9]{9}$'"

STOCK = """
WITH periods(p, a, b) AS (VALUES (0, $2::date, $3::date), (1, $4::date, $5::date)),
roll AS (
    SELECT c.id, {unit} AS unit, c.sex, c.birth_date, c.is_boarding, c.is_left_behind, c.parents_away,
           k.grade, c.special_hardship, c.single_parent, c.struggling_learner, c.disability,
           c.needs_individual_plan,
           c.id_number_index IS NOT NULL AND c.home_address IS NOT NULL AND c.class_id IS NOT NULL AS basic_ok
    FROM child c JOIN school s ON s.id = c.school_id LEFT JOIN school_class k ON k.id = c.class_id
    WHERE c.school_id = ANY($1::uuid[]) AND c.status = 'enrolled'
),
links AS (
    SELECT cg.child_id,
           bool_or(cg.role = 'entrusted_guardian') AS entrusted,
           bool_or(cg.role = 'entrusted_guardian' AND g.phone ~ {mobile}) AS entrusted_phone,
           bool_or(cg.role = 'parent_away') AS parent_away,
           min(cg.relation) FILTER (WHERE cg.role = 'entrusted_guardian') AS relation
    FROM child_guardian cg JOIN guardian g ON g.id = cg.guardian_id JOIN child c ON c.id = cg.child_id
    WHERE cg.is_active AND c.school_id = ANY($1::uuid[]) AND c.is_left_behind AND c.status = 'enrolled'
    GROUP BY cg.child_id
),
paired AS (
    SELECT per.p, cp.child_id
    FROM periods per JOIN care_pairing cp ON cp.started_on <= per.b AND (cp.ended_on IS NULL OR cp.ended_on >= per.b)
    WHERE cp.school_id = ANY($1::uuid[]) AND cp.kind = 'proxy_parent'
    GROUP BY per.p, cp.child_id
)
SELECT per.p, r.unit,
       count(*) AS pupils,
       count(*) FILTER (WHERE r.is_left_behind) AS left_behind,
       count(*) FILTER (WHERE r.is_left_behind AND r.parents_away = 'both') AS lb_both,
       count(*) FILTER (WHERE r.is_left_behind AND r.parents_away = 'father') AS lb_father,
       count(*) FILTER (WHERE r.is_left_behind AND r.parents_away = 'mother') AS lb_mother,
       count(*) FILTER (WHERE r.is_left_behind AND r.sex = 'female') AS lb_female,
       count(*) FILTER (WHERE r.is_left_behind AND age(per.b, r.birth_date) < interval '6 years') AS lb_age_0_5,
       count(*) FILTER (WHERE r.is_left_behind AND age(per.b, r.birth_date) >= interval '6 years'
                        AND age(per.b, r.birth_date) < interval '14 years') AS lb_age_6_13,
       count(*) FILTER (WHERE r.is_left_behind AND age(per.b, r.birth_date) >= interval '14 years'
                        AND age(per.b, r.birth_date) < interval '17 years') AS lb_age_14_16,
       count(*) FILTER (WHERE r.is_left_behind AND r.grade <= 6) AS lb_primary,
       count(*) FILTER (WHERE r.is_left_behind AND r.grade >= 7) AS lb_junior,
       count(*) FILTER (WHERE r.is_left_behind AND r.is_boarding) AS lb_boarding,
       count(*) FILTER (WHERE r.is_left_behind AND l.relation IN ('祖父', '祖母', '外祖父', '外祖母'))
           AS lb_grandparents,
       count(*) FILTER (WHERE r.is_left_behind AND l.relation IN ('父亲', '母亲')) AS lb_parent_home,
       count(*) FILTER (WHERE r.is_left_behind
                        AND l.relation NOT IN ('祖父', '祖母', '外祖父', '外祖母', '父亲', '母亲'))
           AS lb_other_relatives,
       count(*) FILTER (WHERE r.is_left_behind AND r.special_hardship) AS lb_special_hardship,
       count(*) FILTER (WHERE r.is_left_behind AND r.single_parent) AS lb_single_parent,
       count(*) FILTER (WHERE r.is_left_behind AND r.struggling_learner) AS lb_struggling,
       count(*) FILTER (WHERE r.is_left_behind AND r.disability) AS lb_disability,
       count(*) FILTER (WHERE r.is_left_behind AND r.needs_individual_plan) AS lb_individual_plan,
       count(*) FILTER (WHERE r.is_left_behind AND r.basic_ok AND l.entrusted_phone
                        AND (l.parent_away OR r.parents_away = 'none')) AS archive_complete,
       count(*) FILTER (WHERE r.is_left_behind AND pr.child_id IS NOT NULL) AS paired
FROM periods per CROSS JOIN roll r
LEFT JOIN links l ON l.child_id = r.id
LEFT JOIN paired pr ON pr.p = per.p AND pr.child_id = r.id
GROUP BY per.p, r.unit
"""

CARE = """
WITH periods(p, a, b) AS (VALUES (0, $2::date, $3::date), (1, $4::date, $5::date)),
lb AS (
    SELECT c.id, {unit} AS unit FROM child c JOIN school s ON s.id = c.school_id
    WHERE c.school_id = ANY($1::uuid[]) AND c.is_left_behind AND c.status = 'enrolled'
),
points AS (  -- a school's term points: each third of a term (期初 / 期中 / 期末)
    SELECT t.school_id, t.starts_on, greatest(1, (t.ends_on - t.starts_on + 1) / 3) AS third
    FROM school_term t WHERE t.school_id = ANY($1::uuid[])
),
done AS (
    SELECT per.p, r.child_id, r.kind,
           CASE WHEN r.kind IN ('talk', 'guardian_contact') THEN date_trunc('month', r.occurred_on)::date
                WHEN r.kind = 'parent_contact' THEN date_trunc('week', r.occurred_on)::date
                WHEN r.kind = 'home_visit' THEN (
                    SELECT pt.starts_on + least(2, (r.occurred_on - pt.starts_on) / pt.third) * pt.third
                    FROM points pt WHERE pt.school_id = r.school_id AND r.occurred_on >= pt.starts_on
                    ORDER BY pt.starts_on DESC LIMIT 1)
           END AS slot,
           CASE WHEN r.kind = 'aid' THEN (r.content ->> 'amount_fen')::bigint END AS fen
    FROM periods per JOIN care_record r ON r.occurred_on BETWEEN per.a AND per.b
    WHERE r.school_id = ANY($1::uuid[])
      AND (r.kind IN ('talk', 'guardian_contact', 'home_visit', 'aid')
           OR (r.kind = 'parent_contact' AND r.content ->> 'channel' IN ('phone', 'video')))
    UNION ALL
    SELECT per.p, f.child_id, 'parent_contact',
           date_trunc('week', (f.starts_at AT TIME ZONE 'Asia/Shanghai'))::date, NULL
    FROM periods per JOIN family_call f
      ON f.starts_at >= (per.a::timestamp AT TIME ZONE 'Asia/Shanghai')
     AND f.starts_at < ((per.b + 1)::timestamp AT TIME ZONE 'Asia/Shanghai')
    WHERE f.school_id = ANY($1::uuid[]) AND f.status = 'completed'
)
SELECT d.p, lb.unit, d.kind,
       count(DISTINCT (d.child_id, d.slot)) AS kept,
       count(*) AS records,
       sum(d.fen) AS fen
FROM done d JOIN lb ON lb.id = d.child_id
GROUP BY d.p, lb.unit, d.kind
"""

INCIDENTS = """
WITH periods(p, a, b) AS (VALUES (0, $2::date, $3::date), (1, $4::date, $5::date))
SELECT per.p, {unit} AS unit, i.category, i.severity, count(*) AS incidents
FROM periods per
JOIN incident i ON i.occurred_at >= (per.a::timestamp AT TIME ZONE 'Asia/Shanghai')
               AND i.occurred_at < ((per.b + 1)::timestamp AT TIME ZONE 'Asia/Shanghai')
JOIN school s ON s.id = i.school_id
LEFT JOIN child c ON c.id = i.child_id
WHERE i.school_id = ANY($1::uuid[])
GROUP BY per.p, 2, i.category, i.severity
"""

CHAIN = """
WITH periods(p, a, b) AS (VALUES (0, $2::date, $3::date), (1, $4::date, $5::date))
SELECT per.p, {unit} AS unit, st.step_no,
       count(*) AS steps,
       count(st.told_at) AS told,
       count(*) FILTER (WHERE st.told_at <= st.deadline_at) AS on_time,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM st.told_at - st.starts_at) / 60)
           AS median_minutes,
       max(extract(epoch FROM st.told_at - st.starts_at) / 60) AS worst_minutes
FROM periods per
JOIN incident i ON i.occurred_at >= (per.a::timestamp AT TIME ZONE 'Asia/Shanghai')
               AND i.occurred_at < ((per.b + 1)::timestamp AT TIME ZONE 'Asia/Shanghai')
JOIN escalation_step st ON st.incident_id = i.id
JOIN school s ON s.id = i.school_id
LEFT JOIN child c ON c.id = i.child_id
WHERE i.school_id = ANY($1::uuid[])
GROUP BY per.p, 2, st.step_no
"""

# A monthly trend: the same care statement, one period per month, over the last twelve months.
TREND = """
WITH months AS (
    SELECT m::date AS a, least((m + interval '1 month - 1 day')::date, $3::date) AS b
    FROM generate_series(date_trunc('month', $2::date), $3::date, interval '1 month') AS m
),
lb AS (
    SELECT c.id FROM child c WHERE c.school_id = ANY($1::uuid[]) AND c.is_left_behind AND c.status = 'enrolled'
),
done AS (
    SELECT mo.a, r.child_id, r.kind FROM months mo
    JOIN care_record r ON r.occurred_on BETWEEN mo.a AND mo.b
    WHERE r.school_id = ANY($1::uuid[])
      AND (r.kind IN ('talk', 'guardian_contact', 'home_visit')
           OR (r.kind = 'parent_contact' AND r.content ->> 'channel' IN ('phone', 'video')))
    UNION ALL
    SELECT mo.a, f.child_id, 'parent_contact' FROM months mo
    JOIN family_call f ON f.starts_at >= (mo.a::timestamp AT TIME ZONE 'Asia/Shanghai')
                      AND f.starts_at < ((mo.b + 1)::timestamp AT TIME ZONE 'Asia/Shanghai')
    WHERE f.school_id = ANY($1::uuid[]) AND f.status = 'completed'
)
SELECT d.a AS month, d.kind, count(DISTINCT d.child_id) AS children,
       (SELECT count(*) FROM lb) AS left_behind,
       (SELECT count(*) FROM incident i WHERE i.school_id = ANY($1::uuid[])
          AND i.occurred_at >= (d.a::timestamp AT TIME ZONE 'Asia/Shanghai')
          AND i.occurred_at < ((d.a + interval '1 month')::timestamp AT TIME ZONE 'Asia/Shanghai')) AS incidents
FROM done d JOIN lb ON lb.id = d.child_id
GROUP BY d.a, d.kind
"""


@dataclass(frozen=True)
class Span:
    starts_on: date
    ends_on: date


def period_spans(kind: str, today: date) -> tuple[Span, Span]:
    """The period of ``kind`` holding ``today`` (up to today) and the whole period before it."""
    if kind == "month":
        a = today.replace(day=1)
        prev_end = a - timedelta(days=1)
        return Span(a, today), Span(prev_end.replace(day=1), prev_end)
    if kind == "term":  # autumn from 1 September, spring from 1 February
        if today.month >= 9:
            return Span(date(today.year, 9, 1), today), Span(date(today.year, 2, 1), date(today.year, 8, 31))
        if today.month >= 2:
            return Span(date(today.year, 2, 1), today), Span(date(today.year - 1, 9, 1), date(today.year, 1, 31))
        return Span(date(today.year - 1, 9, 1), today), Span(date(today.year - 1, 2, 1), date(today.year - 1, 8, 31))
    if kind == "school_year":
        first = today.year if today.month >= 9 else today.year - 1
        return Span(date(first, 9, 1), today), Span(date(first - 1, 9, 1), date(first, 8, 31))
    if kind == "quarter":
        q = (today.month - 1) // 3
        a = date(today.year, 3 * q + 1, 1)
        prev_end = a - timedelta(days=1)
        return Span(a, today), Span(date(prev_end.year, prev_end.month - 2, 1), prev_end)
    if kind == "year":
        return Span(date(today.year, 1, 1), today), Span(date(today.year - 1, 1, 1), date(today.year - 1, 12, 31))
    raise ValueError(kind)


def statements(level: str) -> list[str]:
    unit = UNIT[level]
    return [
        STOCK.format(unit=unit, mobile=MOBILE),
        CARE.format(unit=unit),
        INCIDENTS.format(unit=unit),
        CHAIN.format(unit=unit),
    ]


async def table(
    conn: asyncpg.Connection, *, school_ids: list[Any], level: str, kind: str, today: date
) -> list[list[asyncpg.Record]]:
    """Every figure of a level × period table and of the period before it, for the schools of the area."""
    current, previous = period_spans(kind, today)
    args = (school_ids, current.starts_on, current.ends_on, previous.starts_on, previous.ends_on)
    return [await conn.fetch(sql, *args) for sql in statements(level)]


async def trend(conn: asyncpg.Connection, *, school_ids: list[Any], today: date, months: int = 12) -> list[Any]:
    """The monthly trend of the rhythm kept and incidents over the last ``months`` months."""
    first = today.replace(day=1)
    for _ in range(months - 1):
        first = (first - timedelta(days=1)).replace(day=1)
    return await conn.fetch(TREND, school_ids, first, today)


# ---- the floor over the pre-aggregates -------------------------------------------------------------------
# What the API reads when the schools' figures are kept (api/services/stats/preaggregate.py): the same
# stats_figures rows, summed per unit in SQL, and the chain's step times ranked — the floor of that path.

KEPT_UNIT = {
    "county": "s.county_id::text",
    "township": "s.township_id::text",
    "school": "s.id::text",
    "class": "e.cell ->> 0",
}

# Per class for a class table; above it, each school's totals (as the API reads them).
KEPT_CLASS_COUNTS = """
SELECT f.period_key, {unit} AS unit, kv.key, sum(kv.value::bigint) AS value
FROM stats_figures f JOIN school s ON s.id = f.school_id
CROSS JOIN LATERAL jsonb_array_elements(f.counts) AS e(cell)
CROSS JOIN LATERAL jsonb_each_text(e.cell -> 1) AS kv(key, value)
WHERE f.school_id = ANY($1::uuid[]) AND f.period_kind = $2 AND f.period_key = ANY($3::text[]) AND f.judged_on = $4
GROUP BY 1, 2, 3
"""

KEPT_COUNTS = """
SELECT f.period_key, {unit} AS unit, kv.key, sum(kv.value::bigint) AS value
FROM stats_figures f JOIN school s ON s.id = f.school_id
CROSS JOIN LATERAL jsonb_each_text(f.totals) AS kv(key, value)
WHERE f.school_id = ANY($1::uuid[]) AND f.period_kind = $2 AND f.period_key = ANY($3::text[]) AND f.judged_on = $4
GROUP BY 1, 2, 3
"""

KEPT_STEPS = """
SELECT f.period_key, {unit} AS unit, (e.cell ->> 1)::int AS step_no, count(*) AS steps,
       count(*) FILTER (WHERE (e.cell ->> 3)::boolean) AS on_time,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY (e.cell ->> 2)::float8) AS median_minutes,
       max((e.cell ->> 2)::float8) AS worst_minutes
FROM stats_figures f JOIN school s ON s.id = f.school_id
CROSS JOIN LATERAL jsonb_array_elements(f.steps) AS e(cell)
WHERE f.school_id = ANY($1::uuid[]) AND f.period_kind = $2 AND f.period_key = ANY($3::text[]) AND f.judged_on = $4
GROUP BY 1, 2, 3
"""


def kept_keys(kind: str, today: date) -> list[str]:
    """The keys of the period of ``kind`` holding ``today`` and of the one before, as the API names them."""
    current = periods.containing(PeriodKind(kind), today)
    return [current.key, periods.previous(current).key]


async def kept_table(
    conn: asyncpg.Connection, *, school_ids: list[Any], level: str, kind: str, today: date
) -> list[list[asyncpg.Record]]:
    args = (school_ids, kind, kept_keys(kind, today), today)
    unit = KEPT_UNIT[level]
    counts = KEPT_CLASS_COUNTS if level == "class" else KEPT_COUNTS
    return [await conn.fetch(sql.format(unit=unit), *args) for sql in (counts, KEPT_STEPS)]


async def kept_trend(
    conn: asyncpg.Connection, *, school_ids: list[Any], today: date, months: int = 12
) -> list[list[asyncpg.Record]]:
    month = periods.containing(PeriodKind.month, today)
    keys = []
    for _ in range(months):
        keys.append(month.key)
        month = periods.previous(month)
    args = (school_ids, "month", keys, today)
    return [await conn.fetch(sql.format(unit="NULL::text"), *args) for sql in (KEPT_COUNTS, KEPT_STEPS)]
