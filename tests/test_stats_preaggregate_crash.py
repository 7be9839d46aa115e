"""A bounded slice of ``bench/stats_crash.py``: a real refresher process killed with SIGKILL at random instants
while a writer changes the records. After every kill each school's day is whole or absent and every day with
nothing pending equals the records (no mark lost); after a last pass nothing is pending and all is equal."""

import random
from pathlib import Path
from typing import Any

from bench.county import build
from bench.stats_crash import chaos
from tests.test_stats_preaggregate import TINY, _socket_and_name


async def test_a_refresher_killed_at_random_instants_leaves_whole_days_and_consistent_marks(
    database_url: str, tmp_path: Path
) -> None:
    socket, name = _socket_and_name(database_url)
    county: Any = await build(socket, name, seed=11, size=TINY)
    result = await chaos(database_url, county.school_ids, kills=5, logdir=tmp_path, rng=random.Random())
    problems = [p for a in result.audits for p in a.problems]
    assert problems == []
    assert result.kills == 5
    # The audits after the kills found days kept and compared those with nothing pending with the records.
    print(f"{result.passes} passes, audits: {[(a.days, a.verified, a.pending) for a in result.audits]}")
    assert sum(a.verified for a in result.audits[:-1]) > 0
    assert result.audits[-1].verified == 2 * TINY.schools and result.audits[-1].pending == 0
    assert result.seconds < 60, result.seconds
