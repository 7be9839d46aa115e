"""The warm-up of the kept answers (:mod:`.answers`), run by ``liushou stats-refresh`` after each refresher pass
(:func:`.preaggregate.refresh` itself is left alone): so that the answers people ask for are ready before they
ask again, a fresh deploy answers the bureau's first question from the database, and the first question after
midnight finds an answer judged on the new day.

Each pass, within ``stats_warm_seconds`` of work:

1. the standard tables — each county's for its bureau and each township's for its official: schools × this
   month, every indicator, the configured threshold — then
2. every answer asked for within ``stats_warm_days`` (most recently asked first), then
3. in the last ``stats_ahead_minutes`` before Shanghai midnight (when the refresher keeps tomorrow's rows too),
   the same for tomorrow: the standard tables of tomorrow's month (on 30 November, December's) and the answers
   asked, judged on tomorrow (built as at tomorrow's midnight, from the rows judged tomorrow) and kept beside
   today's. Their ``as_of`` is real, never that midnight: the oldest change they do not include, else the time
   of the build. Workbooks and bulletins are left for the first pass after midnight: their files print their
   ``as_of``, which a build judged at midnight cannot know honestly,

each through :func:`.answers.answer` as the warm-up: an answer whose kept rows' versions have not moved is only
re-stamped (its ``as_of`` moved on, the body untouched — in this process the suppression is found in
:mod:`.service`'s memo by those versions); one whose versions moved, or not yet kept for its day, is built again
and kept. Each is built in the scope it is for (the role and places of the asker, no account) in a
transaction of its own: a failure building one is logged and the others go on. Answers nobody asked for
within ``stats_warm_days``, and those judged on a day gone by, are deleted.
"""

import logging
import time
from collections import Counter
from collections.abc import Sequence
from datetime import datetime, timedelta
from datetime import time as dt_time
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from api.clock import Clock
from api.db import scoped_session
from api.models.accounts import Role
from api.models.stats import Level, PeriodKind
from api.scoping import SYSTEM, Principal
from api.services.stats import answers, periods
from api.services.stats.exports import service as exports
from api.services.stats.exports.kept import store_at
from api.services.stats.preaggregate import judged_days
from api.services.stats.service import resolve_area
from api.settings import Settings

log = logging.getLogger("liushou.stats")

MAX_ANSWERS = 500  # answers looked at per pass, at most (besides the budget in seconds)

_ASKED = sa.text(
    "SELECT kind, request FROM (SELECT DISTINCT ON (key) key, kind, request, asked_at FROM stats_answer"
    " WHERE asked_at >= :since ORDER BY key, asked_at DESC) AS asked ORDER BY asked_at DESC, key LIMIT :limit"
)
_FORGET = sa.text("DELETE FROM stats_answer WHERE asked_at < :since OR judged_on < :today")
AHEAD_KINDS = ("table", "trend", "csv")  # the answers built ahead of midnight (the files that print no as_of)
_PLACES = sa.text(
    "SELECT 'county' AS level, id, id AS county_id FROM county"
    " UNION ALL SELECT 'township', id, county_id FROM township ORDER BY 1, 2"
)


def standard_asks(places: Sequence[Any], now: datetime, threshold: int) -> list[answers.Ask]:
    """Each county's school table for its bureau and each township's for its official, this month."""
    period = answers.standard_period(now)
    out = []
    for level, place_id, county_id in places:
        if level == "county":
            principal = Principal(account_id=None, role=Role.county_bureau, county_id=county_id)
        else:
            principal = Principal(
                account_id=None, role=Role.township_official, county_id=county_id, township_id=place_id
            )
        out.append(
            answers.Ask.of(
                "table",
                principal,
                place_id,
                level=Level.school.value,
                period_kind=period.kind.value,
                period_key=period.key,
                indicators=None,
                threshold=threshold,
            )
        )
    return out


def tomorrow_midnight(now: datetime) -> datetime:
    """The clock tomorrow's answers are judged by: Shanghai's next midnight."""
    tomorrow = periods.shanghai_date(now) + timedelta(days=1)
    return datetime.combine(tomorrow, dt_time(0), tzinfo=periods.SHANGHAI)


async def rebuild(
    session: AsyncSession,
    ask: answers.Ask,
    *,
    now: datetime,
    settings: Settings,
    real_now: datetime | None = None,
) -> answers.Served:
    """The answer of ``ask``, as the warm-up: re-stamped when its figures have not moved, else built and kept.
    Judged at ``now``; ``real_now`` the real time when ``now`` is tomorrow's midnight (:func:`.answers.answer`)."""
    params = ask.parameters
    principal = ask.principal()
    max_stale = timedelta(seconds=settings.stats_max_stale_seconds)
    threshold = int(params["threshold"])
    if ask.kind == "trend":
        return await answers.trend_answer(
            session,
            session,
            principal,
            indicators=params["indicators"],
            from_key=params["from_key"],
            to_key=params["to_key"],
            area_id=ask.area_id,
            now=now,
            threshold=threshold,
            max_stale=max_stale,
            warm=True,
            real_now=real_now,
        )
    period = periods.parse(PeriodKind(params["period_kind"]), params["period_key"])
    if ask.kind == "table":
        return await answers.table_answer(
            session,
            session,
            principal,
            level=Level(params["level"]),
            period=period,
            area_id=ask.area_id,
            indicators=params["indicators"],
            now=now,
            threshold=threshold,
            max_stale=max_stale,
            warm=True,
            real_now=real_now,
        )
    area = await resolve_area(session, principal, ask.area_id)
    store = store_at(settings.stats_export_dir)
    common: dict[str, Any] = {
        "period": period,
        "now": now,
        "threshold": threshold,
        "max_stale": max_stale,
        "store": store,
        "warm": True,
    }
    if ask.kind == "xlsx":
        return await exports.workbook_answer(session, session, principal, area, **common)
    if ask.kind == "csv":
        level = Level(params["level"])
        return await exports.csv_answer(session, session, principal, area, level=level, real_now=real_now, **common)
    if ask.kind == "docx":
        return await exports.bulletin_answer(session, session, principal, area, **common)
    raise ValueError(f"unknown kind of answer: {ask.kind}")


async def warm(sessionmaker: async_sessionmaker[AsyncSession], *, clock: Clock, settings: Settings) -> dict[str, float]:
    """One warm-up pass (see the module's doc). Returns what it did (for logs and the bench)."""
    t0 = time.perf_counter()
    now = clock.now()
    since = now - timedelta(days=settings.stats_warm_days)
    # SYSTEM: the warm-up reads every scope's recently asked answers and the counties and townships, to build each
    # answer again in its own scope below.
    async with scoped_session(sessionmaker, SYSTEM) as session:
        await session.execute(_FORGET, {"since": since, "today": periods.shanghai_date(now)})
        asked = (await session.execute(_ASKED, {"since": since, "limit": MAX_ANSWERS})).all()
        places = (await session.execute(_PLACES)).all()
    threshold = settings.stats_suppression_threshold
    todo: dict[str, answers.Ask] = {}
    for ask in standard_asks(places, now, threshold):
        todo.setdefault(ask.key, ask)
    for kind, request in asked:
        try:
            ask = answers.Ask.from_request(kind, request)
        except (KeyError, TypeError, ValueError):
            continue  # a request this version cannot read: it ages out
        todo.setdefault(ask.key, ask)
    today = list(todo.values())[:MAX_ANSWERS]
    # Before midnight, tomorrow's too (after today's, within the same budget): tomorrow's standard tables, then
    # the same asks, judged at tomorrow's midnight.
    passes: list[tuple[datetime, list[answers.Ask]]] = [(now, today)]
    if len(judged_days(now, ahead=timedelta(minutes=settings.stats_ahead_minutes))) > 1:
        ahead: dict[str, answers.Ask] = {}
        for ask in [*standard_asks(places, tomorrow_midnight(now), threshold), *today]:
            if ask.kind in AHEAD_KINDS:
                ahead.setdefault(ask.key, ask)
        passes.append((tomorrow_midnight(now), list(ahead.values())[:MAX_ANSWERS]))
    done: Counter[str] = Counter()
    budget = settings.stats_warm_seconds
    for judged_at, asks in passes:
        for ask in asks:
            if time.perf_counter() - t0 > budget:
                done["skipped"] += 1
                continue
            try:
                async with scoped_session(sessionmaker, ask.principal(), clock=clock) as session:
                    served = await rebuild(session, ask, now=judged_at, settings=settings, real_now=now)
                done[served.how] += 1
                if judged_at != now:
                    done["tomorrow"] += 1
            except Exception:  # one answer failing (a school gone, a period refused) must not stop the others
                done["failed"] += 1
                log.exception("statistics warm-up: building a kept %s answer failed", ask.kind)
    elapsed = time.perf_counter() - t0
    log.info(
        "statistics warm-up: %d answers, %d for tomorrow (%d built, %d re-stamped, %d failed, %d left for the next"
        " pass) in %.1f s",
        len(todo),
        done["tomorrow"],
        done["built"],
        done["restamped"],
        done["failed"],
        done["skipped"],
        elapsed,
    )
    return {"answers": len(todo), **{k: float(v) for k, v in done.items()}, "seconds": elapsed}
