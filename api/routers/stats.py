"""统计 — the county bureau's statistics: the indicator registry, level × period tables and monthly trends,
aggregates only (docs/statistics.md); and the enrolment a school records per term."""

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.ext.asyncio import AsyncSession

from api.deps import NowDep, SchoolAdmin, SessionDep, SettingsDep, Staff, allow
from api.errors import error_responses
from api.models.accounts import Role
from api.models.enrolment import EnrolmentPublic, EnrolmentUpdate
from api.models.stats import IndicatorDef, Level, PeriodKind, StatsTable, StatsTrend
from api.scoping import Principal
from api.services.stats import enrolment as enrolment_service
from api.services.stats import indicators as registry
from api.services.stats import periods
from api.services.stats.answers import Served, gzip_with_as_of, table_answer, trend_answer, with_as_of
from api.stats_db import stats_session

router = APIRouter(tags=["统计 statistics"])
ERRORS = error_responses(403, 404, 422)

StatsReader = Annotated[
    Principal, allow(Role.platform_admin, Role.county_bureau, Role.township_official, Role.school_admin)
]


async def _stats_session(request: Request, session: SessionDep, principal: StatsReader) -> AsyncIterator[AsyncSession]:
    async for s in stats_session(request, session, principal):
        yield s


StatsSession = Annotated[AsyncSession, Depends(_stats_session, scope="function")]
AreaId = Annotated[
    uuid.UUID | None,
    Query(description="统计范围: a county, township or school in your area (default: your own area)"),
]
IndicatorKeys = Annotated[
    str | None,
    Query(max_length=4000, description="指标, comma-separated keys of GET /stats/indicators (default: all)"),
]


@router.get("/stats/indicators", response_model=list[IndicatorDef], responses=ERRORS, summary="统计指标")
async def list_indicators(principal: StatsReader) -> list[IndicatorDef]:
    """Every indicator of the registry: what exactly it counts, its numerator and denominator, rounding."""
    return registry.definitions()


@router.get("/stats/table", response_model=StatsTable, responses=ERRORS, summary="统计表")
async def stats_table(
    request: Request,
    principal: StatsReader,
    stats: StatsSession,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    level: Annotated[Level, Query(description="行: county / township / school / class (class: within one school)")],
    period: Annotated[PeriodKind, Query(description="统计期类型")] = PeriodKind.month,
    key: Annotated[
        str | None,
        Query(
            max_length=16, description="统计期: 2026-11, 2026-Q4, 2026-2027-1, 2026-2027, 2026 (default: the current)"
        ),
    ] = None,
    area_id: AreaId = None,
    indicators: IndicatorKeys = None,
) -> Response:
    """One level × period of the area, the previous period beside each row, the totals row and ``as_of``.
    Small counts are suppressed (``threshold``), with the cells that would give them away. A table built
    within the last ``stats_max_stale_seconds`` is served as kept (its ``as_of`` says so)."""
    chosen = periods.parse(period, key) if key else periods.current(period, now)
    served = await table_answer(
        stats,
        session,
        principal,
        level=level,
        period=chosen,
        area_id=area_id,
        indicators=registry.parse_keys(indicators),
        now=now,
        threshold=settings.stats_suppression_threshold,
        max_stale=timedelta(seconds=settings.stats_max_stale_seconds),
    )
    return _json(request, served)


@router.get("/stats/trend", response_model=StatsTrend, responses=ERRORS, summary="月度趋势")
async def stats_trend(
    request: Request,
    principal: StatsReader,
    stats: StatsSession,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    from_: Annotated[str, Query(alias="from", max_length=7, description="起始月份, e.g. 2026-01")],
    to: Annotated[str, Query(max_length=7, description="结束月份, e.g. 2026-11 (at most 36 months)")],
    area_id: AreaId = None,
    indicators: IndicatorKeys = None,
) -> Response:
    """The area's monthly figures (its totals, suppressed as in its own table)."""
    served = await trend_answer(
        stats,
        session,
        principal,
        indicators=registry.parse_keys(indicators),
        from_key=from_,
        to_key=to,
        area_id=area_id,
        now=now,
        threshold=settings.stats_suppression_threshold,
        max_stale=timedelta(seconds=settings.stats_max_stale_seconds),
    )
    return _json(request, served)


def _json(request: Request, served: Served) -> Response:
    """A kept answer's JSON: gzip as kept when the client takes it (the 300-school table is 3.7 MB plain)."""
    accepts = request.headers.get("accept-encoding", "")
    if "gzip" in accepts.lower():
        headers = {"Content-Encoding": "gzip", "Vary": "Accept-Encoding"}
        return Response(gzip_with_as_of(served.body, served.as_of), media_type="application/json", headers=headers)
    return Response(
        with_as_of(served.body, served.as_of), media_type="application/json", headers={"Vary": "Accept-Encoding"}
    )


TermKey = Annotated[str, Path(max_length=16, description="学期, e.g. 2026-2027-1 (autumn) / 2026-2027-2 (spring)")]


@router.get(
    "/schools/{school_id}/enrolment/{term_key}",
    response_model=EnrolmentPublic,
    responses=ERRORS,
    summary="学期在校学生数",
)
async def get_enrolment(
    school_id: uuid.UUID, term_key: TermKey, principal: Staff, session: SessionDep
) -> EnrolmentPublic:
    return await enrolment_service.get_enrolment(session, school_id=school_id, term_key=term_key)


@router.put(
    "/schools/{school_id}/enrolment/{term_key}",
    response_model=EnrolmentPublic,
    responses=ERRORS,
    summary="登记学期在校学生数",
)
async def put_enrolment(
    school_id: uuid.UUID,
    term_key: TermKey,
    body: EnrolmentUpdate,
    principal: SchoolAdmin,
    session: SessionDep,
    now: NowDep,
) -> EnrolmentPublic:
    """The school's pupils this term (the denominator of 留守儿童占比); audited."""
    return await enrolment_service.put_enrolment(
        session, principal, school_id=school_id, term_key=term_key, data=body, now=now
    )
