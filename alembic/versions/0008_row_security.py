"""row-level security: the app role, the scope helpers and every scoped table's policies

The API takes the role ``liushou_app`` (platform administrators ``liushou_platform``) at the start of each
transaction and writes the principal's scope into transaction-local settings (api/scoping.py); PostgreSQL
then limits every statement to the caller's rows. The policies are a frozen copy of the declarations beside
the models (api/models/*.py, ``row_security``); tests/test_row_security.py compares the two.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30 18:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

ROLES = ("liushou_app", "liushou_platform")

SCOPED_TABLES = (
    "account",
    "invite",
    "audit_log",
    "child",
    "child_event",
    "escalation_policy",
    "duty_contact",
    "escalation_step",
    "escalation_party",
    "escalation_target",
    "outbound_message",
    "reply_code",
    "acknowledgement",
    "guardian",
    "child_guardian",
    "incident",
    "incident_event",
    "county",
    "township",
    "school",
    "school_class",
    "teaching_assignment",
    "import_batch",
)

# The transaction-local scope, read by the policies. Unset or empty means NULL: nothing matches.
FUNCTIONS = (
    "CREATE FUNCTION scope_text(name text) RETURNS text LANGUAGE sql STABLE PARALLEL SAFE"
    " AS $$ SELECT NULLIF(current_setting('liushou.' || name, true), '') $$",
    "CREATE FUNCTION scope_id(name text) RETURNS uuid LANGUAGE sql STABLE PARALLEL SAFE"
    " AS $$ SELECT NULLIF(current_setting('liushou.' || name, true), '')::uuid $$",
    "CREATE FUNCTION scope_ids(name text) RETURNS uuid[] LANGUAGE sql STABLE PARALLEL SAFE"
    " AS $$ SELECT NULLIF(current_setting('liushou.' || name, true), '')::uuid[] $$",
)

POLICIES = (
    # account
    "CREATE POLICY account_scoped ON account AS PERMISSIVE FOR ALL TO liushou_app USING (((SELECT scope_text('role')) = 'county_bureau' AND county_id = (SELECT scope_id('county_id'))) OR ((SELECT scope_text('role')) = 'township_official' AND township_id = (SELECT scope_id('township_id'))) OR ((SELECT scope_text('role')) IN ('school_admin', 'teacher') AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])) OR ((SELECT scope_text('role')) = 'family' AND id = (SELECT scope_id('account_id'))))",
    "CREATE POLICY account_platform ON account FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # invite
    "CREATE POLICY invite_managers ON invite AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) <> 'teacher' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY invite_teacher_new ON invite AS PERMISSIVE FOR INSERT TO liushou_app WITH CHECK ((SELECT scope_text('role')) = 'teacher' AND kind = 'guardian' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY invite_platform ON invite FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # audit_log
    "CREATE POLICY audit_log_append ON audit_log AS PERMISSIVE FOR INSERT TO liushou_app WITH CHECK (true)",
    "CREATE POLICY audit_log_read ON audit_log AS PERMISSIVE FOR SELECT TO liushou_app USING (((SELECT scope_text('role')) = 'county_bureau' AND (county_id = (SELECT scope_id('county_id')) OR school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))) OR ((SELECT scope_text('role')) = 'school_admin' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY audit_log_platform ON audit_log FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # child
    "CREATE POLICY child_staff ON child AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY child_family ON child AS PERMISSIVE FOR ALL TO liushou_app USING (id = ANY ((SELECT scope_ids('child_ids'))::uuid[]))",
    "CREATE POLICY child_platform ON child FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # child_event
    "CREATE POLICY child_event_staff ON child_event AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM child c WHERE c.id = child_event.child_id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY child_event_platform ON child_event FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # escalation_policy
    "CREATE POLICY escalation_policy_staff ON escalation_policy AS PERMISSIVE FOR ALL TO liushou_app USING (county_id = (SELECT scope_id('county_id')))",
    "CREATE POLICY escalation_policy_platform ON escalation_policy FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # duty_contact
    "CREATE POLICY duty_contact_scoped ON duty_contact AS PERMISSIVE FOR ALL TO liushou_app USING (((SELECT scope_text('role')) = 'county_bureau' AND county_id = (SELECT scope_id('county_id'))) OR ((SELECT scope_text('role')) = 'township_official' AND township_id = (SELECT scope_id('township_id'))) OR ((SELECT scope_text('role')) IN ('school_admin', 'teacher') AND county_id = (SELECT scope_id('county_id')) AND (township_id IS NULL OR township_id = (SELECT scope_id('township_id')))))",
    "CREATE POLICY duty_contact_platform ON duty_contact FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # escalation_step
    "CREATE POLICY escalation_step_staff ON escalation_step AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM incident i WHERE i.id = escalation_step.incident_id AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY escalation_step_platform ON escalation_step FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # escalation_party
    "CREATE POLICY escalation_party_staff ON escalation_party AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM incident i WHERE i.id = escalation_party.incident_id AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY escalation_party_platform ON escalation_party FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # escalation_target
    "CREATE POLICY escalation_target_staff ON escalation_target AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM incident i WHERE i.id = escalation_target.incident_id AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY escalation_target_platform ON escalation_target FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # outbound_message
    "CREATE POLICY outbound_message_staff ON outbound_message AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM incident i WHERE i.id = outbound_message.incident_id AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY outbound_message_platform ON outbound_message FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # reply_code
    "CREATE POLICY reply_code_staff ON reply_code AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM incident i WHERE i.id = reply_code.incident_id AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY reply_code_platform ON reply_code FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # acknowledgement
    "CREATE POLICY acknowledgement_staff ON acknowledgement AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM incident i WHERE i.id = acknowledgement.incident_id AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY acknowledgement_platform ON acknowledgement FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # guardian
    "CREATE POLICY guardian_staff ON guardian AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM child_guardian cg JOIN child c ON c.id = cg.child_id WHERE cg.guardian_id = guardian.id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY guardian_staff_new ON guardian AS PERMISSIVE FOR INSERT TO liushou_app WITH CHECK ((SELECT scope_text('role')) IN ('county_bureau', 'township_official', 'school_admin', 'teacher'))",
    "CREATE POLICY guardian_family ON guardian AS PERMISSIVE FOR ALL TO liushou_app USING (id = ANY ((SELECT scope_ids('guardian_ids'))::uuid[]))",
    "CREATE POLICY guardian_platform ON guardian FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # child_guardian
    "CREATE POLICY child_guardian_staff ON child_guardian AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM child c WHERE c.id = child_guardian.child_id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY child_guardian_family ON child_guardian AS PERMISSIVE FOR ALL TO liushou_app USING (child_id = ANY ((SELECT scope_ids('child_ids'))::uuid[]))",
    "CREATE POLICY child_guardian_platform ON child_guardian FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # incident
    "CREATE POLICY incident_staff ON incident AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY incident_family ON incident AS PERMISSIVE FOR ALL TO liushou_app USING (child_id = ANY ((SELECT scope_ids('child_ids'))::uuid[]))",
    "CREATE POLICY incident_platform ON incident FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # incident_event
    "CREATE POLICY incident_event_staff ON incident_event AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM incident i WHERE i.id = incident_event.incident_id AND i.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY incident_event_platform ON incident_event FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # county
    "CREATE POLICY county_staff ON county AS PERMISSIVE FOR ALL TO liushou_app USING (id = (SELECT scope_id('county_id')))",
    "CREATE POLICY county_platform ON county FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # township
    "CREATE POLICY township_staff ON township AS PERMISSIVE FOR ALL TO liushou_app USING (id = ANY ((SELECT scope_ids('township_ids'))::uuid[]))",
    "CREATE POLICY township_platform ON township FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # school
    "CREATE POLICY school_staff ON school AS PERMISSIVE FOR ALL TO liushou_app USING (id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY school_bureau_new ON school AS PERMISSIVE FOR INSERT TO liushou_app WITH CHECK ((SELECT scope_text('role')) = 'county_bureau' AND county_id = (SELECT scope_id('county_id')))",
    "CREATE POLICY school_family ON school AS PERMISSIVE FOR SELECT TO liushou_app USING (id IN (SELECT c.school_id FROM child c WHERE c.id = ANY ((SELECT scope_ids('child_ids'))::uuid[])))",
    "CREATE POLICY school_platform ON school FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # school_class
    "CREATE POLICY school_class_staff ON school_class AS PERMISSIVE FOR ALL TO liushou_app USING (school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY school_class_family ON school_class AS PERMISSIVE FOR SELECT TO liushou_app USING (id IN (SELECT c.class_id FROM child c WHERE c.id = ANY ((SELECT scope_ids('child_ids'))::uuid[])))",
    "CREATE POLICY school_class_platform ON school_class FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # teaching_assignment
    "CREATE POLICY teaching_assignment_staff ON teaching_assignment AS PERMISSIVE FOR ALL TO liushou_app USING (EXISTS (SELECT 1 FROM school_class c WHERE c.id = teaching_assignment.class_id AND c.school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[])))",
    "CREATE POLICY teaching_assignment_platform ON teaching_assignment FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
    # import_batch
    "CREATE POLICY import_batch_managers ON import_batch AS PERMISSIVE FOR ALL TO liushou_app USING ((SELECT scope_text('role')) <> 'teacher' AND school_id = ANY ((SELECT scope_ids('school_ids'))::uuid[]))",
    "CREATE POLICY import_batch_platform ON import_batch FOR ALL TO liushou_platform USING (true) WITH CHECK (true)",
)


def upgrade() -> None:
    for role in ROLES:
        # Roles belong to the whole server: another database on it may have made them already. NOLOGIN, not
        # the owner of anything and without BYPASSRLS: a session can only SET ROLE to them, and then row-level
        # security applies whoever connected. The migrating user (who owns the tables) is made a member.
        op.execute(
            f"DO $$ BEGIN IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN"
            f" CREATE ROLE {role} NOLOGIN NOINHERIT NOBYPASSRLS; END IF; END $$"
        )
        # (On a server where another owner made the roles, an administrator grants them once beforehand.)
        op.execute(
            f"DO $$ BEGIN IF NOT pg_has_role(current_user, '{role}', 'SET') THEN"
            f" GRANT {role} TO CURRENT_USER; END IF; END $$"
        )
        op.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
        op.execute(f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}")
        op.execute(f"REVOKE ALL ON alembic_version FROM {role}")
        op.execute(f"GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}")
        # Tables made by later migrations are granted too; tests/test_row_security.py makes each decide its
        # row security.
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {role}"
        )
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT, UPDATE ON SEQUENCES TO {role}")
    for statement in FUNCTIONS:
        op.execute(statement)
    for table in SCOPED_TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for statement in POLICIES:
        op.execute(statement)


def downgrade() -> None:
    for statement in POLICIES:
        name, table = statement.split()[2], statement.split()[4]
        op.execute(f"DROP POLICY {name} ON {table}")
    for table in SCOPED_TABLES:
        op.execute(f"ALTER TABLE {table} DISABLE ROW LEVEL SECURITY")
    for fn in ("scope_text", "scope_id", "scope_ids"):
        op.execute(f"DROP FUNCTION {fn}(text)")
    for role in ROLES:
        op.execute(
            f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE SELECT, INSERT, UPDATE, DELETE ON TABLES FROM {role}"
        )
        op.execute(f"ALTER DEFAULT PRIVILEGES IN SCHEMA public REVOKE USAGE, SELECT, UPDATE ON SEQUENCES FROM {role}")
        op.execute(f"REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}")
        op.execute(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM {role}")
        op.execute(f"REVOKE USAGE ON SCHEMA public FROM {role}")
        # The role goes with its last database: while another database on the server still grants it
        # something, it stays (and this database no longer mentions it).
        op.execute(
            f"DO $$ BEGIN DROP ROLE {role}; EXCEPTION WHEN dependent_objects_still_exist OR insufficient_privilege THEN"
            f" RAISE NOTICE 'role {role} kept: other databases on this server still use it'; END $$"
        )
