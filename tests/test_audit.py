"""The audit log: every write is recorded with who, what, when, from where; each sees only their part."""


async def test_a_write_is_logged_with_actor_changes_address_and_request_id(client, world):
    r = await client.patch(f"/classes/{world['class11']}", json={"name": "一班"}, headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    request_id = r.headers["x-request-id"]
    log = (await client.get("/audit", params={"resource_type": "class"}, headers=world.headers("admin1"))).json()
    entry = next(e for e in log["data"] if e["request_id"] == request_id)
    assert entry["action"] == "class.update"
    assert entry["account_id"] == str(world["admin1"]) and entry["role"] == "school_admin"
    assert entry["resource_id"] == str(world["class11"])
    assert entry["changes"] == {"name": {"old": "1班", "new": "一班"}}
    assert entry["client_ip"] == "203.0.113.7"
    assert entry["school_id"] == str(world["school1"])


async def test_secrets_are_logged_as_changed_without_their_values(client, world):
    r = await client.post(
        "/accounts",
        headers=world.headers("admin1"),
        json={
            "role": "teacher",
            "display_name": "孙老师",
            "username": "sun",
            "password": "a long enough password",
            "school_id": str(world["school1"]),
        },
    )
    assert r.status_code == 201, r.text
    log = (await client.get("/audit", params={"action": "account.create"}, headers=world.headers("admin1"))).json()
    changes = log["data"][0]["changes"]
    assert changes["display_name"] == "孙老师"
    assert changes["password_hash"] == "***"
    assert "a long enough password" not in str(log)


async def test_school_admins_read_only_their_schools_log(client, world):
    await client.patch(f"/classes/{world['class21']}", json={"name": "甲班"}, headers=world.headers("admin2"))
    mine = (await client.get("/audit", headers=world.headers("admin1"))).json()
    assert all(e["school_id"] == str(world["school1"]) for e in mine["data"])
    theirs = (await client.get("/audit", headers=world.headers("admin2"))).json()
    assert any(e["action"] == "class.update" for e in theirs["data"])
    r = await client.get("/audit", params={"school_id": str(world["school2"])}, headers=world.headers("admin1"))
    assert r.json()["count"] == 0


async def test_the_county_bureau_reads_its_county_and_teachers_read_nothing(client, world):
    await client.patch(f"/classes/{world['class21']}", json={"name": "甲班"}, headers=world.headers("admin2"))
    county = (await client.get("/audit", headers=world.headers("bureau"))).json()
    assert any(e["action"] == "class.update" for e in county["data"])
    other = (await client.get("/audit", headers=world.headers("other_bureau"))).json()
    assert not any(e["action"] == "class.update" for e in other["data"])
    assert (await client.get("/audit", headers=world.headers("teacher1"))).status_code == 403


async def test_logins_are_audited(client, world):
    from tests.factories import PASSWORD

    await client.post("/auth/login", json={"username": "teacher1", "password": PASSWORD})
    log = (await client.get("/audit", params={"action": "auth.login"}, headers=world.headers("admin1"))).json()
    assert log["count"] == 1 and log["data"][0]["changes"] == {"method": "password"}


async def test_writes_to_guardians_show_in_the_schools_log_though_guardians_have_no_school(client, world, app):
    from tests.test_guardians import added, make_child

    child = await make_child(app, world)
    link = await added(client, world, child)
    log = (await client.get("/audit", headers=world.headers("admin1"))).json()["data"]
    actions = {e["action"] for e in log}
    assert {"guardian.create", "child_guardian.create"} <= actions, actions
    assert all(e["school_id"] == str(world["school1"]) for e in log)
    r = await client.patch(
        f"/guardians/{link['guardian']['id'] if 'guardian' in link else link['guardian_id']}",
        json={"health": "良好"},
        headers=world.headers("admin1"),
    )
    assert r.status_code == 200, r.text
    log = (await client.get("/audit", params={"action": "guardian.update"}, headers=world.headers("admin1"))).json()
    assert log["count"] == 1
    other = (await client.get("/audit", headers=world.headers("admin2"))).json()["data"]
    assert not any(e["action"].startswith("guardian") for e in other)


async def test_audit_times_come_from_the_app_clock(client, world, clock):
    r = await client.patch(f"/classes/{world['class11']}", json={"name": "一班"}, headers=world.headers("admin1"))
    log = (await client.get("/audit", params={"action": "class.update"}, headers=world.headers("admin1"))).json()
    assert log["data"][0]["at"].startswith(clock.now().isoformat()[:16]), (log["data"][0]["at"], r.status_code)
