"""统计导出 — the bureau's statistics as files it uses as they are: the XLSX workbook (a sheet per level, the
monthly trends with native charts), CSV of one level, and the quarterly / annual bulletin (季度/年度通报) as
Word. The same figures and suppression as ``GET /stats/table``; the same scope (the bureau its county, a
township official the township, a school admin the school); every export audited."""

from datetime import timedelta
from enum import StrEnum
from typing import Annotated, Any
from urllib.parse import quote

from fastapi import APIRouter, Query, Response

from api.deps import NowDep, SessionDep, SettingsDep
from api.errors import error_responses
from api.models.stats import Level, PeriodKind
from api.routers.stats import AreaId, StatsReader, StatsSession
from api.services.stats import periods
from api.services.stats.exports import bulletin, workbook
from api.services.stats.exports.kept import store_at
from api.services.stats.exports.service import Export, export_bulletin, export_csv, export_workbook

router = APIRouter(tags=["统计 statistics"])
ERRORS = error_responses(403, 404, 422)
PeriodKey = Annotated[
    str | None,
    Query(max_length=16, description="统计期: 2026-11, 2026-Q4, 2026-2027-1, 2026-2027, 2026 (default: the current)"),
]


class BulletinPeriod(StrEnum):
    quarter = "quarter"  # 季度通报
    year = "year"  # 年度通报


def _file(content_type: str, description: str) -> dict[int | str, dict[str, Any]]:
    return {**ERRORS, 200: {"content": {content_type: {}}, "description": description}}


def _attachment(export: Export) -> Response:
    # RFC 6266 / 5987: an ASCII fallback name, and the real (Chinese) name percent-encoded.
    disposition = f"attachment; filename=\"{export.ascii_name}\"; filename*=UTF-8''{quote(export.file_name)}"
    return Response(export.content, media_type=export.media_type, headers={"Content-Disposition": disposition})


@router.get(
    "/stats/export.xlsx",
    response_class=Response,
    responses=_file(workbook.MEDIA_TYPE, "Excel 工作簿"),
    summary="导出统计工作簿 (XLSX)",
)
async def stats_workbook(
    principal: StatsReader,
    stats: StatsSession,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    period: Annotated[PeriodKind, Query(description="统计期类型")] = PeriodKind.month,
    key: PeriodKey = None,
    area_id: AreaId = None,
) -> Response:
    """A sheet for the area's level and each level below it (县 / 乡镇 / 学校, or 学校 / 班级 for a school): the
    previous period beside rates and flows, a 合计 row, "<5" where a count is suppressed; then the twelve
    months' trends with native Excel line charts."""
    chosen = periods.parse(period, key) if key else periods.current(period, now)
    return _attachment(
        await export_workbook(
            stats,
            session,
            principal,
            period=chosen,
            area_id=area_id,
            now=now,
            threshold=settings.stats_suppression_threshold,
            max_stale=timedelta(seconds=settings.stats_max_stale_seconds),
            store=store_at(settings.stats_export_dir),
        )
    )


@router.get(
    "/stats/export.csv",
    response_class=Response,
    responses=_file("text/csv", "CSV (UTF-8 with BOM)"),
    summary="导出统计表 (CSV)",
)
async def stats_csv(
    principal: StatsReader,
    stats: StatsSession,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    level: Annotated[Level, Query(description="行: county / township / school / class (class: within one school)")],
    period: Annotated[PeriodKind, Query(description="统计期类型")] = PeriodKind.month,
    key: PeriodKey = None,
    area_id: AreaId = None,
) -> Response:
    """One level of the area as CSV in UTF-8 with a BOM (Excel opens the Chinese correctly): the same cells
    and suppression marks as the workbook."""
    chosen = periods.parse(period, key) if key else periods.current(period, now)
    return _attachment(
        await export_csv(
            stats,
            session,
            principal,
            level=level,
            period=chosen,
            area_id=area_id,
            now=now,
            threshold=settings.stats_suppression_threshold,
            max_stale=timedelta(seconds=settings.stats_max_stale_seconds),
            store=store_at(settings.stats_export_dir),
        )
    )


@router.get(
    "/stats/bulletin.docx",
    response_class=Response,
    responses=_file(bulletin.MEDIA_TYPE, "Word 文档"),
    summary="季度/年度通报 (Word)",
)
async def stats_bulletin(
    principal: StatsReader,
    stats: StatsSession,
    session: SessionDep,
    settings: SettingsDep,
    now: NowDep,
    period: Annotated[BulletinPeriod, Query(description="quarter: 季度通报; year: 年度通报")],
    key: Annotated[
        str | None,
        Query(max_length=16, description="2026-Q4 / 2026 (default: the last complete quarter or year)"),
    ] = None,
    area_id: AreaId = None,
) -> Response:
    """The bulletin, ready to edit and send: the area's figures against the previous period, the units that
    lag on each compliance rate (named; never a child), the tables, and the monthly trends as charts."""
    kind = PeriodKind(period.value)
    chosen = periods.parse(kind, key) if key else periods.previous(periods.current(kind, now))
    return _attachment(
        await export_bulletin(
            stats,
            session,
            principal,
            period=chosen,
            area_id=area_id,
            now=now,
            threshold=settings.stats_suppression_threshold,
            max_stale=timedelta(seconds=settings.stats_max_stale_seconds),
            store=store_at(settings.stats_export_dir),
        )
    )
