"""The front door: ``/`` says what this is and where to go; ``/docs`` and ``/redoc`` work offline.

Swagger UI and ReDoc load their scripts and styles from this service (``/docs-assets``, the files of the
``fastapi-offline`` package: Swagger UI, Apache-2.0; ReDoc, MIT), never from a CDN or Google Fonts, which
many county networks cannot reach. Those files change only with the package, so they are cached for a day and
their URLs carry the package's version; everything else stays ``no-store`` (``api.middleware``). The docs
pages' CSP allows nothing but the service itself.
"""

from importlib import metadata, resources
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel
from starlette.types import Scope

from api import pages

ASSETS = "/docs-assets"
ASSETS_VERSION = metadata.version("fastapi-offline")
ASSETS_CACHE_CONTROL = "public, max-age=86400"
# Nothing but the service itself, whatever the assets try: ReDoc's side menu, for one, shows a logo from its
# vendor's CDN. Swagger UI is started by an inline script; ReDoc searches in a blob: worker.
DOCS_CSP = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; connect-src 'self'; worker-src 'self' blob:; "
    "child-src 'self' blob:; base-uri 'none'; form-action 'self'"
)
# The validator badge would fetch an image from the public validator.
SWAGGER_UI_PARAMETERS: dict[str, Any] = {"persistAuthorization": True, "validatorUrl": None}

router = APIRouter(tags=["服务 service"])


class CachedStaticFiles(StaticFiles):
    """Static files with a ``Cache-Control`` of their own (the middleware adds ``no-store`` otherwise)."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        response = await super().get_response(path, scope)
        if response.status_code in (200, 304):
            response.headers["Cache-Control"] = ASSETS_CACHE_CONTROL
        return response


class ServiceLinks(BaseModel):
    docs: str
    redoc: str
    openapi: str
    health: str
    ready: str


class ServiceInfo(BaseModel):
    name: str
    version: str
    description: str
    links: ServiceLinks


def _root(request: Request) -> str:
    return str(request.scope.get("root_path", "")).rstrip("/")


def _asset(request: Request, name: str) -> str:
    return f"{_root(request)}{ASSETS}/{name}?v={ASSETS_VERSION}"


@router.get(
    "/",
    response_model=ServiceInfo,
    summary="服务信息 (name, version, links to the docs and health; HTML for a browser)",
    responses={200: {"content": {"text/html": {}}}},
)
async def home(request: Request) -> Response:
    app = request.app
    root = _root(request)
    links = ServiceLinks(
        docs=f"{root}/docs",
        redoc=f"{root}/redoc",
        openapi=f"{root}{app.openapi_url}",
        health=f"{root}/healthz",
        ready=f"{root}/readyz",
    )
    info = ServiceInfo(name=app.title, version=app.version, description="留守儿童关爱服务平台后端 API", links=links)
    accept = request.headers.get("accept", "")
    if "text/html" in accept and "application/json" not in accept:
        labels = {
            "接口文档 (Swagger UI)": links.docs,
            "接口文档 (ReDoc)": links.redoc,
            "OpenAPI": links.openapi,
            "健康检查 (liveness)": links.health,
            "就绪检查 (readiness)": links.ready,
        }
        return HTMLResponse(pages.front_page(name=info.name, version=info.version, links=labels))
    return JSONResponse(info.model_dump())


@router.get("/docs", include_in_schema=False)
async def swagger_ui(request: Request) -> HTMLResponse:
    app = request.app
    root = _root(request)
    page = get_swagger_ui_html(
        openapi_url=f"{root}{app.openapi_url}",
        title=f"{app.title} — Swagger UI",
        oauth2_redirect_url=f"{root}{app.swagger_ui_oauth2_redirect_url}",
        swagger_js_url=_asset(request, "swagger-ui-bundle.js"),
        swagger_css_url=_asset(request, "swagger-ui.css"),
        swagger_favicon_url=_asset(request, "favicon.png"),
        swagger_ui_parameters=app.swagger_ui_parameters,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


@router.get("/docs/oauth2-redirect", include_in_schema=False)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()


@router.get("/redoc", include_in_schema=False)
async def redoc(request: Request) -> HTMLResponse:
    app = request.app
    page = get_redoc_html(
        openapi_url=f"{_root(request)}{app.openapi_url}",
        title=f"{app.title} — ReDoc",
        redoc_js_url=_asset(request, "redoc.standalone.js"),
        redoc_favicon_url=_asset(request, "favicon.png"),
        with_google_fonts=False,
    )
    page.headers["Content-Security-Policy"] = DOCS_CSP
    return page


def install(app: FastAPI) -> None:
    """Serve the front page, the docs and their assets (the app is built with ``docs_url=None``)."""
    directory = resources.files("fastapi_offline") / "static"
    app.mount(ASSETS, CachedStaticFiles(directory=str(directory)), name="docs-assets")
    app.include_router(router)
