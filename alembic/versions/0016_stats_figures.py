"""stats figures: each school's statistics per period, pre-aggregated, and the marks of what changed since

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-01 03:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row security (a frozen copy of api/models/stats_cache.py's declarations).
POLICIES = (
    "CREATE POLICY stats_figures_staff ON stats_figures AS PERMISSIVE FOR SELECT TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY stats_figures_platform ON stats_figures FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
)

# Which school a changed row belongs to, per table the statistics read: (table, SQL over the transition
# table "rows" giving school ids, the events to watch). Tables whose rows are never deleted (care records,
# incidents and their chains, children) watch no DELETE.
_DIRECT = "SELECT school_id FROM rows"
SOURCES = (
    ("care_record", _DIRECT, ("INSERT", "UPDATE")),
    ("family_call", _DIRECT, ("INSERT", "UPDATE")),
    ("incident", _DIRECT, ("INSERT", "UPDATE")),
    ("escalation_step", "SELECT i.school_id FROM rows r JOIN incident i ON i.id = r.incident_id", ("INSERT", "UPDATE")),
    ("child", _DIRECT, ("INSERT", "UPDATE")),
    (
        "child_guardian",
        "SELECT c.school_id FROM rows r JOIN child c ON c.id = r.child_id",
        ("INSERT", "UPDATE", "DELETE"),
    ),
    (
        "guardian",
        "SELECT c.school_id FROM rows r JOIN child_guardian cg ON cg.guardian_id = r.id JOIN child c ON c.id = cg.child_id",
        ("UPDATE",),
    ),
    ("care_pairing", _DIRECT, ("INSERT", "UPDATE", "DELETE")),
    ("school_class", _DIRECT, ("INSERT", "UPDATE", "DELETE")),
    ("school_enrolment", _DIRECT, ("INSERT", "UPDATE", "DELETE")),
    ("school_term", _DIRECT, ("INSERT", "UPDATE", "DELETE")),
    ("school_holiday", _DIRECT, ("INSERT", "UPDATE", "DELETE")),
    ("care_rule", _DIRECT, ("INSERT", "UPDATE", "DELETE")),
)


def _function(table: str, source: str, rows: str) -> str:
    """A statement-level trigger function marking the schools of the rows ``rows`` (a transition table)."""
    select = source.replace("FROM rows", f"FROM {rows}")
    return f"""
    CREATE FUNCTION stats_mark_{table}_{rows}() RETURNS trigger
    LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp AS $$
    BEGIN
        INSERT INTO stats_dirty (school_id) SELECT DISTINCT s.school_id FROM ({select}) s WHERE s.school_id IS NOT NULL;
        RETURN NULL;
    END $$"""


def upgrade() -> None:
    op.create_table(
        "stats_figures",
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("period_kind", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("period_key", sqlmodel.sql.sqltypes.AutoString(length=16), nullable=False),
        sa.Column("judged_on", sa.Date(), nullable=False),
        sa.Column("counts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("totals", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("steps", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("enrolment", sa.Integer(), nullable=True),
        sa.Column("computed_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["school_id"], ["school.id"], name=op.f("fk_stats_figures_school_id_school"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("school_id", "period_kind", "period_key", name=op.f("pk_stats_figures")),
    )
    op.create_table(
        "stats_dirty",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("school_id", sa.Uuid(), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_stats_dirty")),
    )
    op.execute("ALTER TABLE stats_figures ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)
    for table, source, events in SOURCES:
        if "INSERT" in events or "UPDATE" in events:
            op.execute(_function(table, source, "new_rows"))
        if "DELETE" in events or table == "child":
            op.execute(_function(table, source, "old_rows"))
        for event in events:
            rows = "OLD TABLE AS old_rows" if event == "DELETE" else "NEW TABLE AS new_rows"
            op.execute(
                f"CREATE TRIGGER stats_mark_{table}_{event.lower()} AFTER {event} ON {table} REFERENCING {rows} "
                f"FOR EACH STATEMENT EXECUTE FUNCTION stats_mark_{table}_{rows.split()[-1]}()"
            )
    # A child moved to another school: its old school's figures change too.
    op.execute(
        "CREATE TRIGGER stats_mark_child_moved AFTER UPDATE ON child REFERENCING OLD TABLE AS old_rows "
        "FOR EACH STATEMENT EXECUTE FUNCTION stats_mark_child_old_rows()"
    )


def downgrade() -> None:
    for table, _, events in SOURCES:
        for event in events:
            op.execute(f"DROP TRIGGER stats_mark_{table}_{event.lower()} ON {table}")
        if table == "child":
            op.execute("DROP TRIGGER stats_mark_child_moved ON child")
        op.execute(f"DROP FUNCTION IF EXISTS stats_mark_{table}_new_rows()")
        op.execute(f"DROP FUNCTION IF EXISTS stats_mark_{table}_old_rows()")
    for statement in POLICIES:
        name, table = statement.split()[2], statement.split()[4]
        op.execute(f"DROP POLICY {name} ON {table}")
    op.drop_table("stats_dirty")
    op.drop_table("stats_figures")
