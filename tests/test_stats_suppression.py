"""Small-count suppression: counts below the threshold are hidden, and so are enough other cells that no
hidden one can be solved from what is shown — the totals row, a breakdown adding up to its parent, a rate's
numerator and denominator. Checked on hand-made tables and, property-style, on generated ones against an
attacker who solves every visible sum (exact linear algebra written here independently of the module)."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from api.models.stats import Cell, IndicatorKind
from api.services.stats import indicators as registry
from api.services.stats.service import TOTAL, Computed, cell, suppress_counts
from api.services.stats.suppression import Equation, determined, implied, narrowed, suppress

T = "total"


def grid(rows: dict[str, dict[str, int]], partitions: dict[str, tuple[str, ...]] | None = None):
    """A table: its values, and the equations a reader knows (rows add up to the totals row; categories to
    their parent)."""
    quantities = list(next(iter(rows.values())))
    total = {q: sum(r[q] for r in rows.values()) for q in quantities}
    everything = {**rows, T: total}
    values = {(k, q): v for k, row in everything.items() for q, v in row.items()}
    equations = [Equation((T, q), tuple((k, q) for k in rows)) for q in quantities]
    for parent, parts in (partitions or {}).items():
        equations += [Equation((k, parent), tuple((k, p) for p in parts)) for k in everything]
    return values, equations


# ---- the attacker ------------------------------------------------------------------------------------------


P = (1 << 61) - 1  # a large prime: the equations' coefficients are ±1, so ranks mod P are the rational ranks


def echelon(matrix: list[list[int]]) -> list[tuple[int, list[int]]]:
    """A basis of the row space mod P, as (pivot column, row with 1 at the pivot and 0 at earlier pivots)."""
    basis: list[tuple[int, list[int]]] = []
    for original in matrix:
        row = reduce(original, basis)
        pivot = next((i for i, a in enumerate(row) if a), None)
        if pivot is None:
            continue
        inv = pow(row[pivot], P - 2, P)
        row = [a * inv % P for a in row]
        basis.append((pivot, row))
    return basis


def reduce(row: list[int], basis: list[tuple[int, list[int]]]) -> list[int]:
    row = [a % P for a in row]
    for pivot, b in basis:
        f = row[pivot]
        if f:
            row = [(a - f * c) % P for a, c in zip(row, b, strict=True)]
    return row


def recoverable(hidden: set, equations: list[Equation]) -> set:
    """Hidden cells a reader can solve for: those whose unit vector lies in the row space of the equations
    restricted to the hidden cells (it reduces to nothing against a basis of that space)."""
    order = sorted(hidden, key=repr)
    index = {v: i for i, v in enumerate(order)}
    matrix = []
    for eq in equations:
        row = [0] * len(order)
        if eq.whole in index:
            row[index[eq.whole]] += 1
        for p in eq.parts:
            if p in index:
                row[index[p]] -= 1
        if any(row):
            matrix.append(row)
    basis = echelon(matrix)
    out = set()
    for v in order:
        unit = [int(i == index[v]) for i in range(len(order))]
        if not any(reduce(unit, basis)):
            out.add(v)
    return out


def peel(hidden: set, equations: list[Equation]) -> set:
    """The simple attack: an equation with one unknown gives it; repeat."""
    unknown, solved = set(hidden), set()
    changed = True
    while changed:
        changed = False
        for eq in equations:
            left = [m for m in eq.members if m in unknown]
            if len(left) == 1:
                unknown.discard(left[0])
                solved.add(left[0])
                changed = True
    return solved


# ---- hand-made tables ------------------------------------------------------------------------------------------


def test_a_small_count_and_its_complement_in_the_same_column():
    values, equations = grid({"a": {"n": 3}, "b": {"n": 10}, "c": {"n": 20}})
    # a (3) is below 5; with only it hidden, total − b − c gives it back: the smallest other row goes too.
    assert suppress(values, threshold=5, suppressible=list(values), equations=equations) == {("a", "n"), ("b", "n")}


def test_zero_is_shown_and_never_chosen_as_a_complement():
    values, equations = grid({"a": {"n": 0}, "b": {"n": 2}, "c": {"n": 9}, "d": {"n": 30}})
    hidden = suppress(values, threshold=5, suppressible=list(values), equations=equations)
    assert hidden == {("b", "n"), ("c", "n")}


def test_two_small_counts_protect_each_other():
    values, equations = grid({"a": {"n": 3}, "b": {"n": 4}, "c": {"n": 20}})
    assert suppress(values, threshold=5, suppressible=list(values), equations=equations) == {("a", "n"), ("b", "n")}


def test_a_single_row_hides_the_totals_row_with_it():
    values, equations = grid({"a": {"n": 3}})
    assert suppress(values, threshold=5, suppressible=list(values), equations=equations) == {("a", "n"), (T, "n")}


def test_a_breakdown_hides_a_second_category_and_the_columns_follow():
    rows = {
        "a": {"all": 30, "boys": 27, "girls": 3},
        "b": {"all": 40, "boys": 20, "girls": 20},
        "c": {"all": 50, "boys": 24, "girls": 26},
    }
    values, equations = grid(rows, {"all": ("boys", "girls")})
    hidden = suppress(values, threshold=5, suppressible=list(values), equations=equations)
    assert ("a", "girls") in hidden and ("a", "boys") in hidden  # the row: all − boys would give girls
    assert ("b", "girls") in hidden and ("b", "boys") in hidden  # the columns: total − others would give a's
    assert not recoverable(hidden, equations)


def test_a_threshold_of_one_or_zero_hides_nothing():
    values, equations = grid({"a": {"n": 1}, "b": {"n": 2}})
    for threshold in (0, 1):
        assert suppress(values, threshold=threshold, suppressible=list(values), equations=equations) == set()


def test_counts_that_are_not_suppressible_stay_shown():
    values, equations = grid({"a": {"pupils": 3}, "b": {"pupils": 400}})
    assert suppress(values, threshold=5, suppressible=[], equations=equations) == set()


def test_a_tied_quantity_is_hidden_with_its_count():
    values, equations = grid(
        {"a": {"aided": 2, "amount": 900}, "b": {"aided": 3, "amount": 1200}, "c": {"aided": 9, "amount": 100}}
    )
    hidden = suppress(
        values,
        threshold=5,
        suppressible=[v for v in values if v[1] == "aided"],
        equations=equations,
        ties=[((k, "aided"), (k, "amount")) for k in ("a", "b", "c", T)],
    )
    assert {("a", "amount"), ("b", "amount")} <= hidden
    assert not recoverable(hidden, equations)


def test_a_chain_of_rows_and_columns_that_pins_a_cell_is_broken():
    # Two columns and a partition: the one-unknown rule alone can leave a cell solvable through a cycle.
    rows = {
        "a": {"p": 6, "x": 3, "y": 3},
        "b": {"p": 12, "x": 4, "y": 8},
        "c": {"p": 30, "x": 15, "y": 15},
    }
    values, equations = grid(rows, {"p": ("x", "y")})
    hidden = suppress(values, threshold=5, suppressible=list(values), equations=equations)
    assert {("a", "x"), ("a", "y"), ("b", "x")} <= hidden
    assert not recoverable(hidden, equations)


# ---- generated tables ----------------------------------------------------------------------------------------

small = st.integers(min_value=0, max_value=12)


@st.composite
def tables(draw):
    n_rows = draw(st.integers(min_value=1, max_value=6))
    n_cats = draw(st.integers(min_value=2, max_value=4))
    rows = {}
    for i in range(n_rows):
        cats = [draw(small) for _ in range(n_cats)]
        row = {f"c{j}": v for j, v in enumerate(cats)}
        row["parent"] = sum(cats)
        row["other"] = draw(small)
        rows[f"r{i}"] = row
    threshold = draw(st.integers(min_value=2, max_value=6))
    return rows, tuple(f"c{j}" for j in range(n_cats)), threshold


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(tables())
def test_no_hidden_cell_of_a_generated_table_can_be_solved(case):
    rows, cats, threshold = case
    values, equations = grid(rows, {"parent": cats})
    hidden = suppress(values, threshold=threshold, suppressible=list(values), equations=equations)
    for var, v in values.items():
        if 0 < v < threshold:
            assert var in hidden, f"{var}={v} is below the threshold and shown"
    assert not peel(hidden, equations)
    assert not recoverable(hidden, equations), f"solvable: {recoverable(hidden, equations)} of {sorted(hidden)}"


# ---- the tables the API answers: every registry quantity, suppressed as the service does ---------------------

# The breakdowns, listed here from what they mean (not read from the registry): a reader knows these add up.
KNOWN_PARTITIONS = {
    "parents": ("left_behind", ["lb_parents_both", "lb_parents_father", "lb_parents_mother", "lb_parents_other"]),
    "sex": ("left_behind", ["lb_sex_male", "lb_sex_female"]),
    "age": ("left_behind", ["lb_age_0_5", "lb_age_6_13", "lb_age_14_16", "lb_age_17_up"]),
    "stage": ("left_behind", ["lb_stage_primary", "lb_stage_junior", "lb_stage_unplaced"]),
    "grade": ("left_behind", [f"lb_grade_{g}" for g in range(1, 10)] + ["lb_grade_unplaced"]),
    "boarding": ("left_behind", ["lb_boarding", "lb_day"]),
    "guardian": (
        "left_behind",
        [f"lb_guardian_{k}" for k in ("grandparents", "parent", "relatives", "other", "none")],
    ),
    "category": (
        "incidents",
        [
            f"incidents_{c}"
            for c in ("injury", "illness", "missing", "safety", "violence_bullying", "psychological_crisis", "other")
        ],
    ),
    "severity": ("incidents", [f"incidents_sev_{s}" for s in ("minor", "moderate", "severe", "critical")]),
}


def test_the_registry_declares_every_breakdown_a_reader_knows():
    declared = {(registry.BREAKDOWN_PARENT[n], tuple(parts)) for n, parts in registry.PARTITIONS.items()}
    assert {(parent, tuple(parts)) for parent, parts in KNOWN_PARTITIONS.values()} == declared


@st.composite
def registry_tables(draw):
    quantities = registry.quantities_of(list(registry.REGISTRY))
    n_rows = draw(st.integers(min_value=1, max_value=4))
    rows = {}
    for i in range(n_rows):
        lb = draw(st.integers(min_value=0, max_value=14))
        row = dict.fromkeys(quantities, 0)
        for q in quantities:
            row[q] = (
                draw(st.integers(min_value=0, max_value=lb))
                if q.startswith(("lb_", "archive", "paired"))
                else draw(small)
            )
        row["left_behind"] = lb
        for parent, parts in KNOWN_PARTITIONS.values():
            # Split the parent among the categories.
            left = row[parent]
            for p in parts[:-1]:
                row[p] = draw(st.integers(min_value=0, max_value=left))
                left -= row[p]
            row[parts[-1]] = left
        rows[f"r{i}"] = row
    total = {q: sum(r[q] for r in rows.values()) for q in quantities}
    return {**rows, TOTAL: total}


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(registry_tables())
def test_no_hidden_cell_of_an_api_table_can_be_solved_from_what_it_shows(counts):
    hidden = suppress_counts(counts, threshold=5)
    computed = Computed(units=[], counts=counts, minutes={k: {} for k in counts}, hidden=hidden)
    # What the table shows: every quantity some visible cell shows (a rate shows its numerator and denominator).
    shown: set = set()
    for key in counts:
        for ind in registry.REGISTRY.values():
            c: Cell = cell(computed, key, ind) if ind.definition.kind != IndicatorKind.minutes else Cell(value=None)
            if not c.suppressed and ind.definition.kind != IndicatorKind.minutes:
                shown.update((key, q) for q in ind.quantities)
    every = {(k, q) for k, row in counts.items() for q in row}
    unseen = every - shown
    rows = [k for k in counts if k != TOTAL]
    equations = [Equation((TOTAL, q), tuple((k, q) for k in rows)) for q in counts[TOTAL]]
    for parent, parts in KNOWN_PARTITIONS.values():
        equations += [Equation((k, parent), tuple((k, p) for p in parts)) for k in counts]
    for (k, q), v in ((var, counts[var[0]][var[1]]) for var in every):
        if 0 < v < 5 and q not in registry.NOT_SUPPRESSIBLE:
            assert (k, q) in unseen, f"{k}.{q}={v} is shown"
    assert not recoverable(unseen, equations)


@pytest.mark.parametrize("kind", [IndicatorKind.rate])
def test_a_rate_whose_numerator_or_denominator_is_hidden_is_hidden(kind):
    counts = {
        "a": {"archive_complete": 3, "left_behind": 40},
        "b": {"archive_complete": 30, "left_behind": 3},
        TOTAL: {"archive_complete": 33, "left_behind": 43},
    }
    hidden = {("a", "archive_complete"), ("b", "left_behind")}
    computed = Computed(units=[], counts=counts, minutes={}, hidden=hidden)
    ind = registry.REGISTRY["archive_rate"]
    assert ind.definition.kind == kind
    assert cell(computed, "a", ind) == Cell(value=None, suppressed=True)
    assert cell(computed, "b", ind) == Cell(value=None, suppressed=True)
    assert cell(computed, TOTAL, ind) == Cell(value=0.767, numerator=33, denominator=43)


def test_the_attacker_does_solve_what_primary_suppression_alone_leaves():
    values, equations = grid({"a": {"n": 3}, "b": {"n": 10}, "c": {"n": 20}})
    assert recoverable({("a", "n")}, equations) == {("a", "n")}
    rows = {"a": {"p": 6, "x": 3, "y": 3}, "b": {"p": 12, "x": 4, "y": 8}}
    values, equations = grid(rows, {"p": ("x", "y")})
    # a.x and b.x hidden (the column has two unknowns), but each row's parent and other category give them.
    assert recoverable({("a", "x"), ("b", "x")}, equations) == {("a", "x"), ("b", "x")}
    assert not peel({("a", "x"), ("a", "y"), ("b", "x"), ("b", "y")}, equations)


# ---- across levels: every table a caller can fetch, together ---------------------------------------------------

# A few quantities with their breakdowns (the registry's own: sex and boarding split left_behind), and a rate's
# numerator beside them — enough for the hierarchy to matter, small enough for the dense attacker.
LEVEL_QUANTITIES = ("left_behind", "lb_sex_male", "lb_sex_female", "lb_boarding", "lb_day", "archive_complete")
LEVEL_PARTITIONS = (("left_behind", ("lb_sex_male", "lb_sex_female")), ("left_behind", ("lb_boarding", "lb_day")))


def level_row(draw) -> dict[str, int]:
    lb = draw(st.integers(min_value=0, max_value=12))
    boys = draw(st.integers(min_value=0, max_value=lb))
    boarding = draw(st.integers(min_value=0, max_value=lb))
    return {
        "left_behind": lb,
        "lb_sex_male": boys,
        "lb_sex_female": lb - boys,
        "lb_boarding": boarding,
        "lb_day": lb - boarding,
        "archive_complete": draw(st.integers(min_value=0, max_value=lb)),
    }


@st.composite
def counties(draw):
    """A small county: townships of schools of classes (a class: a row of counts; a school: its classes'
    sum), and a threshold."""
    classes: dict[str, dict[str, dict[str, int]]] = {}  # school → class → row
    township_of: dict[str, str] = {}
    for t in range(draw(st.integers(min_value=1, max_value=3))):
        for s in range(draw(st.integers(min_value=1, max_value=3))):
            school = f"t{t}s{s}"
            township_of[school] = f"t{t}"
            classes[school] = {f"{school}c{c}": level_row(draw) for c in range(draw(st.integers(1, 3)))}
    return classes, township_of, draw(st.integers(min_value=3, max_value=6))


def every_table(classes, township_of, threshold):
    """What a bureau can fetch, as the service cuts it: the county, township and school tables of every area
    (views of one joint suppression) and each school's class table. Returns the hidden cells (named by unit)
    and every equation the tables show a reader (totals rows = the area's unit; breakdowns per row)."""
    from api.models.stats import Level
    from api.services.stats.service import Area, Joint, Unit, suppress_classes, suppress_tree, view

    def add(rows):
        return {q: sum(r[q] for r in rows) for q in LEVEL_QUANTITIES}

    school_rows = {s: add(list(cs.values())) for s, cs in classes.items()}
    townships = sorted(set(township_of.values()))
    township_rows = {t: add([school_rows[s] for s in school_rows if township_of[s] == t]) for t in townships}
    counts = {"county": add(list(township_rows.values())), **township_rows, **school_rows}
    children = {"county": townships, **{t: [s for s in school_rows if township_of[s] == t] for t in townships}}
    hidden = suppress_tree(counts, children, threshold=threshold)
    units = {"county": Unit("county", "county", None)}
    units |= {t: Unit(t, t, "county") for t in townships} | {s: Unit(s, s, township_of[s]) for s in school_rows}
    levels = (
        {"county": Level.county} | dict.fromkeys(townships, Level.township) | dict.fromkeys(school_rows, Level.school)
    )
    found = Joint(
        root=Area(Level.county, "county", "county", {}),  # type: ignore[arg-type]
        units=units,
        levels=levels,
        children=children,
        counts=counts,
        minutes={k: {} for k in counts},
        hidden=hidden,
        as_of=None,
        memo_key=None,
    )
    shown_hidden: set = set()
    equations: list[Equation] = []

    def read(table, name_of):
        """A table as a reader sees it: its hidden cells and its equations, under the units' own names."""
        for k, row in table.counts.items():
            for q in row:
                if (k, q) in table.hidden:
                    shown_hidden.add((name_of(k), q))
        rows = [k for k in table.counts if k != TOTAL]
        for q in table.counts[TOTAL]:
            if all(q in table.counts[k] for k in rows):
                equations.append(Equation((name_of(TOTAL), q), tuple((name_of(k), q) for k in rows)))
        for whole, parts in LEVEL_PARTITIONS:
            for k in table.counts:
                equations.append(Equation((name_of(k), whole), tuple((name_of(k), p) for p in parts)))

    areas = [
        ("county", Level.county),
        *((t, Level.township) for t in townships),
        *((s, Level.school) for s in school_rows),
    ]
    for area_id, area_level in areas:
        area = Area(area_level, area_id, area_id, {})  # type: ignore[arg-type]
        for level in (Level.county, Level.township, Level.school):
            if (Level.county, Level.township, Level.school).index(level) >= (
                Level.county,
                Level.township,
                Level.school,
            ).index(area_level):
                read(view(found, area, level), lambda k, a=area_id: a if k == TOTAL else k)
    for school, rows in classes.items():
        table_counts = {**rows, TOTAL: counts[school]}
        class_hidden = suppress_classes(found, school, table_counts, threshold=threshold)
        table = Computed(units=[], counts=table_counts, minutes={}, hidden=class_hidden)
        read(table, lambda k, s=school: s if k == TOTAL else k)
    return counts, classes, shown_hidden, equations


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(counties())
def test_no_hidden_cell_can_be_solved_from_every_table_of_every_level_together(case):
    classes, township_of, threshold = case
    counts, classes, hidden, equations = every_table(classes, township_of, threshold)
    every = {**counts, **{c: row for rows in classes.values() for c, row in rows.items()}}
    for unit, row in every.items():
        for q, v in row.items():
            if 0 < v < threshold:
                assert (unit, q) in hidden, f"{unit}.{q}={v} is below the threshold and shown"
    assert not peel(hidden, equations)
    assert not recoverable(hidden, equations), f"solvable: {recoverable(hidden, equations)}"


def test_per_table_suppression_leaks_across_levels_and_the_attacker_sees_it():
    # The case a review found: 柳河乡 = 23 in the township table; 二小 = 20 in the school table; so 中心小学 = 3.
    township = {"石桥镇": {"n": 6}, "柳河乡": {"n": 23}, TOTAL: {"n": 29}}
    school = {"石桥镇中心小学": {"n": 6}, "柳河乡中心小学": {"n": 3}, "柳河乡二小": {"n": 20}, TOTAL: {"n": 29}}
    hidden = {("township", k, q) for k, q in suppress_counts(township, threshold=5)}
    hidden |= {("school", k, q) for k, q in suppress_counts(school, threshold=5)}
    assert ("school", "柳河乡中心小学", "n") in hidden and ("school", "柳河乡二小", "n") not in hidden
    named = {("township", "石桥镇"): "石桥镇", ("township", "柳河乡"): "柳河乡", ("township", TOTAL): "county"}
    named |= {("school", k): k for k in school if k != TOTAL} | {("school", TOTAL): "county"}
    unknown = {(named[(t, k)], q) for t, k, q in hidden}
    equations = [
        Equation(("county", "n"), (("石桥镇", "n"), ("柳河乡", "n"))),
        Equation(("石桥镇", "n"), (("石桥镇中心小学", "n"),)),
        Equation(("柳河乡", "n"), (("柳河乡中心小学", "n"), ("柳河乡二小", "n"))),
    ]
    assert ("柳河乡中心小学", "n") in recoverable(unknown, equations)


# ---- through the API: two tables of two levels -----------------------------------------------------------------


async def test_a_school_hidden_in_the_school_table_cannot_be_had_from_its_township_minus_the_others(app, client, world):
    """The review's case: 柳河乡 = 23 in the township table and 柳河乡二小 = 20 in the school table would give
    柳河乡中心小学 = 3. Each township shown must have none or at least two of its schools hidden (and the county
    none or at least two of its townships)."""
    from datetime import UTC, date, datetime

    from api.db import scoped_session
    from api.models.children import Child, ParentsAway, Sex
    from api.models.organisations import School
    from api.scoping import SYSTEM

    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        second = School(county_id=world["county"], township_id=world["township2"], name="柳河乡二小", pupil_count=300)
        s.add(second)
        await s.flush()
        for school_id, n in ((world["school1"], 6), (world["school2"], 3), (second.id, 20)):
            for i in range(n):
                s.add(
                    Child(
                        school_id=school_id,
                        name=f"统计{i}",
                        sex=Sex.male,
                        birth_date=date(2016, 3, 1),
                        parents_away=ParentsAway.both,
                        is_boarding=False,
                        created_at=datetime(2026, 9, 1, 1, 0, tzinfo=UTC),
                    )
                )
    params = {"period": "month", "key": "2026-11", "indicators": "left_behind"}

    async def fetch(level):
        r = await client.get("/stats/table", params={**params, "level": level}, headers=world.headers("bureau"))
        assert r.status_code == 200, r.text
        body = r.json()
        return {row["unit_id"]: row["cells"]["left_behind"] for row in body["rows"]}, body["total"]["cells"]

    townships, county = await fetch("township")
    schools, county_again = await fetch("school")
    assert county == county_again
    assert schools[str(world["school2"])]["suppressed"]  # 3 children: a small count
    parent = {str(world["school1"]): str(world["township1"]), str(world["school2"]): str(world["township2"])}
    parent[str(second.id)] = str(world["township2"])
    for township, shown_cell in townships.items():
        mine = [c for s, c in schools.items() if parent[s] == township]
        hidden = sum(1 for c in mine if c["suppressed"])
        assert shown_cell["suppressed"] or hidden != 1, f"{township}: shown, with exactly one of its schools hidden"
    hidden_townships = sum(1 for c in townships.values() if c["suppressed"])
    assert county["left_behind"]["suppressed"] or hidden_townships != 1


# ---- fixed cells and what a table tells about them (the class tables' part) ----------------------------------


def test_a_fixed_shown_cell_is_never_chosen_as_a_complement():
    values, equations = grid({"a": {"n": 3}, "b": {"n": 30}, "c": {"n": 40}})
    hidden = suppress(values, threshold=5, suppressible=list(values), equations=equations, fixed={("b", "n"): False})
    assert hidden == {("a", "n"), ("c", "n")}


def test_a_fixed_hidden_cell_is_protected_by_free_cells():
    values, equations = grid({"a": {"n": 10}, "b": {"n": 20}})
    hidden = suppress(values, threshold=5, suppressible=list(values), equations=equations, fixed={(T, "n"): True})
    assert hidden == {(T, "n"), ("a", "n")}
    assert not recoverable(hidden, equations)


def test_a_relation_known_from_elsewhere_counts_like_an_equation():
    # The school's x and y are hidden (fixed) and x − y is known from other tables. One class c holds them all
    # (d has none): c.x = S.x and c.y = S.y. Shown, c.y would give S.y, and x − y then S.x; so c.y is hidden
    # as well as c.x — and nothing is determined with the known relation counted.
    values = {("S", "x"): 8, ("S", "y"): 9, ("c", "x"): 8, ("c", "y"): 9, ("d", "x"): 0, ("d", "y"): 0}
    equations = [Equation(("S", "x"), (("c", "x"), ("d", "x"))), Equation(("S", "y"), (("c", "y"), ("d", "y")))]
    fixed = {("S", "x"): True, ("S", "y"): True}
    known = [{("S", "x"): 1, ("S", "y"): -1}]
    hidden = suppress(values, threshold=5, suppressible=[], equations=equations, fixed=fixed, known=known)
    assert {("c", "x"), ("c", "y")} <= hidden
    assert not determined(hidden, equations, known)


def test_narrowed_finds_what_a_table_tells_about_cells_decided_elsewhere():
    school = {("S", "x"), ("S", "y")}
    # One class that is the school: its x and y hidden, its w = x + y shown → x + y of the school is known.
    equations = [
        Equation(("S", "x"), (("c", "x"),)),
        Equation(("S", "y"), (("c", "y"),)),
        Equation(("c", "w"), (("c", "x"), ("c", "y"))),
    ]
    hidden = school | {("c", "x"), ("c", "y")}
    assert narrowed(hidden, equations, [], school) == school
    # …unless the school's own w (shown) already tells it.
    assert narrowed(hidden, equations, [Equation(("S", "w"), (("S", "x"), ("S", "y")))], school) == set()
    # With c.w hidden too, the class table tells nothing about the school's cells.
    assert narrowed(hidden | {("c", "w")}, equations, [], school) == set()
    [relation] = implied(hidden, equations, school)
    assert set(relation) == school and relation[("S", "x")] == relation[("S", "y")]  # x + y


async def test_a_tables_totals_row_is_its_area_as_the_table_one_level_up_shows_it(app, client, world):
    """Every table of a caller is cut from one suppression: the class table's totals row is the school's row
    of the school table, a township's school table's totals row is its row of the township table, and the
    county's figures are the same in every table — hidden cells included."""
    from tests.stats_dataset import build_dataset

    await build_dataset(app, client, world)

    async def fetch(level, area=None):
        params = {"period": "month", "key": "2026-11", "level": level}
        if area is not None:
            params["area_id"] = str(world[area])
        r = await client.get("/stats/table", params=params, headers=world.headers("bureau"))
        assert r.status_code == 200, r.text
        body = r.json()
        return {row["unit_id"]: (row["cells"], row["previous"]) for row in body["rows"]}, (
            body["total"]["cells"],
            body["total"]["previous"],
        )

    schools, county = await fetch("school")
    townships, county_again = await fetch("township")
    county_row, _ = await fetch("county")
    assert county == county_again == county_row[str(world["county"])]
    assert any(c["suppressed"] for c in county[0].values())  # the small county has hidden cells to compare
    for school, township in (("school1", "township1"), ("school2", "township2")):
        _, class_total = await fetch("class", school)
        assert class_total == schools[str(world[school])]
        _, township_total = await fetch("school", township)
        assert township_total == townships[str(world[township])]


# ---- across periods: a quarter (term, year…) less its other months; the worst minutes -------------------------


async def _incidents_by_month(app, world, plan):
    """``plan``: (school id, Shanghai day, count, minutes to "told" of step 1) — that many incidents of one child
    of the school on that day, step 1 told after those minutes."""
    from datetime import UTC, date, datetime, timedelta
    from zoneinfo import ZoneInfo

    from api.db import scoped_session
    from api.models.children import Child, ParentsAway, Sex
    from api.models.escalation import EscalationStep, StepStatus
    from api.models.incidents import Incident, IncidentCategory, Severity
    from api.models.organisations import School
    from api.scoping import SYSTEM

    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        n = 0
        for school_id, day, count, told_after in plan:
            school = await s.get(School, school_id)
            assert school is not None
            child = Child(
                school_id=school_id,
                name=f"时段{n}",
                sex=Sex.female,
                birth_date=date(2015, 5, 1),
                parents_away=ParentsAway.both,
                is_boarding=False,
                created_at=datetime(2026, 1, 5, 1, 0, tzinfo=UTC),
            )
            s.add(child)
            await s.flush()
            for _ in range(count):
                n += 1
                at = datetime(day.year, day.month, day.day, 9, 0, tzinfo=ZoneInfo("Asia/Shanghai")).astimezone(UTC)
                row = Incident(
                    case_code=f"P-{n}",
                    county_id=school.county_id,
                    township_id=school.township_id,
                    school_id=school_id,
                    child_id=child.id,
                    category=IncidentCategory.injury,
                    severity=Severity.minor,
                    summary="测试",
                    location="学校",
                    occurred_at=at,
                    first_actions="处置",
                    reported_at=at + timedelta(minutes=2),
                    reported_by_id=world["admin1"],
                    policy={},
                    updated_at=at,
                )
                s.add(row)
                await s.flush()
                s.add(
                    EscalationStep(
                        incident_id=row.id,
                        step_no=1,
                        deadline_minutes=30,
                        deadline_at=at + timedelta(minutes=30),
                        starts_at=at,
                        status=StepStatus.told,
                        started_at=at,
                        told_at=at + timedelta(minutes=told_after),
                        ack_wait_seconds=300,
                        near_margin_seconds=600,
                        max_rounds=3,
                        round_pause_seconds=300,
                    )
                )


async def test_a_hidden_month_cannot_be_had_from_a_longer_period_less_its_other_months(app, client, world):
    """November: 柳河乡中心小学 has 2 incidents (hidden; its township's other school and 石桥镇 hide with it);
    October: 6 and 6, shown. The quarter (term, school year, year) 2026-Q4 = October + November would give
    November = Q4 − October = 2. Every hidden month of a school must stay unknown from every longer period
    that holds it less its other months; the exports show the same cells."""
    from datetime import date

    from api.db import scoped_session
    from api.models.organisations import School
    from api.scoping import SYSTEM

    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        second = School(county_id=world["county"], township_id=world["township2"], name="柳河乡二小", pupil_count=300)
        s.add(second)
        await s.flush()
    s1, s2, s3 = str(world["school1"]), str(world["school2"]), str(second.id)
    await _incidents_by_month(
        app,
        world,
        [
            (world["school1"], date(2026, 10, 9), 6, 8),
            (world["school2"], date(2026, 10, 12), 6, 9),
            (second.id, date(2026, 10, 14), 6, 10),
            (world["school1"], date(2026, 11, 3), 6, 7),
            (world["school2"], date(2026, 11, 4), 2, 200),  # one child's incidents: its worst time is theirs
            (second.id, date(2026, 11, 5), 7, 11),
        ],
    )
    keys = "incidents,chain_s1_on_time_rate,chain_s1_median_minutes,chain_s1_worst_minutes"

    async def table(period, key, level="school"):
        params = {"period": period, "key": key, "level": level, "indicators": keys}
        r = await client.get("/stats/table", params=params, headers=world.headers("bureau"))
        assert r.status_code == 200, r.text
        body = r.json()
        return {row["unit_id"]: row["cells"] for row in body["rows"]} | {"total": body["total"]["cells"]}

    months = {m: await table("month", m) for m in ("2026-01", "2026-09", "2026-10", "2026-11")}
    nov = months["2026-11"]
    assert nov[s2]["incidents"]["suppressed"]  # 2: a small count
    longer = {
        ("quarter", "2026-Q4"): ["2026-10", "2026-11"],
        ("term", "2026-2027-1"): ["2026-09", "2026-10", "2026-11"],
        ("school_year", "2026-2027"): ["2026-09", "2026-10", "2026-11"],
        ("year", "2026"): [f"2026-{m:02d}" for m in range(1, 12)],
    }
    for (kind, key), parts in longer.items():
        whole = await table(kind, key)
        for m in parts:
            if m not in months:
                months[m] = await table("month", m)
        for unit in (s1, s2, s3, "total"):
            hidden = [m for m in parts if months[m][unit]["incidents"]["suppressed"]]
            shown = not whole[unit]["incidents"]["suppressed"]
            assert not (shown and len(hidden) == 1), f"{kind} {key} less its other months gives {hidden} of {unit}"
            if shown:  # what is shown is the sum of what its months show
                assert whole[unit]["incidents"]["value"] == sum(months[m][unit]["incidents"]["value"] for m in parts)
    # The worst minutes: a township's or the county's worst of November (school 2's 200 minutes) is shown only
    # when a school shows it; none does, so it is hidden — in the tables and in every export.
    townships = await table("month", "2026-11", level="township")
    for unit in (str(world["township2"]), "total"):
        worst = townships[unit]["chain_s1_worst_minutes"]
        attained = [
            u for u in (s1, s2, s3) if not nov[u]["chain_s1_worst_minutes"]["suppressed"]
            and nov[u]["chain_s1_worst_minutes"]["value"] == worst["value"]
        ]  # fmt: skip
        assert worst["suppressed"] or attained, f"{unit}: worst {worst['value']} shown, no school shows it"
    assert townships[str(world["township2"])]["chain_s1_worst_minutes"]["suppressed"]
    assert not townships[str(world["township2"])]["incidents"]["suppressed"]  # 9 incidents: the count is shown
    r = await client.get(
        "/stats/export.csv",
        params={"level": "township", "period": "month", "key": "2026-11"},
        headers=world.headers("bureau"),
    )
    assert r.status_code == 200, r.text
    rows = list(__import__("csv").reader(r.content.decode("utf-8-sig").splitlines()))
    column = next(i for i, h in enumerate(rows[0]) if h.startswith("第1步告知用时(最长)"))
    by_name = {row[1]: row for row in rows[1:]}
    assert "200" not in by_name["柳河乡"][column] and by_name["柳河乡"][column].startswith("<")


# ---- every table of every period, pooled -----------------------------------------------------------------------

STOCKS = ("left_behind", "lb_sex_male", "lb_sex_female")
FLOWS = ("incidents", "chain_s1_told", "aid_records")  # add up over months
MONTHS = ("m1", "m2", "m3")
LONGER = {"quarter": MONTHS, "late": ("m2", "m3")}  # a quarter, and a period overlapping it (a term's months)


@st.composite
def counties_over_months(draw):
    """A small county of schools of classes, each class with three months of figures: children on the roster
    at each month's end (with their sex), incidents, steps told and aid records (which add up over months),
    children aided (distinct: a longer period's is at least its largest month's and at most their sum)."""
    classes: dict[str, dict[str, dict[str, dict[str, int]]]] = {}  # school → class → period → row
    township_of: dict[str, str] = {}
    for t in range(draw(st.integers(min_value=1, max_value=2))):
        for s in range(draw(st.integers(min_value=1, max_value=2))):
            school = f"t{t}s{s}"
            township_of[school] = f"t{t}"
            classes[school] = {}
            for c in range(draw(st.integers(1, 2))):
                by_month: dict[str, dict[str, int]] = {}
                for m in MONTHS:
                    lb = draw(st.integers(min_value=0, max_value=9))
                    boys = draw(st.integers(min_value=0, max_value=lb))
                    incidents = draw(st.integers(min_value=0, max_value=7))
                    aided = draw(st.integers(min_value=0, max_value=6))
                    by_month[m] = {
                        "left_behind": lb,
                        "lb_sex_male": boys,
                        "lb_sex_female": lb - boys,
                        "incidents": incidents,
                        "chain_s1_told": draw(st.integers(min_value=0, max_value=incidents)),
                        "aid_records": aided + draw(st.integers(min_value=0, max_value=2)),
                        "aid_children": aided,
                    }
                for name, months in LONGER.items():
                    row = {q: sum(by_month[m][q] for m in months) for q in FLOWS}
                    row |= {q: by_month[months[-1]][q] for q in STOCKS}
                    most = max(by_month[m]["aid_children"] for m in months)
                    total = sum(by_month[m]["aid_children"] for m in months)
                    row["aid_children"] = draw(st.integers(min_value=most, max_value=total))
                    by_month[name] = row
                classes[school][f"{school}c{c}"] = by_month
    return classes, township_of, draw(st.integers(min_value=3, max_value=6))


def every_table_of_every_period(classes, township_of, threshold):
    """Everything a bureau can fetch, as the service cuts it, for three months and two longer periods made of
    them: every level × area (views of each period's joint suppression, the longer ones decided by their
    months first) and each school's class table. Returns the hidden cells and the equations a reader has —
    the tables' own, and each longer period's flow as the sum of its months', its stocks as its last month's."""
    from api.models.stats import Level
    from api.services.stats.service import Area, Joint, Unit, solve_joint, suppress_classes, tree_equations, view

    quantities = (*STOCKS, *FLOWS, "aid_children")
    townships = sorted(set(township_of.values()))
    children = {"county": townships, **{t: [s for s in classes if township_of[s] == t] for t in townships}}
    units = {"county": Unit("county", "county", None)}
    units |= {t: Unit(t, t, "county") for t in townships} | {s: Unit(s, s, township_of[s]) for s in classes}
    levels = {"county": Level.county} | dict.fromkeys(townships, Level.township) | dict.fromkeys(classes, Level.school)
    hidden: set = set()
    equations: list[Equation] = []
    every: dict = {}  # (period, unit) → row

    def add(rows):
        return {q: sum(r[q] for r in rows) for q in quantities}

    joints: dict[str, Joint] = {}
    class_tables: dict[tuple[str, str], Computed] = {}
    for period in (*MONTHS, *LONGER):
        parts = [joints[m] for m in LONGER.get(period, ())]
        school_rows = {s: add([by[period] for by in cs.values()]) for s, cs in classes.items()}
        township_rows = {t: add([school_rows[s] for s in children[t]]) for t in townships}
        counts = {"county": add(list(township_rows.values())), **township_rows, **school_rows}
        minutes = {k: {} for k in counts}
        found = Joint(
            root=Area(Level.county, "county", "county", {}),  # type: ignore[arg-type]
            units=units,
            levels=levels,
            children=children,
            counts=counts,
            minutes=minutes,
            hidden=solve_joint(counts, minutes, children, levels, parts, threshold=threshold),
            as_of=None,
            memo_key=None,
            equations=tree_equations(counts, children),
            parts=parts,
        )
        joints[period] = found
        every |= {(period, k): row for k, row in counts.items()}

        def read(table, name_of, period=period):
            for k, row in table.counts.items():
                for q in row:
                    if (k, q) in table.hidden:
                        hidden.add((period, name_of(k), q))
            rows = [k for k in table.counts if k != TOTAL]
            for q in table.counts[TOTAL]:
                whole = (period, name_of(TOTAL), q)
                equations.append(Equation(whole, tuple((period, name_of(k), q) for k in rows)))
            for k in table.counts:
                equations.append(
                    Equation((period, name_of(k), "left_behind"), tuple((period, name_of(k), q) for q in STOCKS[1:]))
                )

        for area_id, area_level in (
            ("county", Level.county),
            *((t, Level.township) for t in townships),
            *((s, Level.school) for s in classes),
        ):
            area = Area(area_level, area_id, area_id, {})  # type: ignore[arg-type]
            for level in (Level.county, Level.township, Level.school):
                order = (Level.county, Level.township, Level.school)
                if order.index(level) >= order.index(area_level):
                    read(view(found, area, level), lambda k, a=area_id: a if k == TOTAL else k)
        for school, cs in classes.items():
            table_counts = {c: {q: by[period][q] for q in quantities} for c, by in cs.items()}
            table_counts[TOTAL] = counts[school]
            table_minutes = {k: {} for k in table_counts}
            months = [class_tables[(m, school)] for m in LONGER.get(period, ())]
            class_hidden = suppress_classes(
                found, school, table_counts, threshold=threshold, minutes=table_minutes, months=months
            )
            table = Computed(units=[], counts=table_counts, minutes=table_minutes, hidden=class_hidden)
            class_tables[(period, school)] = table
            every |= {(period, c): row for c, row in table_counts.items() if c != TOTAL}
            read(table, lambda k, s=school: s if k == TOTAL else k)
    # What a reader knows of periods against each other.
    for name, months in LONGER.items():
        for _, unit in [key for key in every if key[0] == name]:
            for q in FLOWS:
                equations.append(Equation((name, unit, q), tuple((m, unit, q) for m in months)))
            for q in STOCKS:
                equations.append(Equation((name, unit, q), ((months[-1], unit, q),)))
    return every, hidden, equations


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(counties_over_months())
def test_no_hidden_cell_can_be_solved_from_every_table_of_every_period_together(case):
    classes, township_of, threshold = case
    every, hidden, equations = every_table_of_every_period(classes, township_of, threshold)
    for (period, unit), row in every.items():
        for q, v in row.items():
            if 0 < v < threshold:
                assert (period, unit, q) in hidden, f"{period} {unit}.{q}={v} is below the threshold and shown"
    assert not peel(hidden, equations)
    assert not recoverable(hidden, equations), f"solvable: {recoverable(hidden, equations)}"


def test_periods_suppressed_each_on_its_own_leak_and_the_attacker_sees_it():
    """The attacker of the pooled test is not blind: a quarter suppressed on its own gives a hidden month."""
    months = {"m1": {"a": 6, "b": 7}, "m2": {"a": 2, "b": 9}}
    hidden = {(m, k, q) for m, rows in months.items() for k, q in suppress_counts(
        {k: {"n": v} for k, v in rows.items()} | {TOTAL: {"n": sum(rows.values())}}, threshold=5)}  # fmt: skip
    quarter = {"a": 8, "b": 16}
    hidden |= {("q", k, q) for k, q in suppress_counts(
        {k: {"n": v} for k, v in quarter.items()} | {TOTAL: {"n": 24}}, threshold=5)}  # fmt: skip
    assert ("q", "a", "n") not in hidden and ("m2", "a", "n") in hidden
    equations = [Equation(("q", k, "n"), (("m1", k, "n"), ("m2", k, "n"))) for k in ("a", "b", TOTAL)]
    equations += [Equation((p, TOTAL, "n"), ((p, "a", "n"), (p, "b", "n"))) for p in ("m1", "m2", "q")]
    assert ("m2", "a", "n") in recoverable(hidden, equations)


# ---- the worst minutes -----------------------------------------------------------------------------------------


def _joint_of(counts, minutes, parts=()):
    from api.models.stats import Level
    from api.services.stats.service import Area, Joint, Unit, solve_joint, tree_equations

    children = {"county": [k for k in counts if k != "county"]}
    levels = {"county": Level.county} | dict.fromkeys(children["county"], Level.school)
    return Joint(
        root=Area(Level.county, "county", "county", {}),  # type: ignore[arg-type]
        units={k: Unit(k, k, None if k == "county" else "county") for k in counts},
        levels=levels,
        children=children,
        counts=counts,
        minutes=minutes,
        hidden=solve_joint(counts, minutes, children, levels, list(parts), threshold=5),
        as_of=None,
        memo_key=None,
        equations=tree_equations(counts, children),
        parts=list(parts),
    )


def _chain(told: int) -> dict[str, int]:
    return {"chain_s1_told": told}


def test_a_worst_no_shown_school_attains_is_hidden_and_one_a_shown_school_attains_is_shown():
    # School a: 2 steps told (hidden), the worst 200 minutes; b: 7, worst 30 (hidden with a, as its complement).
    hidden = _joint_of(
        {"county": _chain(9), "a": _chain(2), "b": _chain(7)},
        {"county": {"s1_worst": 200.0}, "a": {"s1_worst": 200.0}, "b": {"s1_worst": 30.0}},
    ).hidden
    assert ("a", "chain_s1_told") in hidden and ("county", "s1_worst") in hidden
    # Three schools: c (6 steps) is a's complement, b (20) shown with the worst of all: the county's is b's.
    shown = _joint_of(
        {"county": _chain(28), "a": _chain(2), "b": _chain(20), "c": _chain(6)},
        {"county": {"s1_worst": 200.0}, "a": {"s1_worst": 10.0}, "b": {"s1_worst": 200.0}, "c": {"s1_worst": 9.0}},
    ).hidden
    assert {("a", "chain_s1_told"), ("c", "chain_s1_told")} <= shown
    assert ("b", "chain_s1_told") not in shown and ("county", "s1_worst") not in shown


def test_a_longer_periods_worst_is_shown_only_when_a_shown_month_of_a_school_attains_it():
    m1 = _joint_of(
        {"county": _chain(12), "a": _chain(6), "b": _chain(6)},
        {"county": {"s1_worst": 40.0}, "a": {"s1_worst": 40.0}, "b": {"s1_worst": 30.0}},
    )
    m2 = _joint_of(
        {"county": _chain(9), "a": _chain(2), "b": _chain(7)},
        {"county": {"s1_worst": 200.0}, "a": {"s1_worst": 200.0}, "b": {"s1_worst": 30.0}},
    )
    assert ("a", "chain_s1_told") in m2.hidden and ("county", "chain_s1_told") not in m2.hidden
    quarter = _joint_of(
        {"county": _chain(21), "a": _chain(8), "b": _chain(13)},
        {"county": {"s1_worst": 200.0}, "a": {"s1_worst": 200.0}, "b": {"s1_worst": 30.0}},
        parts=[m1, m2],
    )
    # The county's quarter is shown (both its months are) but its worst would be a's of m2: hidden.
    assert ("county", "chain_s1_told") not in quarter.hidden
    assert ("county", "s1_worst") in quarter.hidden
    # Had the quarter's worst been m1's (shown, a's 40 minutes), it would be shown.
    m2_low = _joint_of(
        {"county": _chain(9), "a": _chain(2), "b": _chain(7)},
        {"county": {"s1_worst": 35.0}, "a": {"s1_worst": 35.0}, "b": {"s1_worst": 30.0}},
    )
    quarter_low = _joint_of(
        {"county": _chain(21), "a": _chain(8), "b": _chain(13)},
        {"county": {"s1_worst": 40.0}, "a": {"s1_worst": 40.0}, "b": {"s1_worst": 30.0}},
        parts=[m1, m2_low],
    )
    assert ("county", "s1_worst") not in quarter_low.hidden


def test_a_class_tables_worst_held_by_one_hidden_class_alone_gets_a_second_candidate():
    from api.services.stats.across import worst_candidates

    counts = {"c1": _chain(2), "c2": _chain(5), "c3": _chain(0), TOTAL: _chain(7)}
    minutes = {"c1": {"s1_worst": 90.0}, "c2": {"s1_worst": 20.0}, "c3": {}, TOTAL: {"s1_worst": 90.0}}
    # c1's worst hidden with its steps; c2 shown: the school's 90 minutes could only be c1's.
    hidden = {("c1", "chain_s1_told")}
    assert worst_candidates(["c1", "c2", "c3"], counts, minutes, hidden, TOTAL) == {("c2", "s1_worst")}
    # With c2's steps hidden as well, either could hold it: nothing more.
    hidden |= {("c2", "chain_s1_told")}
    assert worst_candidates(["c1", "c2", "c3"], counts, minutes, hidden, TOTAL) == set()


@st.composite
def worst_counties(draw):
    """Schools of two townships with three months of steps told and their worst minutes."""
    schools = {f"t{t}s{s}": f"t{t}" for t in range(2) for s in range(draw(st.integers(1, 3)))}
    months = {}
    for m in MONTHS:
        months[m] = {}
        for school in schools:
            told = draw(st.integers(min_value=0, max_value=8))
            worst = float(draw(st.integers(min_value=1, max_value=60))) if told else None
            months[m][school] = (told, worst)
    return schools, months


@settings(max_examples=80, deadline=None, suppress_health_check=list(HealthCheck))
@given(worst_counties())
def test_no_hidden_worst_is_pinned_by_a_shown_maximum_of_any_period_or_level(case):
    """A reader holding every shown worst (schools, townships, the county; months and the longer periods) knows
    each is the maximum of the (school, month) worsts under it, so a hidden one is at most every shown maximum
    over it. A hidden (school, month) worst is pinned when a shown maximum is held by no shown atom under it
    and it is the only hidden one that could hold it; the rule goes further: every shown maximum is held by a
    shown (school, month)."""
    from api.models.stats import Level
    from api.services.stats.service import Joint, solve_joint, tree_equations

    schools, months = case
    townships = sorted(set(schools.values()))
    children = {"county": townships, **{t: [s for s in schools if schools[s] == t] for t in townships}}
    levels = {"county": Level.county} | dict.fromkeys(townships, Level.township) | dict.fromkeys(schools, Level.school)

    def under(unit):
        return [unit] if unit in schools else [s for k in children[unit] for s in under(k)]

    joints: dict[str, Joint] = {}
    shown_max: list[tuple[str, str, float]] = []  # (period, unit, worst shown)
    for period in (*MONTHS, *LONGER):
        parts = LONGER.get(period, ())
        counts, minutes = {}, {}
        for unit in ("county", *townships, *schools):
            cells = [months[m][s] for m in (parts or (period,)) for s in under(unit)]
            counts[unit] = {"chain_s1_told": sum(t for t, _ in cells)}
            worsts = [w for _, w in cells if w is not None]
            minutes[unit] = {"s1_worst": max(worsts) if worsts else None}
        hidden = solve_joint(counts, minutes, children, levels, [joints[m] for m in parts], threshold=5)
        joints[period] = Joint(
            root=None,  # type: ignore[arg-type]
            units={},
            levels=levels,
            children=children,
            counts=counts,
            minutes=minutes,
            hidden=hidden,
            as_of=None,
            memo_key=None,
            equations=tree_equations(counts, children),
        )
        for unit, row in minutes.items():
            shown = ("s1_worst" not in {q for k, q in hidden if k == unit}) and (unit, "chain_s1_told") not in hidden
            if shown and row["s1_worst"] is not None:
                shown_max.append((period, unit, row["s1_worst"]))
    atom_shown = {
        (m, s): (s, "chain_s1_told") not in joints[m].hidden and (s, "s1_worst") not in joints[m].hidden
        for m in MONTHS
        for s in schools
    }

    def atoms_of(period, unit):
        return [(m, s) for m in (LONGER.get(period) or (period,)) for s in under(unit)]

    # Each hidden atom is at most every shown maximum over it: one below W cannot hold W.
    bound: dict[tuple[str, str], float] = {}
    for period, unit, worst in shown_max:
        for a in atoms_of(period, unit):
            bound[a] = min(bound.get(a, worst), worst)
    for period, unit, worst in shown_max:
        atoms = atoms_of(period, unit)
        if any(atom_shown[a] and months[a[0]][a[1]][1] == worst for a in atoms):
            continue
        could = [a for a in atoms if not atom_shown[a] and bound.get(a, worst) >= worst]
        assert len(could) >= 2, f"{period} {unit}: the worst {worst} shown can only be {could}'s"
        raise AssertionError(f"{period} {unit}: the worst {worst} is held by no shown school month")
