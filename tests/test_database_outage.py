"""While PostgreSQL is away, clients and provider callbacks get 503 with ``Retry-After`` (and a stable code),
never a 500 a provider may give up on; once it is back, the same requests succeed.

The database here is a PostgreSQL of its own (stopped and started for real), not the one other tests share.
"""

import json
import tempfile
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from pgserver import get_server
from pgserver._commands import pg_ctl
from pgserver.postgres_server import PostgresServer

from api.channels.base import SIGNATURE_HEADER, sign_callback
from api.embedded_pg import asyncpg_url, ensure_database
from api.main import create_app
from api.migrations import upgrade_to_head
from tests.conftest import TEST_CALLBACK_SECRET
from tests.factories import build_world
from tests.live import LiveServer
from tests.test_children import child_body


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = get_server(Path(tempfile.mkdtemp(prefix="liushou-outage-pg-")), cleanup_mode="delete")
    try:
        yield server
    finally:
        if not server._postmaster_info or not server._postmaster_info.is_running():
            server.ensure_postgres_running()
        server.cleanup()


def stop(server: PostgresServer) -> None:
    pg_ctl(["-w", "-m", "fast", "stop"], pgdata=server.pgdata, user=server.system_user)


@pytest.fixture
async def outage_url(own_postgres, settings, clock) -> AsyncIterator[tuple[str, object, PostgresServer]]:
    uri = own_postgres.get_uri()
    await ensure_database(uri, "liushou")
    url = asyncpg_url(uri, "liushou")
    await upgrade_to_head(url)
    app = create_app(settings, clock=clock, database_url=url, migrate=False)
    async with app.router.lifespan_context(app):
        world = await build_world(app, clock.now())
    with LiveServer(create_app(settings, clock=clock, database_url=url, migrate=False)) as live:
        yield live.base_url, world, own_postgres


def dtmf(event_id: str) -> tuple[bytes, dict[str, str]]:
    body = json.dumps(
        {
            "event_id": event_id,
            "occurred_at": datetime.now(UTC).isoformat(),
            "type": "voice.dtmf",
            "call_id": "call-unknown",
            "idempotency_key": "k-unknown",
            "to": "+8613800000000",
            "digits": "1",
        }
    ).encode()
    headers = {SIGNATURE_HEADER: sign_callback(TEST_CALLBACK_SECRET, body, time.time())}
    return body, {**headers, "content-type": "application/json"}


async def test_a_database_outage_answers_503_with_retry_after_and_then_recovers(outage_url):
    base_url, world, server = outage_url
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as c:
        assert (await c.get("/children", headers=world.headers("admin1"))).status_code == 200
        child = await c.post("/children", json=child_body(world), headers=world.headers("admin1"))
        assert child.status_code == 201, child.text
        # A child's file is read on a driver transaction without a session (api/driver.py): the same answers.
        file = f"/children/{child.json()['id']}"
        assert (await c.get(file, headers=world.headers("admin1"))).status_code == 200
        stop(server)
        try:
            body, headers = dtmf("evt-during-outage")
            answers = [
                await c.get("/children", headers=world.headers("admin1")),
                await c.get(file, headers=world.headers("admin1")),
                await c.post("/auth/login", json={"username": "admin1", "password": "whatever it is"}),
                await c.post("/inbound/voice", content=body, headers=headers),
            ]
            for r in answers:
                assert r.status_code == 503, f"{r.request.method} {r.request.url.path}: {r.status_code} {r.text}"
                assert r.json()["error"]["code"] == "database_unavailable"
                assert r.json()["error"]["request_id"] == r.headers["x-request-id"]
                assert int(r.headers["retry-after"]) >= 1
        finally:
            server.ensure_postgres_running()
        assert (await c.get("/children", headers=world.headers("admin1"))).status_code == 200
        assert (await c.get(file, headers=world.headers("admin1"))).status_code == 200
        retried = await c.post("/inbound/voice", content=body, headers=headers)  # the provider's retry
        assert retried.status_code == 200, retried.text
