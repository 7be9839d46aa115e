"""A real PostgreSQL from a pip package, for development, the demo and the tests when no DATABASE_URL is set."""

import logging
import warnings
from pathlib import Path
from urllib.parse import quote

import asyncpg

log = logging.getLogger("liushou.embedded_pg")


def start_embedded(data_dir: Path) -> str:
    """Start (or reuse) the embedded server whose data lives in ``data_dir``; return its libpq URI."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import pgserver  # imported lazily: production never needs it

    data_dir = data_dir.resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    server = pgserver.get_server(data_dir, cleanup_mode="stop")
    log.info("embedded PostgreSQL running with data in %s", data_dir)
    uri: str = server.get_uri()
    return uri


def socket_dir(libpq_uri: str) -> str:
    return libpq_uri.split("host=", 1)[1].split("&", 1)[0]


def asyncpg_url(libpq_uri: str, database: str) -> str:
    """The SQLAlchemy URL (asyncpg driver) for a database on the embedded server's Unix socket."""
    return f"postgresql+asyncpg://postgres@/{database}?host={quote(socket_dir(libpq_uri), safe='/')}"


async def ensure_database(libpq_uri: str, database: str, *, template: str | None = None) -> None:
    """Create ``database`` on the server if it does not exist yet."""
    conn = await asyncpg.connect(host=socket_dir(libpq_uri), user="postgres", database="postgres")
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            tmpl = f' TEMPLATE "{template}"' if template else ""
            await conn.execute(f'CREATE DATABASE "{database}"{tmpl}')
    finally:
        await conn.close()
