"""统计: the county bureau's statistics, computed from the living records.

- :mod:`.periods` — months, quarters, terms, school years, years (pure)
- :mod:`.categories` — the categories of the breakdowns (pure, and as SQL)
- :mod:`.indicators` — THE registry: every indicator defined once
- :mod:`.suppression` — small counts hidden, with complementary suppression (pure)
- :mod:`.queries` — the reads (the only module with SQL of its own)
- :mod:`.service` — :func:`build_table` and :func:`build_trend`, which the API and the exports call
- :mod:`.enrolment` — the enrolment a school records per term
"""

from api.services.stats.service import build_table, build_trend

__all__ = ["build_table", "build_trend"]
