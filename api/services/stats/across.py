"""Suppression across periods, and of the chain's worst minutes (pure).

**Periods against each other.** A flow that adds up over time (:data:`~.indicators.ADDITIVE_OVER_TIME`:
incidents, the chain's steps, the care periods due and done, aid records) gives a quarter, a term, a school
year or a year as the sum of its months, so a reader holding a quarter and two of its months has the third.
Months are the parts every longer period is made of: each month is suppressed on its own (its joint
suppression, :func:`.service.joint`); a longer period's additive cell is hidden exactly when one of its months'
cells (same unit, same quantity) is hidden (:func:`period_fixed`). Every additive cell a longer period shows is
then the sum of cells its months show — it tells nothing the months did not — so the months' tables together
with any number of longer periods' tables pin no more than the months' tables alone, which pin nothing (each
month's equations hold only that month's cells, and a sum of cells of different months is determined only if
each is). A hidden cell of a longer period holds a hidden month, which stays undetermined, so it does too.

Stocks (children on the roster on the period's last day) of a period ending with a month are that month's own
counts: they take that month's decision, so the same count is never hidden in one table and shown in the
other. What is neither (children aided: distinct over the period) is suppressed by the period's own solve,
with the cells above fixed.

**The worst minutes** (最长用时) are a maximum: the county's worst is one school's worst, a quarter's one
month's. Shown beside its parts, a maximum attained only by a part whose worst is hidden (few steps told) would
give that part's worst away. So a unit's worst of a period is shown only when a shown *atom* under it attains
it (:func:`worst_hidden`): atoms are the (school, month) worsts of the joint — (class, month) in a class
table — each shown when its number of steps told is. Every hidden atom is then bounded above by shown maxima
but never equal to one by necessity. A median is not a sum or a maximum of its parts' and is hidden only with
the number of steps told (the threshold rule: fewer than the threshold told, none shown).
"""

from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence

from api.services.stats import indicators as registry

Var = tuple[Hashable, str]
STEPS = (1, 2, 3)


def worst_key(n: int) -> str:
    """The pseudo-quantity a hidden worst is filed under in a hidden set (``(unit, "s1_worst")``)."""
    return f"s{n}_worst"


def period_fixed(
    counts: Mapping[Hashable, Mapping[str, int]],
    months: Sequence[tuple[Mapping[Hashable, Mapping[str, int]], set[Var]]],
    *,
    threshold: int,
) -> dict[Var, bool]:
    """The cells of a longer period decided by its months (``months``: each month's counts and hidden set, in
    order): an additive quantity hidden iff hidden in one of its months; the stocks as the last month decided,
    when it counted the very same figures. The rest (and stocks that differ) are left to the period's own
    solve."""
    fixed: dict[Var, bool] = {}
    if not months:
        return fixed
    for key, row in counts.items():
        for q, v in row.items():
            if q in registry.ADDITIVE_OVER_TIME:
                hidden = any((key, q) in h for _, h in months)
                # Additive up to the records' edges: a small sum never shown, whatever its months.
                fixed[(key, q)] = hidden or (0 < v < threshold and q not in registry.NOT_SUPPRESSIBLE)
    last_counts, last_hidden = months[-1]
    same = all(
        last_counts.get(key, {}).get(q) == v
        for key, row in counts.items()
        for q, v in row.items()
        if q in registry.STOCK
    )
    if same:
        for key, row in counts.items():
            for q in row:
                if q in registry.STOCK:
                    fixed[(key, q)] = (key, q) in last_hidden
    return fixed


def worst_hidden(
    units: Iterable[Hashable],
    minutes: Mapping[Hashable, Mapping[str, float | None]],
    hidden: set[Var],
    atoms_under: Callable[[Hashable], Iterable[tuple[Hashable, Mapping[str, float | None], set[Var]]]],
) -> set[Var]:
    """The worsts to hide (``(unit, "sN_worst")``) among ``units``: a unit's worst is shown only when one of
    ``atoms_under(unit)`` — ``(atom key, its minutes, the hidden set it was decided in)`` — shows the same worst
    (its steps told shown). A unit whose steps told are hidden has its worst hidden already (with the count)."""
    out: set[Var] = set()
    for unit in units:
        mine = minutes.get(unit, {})
        for n in STEPS:
            worst = mine.get(worst_key(n))
            if worst is None or (unit, f"chain_s{n}_told") in hidden:
                continue
            attained = any(
                (atom, f"chain_s{n}_told") not in atom_hidden
                and (atom, worst_key(n)) not in atom_hidden
                and theirs.get(worst_key(n)) == worst
                for atom, theirs, atom_hidden in atoms_under(unit)
            )
            if not attained:
                out.add((unit, worst_key(n)))
    return out


def worst_candidates(
    rows: Iterable[Hashable],
    counts: Mapping[Hashable, Mapping[str, int]],
    minutes: Mapping[Hashable, Mapping[str, float | None]],
    hidden: set[Var],
    total: Hashable,
) -> set[Var]:
    """In a table whose totals row is fixed (a class table): where the totals' worst is shown but no row shows
    it, the rows that could hold it are those whose worst is hidden and whose steps told are not a shown zero;
    one alone would be it. Returns one more row worst to hide for each such step (the largest shown one), so
    that at least two could."""
    out: set[Var] = set()
    rows = list(rows)
    for n in STEPS:
        told, wk = f"chain_s{n}_told", worst_key(n)
        worst = minutes.get(total, {}).get(wk)
        if worst is None or (total, told) in hidden or (total, wk) in hidden:
            continue

        def shown(k: Hashable, told: str = told, wk: str = wk) -> bool:
            return (k, told) not in hidden and (k, wk) not in hidden

        if any(shown(k) and minutes.get(k, {}).get(wk) == worst for k in rows):
            continue
        could = [k for k in rows if not shown(k) and not ((k, told) not in hidden and counts[k].get(told, 0) == 0)]
        if len(could) >= 2:
            continue
        spare = [k for k in rows if shown(k) and minutes.get(k, {}).get(wk) is not None]
        if spare:
            out.add((max(spare, key=lambda k: (minutes[k][wk] or 0.0, repr(k))), wk))
    return out
