"""The request plumbing: bounded integers everywhere, an answer with our request id for every error, 503
with ``Retry-After`` while the database is away, the security headers, errors documented in OpenAPI, and
the client's request id kept apart from ours."""

import asyncio
import http.client
import re
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest
import sqlalchemy as sa

from api.db import scoped_session
from api.scoping import SYSTEM
from tests.test_children import child_body

HUGE = ["9223372036854775808", "-9223372036854775809", "1" + "0" * 40, "9223372036854775807"]


def _operations(spec):
    for path, item in spec["paths"].items():
        for method, operation in item.items():
            if method in {"get", "post", "put", "patch", "delete"}:
                yield method.upper(), path, operation


def _value(schema: dict, world) -> str | None:
    """A valid value for a required parameter that is not an integer (so the integer is what gets tested)."""
    schema = next((s for s in schema.get("anyOf", []) if s.get("type") != "null"), schema)
    if "enum" in schema:
        return str(schema["enum"][0])
    if schema.get("format") == "uuid":
        return str(world["school1"])
    if schema.get("format") == "date":
        return "2026-01-01"
    if schema.get("type") == "boolean":
        return "false"
    if schema.get("type") == "string":
        return "x"
    return None


def _is_integer(schema: dict) -> bool:
    return schema.get("type") == "integer" or any(s.get("type") == "integer" for s in schema.get("anyOf", []))


@pytest.mark.parametrize("who", ["platform", "admin1", "bureau"])
async def test_huge_integers_in_any_parameter_never_answer_500(client, world, who):
    spec = (await client.get("/openapi.json")).json()
    tried = 0
    for method, path, operation in _operations(spec):
        params = operation.get("parameters", [])
        integers = [p for p in params if _is_integer(p.get("schema", {}))]
        if not integers or path == "/auth/logout":
            continue
        for huge in HUGE:
            for target in integers:
                url, query = path, {}
                for p in params:
                    value = huge if p is target else _value(p.get("schema", {}), world)
                    if p["in"] == "path":
                        url = url.replace("{" + p["name"] + "}", value if p is target else str(world["school1"]))
                    elif p is target or (p.get("required") and value is not None):
                        query[p["name"]] = value
                r = await client.request(method, url, params=query, headers=world.headers(who))
                assert r.status_code < 500, f"{method} {url} {query} -> {r.status_code} {r.text[:300]}"
                if huge != "9223372036854775807" or r.status_code == 422:
                    assert r.status_code in (403, 404, 422), f"{method} {url} {query} -> {r.status_code}"
                tried += 1
    # offset and limit of /children, /accounts, /incidents, /schools, /audit, roster imports, at least.
    assert tried >= 6 * len(HUGE)


async def fail_inserts_of_child_named(session, name: str) -> None:
    """A trigger that fails an insert of a child called ``name`` with an error that quotes the name, as
    database errors do (an unhandled error: the app can only answer 500)."""
    for statement in [
        f"""
        CREATE FUNCTION fail_loudly() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF NEW.name = '{name}' THEN
                RAISE EXCEPTION 'cannot file %', NEW.name USING DETAIL = 'child ' || NEW.name;
            END IF;
            RETURN NEW;
        END $$
        """,
        "CREATE TRIGGER fail_loudly BEFORE INSERT ON child FOR EACH ROW EXECUTE FUNCTION fail_loudly()",
    ]:
        await session.execute(sa.text(statement))


async def test_an_unhandled_error_answers_500_with_its_request_id_and_keeps_the_connection(app, world, live_url):
    name = "未处理错误"
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        await fail_inserts_of_child_named(s, name)
    body = child_body(world, name=name, id_number=None, sex="female", birth_date="2016-03-08")

    def two_requests_on_one_connection() -> tuple[int, dict, str, int]:
        parts = urlsplit(live_url)
        conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
        headers = {**world.headers("admin1"), "Content-Type": "application/json"}
        conn.request("POST", "/children", body=httpx.Request("POST", "/", json=body).read(), headers=headers)
        first = conn.getresponse()
        payload = first.read()
        conn.request("GET", "/healthz")  # on the same connection: it must not have been dropped
        second = conn.getresponse()
        second.read()
        conn.close()
        import json

        return first.status, json.loads(payload), first.getheader("x-request-id") or "", second.status

    status, payload, request_id, second = await asyncio.to_thread(two_requests_on_one_connection)
    assert status == 500
    assert payload["error"]["code"] == "internal_error"
    assert payload["error"]["request_id"] == request_id and re.fullmatch(r"[0-9a-f]{32}", request_id)
    assert name not in str(payload)
    assert second == 200


async def test_every_response_carries_the_security_headers(client, world):
    for path, headers in [
        ("/healthz", {}),
        ("/children", world.headers("admin1")),
        ("/no/such/thing", {}),
        (f"/ack/{'x' * 40}", {}),
        ("/openapi.json", {}),
    ]:
        r = await client.get(path, headers=headers)
        assert r.headers["x-content-type-options"] == "nosniff", path
        assert r.headers["cache-control"] == "no-store", path
        assert r.headers["x-frame-options"] == "DENY", path
        assert "frame-ancestors 'none'" in r.headers["content-security-policy"], path
        assert r.headers["referrer-policy"] == "no-referrer", path


async def test_the_clients_request_id_is_kept_apart_in_the_audit_log_and_bounded(client, world):
    for sent, kept in [("client-trace-42", "client-trace-42"), ("x" * 65, None), ("a b<script>", None)]:
        r = await client.patch(
            f"/classes/{world['class11']}",
            json={"name": f"班{uuid.uuid4().hex[:4]}"},
            headers={**world.headers("admin1"), "X-Request-ID": sent},
        )
        assert r.status_code == 200, r.text
        ours = r.headers["x-request-id"]
        assert ours != sent and re.fullmatch(r"[0-9a-f]{32}", ours)
        log = (await client.get("/audit", params={"resource_type": "class"}, headers=world.headers("admin1"))).json()
        entry = next(e for e in log["data"] if e["request_id"] == ours)
        assert entry["client_request_id"] == kept


async def test_openapi_documents_the_errors_each_endpoint_can_answer(client):
    spec = (await client.get("/openapi.json")).json()
    checked = 0
    for method, path, operation in _operations(spec):
        responses = operation["responses"]
        security = operation.get("security") or []
        where = f"{method} {path}"
        if security:
            assert "401" in responses, f"{where} requires a token but does not document 401"
        if any(scopes for requirement in security for scopes in requirement.values()):
            assert "403" in responses, f"{where} checks the role but does not document 403"
        body = operation.get("requestBody", {}).get("content", {})
        if operation.get("parameters") or body:
            assert "422" in responses, f"{where} takes input but does not document 422"
            assert responses["422"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorResponse")
        if body:
            # Bytes that cannot be read as the body (a broken form, JSON that is not UTF-8) answer 400.
            assert "400" in responses, f"{where} takes a body but does not document 400"
        assert "503" in responses, where
        checked += 1
    assert checked > 60


async def test_the_roster_template_is_not_built_on_the_event_loop(client, world):
    """Downloads of the template (after a first one) beside as many of ``/auth/me`` while a ticker measures how long
    the event loop was held: the workbook is built once, in a thread, so the template holds the loop no longer
    than a request that builds nothing. Building it takes 10 ms of CPU or more: twenty builds on the loop would
    add 0.2 s or more, whatever else the machine is doing."""
    held: dict[str, float] = {"template": 0.0, "me": 0.0}
    phase = ["me"]
    done = asyncio.Event()

    async def ticker() -> None:
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.001)
            now = time.perf_counter()
            held[phase[0]] += max(0.0, now - last - 0.001)
            last = now

    first = await client.get("/roster/template.xlsx", headers=world.headers("admin1"))
    assert first.status_code == 200
    task = asyncio.create_task(ticker())
    await asyncio.sleep(0.01)
    for _ in range(20):
        for kind, path in (("template", "/roster/template.xlsx"), ("me", "/auth/me")):
            phase[0] = kind
            r = await client.get(path, headers=world.headers("admin1"))
            assert r.status_code == 200
            if kind == "template":
                assert r.content[:2] == b"PK"
    done.set()
    await task
    assert held["template"] < held["me"] + 0.1, held
