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
