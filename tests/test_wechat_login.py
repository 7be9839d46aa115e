"""WeChat mini-program login against the fake WeChat server speaking the jscode2session protocol."""

from datetime import timedelta

import httpx
import pytest


def script_code(fake, code, **fields):
    httpx.post(f"{fake.base_url}/_fake/wechat/codes", json={"code": code, **fields}).raise_for_status()


async def invite(client, world, school="school1", who="admin1", **body):
    r = await client.post(
        f"/schools/{world[school]}/invites", json=body or {"display_name": "新来的刘老师"}, headers=world.headers(who)
    )
    assert r.status_code == 201, r.text
    return r.json()["code"]


async def test_a_new_teacher_binds_wechat_with_an_invite_and_then_logs_in_directly(client, world, fake):
    code = await invite(client, world)
    script_code(fake, "code-1", openid="o-teacher-liu", unionid="u-liu")
    r = await client.post("/auth/wechat/login", json={"code": "code-1"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["status"] == "unbound" and body["tokens"] is None
    assert "session_key" not in r.text

    r = await client.post(
        "/auth/wechat/bind", json={"binding_ticket": body["binding_ticket"], "invite_code": code.lower()}
    )
    assert r.status_code == 200, r.text
    me = await client.get("/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
    assert me.json()["role"] == "teacher"
    assert me.json()["school_id"] == str(world["school1"])
    assert me.json()["display_name"] == "新来的刘老师" and me.json()["wechat_bound"] is True

    script_code(fake, "code-2", openid="o-teacher-liu")
    r = await client.post("/auth/wechat/login", json={"code": "code-2"})
    assert r.json()["status"] == "logged_in"
    assert r.json()["tokens"]["access_token"]


async def test_an_invite_works_once(client, world, fake):
    code = await invite(client, world)
    for n, openid in enumerate(["o-a", "o-b"]):
        script_code(fake, f"c{n}", openid=openid)
    ticket_a = (await client.post("/auth/wechat/login", json={"code": "c0"})).json()["binding_ticket"]
    ticket_b = (await client.post("/auth/wechat/login", json={"code": "c1"})).json()["binding_ticket"]
    assert (
        await client.post("/auth/wechat/bind", json={"binding_ticket": ticket_a, "invite_code": code})
    ).status_code == 200
    r = await client.post("/auth/wechat/bind", json={"binding_ticket": ticket_b, "invite_code": code})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invite_used"


async def test_expired_invites_and_binding_tickets_are_refused(client, world, fake, clock):
    code = await invite(client, world)
    script_code(fake, "c", openid="o-late")
    ticket = (await client.post("/auth/wechat/login", json={"code": "c"})).json()["binding_ticket"]
    clock.advance(timedelta(minutes=11))
    r = await client.post("/auth/wechat/bind", json={"binding_ticket": ticket, "invite_code": code})
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_expired"
    clock.advance(timedelta(days=8))
    script_code(fake, "c2", openid="o-late")
    ticket = (await client.post("/auth/wechat/login", json={"code": "c2"})).json()["binding_ticket"]
    r = await client.post("/auth/wechat/bind", json={"binding_ticket": ticket, "invite_code": code})
    assert r.status_code == 422 and r.json()["error"]["code"] == "invite_expired"


async def test_an_unknown_invite_code_is_not_found(client, world, fake):
    script_code(fake, "c", openid="o-x")
    ticket = (await client.post("/auth/wechat/login", json={"code": "c"})).json()["binding_ticket"]
    r = await client.post("/auth/wechat/bind", json={"binding_ticket": ticket, "invite_code": "ZZZZZZZZZZ"})
    assert r.status_code == 404 and r.json()["error"]["code"] == "invite_invalid"


async def test_a_forged_binding_ticket_is_refused(client, world, fake):
    code = await invite(client, world)
    r = await client.post("/auth/wechat/bind", json={"binding_ticket": "x" * 40, "invite_code": code})
    assert r.status_code == 401 and r.json()["error"]["code"] == "token_invalid"


async def test_an_access_token_is_not_a_binding_ticket(client, world, fake):
    code = await invite(client, world)
    r = await client.post("/auth/wechat/bind", json={"binding_ticket": world.tokens["admin1"], "invite_code": code})
    assert r.status_code == 401


@pytest.mark.parametrize(
    ("errcode", "status", "code"),
    [
        (40029, 422, "wechat_code_invalid"),
        (40163, 422, "wechat_code_invalid"),
        (45011, 429, "wechat_rate_limited"),
        (-1, 503, "wechat_busy"),
    ],
)
async def test_wechat_errors_become_clear_answers(client, fake, errcode, status, code):
    script_code(fake, "bad", errcode=errcode)
    r = await client.post("/auth/wechat/login", json={"code": "bad"})
    assert r.status_code == status, r.text
    assert r.json()["error"]["code"] == code


async def test_wechat_down_is_a_503_not_a_500(client, fake):
    script_code(fake, "down", http_status=502)
    r = await client.post("/auth/wechat/login", json={"code": "down"})
    assert r.status_code == 503 and r.json()["error"]["code"] == "wechat_unavailable"


async def test_teachers_cannot_issue_invites_and_admins_only_for_their_school(client, world):
    r = await client.post(f"/schools/{world['school1']}/invites", json={}, headers=world.headers("teacher1"))
    assert r.status_code == 403
    r = await client.post(f"/schools/{world['school2']}/invites", json={}, headers=world.headers("admin1"))
    assert r.status_code == 404


def _every_decoding(text: str, depth: int = 0) -> list[str]:
    """``text`` and whatever base64 / base64url / JSON inside it decodes to, recursively."""
    import base64
    import binascii
    import json
    import re

    found = [text]
    if depth > 3:
        return found
    for piece in {p for p in re.split(r"[.:\"\s,{}\[\]]", text) if len(p) >= 4}:
        for decode in (base64.urlsafe_b64decode, base64.b64decode):
            for pad in range(3):
                try:
                    raw = decode(piece + "=" * pad)
                except (binascii.Error, ValueError):
                    continue
                decoded = raw.decode("utf-8", errors="ignore")
                found += _every_decoding(decoded, depth + 1)
                try:
                    found += [json.dumps(json.loads(decoded), ensure_ascii=False)]
                except ValueError:
                    pass
    return found


async def test_the_binding_ticket_does_not_reveal_the_openid(client, world, fake):
    script_code(fake, "code-x", openid="o-secret-openid-42", unionid="u-secret-unionid-42")
    ticket = (await client.post("/auth/wechat/login", json={"code": "code-x"})).json()["binding_ticket"]
    for readable in _every_decoding(ticket):
        assert "secret-openid-42" not in readable
        assert "secret-unionid-42" not in readable
    # It still works, and a tampered ticket does not.
    code = await invite(client, world)
    header, payload, signature = ticket.split(".")
    tampered = f"{header}.{payload[:-2]}{'A' if payload[-2] != 'A' else 'B'}{payload[-1]}.{signature}"
    r = await client.post("/auth/wechat/bind", json={"binding_ticket": tampered, "invite_code": code})
    assert r.status_code == 401
    r = await client.post("/auth/wechat/bind", json={"binding_ticket": ticket, "invite_code": code})
    assert r.status_code == 200, r.text
    script_code(fake, "code-y", openid="o-secret-openid-42")
    assert (await client.post("/auth/wechat/login", json={"code": "code-y"})).json()["status"] == "logged_in"
