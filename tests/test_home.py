"""The front door: ``/`` says what this is, and the docs pages need nothing from outside the service."""

import re

import pytest

from api.routers.home import ASSETS_CACHE_CONTROL

OUTSIDE = re.compile(r"""(?:src|href)=["']?(?:https?:)?//""")


async def test_the_root_names_the_service_and_links_the_docs_and_health(client):
    r = await client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
    info = r.json()
    assert info["name"] == "liushou 留守" and info["version"] == "0.1.0"
    assert info["links"] == {
        "docs": "/docs",
        "redoc": "/redoc",
        "openapi": "/openapi.json",
        "health": "/healthz",
        "ready": "/readyz",
    }
    for url in info["links"].values():
        assert (await client.get(url)).status_code in (200, 503), url


async def test_a_browser_gets_the_root_as_a_page_of_links(client):
    r = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml,*/*;q=0.8"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert "href='/docs'" in r.text and "href='/healthz'" in r.text and "0.1.0" in r.text


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_load_only_the_services_own_assets(client, page):
    r = await client.get(page)
    assert r.status_code == 200
    assert not OUTSIDE.search(r.text), OUTSIDE.search(r.text)
    assert "fonts.googleapis" not in r.text and "cdn.jsdelivr" not in r.text
    assets = re.findall(r"""(?:src|href)=["']?(/docs-assets/[^"'\s>]+)""", r.text)
    assert assets
    for asset in assets:
        got = await client.get(asset)
        assert got.status_code == 200, asset
        assert got.headers["cache-control"] == ASSETS_CACHE_CONTROL
        assert len(got.content) > 1000


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_the_docs_pages_may_load_nothing_from_elsewhere(client, page):
    csp = (await client.get(page)).headers["content-security-policy"]
    assert "default-src 'self'" in csp and "img-src 'self' data:" in csp and "frame-ancestors 'none'" in csp
    assert "http" not in csp and "*" not in csp


async def test_swagger_ui_is_told_not_to_ask_the_public_validator(client):
    r = await client.get("/docs")
    assert '"validatorUrl": null' in r.text


async def test_everything_else_is_still_not_cached(client):
    assert (await client.get("/")).headers["cache-control"] == "no-store"
    assert (await client.get("/docs")).headers["cache-control"] == "no-store"
    assert (await client.get("/docs-assets/nothing-here.js")).status_code == 404
