"""No child's name, ID number, phone number, search text or link token in any log line — ours, uvicorn's
access log or its error log — and every error line carries its request id.

The app runs under a real uvicorn server with its access log on; the logs are captured through the
handler ``liushou serve`` uses (``api.logs.log_handler``), as a production log file would receive them.
"""

import io
import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from urllib.parse import quote

import httpx

from api.db import scoped_session
from api.logs import configure_logging, redact_target
from api.main import create_app
from api.scoping import SYSTEM
from tests.live import LiveServer
from tests.test_children import child_body, id_number
from tests.test_request_plumbing import fail_inserts_of_child_named

NAME = "欧阳雨桐"
SEARCH = "欧阳雨"
FAILING_NAME = "欧阳未录"
PHONE = "13912345678"


@contextmanager
def production_logging() -> Iterator[io.StringIO]:
    """The logging ``liushou serve`` configures, into a buffer; the test process's own logging restored after."""
    stream = io.StringIO()
    names = ("", "uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore", "pgserver")
    saved = [(lg, lg.level, lg.propagate, list(lg.handlers)) for lg in map(logging.getLogger, names)]
    configure_logging(logging.INFO, stream)
    try:
        yield stream
    finally:
        for lg, level, propagate, handlers in saved:
            for h in list(lg.handlers):
                lg.removeHandler(h)
            for h in handlers:
                lg.addHandler(h)
            lg.setLevel(level)
            lg.propagate = propagate


def test_redacted_targets_keep_the_shape_and_lose_the_values():
    token = secrets.token_urlsafe(32)
    assert redact_target(f"/ack/{token}") == "/ack/***"
    assert redact_target("/children?q=%E6%AC%A7%E9%98%B3&offset=0") == "/children?q=***&offset=***"
    assert (
        redact_target("/children/0b6f3c0e-8f0e-4d43-a4a1-0f5a0b7f2c11")
        == "/children/0b6f3c0e-8f0e-4d43-a4a1-0f5a0b7f2c11"
    )
    assert redact_target(f"/other/{token}/x") == "/other/***/x"


async def test_no_personal_data_or_secret_reaches_the_logs(app, world, settings, clock, database_url):
    number = id_number(date(2016, 5, 9), seed=11)
    token = secrets.token_urlsafe(32)
    async with scoped_session(app.state.sessionmaker, SYSTEM) as s:
        await fail_inserts_of_child_named(s, FAILING_NAME)
    server = LiveServer(
        create_app(settings, clock=clock, database_url=database_url, migrate=False), access_log=True, log_level="info"
    )
    with production_logging() as captured_logs, server:
        async with httpx.AsyncClient(base_url=server.base_url, headers=world.headers("admin1")) as c:
            r = await c.post("/children", json=child_body(world, name=NAME, id_number=number))
            assert r.status_code == 201, r.text
            child_id = r.json()["id"]
            guardian = {"name": "欧阳奶奶", "phone": PHONE}
            r = await c.post(
                f"/children/{child_id}/guardians",
                json={"guardian": guardian, "role": "entrusted_guardian", "relation": "祖母"},
            )
            assert r.status_code == 201, r.text
            r = await c.get("/children", params={"q": SEARCH})
            assert r.status_code == 200 and r.json()["count"] == 1
            r = await c.get(f"/ack/{token}")
            assert r.status_code == 404
            failed = await c.post(
                "/children",
                json=child_body(world, name=FAILING_NAME, id_number=None, sex="male", birth_date="2016-03-08"),
            )
            assert failed.status_code == 500
            dup = await c.post("/children", json=child_body(world, name="另一个", id_number=number))
            assert dup.status_code == 409
            # A value the driver would refuse, with a name beside it.
            r = await c.get("/children", params={"q": SEARCH, "offset": str(2**63)})
            assert r.status_code == 422
    text = captured_logs.getvalue()
    assert "unhandled error" in text and failed.headers["x-request-id"] in text
    assert '"GET /children?q=***' in text and "/ack/***" in text  # the access log is there, redacted
    for secret in [NAME, SEARCH, FAILING_NAME, number, number[-6:], PHONE, PHONE[-8:], token, "欧阳奶奶"]:
        for form in {secret, quote(secret), quote(secret, safe="")}:
            assert form not in text, f"{secret!r} in the logs:\n{text}"
