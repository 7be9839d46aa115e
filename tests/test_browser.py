"""In a real browser (headless Chromium over the DevTools protocol, ``tests/browser.py``), as people meet it: the
acknowledgement page on a cheap phone with JavaScript off, confirmed by a real tap, behind a reverse proxy
that publishes the service under a path prefix; and the docs, which must render with nothing fetched from
outside the service.

Skipped, with the reason in the summary, where no Chromium is installed — except where
``LIUSHOU_REQUIRE_BROWSER=1`` (CI installs Chromium and sets it): there a missing browser fails.
Set ``LIUSHOU_SCREENSHOTS=docs`` to write the phone-size screenshots of the page into ``docs/``.
"""

import asyncio
import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.main import create_app
from tests.browser import NO_BROWSER, Page, chromium, find_chromium
from tests.live import LiveServer
from tests.test_ack_page import LINK, grandma_link, set_duty_phone
from tests.test_acknowledgements import close
from tests.test_escalation_support import escalation_settings

PREFIX = "/liushou"
PHONE = {"width": 360, "height": 740}


@pytest.fixture
def settings():
    return escalation_settings()


@pytest.fixture
def chromium_path() -> str:
    found = find_chromium()
    if found is None:
        if os.environ.get("LIUSHOU_REQUIRE_BROWSER") == "1":
            pytest.fail(f"{NO_BROWSER} (LIUSHOU_REQUIRE_BROWSER=1)")
        pytest.skip(NO_BROWSER)
    return found


class UnderPrefix:
    """What a reverse proxy publishing the service under ``/liushou/`` hands it (as ``uvicorn --root-path``
    does): ``root_path`` set, the full path kept; anything outside the prefix is not ours."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            if not scope["path"].startswith(PREFIX + "/"):
                await send({"type": "http.response.start", "status": 404, "headers": []})
                await send({"type": "http.response.body", "body": b"not under the prefix"})
                return
            scope = {**scope, "root_path": PREFIX}
        await self.app(scope, receive, send)


@pytest.fixture
def served(settings, clock, database_url, app):
    """The app (same database, settings and clock as ``app``) on a real socket, under the prefix."""
    server = LiveServer(UnderPrefix(create_app(settings, clock=clock, database_url=database_url, migrate=False)))
    server.start()
    try:
        yield server.base_url + PREFIX
    finally:
        server.stop()


def outside(page: Page, base: str) -> list[str]:
    """The requests that left the browser for anywhere but the service."""
    return [url for url in page.sent if not url.startswith((base + "/", "data:", "blob:", "about:"))]


async def shoot(page: Page, name: str) -> None:
    folder = os.environ.get("LIUSHOU_SCREENSHOTS")
    if folder:
        await asyncio.to_thread(Path(folder).mkdir, parents=True, exist_ok=True)
        await page.screenshot(Path(folder) / name)


async def test_a_grandmother_confirms_on_a_small_phone_without_javascript(chromium_path, kit, served):
    await set_duty_phone(kit, "0739-5220000")
    incident, text = await grandma_link(kit)
    token = LINK.search(text).group(1)

    async with chromium(chromium_path) as browser:
        page = await browser.new_page()
        await page.phone(**PHONE, javascript=False)
        await page.goto(f"{served}/ack/{token}")
        html = await page.html()
        assert "学校紧急通知" in html and incident["case_code"] in html and "委托监护人" not in html

        # Fits the screen: nothing wider than the phone, large text, one big button across the width.
        assert (await page.content_size())["width"] <= PHONE["width"]
        assert float((await page.style("body", "font-size")).removesuffix("px")) >= 22
        button = await page.box("#confirm")
        assert button["width"] >= PHONE["width"] - 2 * 16 - 1 and button["height"] >= 60
        assert float((await page.style("#confirm", "font-size")).removesuffix("px")) >= 26
        # The confirm button is on the first screen, and the case code is on one line.
        assert button["y"] + button["height"] <= PHONE["height"]
        assert await page.line_boxes("#case-code") == 1
        assert (await page.box("a.call"))["width"] >= PHONE["width"] - 2 * 16 - 1
        await shoot(page, "ack-page.png")

        # A real tap on the button: the browser posts the form, under the prefix, and shows the answer.
        loads = page.loads
        await page.click("#confirm")
        await page.wait_for_load(loads)
        html = await page.html()
        assert "已确认收到" in html and "接下来" in html
        await shoot(page, "ack-page-confirmed.png")
        party = await kit.party(incident["id"], "entrusted_guardian")
        assert (party["status"], party["told_route"]) == ("told", "link")

        await close(kit, incident["id"])
        await page.goto(f"{served}/ack/{token}")
        assert "已结案" in await page.html()
        await shoot(page, "ack-page-closed.png")

        await page.goto(f"{served}/ack/this-link-was-cut-short")
        assert "链接无效" in await page.html()
        await shoot(page, "ack-page-invalid.png")

        await page.idle()
        assert page.blocked == {} and outside(page, served) == [], (page.requests, page.blocked)


async def test_the_docs_render_every_operation_with_nothing_from_outside(chromium_path, served):
    async with httpx.AsyncClient() as http:
        spec = (await http.get(f"{served}/openapi.json")).json()
    operations = [op for item in spec["paths"].values() for method, op in item.items() if method != "parameters"]
    assert len(operations) > 50
    # Swagger UI lists an operation under each of its tags.
    listed = sum(max(1, len(set(op.get("tags", [])))) for op in operations)

    async with chromium(chromium_path) as browser:
        page = await browser.new_page()
        await page.goto(f"{served}/docs")
        await page.wait_for(f"document.querySelectorAll('.opblock').length >= {listed}")
        ids = await page.evaluate(
            "Array.from(document.querySelectorAll('.opblock')).map(function (e) { return e.id; })"
        )
        assert len(ids) == listed
        assert all(any(i.endswith("-" + op["operationId"]) for i in ids) for op in operations), ids[:4]
        assert "liushou" in await page.evaluate("document.querySelector('.title').textContent")

        await page.goto(f"{served}/redoc")
        sections = await page.wait_for(
            "Array.from(document.querySelectorAll('[data-section-id*=\"operation/\"]'))"
            ".map(function (e) { return e.getAttribute('data-section-id'); })"
        )
        assert all(any(s.endswith("operation/" + op["operationId"]) for s in sections) for op in operations)

        await page.idle()
        # ReDoc's side menu tries its vendor's logo from a CDN: the docs' CSP stops it in the browser.
        assert set(page.blocked.values()) <= {"csp"}, page.blocked
        assert outside(page, served) == [], (page.requests, page.blocked)
        assert any(url.startswith(f"{served}/docs-assets/swagger-ui-bundle.js") for url in page.requests)
        assert any(url.startswith(f"{served}/docs-assets/redoc.standalone.js") for url in page.requests)
