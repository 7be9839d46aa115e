"""健康检查 — liveness and readiness."""

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from api.migrations import current_revision

router = APIRouter(tags=["健康 health"])


@router.get("/healthz", summary="进程存活 (liveness)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get(
    "/readyz",
    summary="就绪 (database reachable, migrations at head)",
    responses={503: {"description": "not ready; ``checks`` says why"}},
)
async def readyz(request: Request) -> JSONResponse:
    """Ready when the database answers and its schema is at the head revision this code expects."""
    state = request.app.state
    checks: dict[str, object] = {}
    try:
        revision = await current_revision(state.engine)
        checks["database"] = "ok"
        checks["migrations"] = "ok" if revision == state.head_revision else f"at {revision}, want {state.head_revision}"
    except Exception:  # readiness must answer, whatever is wrong
        checks["database"] = "unreachable"
    for name, probe in state.readiness_probes.items():
        checks[name] = await probe(state)
    ready = all(v == "ok" for v in checks.values())
    return JSONResponse(
        {"status": "ready" if ready else "not_ready", "checks": checks}, status_code=200 if ready else 503
    )
