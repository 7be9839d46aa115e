"""花名册 — the roster: template, import (XLSX/CSV, all or nothing) and export (XLSX)."""

import asyncio
import functools
import uuid
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, File, Query, Request, Response, UploadFile
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Message

from api.deps import CipherDep, Managers, NowDep, Offset, SchoolAdmin, SessionDep, Staff
from api.errors import error_responses
from api.models.base import Page
from api.models.children import ChildStatus
from api.models.roster import ImportBatchPublic, RosterImportReport
from api.services.roster import files as roster_files
from api.services.roster import service

# Room for the multipart envelope around the file itself.
_MULTIPART_SLACK = 64 * 1024


class _BodyTooLarge(Exception):
    pass


class _UploadRoute(APIRoute):
    """Stops reading an upload once it passes the limit and answers with the API's own 413
    (``roster_too_large``, Chinese first). FastAPI's ``max_body_size`` would answer in plain text."""

    max_upload_bytes = roster_files.MAX_FILE_BYTES + _MULTIPART_SLACK

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        limit = self.max_upload_bytes

        async def limited(request: Request) -> Response:
            declared = request.headers.get("content-length", "")
            if declared.isdigit() and int(declared) > limit:
                raise roster_files.RosterTooLarge()
            received = 0
            receive = request.receive

            async def counting() -> Message:
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise _BodyTooLarge()
                return message

            try:
                return await handler(Request(request.scope, counting))
            except StarletteHTTPException:
                # FastAPI reports any failure while reading the form as 400; say what it really was.
                if received > limit:
                    raise roster_files.RosterTooLarge() from None
                raise

        return limited


router = APIRouter(tags=["花名册 roster"])
# Only the upload reads a body; its route class enforces the size limit.
upload_router = APIRouter(tags=["花名册 roster"], route_class=_UploadRoute)
ERRORS = error_responses(403, 404, 422)


def _attachment(content: bytes, file_name: str, media_type: str) -> Response:
    # RFC 6266: an ASCII fallback name plus the real (Chinese) name, percent-encoded.
    fallback = "roster" + file_name[file_name.rfind(".") :]
    disposition = f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(file_name)}"
    return Response(content, media_type=media_type, headers={"Content-Disposition": disposition})


_XLSX_RESPONSE: dict[int | str, dict[str, Any]] = {
    200: {"content": {roster_files.XLSX_MEDIA_TYPE: {}}, "description": "Excel 工作簿"}
}


@router.get(
    "/roster/template.xlsx",
    response_class=Response,
    responses=_XLSX_RESPONSE,
    summary="花名册模板 (XLSX, with a 填写说明 sheet)",
)
async def template_xlsx(_: Staff) -> Response:
    """The empty roster template: column headers, drop-down lists, text-formatted ID and phone columns,
    and a second sheet 填写说明 explaining every column with an example."""
    return _attachment(await asyncio.to_thread(_template_xlsx), "花名册模板.xlsx", roster_files.XLSX_MEDIA_TYPE)


@functools.cache
def _template_xlsx() -> bytes:
    # Building the workbook takes tens of milliseconds of CPU: once, off the event loop; the bytes never change.
    return roster_files.template_xlsx()


@router.get(
    "/roster/template.csv",
    response_class=Response,
    responses={200: {"content": {"text/csv": {}}, "description": "CSV (UTF-8 with BOM)"}},
    summary="花名册模板 (CSV)",
)
async def template_csv(_: Staff) -> Response:
    """The header row of the roster as CSV (UTF-8 with a BOM, so Excel shows the Chinese headers)."""
    return _attachment(roster_files.template_csv(), "花名册模板.csv", "text/csv; charset=utf-8")


@upload_router.post(
    "/schools/{school_id}/roster/import",
    response_model=RosterImportReport,
    responses=error_responses(403, 404, 409, 413, 415, 422),
    summary="导入花名册 (XLSX or CSV; all or nothing)",
)
async def import_roster(
    school_id: uuid.UUID,
    principal: SchoolAdmin,
    session: SessionDep,
    cipher: CipherDep,
    now: NowDep,
    file: UploadFile = File(description="花名册: .xlsx, or .csv in UTF-8 (with or without BOM) or GBK/GB18030"),
    dry_run: bool = Query(False, description="只检查不导入: validate every row and report, write nothing"),
    create_classes: bool = Query(False, description="自动新建花名册中出现、本校还没有的班级"),
) -> RosterImportReport:
    """A school admin uploads the school's roster (at most 10 MB, 20,000 children).

    Every row is checked; if any row has an error, nothing is imported and the answer is 422
    ``roster_invalid`` with each error in ``fields`` as ``loc: ["row", 17, "身份证号"]`` (the row number as
    Excel shows it), ``type`` a stable code such as ``id_number_check_digit`` and a Chinese message.
    A wrong header answers 422 ``roster_columns`` naming the missing, unknown or repeated columns.
    Children are matched by ID number, so importing the same roster again updates instead of duplicating.
    """
    content = await file.read(roster_files.MAX_FILE_BYTES + 1)
    if len(content) > roster_files.MAX_FILE_BYTES:
        raise roster_files.RosterTooLarge()
    return await service.import_roster(
        session,
        principal,
        cipher=cipher,
        school_id=school_id,
        content=content,
        file_name=file.filename,
        now=now,
        dry_run=dry_run,
        create_classes=create_classes,
    )


@router.get(
    "/schools/{school_id}/roster.xlsx",
    response_class=Response,
    responses={**_XLSX_RESPONSE, **ERRORS},
    summary="导出花名册 (XLSX)",
)
async def export_roster(
    school_id: uuid.UUID,
    principal: Managers,
    session: SessionDep,
    cipher: CipherDep,
    now: NowDep,
    class_id: uuid.UUID | None = Query(None, description="只导出一个班"),
    status: ChildStatus = Query(ChildStatus.enrolled, description="在册 enrolled (default) / graduated / left"),
    reveal_id_numbers: bool = Query(False, description="导出完整身份证号 (school admins only; audited)"),
) -> Response:
    """The school's roster in the template's columns, so that it can be edited and imported again.

    For the school's admins and the county bureau. ID numbers are masked (4305**********123X) unless a
    school admin asks for them with ``reveal_id_numbers=true``; a masked roster still imports back (each
    row is matched to the child on file). Every export is recorded in the audit log.
    """
    file_name, content = await service.export_roster(
        session,
        principal,
        cipher=cipher,
        school_id=school_id,
        class_id=class_id,
        status=status,
        reveal_id_numbers=reveal_id_numbers,
        now=now,
    )
    return _attachment(content, file_name, roster_files.XLSX_MEDIA_TYPE)


@router.get(
    "/schools/{school_id}/roster/imports",
    response_model=Page[ImportBatchPublic],
    responses=ERRORS,
    summary="花名册导入记录 (who imported which file, when, with what result)",
)
async def list_imports(
    school_id: uuid.UUID,
    _: Managers,
    session: SessionDep,
    offset: Offset = 0,
    limit: int = Query(50, ge=1, le=200),
) -> Page[ImportBatchPublic]:
    return await service.list_imports(session, school_id=school_id, offset=offset, limit=limit)


router.include_router(upload_router)
