"""A bounded slice of ``bench/escalation_chaos.py``: real ``liushou worker`` processes killed with SIGKILL at
random instants while incidents are reported and the providers' receipts race their answers. Afterwards no
party is stopped (each waits with a stored end, or has moved on), no message is lost or sent twice, and the
timeline tells every send, once, before its delivery. The counting is the benchmark's own (:func:`audit`)."""

import asyncio
import os
import random
import time
from pathlib import Path

import httpx
import sqlalchemy as sa

from api.channels.fakes import FakeProviderServer, LoopbackServer
from api.clock import SystemClock
from api.db import make_engine, make_sessionmaker
from api.main import create_app
from bench.escalation import SECRET, seed
from bench.escalation_chaos import MUST_BE_ZERO, Workers, audit, report_storm, short_policy, slow_answers
from tests.conftest import make_test_settings

LEASE = 6


async def test_workers_killed_at_random_instants_stop_no_party_lose_nothing_and_send_nothing_twice(
    database_url: str, tmp_path: Path
) -> None:
    rng = random.Random()
    fake = FakeProviderServer(callback_secret=SECRET, callback_delay=0.01)
    fake.start()
    settings = make_test_settings(callback_secret=SECRET, db_pool_size=10)
    api = LoopbackServer(create_app(settings, clock=SystemClock(), database_url=database_url, migrate=False))
    api.start()
    engine = make_engine(database_url, settings)
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LIUSHOU_ENVIRONMENT": "test",
        "LIUSHOU_CALLBACK_SECRET": SECRET,
        "LIUSHOU_SMS_BASE_URL": fake.sms_base_url,
        "LIUSHOU_VOICE_BASE_URL": fake.voice_base_url,
        "LIUSHOU_WECHAT_BASE_URL": fake.wechat_base_url,
        "LIUSHOU_PUBLIC_BASE_URL": api.base_url,
        "LIUSHOU_ESCALATION_POLL_SECONDS": "0.2",
        "LIUSHOU_ESCALATION_LEASE_SECONDS": str(LEASE),
        "LIUSHOU_HTTP_TIMEOUT_SECONDS": "1.5",
        "LIUSHOU_DB_POOL_SIZE": "5",
    }
    workers = Workers(2, env, tmp_path)
    try:
        sessionmaker = make_sessionmaker(engine)
        pairs = await seed(sessionmaker, schools=1, children_per_school=6)
        await short_policy(sessionmaker)
        async with engine.connect() as conn:
            phones = (await conn.execute(sa.text("SELECT phone FROM guardian"))).scalars()
            numbers = ["+86" + phone for phone in phones]
        await slow_answers({"sms": fake.base_url, "voice": fake.base_url}, numbers, 1.0)
        workers.start()
        began = time.monotonic()
        # A report every half second for 12 s; a working worker killed every 0.3-2 s (8 times, at most for
        # 40 s), restarted at once.
        chaos = asyncio.create_task(workers.chaos(engine, until=began + 40, every=(0.3, 2.0), rng=rng, kills=8))
        reported, _ = await report_storm(sessionmaker, settings, pairs, count=24, seconds=12)
        await chaos
        assert reported == 24 and workers.kills >= 4
        # Left alone for longer than a lease once both work: what the dead workers held is taken over.
        workers.revive()
        while len(await workers.working(engine)) < 2 and time.monotonic() < began + 90:  # noqa: ASYNC110
            await asyncio.sleep(0.5)
        await asyncio.sleep(LEASE + 4)
        async with httpx.AsyncClient() as client:
            outbox = (await client.get(f"{fake.base_url}/_fake/outbox")).json()
        counts = await audit(engine, [outbox], slack_seconds=LEASE + 2)
    finally:
        workers.stop()
        api.stop()
        fake.stop()
        await engine.dispose()
    assert {name: counts[name] for name in MUST_BE_ZERO if counts[name]} == {}, counts
    assert counts["sent"] >= 24 * 3, counts
