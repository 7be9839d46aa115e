"""The escalation worker loop: scheduler and dispatcher passes, a heartbeat, and a LISTEN wake-up.

``liushou worker`` runs one per process; ``liushou serve`` runs one inside the API (the embedded default).
Several run side by side safely: all work is claimed with ``FOR UPDATE SKIP LOCKED``. A worker killed at any
instant loses nothing: its leases expire and another worker (or itself, restarted) picks the work up.
Tests drive :meth:`Worker.run_once` with a ``FrozenClock`` instead of sleeping.
"""

import asyncio
import contextlib
import logging
import os
import socket
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import sqlalchemy as sa
from fastapi import FastAPI
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncEngine

from api.channels.wechat import WechatTokenCache, WechatTokenSource
from api.clock import Clock
from api.db import make_sessionmaker, scoped_session
from api.models.escalation import WorkerHeartbeat
from api.scoping import SYSTEM
from api.services.care.digest import run_digests
from api.services.notifications.dispatch import Dispatcher
from api.services.notifications.outbox import WAKE_CHANNEL
from api.settings import Environment, Settings
from api.worker.scheduler import run_parties, run_steps

log = logging.getLogger("liushou.escalation.worker")
# One run_once drains what is due now, but never loops forever on a flood.
_MAX_ROUNDS_PER_PASS = 50
# Weekly jobs (the care digest) are looked for at most this often; the look is one small query.
_WEEKLY_JOBS_EVERY = timedelta(minutes=1)


@dataclass
class PassStats:
    steps: int = 0
    parties: int = 0
    messages: int = 0
    digests: int = 0  # schools whose weekly care digest this pass queued

    @property
    def busy(self) -> bool:
        return bool(self.steps or self.parties or self.messages)


def default_worker_id() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


class Worker:
    def __init__(
        self,
        engine: AsyncEngine,
        *,
        http: httpx.AsyncClient,
        settings: Settings,
        clock: Clock,
        worker_id: str | None = None,
        wechat_tokens: WechatTokenSource | None = None,
    ) -> None:
        self.engine = engine
        self.sessionmaker = make_sessionmaker(engine)
        self.settings = settings
        self.clock = clock
        self.worker_id = worker_id or default_worker_id()
        self.started_at = clock.now()
        self.dispatcher = Dispatcher(
            self.sessionmaker,
            http=http,
            settings=settings,
            clock=clock,
            worker_id=self.worker_id,
            wechat_tokens=wechat_tokens
            or WechatTokenCache(
                http,
                base_url=settings.wechat_base_url,
                appid=settings.wechat_appid,
                secret=settings.wechat_secret,
                timeout=settings.http_timeout_seconds,
            ),
        )
        self.totals = PassStats()
        self._last_beat: datetime | None = None
        self._last_weekly: datetime | None = None
        self._wake = asyncio.Event()

    async def heartbeat(self, *, force: bool = False) -> None:
        """Tell readiness this worker is alive (at most every ``worker_heartbeat_seconds``)."""
        now = self.clock.now()
        every = timedelta(seconds=self.settings.worker_heartbeat_seconds)
        if not force and self._last_beat is not None and now - self._last_beat < every:
            return
        detail: dict[str, Any] = {
            "steps": self.totals.steps,
            "parties": self.totals.parties,
            "messages": self.totals.messages,
        }
        stmt = pg_insert(WorkerHeartbeat).values(
            worker_id=self.worker_id,
            hostname=socket.gethostname()[:128],
            pid=os.getpid(),
            started_at=self.started_at,
            beat_at=now,
            detail=detail,
        )
        stmt = stmt.on_conflict_do_update(
            index_elements=["worker_id"], set_={"beat_at": stmt.excluded.beat_at, "detail": stmt.excluded.detail}
        )
        async with scoped_session(self.sessionmaker, SYSTEM) as session:  # SYSTEM: the worker's own heartbeat
            await session.execute(stmt)
        self._last_beat = now

    async def run_once(self) -> PassStats:
        """Do everything that is due now: steps, parties, and the messages they queue, until quiet."""
        await self.heartbeat()
        batch = self.settings.escalation_batch_size
        stats = PassStats(digests=await self.weekly_jobs())
        for _ in range(_MAX_ROUNDS_PER_PASS):
            done = PassStats(
                steps=await run_steps(self.sessionmaker, settings=self.settings, clock=self.clock, batch=batch),
                parties=await run_parties(self.sessionmaker, settings=self.settings, clock=self.clock, batch=batch),
                messages=await self.dispatcher.run_once(batch),
            )
            stats.steps += done.steps
            stats.parties += done.parties
            stats.messages += done.messages
            if not done.busy:
                break
        self.totals.steps += stats.steps
        self.totals.parties += stats.parties
        self.totals.messages += stats.messages
        return stats

    async def weekly_jobs(self) -> int:
        """The care digest of every school not yet sent this week (its messages go out in this same pass)."""
        now = self.clock.now()
        if self._last_weekly is not None and now - self._last_weekly < _WEEKLY_JOBS_EVERY:
            return 0
        self._last_weekly = now
        try:
            return len(await run_digests(self.sessionmaker, settings=self.settings, clock=self.clock))
        except Exception:  # the database is away: the next look tries again
            log.exception("weekly care digests could not be looked at")
            return 0

    def wake(self) -> None:
        self._wake.set()

    async def _listen(self, stop: asyncio.Event) -> None:
        """LISTEN for new work so a report is sent without waiting for the next poll; reconnects."""
        while not stop.is_set():
            try:
                async with self.engine.connect() as conn:
                    raw: Any = (await conn.get_raw_connection()).driver_connection

                    def wake(*_: object) -> None:
                        self._wake.set()

                    await raw.add_listener(WAKE_CHANNEL, wake)
                    try:
                        while not stop.is_set() and not raw.is_closed():
                            with contextlib.suppress(TimeoutError):
                                await asyncio.wait_for(stop.wait(), timeout=5.0)
                    finally:
                        if not raw.is_closed():
                            await raw.remove_listener(WAKE_CHANNEL, wake)
            except Exception as exc:  # PostgreSQL restarting: polling covers the gap
                log.warning("escalation LISTEN connection lost (%s); retrying", type(exc).__name__)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=5.0)

    async def run_forever(self, stop: asyncio.Event) -> None:
        """Loop until ``stop`` is set; any error is logged and the loop goes on (the work stays in rows)."""
        listener = asyncio.create_task(self._listen(stop), name="escalation-listen")
        failures = 0
        log.info("escalation worker %s started", self.worker_id)
        try:
            while not stop.is_set():
                try:
                    stats = await self.run_once()
                    failures = 0
                except Exception:
                    failures += 1
                    log.exception("escalation pass failed (%d in a row)", failures)
                    stats = PassStats()
                if stats.busy:
                    continue
                pause = self.settings.escalation_poll_seconds * min(2**failures, 30)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), timeout=pause)
                self._wake.clear()
        finally:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
            log.info("escalation worker %s stopped", self.worker_id)


async def worker_readiness(state: Any) -> str:
    """``ok`` when some worker beat within ``worker_stale_seconds``; ``stale`` or ``none`` otherwise."""
    settings: Settings = state.settings
    try:
        async with state.engine.connect() as conn:
            last = (await conn.execute(sa.select(sa.func.max(WorkerHeartbeat.beat_at)))).scalar_one_or_none()
    except Exception:
        return "unknown"
    if last is None:
        return "none"
    age = (state.clock.now() - last).total_seconds()
    return "ok" if age <= settings.worker_stale_seconds else "stale"


def install(app: FastAPI) -> None:
    """Wire the engine into an app: the readiness probe, and the in-process worker when configured."""
    settings: Settings = app.state.settings
    expected = settings.worker_heartbeat_check
    if expected is None:
        # In production a worker must be running somewhere (in this process or beside it); in development
        # and tests only when this process runs one.
        expected = settings.run_worker_in_process or settings.environment == Environment.production
    if expected:
        app.state.readiness_probes["worker"] = worker_readiness
    if not settings.run_worker_in_process:
        return

    async def start(app: FastAPI) -> None:
        worker = Worker(app.state.engine, http=app.state.http, settings=settings, clock=app.state.clock)
        stop = asyncio.Event()
        app.state.escalation_worker = worker
        app.state.escalation_stop = stop
        app.state.escalation_task = asyncio.create_task(worker.run_forever(stop), name="escalation-worker")

    async def stop(app: FastAPI) -> None:
        app.state.escalation_stop.set()
        app.state.escalation_worker.wake()
        with contextlib.suppress(asyncio.CancelledError):
            await app.state.escalation_task

    app.state.startup_hooks.append(start)
    app.state.shutdown_hooks.append(stop)
