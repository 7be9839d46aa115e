"""Login, tokens and their abuse: password login, rate limits, rotation, reuse, logout, forged tokens."""

import base64
import json
from datetime import timedelta

import jwt
import pytest

from tests.factories import PASSWORD


async def login(client, username, password=PASSWORD, **kw):
    return await client.post("/auth/login", json={"username": username, "password": password}, **kw)


async def test_staff_log_in_with_password_and_see_themselves(client, world):
    r = await login(client, "admin1")
    assert r.status_code == 200, r.text
    tokens = r.json()
    assert tokens["token_type"] == "bearer" and tokens["expires_in"] == 15 * 60
    me = await client.get("/auth/me", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert me.json()["display_name"] == "石桥校长"


async def test_usernames_are_case_insensitive(client, world):
    assert (await login(client, "ADMIN1")).status_code == 200


async def test_wrong_password_and_unknown_user_answer_the_same(client, world):
    wrong = await login(client, "admin1", "not the password")
    unknown = await login(client, "nobody", "not the password")
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json()["error"]["code"] == unknown.json()["error"]["code"] == "invalid_credentials"
    assert wrong.json()["error"]["message"] == unknown.json()["error"]["message"]


async def test_the_oauth2_form_endpoint_used_by_the_docs_works(client, world):
    r = await client.post("/auth/token", data={"username": "bureau", "password": PASSWORD})
    assert r.status_code == 200, r.text


async def test_too_many_failures_lock_the_account_for_a_while_even_with_the_right_password(client, world, clock):
    for _ in range(5):
        assert (await login(client, "teacher1", "guess")).status_code == 401
    r = await login(client, "teacher1")
    assert r.status_code == 429
    assert r.json()["error"]["code"] == "login_rate_limited"
    assert "retry-after" in r.headers
    assert (await login(client, "teacher1b")).status_code == 200  # other accounts are not affected
    clock.advance(timedelta(minutes=16))
    assert (await login(client, "teacher1")).status_code == 200


async def test_too_many_failures_from_one_address_are_limited_across_accounts(client, world, settings):
    for i in range(settings.login_max_failures_per_ip):
        await login(client, f"user{i}", "guess")
    r = await login(client, "admin2")
    assert r.status_code == 429


async def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_session(client, world):
    first = (await login(client, "admin1")).json()
    r = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 200
    second = r.json()
    assert second["refresh_token"] != first["refresh_token"]
    # An attacker replays the first token: the whole session dies, including the newest tokens.
    r = await client.post("/auth/refresh", json={"refresh_token": first["refresh_token"]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "refresh_token_reused"
    r = await client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "session_revoked"
    me = await client.get("/auth/me", headers={"Authorization": f"Bearer {second['access_token']}"})
    assert me.status_code == 401


async def test_expired_refresh_token_is_refused(client, world, clock):
    tokens = (await login(client, "admin1")).json()
    clock.advance(timedelta(days=31))
    r = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401 and r.json()["error"]["code"] == "refresh_token_expired"


async def test_logout_revokes_access_and_refresh_tokens(client, world):
    tokens = (await login(client, "admin1")).json()
    auth = {"Authorization": f"Bearer {tokens['access_token']}"}
    assert (await client.post("/auth/logout", headers=auth)).status_code == 204
    assert (await client.get("/auth/me", headers=auth)).status_code == 401
    r = await client.post("/auth/refresh", json={"refresh_token": tokens["refresh_token"]})
    assert r.status_code == 401


async def test_access_tokens_expire_by_the_app_clock(client, world, clock):
    clock.advance(timedelta(minutes=16))
    r = await client.get("/auth/me", headers=world.headers("admin1"))
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"


async def test_deactivated_accounts_lose_access_at_once(client, world):
    r = await client.post(f"/accounts/{world['teacher1']}/deactivate", headers=world.headers("admin1"))
    assert r.status_code == 200, r.text
    assert (await client.get("/auth/me", headers=world.headers("teacher1"))).status_code == 401
    assert (await login(client, "teacher1")).status_code == 401


def _b64(data: dict) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def _claims(world, settings, clock, **over):
    token = world.tokens["admin1"]
    claims = jwt.decode(token, options={"verify_signature": False})
    claims.update(over)
    return claims


@pytest.mark.parametrize(
    "attack",
    [
        "alg_none",
        "wrong_key",
        "wrong_audience",
        "wrong_issuer",
        "wrong_type",
        "tampered_role",
        "garbage",
        "hs_swapped_to_rs",
    ],
)
async def test_forged_tokens_are_refused(client, world, settings, clock, attack):
    claims = _claims(world, settings, clock)
    match attack:
        case "alg_none":
            token = f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}."
        case "wrong_key":
            token = jwt.encode(claims, "another-secret-of-sufficient-length-0123456789", algorithm="HS256")
        case "wrong_audience":
            token = jwt.encode({**claims, "aud": "someone-else"}, settings.jwt_secret, algorithm="HS256")
        case "wrong_issuer":
            token = jwt.encode({**claims, "iss": "evil"}, settings.jwt_secret, algorithm="HS256")
        case "wrong_type":
            token = jwt.encode({**claims, "typ": "wx_bind"}, settings.jwt_secret, algorithm="HS256")
        case "tampered_role":
            header, _, sig = world.tokens["teacher1"].split(".")
            token = f"{header}.{_b64({**claims, 'role': 'platform_admin'})}.{sig}"
        case "garbage":
            token = "not-a-token"
        case "hs_swapped_to_rs":
            token = f"{_b64({'alg': 'RS256', 'typ': 'JWT'})}.{_b64(claims)}.c2ln"
    r = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401, attack
    assert r.json()["error"]["code"] == "token_invalid"


async def test_a_token_for_a_session_that_does_not_exist_is_refused(client, world, settings):
    claims = _claims(world, settings, None, sid="00000000-0000-0000-0000-000000000000")
    token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
    r = await client.get("/auth/me", headers={"Authorization": f"Bearer {token}"})
    assert r.status_code == 401 and r.json()["error"]["code"] == "session_revoked"


async def test_roles_are_enforced_by_the_authenticator(client, world):
    r = await client.post(
        "/schools", json={"township_id": str(world["township1"]), "name": "新学校"}, headers=world.headers("admin1")
    )
    assert r.status_code == 403 and r.json()["error"]["code"] == "role_forbidden"
    r = await client.post(
        "/schools", json={"township_id": str(world["township1"]), "name": "新学校"}, headers=world.headers("bureau")
    )
    assert r.status_code == 201, r.text


async def test_openapi_shows_the_roles_each_endpoint_allows(client):
    spec = (await client.get("/openapi.json")).json()
    security = spec["paths"]["/schools"]["post"]["security"]
    assert security == [{"OAuth2PasswordBearer": ["platform_admin", "county_bureau"]}]
    assert (
        spec["components"]["securitySchemes"]["OAuth2PasswordBearer"]["flows"]["password"]["tokenUrl"] == "/auth/token"
    )
