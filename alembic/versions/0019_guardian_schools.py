"""guardian schools: the school of each guardian link and the schools of each guardian, kept by triggers

The staff policies of ``guardian`` and ``child_guardian`` looked the children up for every row they let
through (an EXISTS over ``child_guardian`` and ``child``, itself under row security): about two thirds of the
database's time on a class page. With ``child_guardian.school_id`` (the child's school) and
``guardian.school_ids`` (the schools of all the guardian's children: one grandparent may have grandchildren in
two schools) they compare a column with the scope, as ``child``'s own policy does. The triggers below keep both
right whoever writes — the ORM, a roster import, a transfer — and the columns are not mapped: the application
neither reads nor writes them.

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-01 10:40:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

from alembic import op

revision: str = "0019"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Row security (a frozen copy of api/models/guardians.py's declarations): the staff policies, new and old.
POLICIES = (
    "CREATE POLICY guardian_staff ON guardian AS PERMISSIVE FOR ALL TO liushou_app USING (school_ids && (SELECT scope_ids('school_ids'))::uuid[])",
    "CREATE POLICY child_guardian_staff ON child_guardian AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
)
OLD_POLICIES = (
    "CREATE POLICY guardian_staff ON guardian AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM child_guardian cg JOIN child c ON c.id = cg.child_id WHERE cg.guardian_id = guardian.id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY child_guardian_staff ON child_guardian AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM child c WHERE c.id = child_guardian.child_id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
)

# The functions run as their owner (the owner of the tables, to whom row security does not apply): a link is
# written by someone who may not yet see its guardian, and the arrays must hold every school, seen or not.
_DEFINER = "LANGUAGE plpgsql SECURITY DEFINER SET search_path = public, pg_temp"
FUNCTIONS = (
    # A link's school is its child's, whatever the writer gave. The child row is share-locked: a transfer of
    # the child running at the same time either waits for this link's transaction (and then moves the link
    # too) or has committed before (and this reads the new school).
    f"""CREATE FUNCTION child_guardian_set_school() RETURNS trigger {_DEFINER} AS $$
BEGIN
    SELECT c.school_id INTO NEW.school_id FROM child c WHERE c.id = NEW.child_id FOR SHARE;
    RETURN NEW;
END $$""",
    # The schools of these guardians, recomputed from their links. The guardian rows are locked first (in
    # id order, so two writers cannot deadlock here) and the links read by a later statement, which in READ
    # COMMITTED sees every link committed by a transaction this one waited for: two links of one guardian
    # written at once cannot each leave out the other's school.
    f"""CREATE FUNCTION guardian_refresh_schools(ids uuid[]) RETURNS void {_DEFINER} AS $$
BEGIN
    PERFORM 1 FROM guardian g WHERE g.id = ANY (ids) ORDER BY g.id FOR NO KEY UPDATE;
    UPDATE guardian g SET school_ids = s.school_ids
    FROM (
        SELECT g2.id, ARRAY(
            SELECT DISTINCT cg.school_id FROM child_guardian cg WHERE cg.guardian_id = g2.id ORDER BY 1
        ) AS school_ids
        FROM guardian g2 WHERE g2.id = ANY (ids)
    ) s
    WHERE g.id = s.id AND g.school_ids IS DISTINCT FROM s.school_ids;
END $$""",
    f"""CREATE FUNCTION child_guardian_links_added() RETURNS trigger {_DEFINER} AS $$
BEGIN
    PERFORM guardian_refresh_schools(ARRAY(SELECT DISTINCT guardian_id FROM new_links));
    RETURN NULL;
END $$""",
    f"""CREATE FUNCTION child_guardian_links_removed() RETURNS trigger {_DEFINER} AS $$
BEGIN
    PERFORM guardian_refresh_schools(ARRAY(SELECT DISTINCT guardian_id FROM old_links));
    RETURN NULL;
END $$""",
    # Only links whose guardian or school changed (not a phone order or an end date) touch the guardians.
    f"""CREATE FUNCTION child_guardian_links_changed() RETURNS trigger {_DEFINER} AS $$
BEGIN
    PERFORM guardian_refresh_schools(ARRAY(
        SELECT o.guardian_id FROM old_links o JOIN new_links n ON n.id = o.id
        WHERE (o.guardian_id, o.school_id) IS DISTINCT FROM (n.guardian_id, n.school_id)
        UNION
        SELECT n.guardian_id FROM old_links o JOIN new_links n ON n.id = o.id
        WHERE (o.guardian_id, o.school_id) IS DISTINCT FROM (n.guardian_id, n.school_id)
    ));
    RETURN NULL;
END $$""",
    # A child changing school takes its links along (and through them, its guardians' schools).
    f"""CREATE FUNCTION child_moved_school() RETURNS trigger {_DEFINER} AS $$
BEGIN
    UPDATE child_guardian SET school_id = NEW.school_id WHERE child_id = NEW.id;
    RETURN NULL;
END $$""",
)
TRIGGERS = (
    "CREATE TRIGGER child_guardian_set_school BEFORE INSERT OR UPDATE OF child_id, school_id ON child_guardian"
    " FOR EACH ROW EXECUTE FUNCTION child_guardian_set_school()",
    "CREATE TRIGGER child_guardian_links_added AFTER INSERT ON child_guardian REFERENCING NEW TABLE AS new_links"
    " FOR EACH STATEMENT EXECUTE FUNCTION child_guardian_links_added()",
    "CREATE TRIGGER child_guardian_links_removed AFTER DELETE ON child_guardian REFERENCING OLD TABLE AS old_links"
    " FOR EACH STATEMENT EXECUTE FUNCTION child_guardian_links_removed()",
    "CREATE TRIGGER child_guardian_links_changed AFTER UPDATE ON child_guardian"
    " REFERENCING OLD TABLE AS old_links NEW TABLE AS new_links"
    " FOR EACH STATEMENT EXECUTE FUNCTION child_guardian_links_changed()",
    "CREATE TRIGGER child_moved_school AFTER UPDATE OF school_id ON child FOR EACH ROW"
    " WHEN (OLD.school_id IS DISTINCT FROM NEW.school_id) EXECUTE FUNCTION child_moved_school()",
)
_TRIGGER_TABLES = {
    "child_guardian_set_school": "child_guardian",
    "child_guardian_links_added": "child_guardian",
    "child_guardian_links_removed": "child_guardian",
    "child_guardian_links_changed": "child_guardian",
    "child_moved_school": "child",
}


def upgrade() -> None:
    # The backfill below changes no figure of the statistics: with their triggers (migration 0016) it would mark
    # every school with a guardian, and the refresher would renew the whole county (and reads compute from the
    # records meanwhile). The tables' own triggers are off for the backfill only (this transaction holds them).
    for table in ("child_guardian", "guardian"):
        op.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
    op.add_column("child_guardian", sa.Column("school_id", sa.Uuid(), nullable=True))
    op.execute("UPDATE child_guardian cg SET school_id = c.school_id FROM child c WHERE c.id = cg.child_id")
    op.alter_column("child_guardian", "school_id", nullable=False)
    op.add_column(
        "guardian",
        sa.Column("school_ids", postgresql.ARRAY(sa.Uuid()), server_default=sa.text("'{}'::uuid[]"), nullable=False),
    )
    op.execute(
        "UPDATE guardian g SET school_ids = ARRAY("
        "SELECT DISTINCT cg.school_id FROM child_guardian cg WHERE cg.guardian_id = g.id ORDER BY 1)"
        " WHERE EXISTS (SELECT 1 FROM child_guardian cg WHERE cg.guardian_id = g.id)"
    )
    for table in ("child_guardian", "guardian"):
        op.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    for statement in (*FUNCTIONS, *TRIGGERS):
        op.execute(statement)
    op.execute("DROP POLICY guardian_staff ON guardian")
    op.execute("DROP POLICY child_guardian_staff ON child_guardian")
    for statement in POLICIES:
        op.execute(statement)


def downgrade() -> None:
    op.execute("DROP POLICY guardian_staff ON guardian")
    op.execute("DROP POLICY child_guardian_staff ON child_guardian")
    for statement in OLD_POLICIES:
        op.execute(statement)
    for trigger, table in _TRIGGER_TABLES.items():
        op.execute(f"DROP TRIGGER {trigger} ON {table}")
    for function in (
        "child_moved_school()",
        "child_guardian_links_changed()",
        "child_guardian_links_removed()",
        "child_guardian_links_added()",
        "guardian_refresh_schools(uuid[])",
        "child_guardian_set_school()",
    ):
        op.execute(f"DROP FUNCTION {function}")
    op.drop_column("guardian", "school_ids")
    op.drop_column("child_guardian", "school_id")
