"""The engine's own health: metrics, the heartbeat that readiness reads, and the in-process worker."""

import asyncio
import time
from datetime import timedelta

import httpx
import pytest

from api.main import create_app
from tests.test_escalation_support import GRANDMA, attempts, escalation_settings


@pytest.fixture
def settings():
    # As in production: readiness wants a fresh worker heartbeat.
    return escalation_settings(worker_heartbeat_check=True)


def metric(text: str, name: str, default: float | None = None) -> float:
    for line in text.splitlines():
        if line.startswith(name + " "):
            return float(line.rsplit(" ", 1)[1])
    if default is None:
        raise AssertionError(f"{name} not in metrics")
    return default


async def test_readiness_reports_a_stopped_worker_within_a_minute(kit):
    r = await kit.client.get("/readyz")
    assert (r.status_code, r.json()["checks"]["worker"]) == (503, "none")
    await kit.worker.run_once()
    r = await kit.client.get("/readyz")
    assert (r.status_code, r.json()["checks"]["worker"]) == (200, "ok")
    kit.advance(seconds=60)
    assert (await kit.client.get("/readyz")).status_code == 200
    kit.advance(seconds=1)
    r = await kit.client.get("/readyz")
    assert (r.status_code, r.json()["checks"]["worker"]) == (503, "stale")


async def test_metrics_show_due_work_sends_and_breaches(kit):
    family = await kit.family()
    await kit.report(family.child_id, occurred_at=(kit.clock.now() - timedelta(minutes=40)).isoformat())
    text = (await kit.client.get("/metrics")).text
    assert metric(text, "liushou_escalation_messages_due") >= 2
    assert metric(text, "liushou_escalation_steps_late") == 1
    assert metric(text, "liushou_escalation_breaches") == 1
    # Counters belong to the process (other tests sent before): compare before and after.
    voice_sent = 'liushou_escalation_messages_sent_total{channel="voice",purpose="notify"}'
    sent_before = metric(text, voice_sent, default=0.0)
    await kit.settle()
    text = (await kit.client.get("/metrics")).text
    assert metric(text, "liushou_escalation_messages_due") == 0
    assert metric(text, voice_sent) == sent_before + 1
    assert metric(text, "liushou_escalation_worker_heartbeat_age_seconds") == 0
    # Told late: no longer late, still a breach on the record.
    assert metric(text, "liushou_escalation_steps_late") == 0
    assert metric(text, "liushou_escalation_breaches") == 1
    assert "刘小明" not in text and "13800138001" not in text


async def test_metrics_can_require_a_token(kit, database_url, clock):
    app = create_app(escalation_settings(metrics_token="s3cret"), clock=clock, database_url=database_url, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            r = await client.get("/metrics")
            assert (r.status_code, r.json()["error"]["code"]) == (401, "metrics_token_required")
            assert (await client.get("/metrics", headers={"Authorization": "Bearer s3cret"})).status_code == 200


async def test_serve_runs_a_worker_in_process_that_wakes_on_a_report(kit, database_url, clock):
    family = await kit.family()
    # Polling every 30 s: only the LISTEN/NOTIFY wake-up can send within the few seconds this test waits.
    settings = escalation_settings(run_worker_in_process=True, escalation_poll_seconds=30)
    app = create_app(settings, clock=clock, database_url=database_url, migrate=False)
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            await asyncio.sleep(0.5)  # the worker's first pass and its LISTEN
            assert (await client.get("/readyz")).json()["checks"]["worker"] == "ok"
            kit.client = client
            await kit.report(family.child_id)
            started = time.monotonic()
            for _ in range(200):
                if await attempts(kit, GRANDMA):
                    break
                await asyncio.sleep(0.05)
            assert await attempts(kit, GRANDMA) == [("voice", "+8613800138001", "accepted")]
            assert time.monotonic() - started < 10
