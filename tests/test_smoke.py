async def test_healthz(client):
    r = await client.get("/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "ok"}


async def test_readyz_reports_database_and_migrations(client):
    r = await client.get("/readyz")
    assert r.status_code == 200, r.text
    assert r.json()["checks"]["migrations"] == "ok"


async def test_world_builds(client, world):
    r = await client.get("/auth/me", headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    assert r.json()["role"] == "school_admin"
