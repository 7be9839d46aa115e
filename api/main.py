"""The application factory."""

import gc
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware

from api import metrics
from api.clock import Clock, SystemClock
from api.crypto import FieldCipher
from api.db import make_engine, make_sessionmaker, resolve_database_url
from api.errors import document_errors, install_error_handlers
from api.logs import install_redaction
from api.middleware import RequestContextMiddleware
from api.migrations import head_revision, upgrade_to_head
from api.proxies import TrustedProxyMiddleware
from api.routers import (
    accounts,
    audit,
    auth,
    care_pairings,
    care_records,
    care_rhythm,
    care_todo,
    child_timeline,
    children,
    escalation_policy,
    family,
    family_calls,
    guardians,
    health,
    home,
    inbound,
    incidents,
    organisations,
    roster,
    teacher_duties,
)
from api.routers import activities as care_activities
from api.routers import plan as care_plan
from api.routers import stats as county_stats
from api.routers import stats_exports as stats_files
from api.routers import summaries as term_summaries
from api.security import Passwords
from api.settings import Settings, get_settings
from api.stats_db import install as install_stats_db
from api.text_input import RefuseNulText
from api.worker import loop as escalation_worker

log = logging.getLogger("liushou")

DESCRIPTION = """
**留守** — 留守儿童关爱服务平台的后端 (the backend rural schools use to look after left-behind children).

* 一人一档 children's archive and 联系卡 contact cards
* 结对帮扶 pairings, 谈心 talks, 家访 home visits
* 亲情电话 family calls
* 应急机制 the 30-minute / 1-hour / 2-hour emergency chain
* 县教育局 county statistics

Every error answers `{"error": {"code", "message", "fields", "request_id"}}`; `code` is stable.
Use **Authorize** with a demo account (printed by `liushou serve --demo`).
"""

Probe = Callable[[Any], Awaitable[str]]


def _freeze_start_up() -> None:
    """Everything built by start-up (modules, routes, models, compiled statements) lives as long as the
    process: collected once, then moved out of the garbage collector's sight, so that the collections under
    load walk only what requests leave behind. Their pauses, walking the whole heap, were the latency tail."""
    gc.collect()
    gc.freeze()


def create_app(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    database_url: str | None = None,
    migrate: bool = True,
    http_transport: httpx.AsyncBaseTransport | None = None,
    freeze_after_start: bool = False,
) -> FastAPI:
    """Build the app. ``database_url`` overrides the settings (tests pass their own database).
    ``freeze_after_start``: the served process (``liushou serve``) sets it, see :func:`_freeze_start_up`."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        url = database_url or await resolve_database_url(settings)
        if migrate:
            await upgrade_to_head(url)
        app.state.engine = make_engine(url, settings)
        app.state.sessionmaker = make_sessionmaker(app.state.engine)
        app.state.http = httpx.AsyncClient(timeout=settings.http_timeout_seconds, transport=http_transport)
        try:
            for hook in app.state.startup_hooks:
                await hook(app)
            if freeze_after_start:
                _freeze_start_up()
            yield
        finally:
            for hook in reversed(app.state.shutdown_hooks):
                await hook(app)
            await app.state.http.aclose()
            await app.state.engine.dispose()

    app = FastAPI(
        title="liushou 留守",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        swagger_ui_parameters=home.SWAGGER_UI_PARAMETERS,
        # Served by api.routers.home from the service's own copies of the assets (offline networks).
        docs_url=None,
        redoc_url=None,
        # Metrics are Prometheus's (api/metrics.py). FastAPI's own OpenTelemetry hooks, with no provider set
        # up, did nothing but ask for one on every request.
        telemetry={"tracing": False, "metrics": False, "logs": False},
    )
    app.state.settings = settings
    app.state.clock = clock or SystemClock()
    app.state.passwords = Passwords(settings)
    app.state.cipher = FieldCipher.from_config(settings.field_keys, active=settings.field_key_active)
    app.state.head_revision = head_revision()
    app.state.readiness_probes = {}
    app.state.startup_hooks = []
    app.state.shutdown_hooks = []

    install_error_handlers(app)
    install_redaction()
    app.add_middleware(RefuseNulText)  # inside the request context: its 422 carries the request id
    app.add_middleware(RequestContextMiddleware)
    # Outside the request context, so that it records the address this resolves.
    app.add_middleware(TrustedProxyMiddleware, trusted=settings.trusted_proxies)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware, allow_origins=settings.cors_origins, allow_methods=["*"], allow_headers=["*"]
        )
    # FastAPI tries the routes one after another in the order they were included, and each route tried costs
    # a few microseconds: the to-do list, 134th, paid a third of a millisecond on every request before its own
    # work began. The routers of the most frequent requests come first — a teacher's class and files, the
    # incident report, the to-do list. tests/test_routing.py checks that no route hides another.
    for module in (children, incidents, care_todo):
        app.include_router(module.router)
    for module in (health, auth, accounts, organisations, audit, guardians, family):
        app.include_router(module.router)
    app.include_router(roster.router)
    for module in (escalation_policy, inbound, metrics):
        app.include_router(module.router)
    app.include_router(family_calls.router)
    for module in (care_pairings, care_records):
        app.include_router(module.router)
    for module in (care_rhythm, child_timeline):
        app.include_router(module.router)
    app.include_router(care_plan.router)  # 工作计划
    app.include_router(care_activities.router)  # 关爱活动
    app.include_router(term_summaries.router)  # 工作总结
    app.include_router(teacher_duties.router)  # 教师履职
    app.include_router(county_stats.router)  # 统计 (the bureau's statistics)
    app.include_router(stats_files.router)  # 统计导出: XLSX, CSV, 季度/年度通报
    install_stats_db(app)
    escalation_worker.install(app)
    home.install(app)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_errors(FastAPI.openapi(app))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
