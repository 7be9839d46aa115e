"""Small-count suppression (pure): which figures of a table are hidden so that no child can be picked out.

A table's figures are integer *variables* — a count per row (a unit, or the totals row) and per quantity
(``left_behind``, ``lb_sex_female``, ``archive_complete`` …) — tied by *equations* a reader knows hold: the
rows of a quantity add up to the totals row, the categories of a breakdown add up to their parent count, and
a rate shows its numerator and denominator. A cell is shown only when every variable it shows is.

1. **Primary**: a suppressible variable counting more than none and fewer than ``threshold`` is hidden.
2. **Ties**: some variables go with others (the aid amount with the number of children aided).
3. **Complementary**: an equation with exactly one hidden variable would give it away, so a second one is
   hidden — the smallest positive visible member (a zero would tell the reader its share of the sum).
4. **No linear recovery**: equations together can still pin a hidden variable (a chain of rows and
   columns); the system restricted to the hidden variables is reduced and any variable it determines gets
   one more complement, until none is determined.

The same function serves every level and every export: the exports are written from the tables it hid.
"""

from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

Var = tuple[Hashable, str]  # (row key, quantity)


@dataclass(frozen=True)
class Equation:
    """``whole`` = the sum of ``parts``."""

    whole: Var
    parts: tuple[Var, ...]

    @property
    def members(self) -> tuple[Var, ...]:
        return (self.whole, *self.parts)


def primary(values: Mapping[Var, int], suppressible: Iterable[Var], threshold: int) -> set[Var]:
    """Variables counting fewer than ``threshold`` (and more than none)."""
    return {v for v in suppressible if 0 < values[v] < threshold}


def determined(hidden: set[Var], equations: Iterable[Equation]) -> set[Var]:
    """The hidden variables the equations pin down once every visible variable is known: reduce the system
    restricted to the hidden ones (exact fractions); a pivot whose row has no free variable is determined."""
    rows: list[dict[Var, Fraction]] = []
    for eq in equations:
        row: dict[Var, Fraction] = defaultdict(Fraction)
        if eq.whole in hidden:
            row[eq.whole] += 1
        for part in eq.parts:
            if part in hidden:
                row[part] -= 1
        row = {k: c for k, c in row.items() if c}
        if row:
            rows.append(row)
    pivots: dict[Var, dict[Var, Fraction]] = {}
    for row in rows:
        row = dict(row)
        for pivot, prow in pivots.items():
            factor = row.get(pivot)
            if factor:
                for k, c in prow.items():
                    new = row.get(k, Fraction(0)) - factor * c
                    if new:
                        row[k] = new
                    else:
                        row.pop(k, None)
        if not row:
            continue
        pivot = min(row, key=repr)
        scale = row[pivot]
        row = {k: c / scale for k, c in row.items()}
        for other in pivots.values():
            factor = other.get(pivot)
            if factor:
                for k, c in row.items():
                    new = other.get(k, Fraction(0)) - factor * c
                    if new:
                        other[k] = new
                    else:
                        other.pop(k, None)
        pivots[pivot] = row
    return {pivot for pivot, row in pivots.items() if len(row) == 1}


def suppress(
    values: Mapping[Var, int],
    *,
    threshold: int,
    suppressible: Iterable[Var],
    equations: list[Equation],
    ties: Iterable[tuple[Var, Var]] = (),
) -> set[Var]:
    """The variables to hide (primary and complementary), so that none of them can be solved from the
    visible ones through ``equations``."""
    hidden = primary(values, suppressible, threshold)
    tie_map: dict[Var, list[Var]] = defaultdict(list)
    for a, b in ties:
        tie_map[a].append(b)
    by_var: dict[Var, list[Equation]] = defaultdict(list)
    for eq in equations:
        for member in eq.members:
            by_var[member].append(eq)

    def complement(eq: Equation) -> Var | None:
        visible = [m for m in eq.members if m not in hidden]
        if not visible:
            return None
        positive = [m for m in visible if values[m] > 0]
        return min(positive or visible, key=lambda m: (values[m], m not in eq.parts, repr(m)))

    def close() -> None:
        pending = list(hidden)
        while pending:
            var = pending.pop()
            for tied in tie_map.get(var, ()):
                if tied not in hidden:
                    hidden.add(tied)
                    pending.append(tied)
            for eq in by_var.get(var, ()):
                if sum(m in hidden for m in eq.members) == 1:
                    extra = complement(eq)
                    if extra is not None:
                        hidden.add(extra)
                        pending.append(extra)

    if not hidden:
        return hidden
    close()
    while True:
        relevant = [eq for eq in equations if any(m in hidden for m in eq.members)]
        pinned = determined(hidden, relevant)
        if not pinned:
            return hidden
        added = False
        for var in sorted(pinned, key=repr):
            candidates = [c for eq in by_var.get(var, ()) if (c := complement(eq)) is not None]
            if candidates:
                hidden.add(min(candidates, key=lambda m: (values[m], repr(m))))
                added = True
                break
        if not added:  # every equation of a pinned variable is hidden already: widen through its neighbours
            spare = [m for eq in relevant for m in eq.members if m not in hidden]
            if not spare:
                return hidden
            hidden.add(min(spare, key=lambda m: (values[m] == 0, values[m], repr(m))))
        close()
