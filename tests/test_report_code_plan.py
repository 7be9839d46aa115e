"""The first draw of a report's reply codes looks up each candidate in the index of open codes, whatever plan
PostgreSQL keeps for the statement.

The driver prepares the report's statements, and after five runs PostgreSQL may keep one generic plan per
connection. Planned on a young database, the look-up of the candidates against the open codes became an anti-join
over a scan of every open code: each report then read them all, and a school's number holds one per open
report. In the bench, database CPU per report grew from 5 to 15 ms as reports piled up (to 5 with the probe).
"""

import asyncpg

from api.services.emergency import rows


async def test_the_candidates_are_probed_in_the_index_even_in_a_generic_plan(database_url):
    conn = await asyncpg.connect(database_url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        await conn.execute(f"PREPARE write_report AS {rows._WRITE_REPORT}")
        explained = await conn.fetch(
            "EXPLAIN EXECUTE write_report('[]', '[]', '[]', NULL, now(), '{}', '{}', '{}', '{}', '{}', '{}',"
            " '{}', '{}', '{}', '[]', '[]', '[]', 'wake')"
        )
        plan = "\n".join(r[0] for r in explained)
    finally:
        await conn.close()
    assert "Seq Scan on reply_code r" not in plan, plan
    # The look-up stays a sublink run per candidate (not pulled up into a join, whose side the planner may scan
    # whole), and its own scan ("reply_code r", planned as r_N) is an index scan of the open codes.
    assert "Filter: (NOT EXISTS(SubPlan" in plan, plan
    assert any("Index" in line and "on reply_code r" in line for line in plan.splitlines()), plan
