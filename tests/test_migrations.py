"""The models and the Alembic migrations describe the same schema, and every migration can be undone."""

import asyncio

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine
from sqlmodel import SQLModel

import api.models  # noqa: F401
from alembic import command
from api.migrations import alembic_config, head_revision


async def test_models_and_migrations_do_not_drift(database_url):
    engine = create_async_engine(database_url)
    async with engine.connect() as conn:
        diff = await conn.run_sync(
            lambda sync: compare_metadata(
                MigrationContext.configure(sync, opts={"compare_type": True}), SQLModel.metadata
            )
        )
    await engine.dispose()
    assert diff == [], f"models differ from migrations; write a migration: {diff}"


async def test_migrations_downgrade_to_base_and_upgrade_again(database_url):
    cfg = alembic_config(database_url)
    await asyncio.to_thread(command.downgrade, cfg, "base")
    engine = create_async_engine(database_url)
    async with engine.connect() as conn:
        tables = (
            await conn.execute(
                text(
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
                    " AND table_name <> 'alembic_version'"
                )
            )
        ).scalar_one()
        assert tables == 0
    await asyncio.to_thread(command.upgrade, cfg, "head")
    async with engine.connect() as conn:
        assert (await conn.execute(text("SELECT version_num FROM alembic_version"))).scalar_one() == head_revision()
    await engine.dispose()


async def test_audit_log_is_append_only(database_url):
    engine = create_async_engine(database_url)
    async with engine.begin() as conn:
        await conn.execute(text("INSERT INTO audit_log (at, action, resource_type) VALUES (now(), 'x', 'y')"))
    for statement in ("UPDATE audit_log SET action = 'z'", "DELETE FROM audit_log", "TRUNCATE audit_log"):
        async with engine.connect() as conn:
            try:
                await conn.execute(text(statement))
            except Exception as exc:  # the trigger refuses
                assert "append-only" in str(exc)
            else:
                raise AssertionError(f"{statement} was allowed")
    await engine.dispose()


def test_the_head_read_from_the_version_files_is_alembics():
    from alembic.script import ScriptDirectory

    assert head_revision() == ScriptDirectory.from_config(alembic_config()).get_current_head()
