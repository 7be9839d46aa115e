"""Row-level security declarations: which rows of a table the API may touch, by the principal's scope.

Every table either declares its policies here (with :func:`row_security`, next to its model) or says why it is
not scoped (:func:`unscoped`); ``tests/test_row_security.py`` fails on a table that does neither and on any
difference between these declarations and the database (``pg_policies``). PostgreSQL enforces the policies
for every statement — ORM, Core and raw SQL alike — once a request has taken the role :data:`APP_ROLE`
(``api/scoping.py`` sets it, with the principal's scope, at the start of each transaction).

The policies read the scope from transaction-local settings, through the SQL helpers below. Each helper is
wrapped in a scalar subquery — an InitPlan that PostgreSQL evaluates once per statement — so a policy
compares a column with a constant: ``school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])`` is an index
condition where an index on ``school_id`` serves, and the setting is not parsed again for every row (the cast
makes PostgreSQL read ``ANY`` over the array rather than over the subquery's rows). An unset setting is NULL,
so a principal without that part of the scope sees nothing through it.

Platform administrators take :data:`PLATFORM_ROLE`, for which every scoped table has one policy that allows
every row; the policies here are written for everyone else and so carry no "or a platform admin" arm.
"""

from dataclasses import dataclass

APP_ROLE = "liushou_app"
PLATFORM_ROLE = "liushou_platform"

# The principal's scope, as SQL (see api/scoping.py for how each is filled in).
ROLE = "(SELECT scope_text('role'))"
ACCOUNT = "(SELECT scope_id('account_id'))"
COUNTY = "(SELECT scope_id('county_id'))"  # staff only (not families)
TOWNSHIP = "(SELECT scope_id('township_id'))"  # township officials, school staff
SCHOOLS = "(SELECT scope_ids('school_ids'))::uuid[]"  # the schools a staff member sees (none for families)
TOWNSHIPS = "(SELECT scope_ids('township_ids'))::uuid[]"
FAMILY_CHILDREN = "(SELECT scope_ids('child_ids'))::uuid[]"  # a family's children (by its active guardian links)
FAMILY_GUARDIANS = "(SELECT scope_ids('guardian_ids'))::uuid[]"  # a family's own guardian records
STAFF = "('county_bureau', 'township_official', 'school_admin', 'teacher')"  # every staff role but platform


@dataclass(frozen=True)
class Policy:
    """One permissive policy for :data:`APP_ROLE`. Permissive policies of a table are OR-ed together.

    ``using`` limits the rows a statement sees (and may update or delete); ``check`` limits the rows it may
    write, and is ``using`` when left out (PostgreSQL's rule for ``FOR ALL``)."""

    name: str
    using: str | None
    check: str | None = None
    command: str = "ALL"


POLICIES: dict[str, tuple[Policy, ...]] = {}
UNSCOPED: dict[str, str] = {}


def row_security(table: str, *policies: Policy) -> None:
    """Declare the policies of ``table``: row-level security is enabled on it and these are its policies."""
    assert table not in POLICIES and table not in UNSCOPED, f"{table} declared twice"
    POLICIES[table] = policies


def unscoped(table: str, why: str) -> None:
    """Declare that ``table`` has no row-level security, and why (a new table must decide one or the other)."""
    assert table not in POLICIES and table not in UNSCOPED, f"{table} declared twice"
    UNSCOPED[table] = why


def of_school(column: str = "school_id") -> str:
    return f"{column} = ANY ({SCHOOLS})"


def of_visible_incident(table: str) -> str:
    """A row of an incident's chain, for staff who see the incident (families see none of the chain)."""
    return f"EXISTS (SELECT 1 FROM incident i WHERE i.id = {table}.incident_id AND i.school_id = ANY ({SCHOOLS}))"


def of_staff_child(table: str) -> str:
    """A row about a child, for staff who see the child's school."""
    return f"EXISTS (SELECT 1 FROM child c WHERE c.id = {table}.child_id AND c.school_id = ANY ({SCHOOLS}))"


def create_statements(table: str, policies: tuple[Policy, ...]) -> list[str]:
    """The DDL that gives ``table`` these policies (and the platform role its allow-all policy)."""
    out = [f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY"]
    for p in policies:
        sql = f"CREATE POLICY {table}_{p.name} ON {table} AS PERMISSIVE FOR {p.command} TO {APP_ROLE}"
        if p.using is not None:
            sql += f" USING ({p.using})"
        if p.check is not None:
            sql += f" WITH CHECK ({p.check})"
        out.append(sql)
    out.append(f"CREATE POLICY {table}_platform ON {table} FOR ALL TO {PLATFORM_ROLE} USING (true) WITH CHECK (true)")
    return out


def drop_statements(table: str, policies: tuple[Policy, ...]) -> list[str]:
    out = [f"DROP POLICY IF EXISTS {table}_{p.name} ON {table}" for p in policies]
    out.append(f"DROP POLICY IF EXISTS {table}_platform ON {table}")
    out.append(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    return out
