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

**Across levels** (:mod:`.service`): the variables are those of every unit under the caller's scope root
(county → townships → schools) and the equations tie each parent to the sum of its children as well, so one
solve hides the cells of every table the caller can fetch above a class; a table is a view of it.

**Classes, top down**: a school's class table is solved with the school's cells ``fixed`` — hidden as the joint
solve hid them, shown otherwise — and what the joint implies about the school's hidden cells (``known``: the
relations among them alone, :func:`implied`) beside its own equations, only class cells being added. Why that
stays consistent with the joint and safe with every other table: (a) the school's cells are not changed, so
every table above a class still shows exactly what the joint decided; (b) :func:`suppress` checks the class
table's equations with what the joint implies about the school (the same, for the cells of this table, as
every equation of the joint), so no cell is determined by the two; (c) :func:`narrowed` then checks that the
class table ties the school's hidden cells by no relation beyond the school's own breakdowns (more class cells
are hidden until it does not) — so a class table adds nothing to what a reader knows about any joint cell,
and class tables of several schools (whose class cells are disjoint) cannot be combined into a relation the
joint did not already leave undetermined.
"""

from collections import defaultdict
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from math import gcd

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


def _combine(a: int, row: dict[Var, int], b: int, other: dict[Var, int], drop: Var) -> dict[Var, int]:
    """``a·row − b·other`` without ``drop`` (which cancels), divided by the gcd of what is left."""
    out = {k: a * c for k, c in row.items() if k != drop}
    for k, c in other.items():
        if k != drop:
            new = out.get(k, 0) - b * c
            if new:
                out[k] = new
            else:
                out.pop(k, None)
    g = 0
    for c in out.values():
        g = gcd(g, c)
        if g == 1:
            return out
    return {k: c // g for k, c in out.items()} if g > 1 else out


class Echelon:
    """Sparse integer rows kept in reduced row echelon form (fraction-free), with an index of the rows each
    variable appears in: each kept row has a pivot no other kept row holds. ``first``: variables to pivot on
    before any other (so that the rows pivoted on the rest hold only the rest)."""

    def __init__(self, first: Callable[[Var], bool] | None = None) -> None:
        self.pivots: dict[Var, dict[Var, int]] = {}
        self.rows_with: dict[Var, set[Var]] = defaultdict(set)  # a non-pivot variable → the pivots holding it
        self.first = first

    def add(self, row: dict[Var, int]) -> dict[Var, int] | None:
        """Reduce ``row`` by the kept rows; keep what is left (returned), or None when nothing is."""
        row = {k: c for k, c in row.items() if c}
        # Pivot rows hold no other pivot, so subtracting one never brings another pivot into the row.
        for k in [k for k in row if k in self.pivots]:
            if k in row:
                prow = self.pivots[k]
                row = _combine(prow[k], row, row[k], prow, k)
        if not row:
            return None
        first = self.first
        # The sparsest column (least fill-in), among the variables to eliminate first if the row has any.
        pivot = min(row, key=lambda k: (first is not None and not first(k), len(self.rows_with.get(k, ()))))
        for p in list(self.rows_with.pop(pivot, ())):
            other = self.pivots[p]
            before = set(other)
            updated = _combine(row[pivot], other, other[pivot], row, pivot)
            self.pivots[p] = updated
            for c in before - set(updated):
                if c != p:
                    self.rows_with[c].discard(p)
            for c in set(updated) - before:
                self.rows_with[c].add(p)
        self.pivots[pivot] = row
        for c in row:
            if c != pivot:
                self.rows_with[c].add(pivot)
        return row


def _restricted(eq: Equation, hidden: set[Var]) -> dict[Var, int]:
    row: dict[Var, int] = {}
    if eq.whole in hidden:
        row[eq.whole] = 1
    for part in eq.parts:
        if part in hidden:
            row[part] = row.get(part, 0) - 1
    return row


def determined(hidden: set[Var], equations: Iterable[Equation], known: Iterable[dict[Var, int]] = ()) -> set[Var]:
    """The hidden variables the equations pin down once every visible variable is known: reduce the system
    restricted to the hidden ones to reduced row echelon form (exact: integer rows, fraction-free); a pivot
    whose row has no other variable is determined. Sparse rows, with an index of the rows each variable
    appears in, so a county's table (thousands of hidden cells) reduces quickly."""
    echelon = Echelon()
    for eq in equations:
        echelon.add(_restricted(eq, hidden))
    for row in known:  # relations among hidden variables known from elsewhere
        echelon.add(dict(row))
    return {pivot for pivot, row in echelon.pivots.items() if len(row) == 1}


def implied(hidden: set[Var], equations: Iterable[Equation], keep: set[Var]) -> list[dict[Var, int]]:
    """A basis of the relations among the hidden variables of ``keep`` that the equations imply once every
    visible variable is known (every other hidden variable eliminated)."""
    echelon = Echelon(first=lambda v: v not in keep)
    for eq in equations:
        echelon.add(_restricted(eq, hidden))
    # Rows pivoted on a variable of ``keep`` hold only variables of ``keep`` (the others were pivoted first).
    return [row for pivot, row in echelon.pivots.items() if pivot in keep]


def narrowed(hidden: set[Var], equations: Iterable[Equation], baseline: Iterable[Equation], keep: set[Var]) -> set[Var]:
    """The hidden variables of ``keep`` that ``equations`` tie by a relation among them alone (every other
    hidden variable eliminated) which ``baseline`` does not already imply: what a table tells a reader about
    cells decided elsewhere beyond what was known. Empty: it tells nothing new about them."""
    relations = implied(hidden, equations, keep)
    known = Echelon()
    for eq in baseline:
        known.add(_restricted(eq, hidden & keep))
    out: set[Var] = set()
    for row in relations:
        rest = known.add(dict(row))
        if rest is not None:
            out |= set(rest)
    return out


def suppress(
    values: Mapping[Var, int],
    *,
    threshold: int,
    suppressible: Iterable[Var],
    equations: list[Equation],
    ties: Iterable[tuple[Var, Var]] = (),
    fixed: Mapping[Var, bool] | None = None,
    known: Iterable[dict[Var, int]] = (),
) -> set[Var]:
    """The variables to hide (primary and complementary), so that none of them can be solved from the
    visible ones through ``equations``.

    ``fixed``: variables whose fate was decided elsewhere (True: hidden, False: shown) — a school's figures
    in its class table, decided by the county's joint solve. They are never added and never chosen as a
    complement; the hidden ones count as unknowns, so a cell they could give away still gets a complement
    among the free variables. ``known``: relations (integer coefficients) among fixed hidden variables that a
    reader also has (what other tables imply about them). The answer includes the fixed hidden ones."""
    frozen: Mapping[Var, bool] = fixed or {}
    small = {v for v in primary(values, suppressible, threshold) if v not in frozen}
    hidden = set(small)
    hidden |= {v for v, is_hidden in frozen.items() if is_hidden}
    tie_map: dict[Var, list[Var]] = defaultdict(list)
    for a, b in ties:
        tie_map[a].append(b)
    by_var: dict[Var, list[int]] = defaultdict(list)
    for i, eq in enumerate(equations):
        for member in eq.members:
            by_var[member].append(i)
    hidden_in = [0] * len(equations)  # hidden members of each equation

    def complement(eq: Equation) -> Var | None:
        visible = [m for m in eq.members if m not in hidden and m not in frozen]
        if not visible:
            return None
        positive = [m for m in visible if values[m] > 0]
        return min(positive or visible, key=lambda m: (values[m], m not in eq.parts, repr(m)))

    def hide(var: Var, pending: list[Var], *, decided: bool = False) -> None:
        if var in hidden or (var in frozen and not decided):
            return
        hidden.add(var)
        for i in by_var.get(var, ()):
            hidden_in[i] += 1
        pending.append(var)

    def close(pending: list[Var]) -> None:
        while pending:
            var = pending.pop()
            for tied in tie_map.get(var, ()):
                hide(tied, pending)
            for i in by_var.get(var, ()):
                if hidden_in[i] == 1:
                    extra = complement(equations[i])
                    if extra is not None:
                        hide(extra, pending)

    if not hidden:
        return hidden
    start = list(hidden)
    hidden.clear()
    pending: list[Var] = []
    for var in start:
        hide(var, pending, decided=True)
    close(pending)
    while True:
        relevant = [eq for i, eq in enumerate(equations) if hidden_in[i]]
        pinned = determined(hidden, relevant, known)
        if not pinned:
            return hidden
        # One more complement for each pinned variable (in one of its equations), then check again.
        for var in sorted(pinned, key=repr):
            candidates = [c for i in by_var.get(var, ()) if (c := complement(equations[i])) is not None]
            if candidates:
                hide(min(candidates, key=lambda m: (values[m], repr(m))), pending)
        if not pending:  # every equation of the pinned variables is hidden already: widen through neighbours
            spare = [m for eq in relevant for m in eq.members if m not in hidden and m not in frozen]
            if not spare:
                # Nothing left to hide but fixed cells: a pinned complement's value follows from what is shown
                # anyway (showing it tells nothing new), so it is shown; a pinned small count stays hidden.
                return hidden - {v for v in pinned if v not in small and v not in frozen}
            hide(min(spare, key=lambda m: (values[m] == 0, values[m], repr(m))), pending)
        close(pending)
