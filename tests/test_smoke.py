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


async def test_every_endpoint_is_described_and_request_bodies_have_examples(client):
    spec = (await client.get("/openapi.json")).json()
    for path, item in spec["paths"].items():
        for method, op in item.items():
            assert op.get("summary") or op.get("description"), f"{method.upper()} {path} has no description"
    schemas = spec["components"]["schemas"]
    for name in ("PasswordLogin", "WechatLogin", "WechatBind", "AccountCreate", "SchoolCreate", "ClassCreate"):
        assert schemas[name].get("examples"), f"{name} has no example"


async def test_docs_page_is_served(client):
    r = await client.get("/docs")
    assert r.status_code == 200 and "swagger" in r.text.lower()
