"""The command line against a real database: migrate, seed the demo twice, create a user, log in with it."""

import asyncio
import os
import subprocess
import sys

from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from api.demo.seed import DEMO_PASSWORD


async def liushou(database_url: str, *args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "LIUSHOU_ARGON2_TIME_COST": "1",
        "LIUSHOU_ARGON2_MEMORY_COST": "1024",
    }
    return await asyncio.to_thread(
        subprocess.run,
        [sys.executable, "-m", "api.cli", *args],
        env=env,
        input=input,
        capture_output=True,
        text=True,
        timeout=300,
    )


async def count(database_url: str, table: str) -> int:
    engine = create_async_engine(database_url)
    async with engine.connect() as conn:
        n = (await conn.execute(text(f"SELECT count(*) FROM {table}"))).scalar_one()
    await engine.dispose()
    return int(n)


async def test_seed_demo_is_deterministic_and_idempotent(database_url):
    first = await liushou(database_url, "seed-demo")
    assert first.returncode == 0, first.stderr
    counts = {t: await count(database_url, t) for t in ("county", "township", "school", "school_class", "account")}
    assert counts["county"] == 1 and counts["township"] == 2 and counts["school"] == 3
    assert counts["account"] >= 11
    second = await liushou(database_url, "seed-demo")
    assert second.returncode == 0, second.stderr
    assert {t: await count(database_url, t) for t in counts} == counts


async def test_create_user_then_log_in_with_it(database_url, app, client):
    r = await liushou(
        database_url,
        "create-user",
        "--username",
        "root",
        "--role",
        "platform_admin",
        "--display-name",
        "运维",
        input="a very long password\na very long password\n",
    )
    assert r.returncode == 0, r.stderr
    assert "created platform_admin root" in r.stdout
    login = await client.post("/auth/login", json={"username": "root", "password": "a very long password"})
    assert login.status_code == 200, login.text
    again = await liushou(
        database_url,
        "create-user",
        "--username",
        "root",
        "--role",
        "platform_admin",
        "--display-name",
        "运维",
        input="another long password\nanother long password\n",
    )
    assert again.returncode == 2 and "username_taken" in again.stderr


async def test_demo_accounts_can_log_in(database_url, app, client):
    assert (await liushou(database_url, "seed-demo")).returncode == 0
    r = await client.post("/auth/login", json={"username": "shiqiao-admin", "password": DEMO_PASSWORD})
    assert r.status_code == 200, r.text
    schools = await client.get("/schools", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert [s["name"] for s in schools.json()["data"]] == ["石桥镇中心小学"]


async def test_the_demo_grandmother_logs_in_with_wechat_and_sees_only_her_grandchildren(
    database_url, app, client, fake
):
    assert (await liushou(database_url, "seed-demo")).returncode == 0
    r = await client.post("/auth/wechat/login", json={"code": "demo-grandma"})
    assert r.status_code == 200 and r.json()["status"] == "logged_in", r.text
    auth = {"Authorization": f"Bearer {r.json()['tokens']['access_token']}"}
    mine = await client.get("/me/children", headers=auth)
    assert mine.status_code == 200, mine.text
    body = mine.json()
    children = body["data"] if isinstance(body, dict) else body
    assert 1 <= len(children) <= 4
    assert (await client.get("/children", headers=auth)).status_code == 403
