"""工作总结 — a school's term summary written from the records, submitted to the bureau, as JSON and .docx."""

import uuid
from datetime import date
from urllib.parse import quote

from fastapi import APIRouter, Response

from api.deps import NowDep, SchoolAdmin, SessionDep, Staff
from api.errors import error_responses
from api.models.term_summary import SubmissionReport, SummaryCreate, SummaryListItem, SummaryUpdate, SummaryView
from api.services.plan import summary

router = APIRouter(tags=["工作总结 summary"])
ERRORS = error_responses(403, 404, 409, 422)
DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"


@router.post(
    "/schools/{school_id}/summaries",
    response_model=SummaryView,
    status_code=201,
    responses=ERRORS,
    summary="新建工作总结",
)
async def create_summary(
    school_id: uuid.UUID, body: SummaryCreate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> SummaryView:
    """A draft for a plan (its dates) or a span; one per school and span (409 ``summary_exists``)."""
    row = await summary.create_summary(session, principal, school_id=school_id, data=body, now=now)
    return await summary.summary_view(session, row, now=now)


@router.get(
    "/schools/{school_id}/summaries", response_model=list[SummaryListItem], responses=ERRORS, summary="学校的工作总结"
)
async def list_summaries(school_id: uuid.UUID, principal: Staff, session: SessionDep) -> list[SummaryListItem]:
    return await summary.list_summaries(session, school_id=school_id)


@router.get("/summary-submissions", response_model=SubmissionReport, responses=ERRORS, summary="工作总结上报情况")
async def submissions(starts_on: date, ends_on: date, principal: Staff, session: SessionDep) -> SubmissionReport:
    """Each school the caller sees (a county for the bureau) and whether it submitted a summary for the term."""
    return await summary.submissions(session, starts_on=starts_on, ends_on=ends_on)


@router.get("/summaries/{summary_id}", response_model=SummaryView, responses=ERRORS, summary="工作总结")
async def get_summary(summary_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep) -> SummaryView:
    """Counted now while a draft; as submitted afterwards."""
    row = await summary.get_summary(session, summary_id)
    return await summary.summary_view(session, row, now=now)


@router.patch("/summaries/{summary_id}", response_model=SummaryView, responses=ERRORS, summary="修改工作总结")
async def update_summary(
    summary_id: uuid.UUID, body: SummaryUpdate, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> SummaryView:
    """The leader's highlights and problems, while a draft (409 ``summary_submitted``)."""
    row = await summary.update_summary(session, summary_id=summary_id, data=body, now=now)
    return await summary.summary_view(session, row, now=now)


@router.post("/summaries/{summary_id}/submit", response_model=SummaryView, responses=ERRORS, summary="上报工作总结")
async def submit_summary(
    summary_id: uuid.UUID, principal: SchoolAdmin, session: SessionDep, now: NowDep
) -> SummaryView:
    """Freeze the figures and send it to the bureau; once only (409 ``summary_submitted``)."""
    row = await summary.submit_summary(session, principal, summary_id=summary_id, now=now)
    return await summary.summary_view(session, row, now=now)


@router.get(
    "/summaries/{summary_id}/document",
    responses={**ERRORS, 200: {"content": {DOCX: {}}}},
    response_class=Response,
    summary="工作总结 Word 文档",
)
async def summary_document(summary_id: uuid.UUID, principal: Staff, session: SessionDep, now: NowDep) -> Response:
    name, content = await summary.document(session, summary_id=summary_id, now=now)
    disposition = f"attachment; filename=\"summary.docx\"; filename*=UTF-8''{quote(name)}"
    return Response(content, media_type=DOCX, headers={"Content-Disposition": disposition})
