"""The suppression's cost on the county of :mod:`bench.county`, in-process: per table (each table on its own, as
before the suppression became joint) beside one joint solve of the county (every table above a class is cut
from it) and a class table solved under it, from the kept figures (``stats_figures``) of the current month,
term and year.

    .venv/bin/python -m bench.stats_suppression --keep DIR [--small] [--seed 13]

``DIR`` is the folder :mod:`bench.county` kept the county in (``bench.stats`` keeps its figures there). The
figures are read straight through asyncpg; only the suppression is timed (milliseconds, one run each: the
answers are reused afterwards while the kept rows do not change).
"""

import argparse
import asyncio
import json
import time
import uuid
from collections import defaultdict
from pathlib import Path
from typing import Any

import asyncpg

from api.embedded_pg import socket_dir, start_embedded
from api.services.stats import queries
from api.services.stats import service as svc


def _add(rows: list[dict[str, int]], quantities: list[str]) -> dict[str, int]:
    out = dict.fromkeys(quantities, 0)
    for row in rows:
        for q, v in row.items():
            out[q] += v
    return out


def _timed(fn: Any, *args: Any, **kwargs: Any) -> tuple[Any, float]:
    t0 = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, (time.perf_counter() - t0) * 1000


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--keep", type=Path, required=True)
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args()
    uri = await asyncio.to_thread(start_embedded, args.keep)
    database = f"county_{'small' if args.small else 'full'}_{args.seed}"
    conn = await asyncpg.connect(host=socket_dir(uri), user="postgres", database=database)
    try:
        township_of = {r["id"]: r["township_id"] for r in await conn.fetch("SELECT id, township_id FROM school")}
        kept = await conn.fetch(
            "SELECT DISTINCT period_kind, period_key FROM stats_figures"
            " WHERE period_kind IN ('month', 'term', 'year')"
            " AND judged_on = (SELECT min(judged_on) FROM stats_figures) ORDER BY 1, 2 DESC"
        )
        quantities = svc._all_quantities()
        done: set[str] = set()
        for kind, key in kept:
            if kind in done:
                continue
            done.add(kind)
            rows = await conn.fetch(
                "SELECT school_id, totals, counts, steps, enrolment FROM stats_figures"
                " WHERE period_kind = $1 AND period_key = $2"
                " AND judged_on = (SELECT min(judged_on) FROM stats_figures)",  # today's (tomorrow's may be kept too)
                kind,
                key,
            )
            schools: dict[Any, dict[str, int]] = {}
            by_class: dict[Any, tuple[Any, Any]] = {}
            for r in rows:
                row = dict.fromkeys(quantities, 0) | json.loads(r["totals"])
                row.update(queries.chain_counts([tuple(x[1:]) for x in json.loads(r["steps"])])[0])
                row["enrolled_pupils"] = r["enrolment"] or 0
                schools[r["school_id"]] = row
                by_class[r["school_id"]] = (json.loads(r["counts"]), json.loads(r["steps"]))

            towns = sorted(set(township_of.values()), key=str)
            of_town = {t: [s for s in schools if township_of[s] == t] for t in towns}
            townships = {t: _add([schools[s] for s in of_town[t]], quantities) for t in towns}
            total = _add(list(schools.values()), quantities)
            one = towns[0]
            _, county_schools = _timed(svc.suppress_counts, {**schools, svc.TOTAL: total}, threshold=5)
            _, county_towns = _timed(svc.suppress_counts, {**townships, svc.TOTAL: total}, threshold=5)
            _, town_schools = _timed(
                svc.suppress_counts, {**{s: schools[s] for s in of_town[one]}, svc.TOTAL: townships[one]}, threshold=5
            )
            root = uuid.uuid4()
            counts: dict[Any, dict[str, int]] = {root: total, **townships, **schools}
            children: dict[Any, list[Any]] = {root: towns, **of_town}
            equations = svc.tree_equations(counts, children)
            hidden, joint_ms = _timed(svc.suppress_tree, counts, children, threshold=5, equations=equations)
            found = svc.Joint(
                root=None,  # type: ignore[arg-type]
                units={},
                levels={},
                children=children,
                counts=counts,
                minutes={},
                hidden=hidden,
                as_of=None,
                memo_key=None,
                equations=equations,
            )
            school = max(by_class, key=lambda k: len(by_class[k][0]))
            classes: dict[Any, dict[str, int]] = defaultdict(
                lambda: dict.fromkeys([q for q in quantities if q != "enrolled_pupils"], 0)
            )
            for class_key, values in by_class[school][0]:
                for q, v in values.items():
                    classes[class_key or svc.UNPLACED][q] += v
            steps = defaultdict(list)
            for x in by_class[school][1]:
                steps[x[0] or svc.UNPLACED].append(tuple(x[1:]))
            for class_key in classes:
                classes[class_key].update(queries.chain_counts(steps[class_key])[0])
            table = {**classes, svc.TOTAL: counts[school]}
            _, class_before = _timed(svc.suppress_counts, dict(table), threshold=5)
            _, class_after = _timed(svc.suppress_classes, found, school, dict(table), threshold=5)
            print(
                f"{kind} {key}: {len(schools)} schools, {len(towns)} townships; per table: county × school "
                f"{county_schools:.0f}, county × township {county_towns:.0f}, township × school {town_schools:.0f}, "
                f"class table ({len(classes)} classes) {class_before:.0f} | joint: all levels {joint_ms:.0f} "
                f"({len(hidden)} cells hidden), that class table under it {class_after:.0f}"
            )
    finally:
        await conn.close()


if __name__ == "__main__":
    asyncio.run(main())
