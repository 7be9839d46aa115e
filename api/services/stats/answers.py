"""Built answers kept in the database (``stats_answer``), so that the first request after a change, and the first
request to a fresh API process, is a read rather than a 300-school suppression.

An answer — a table's or a trend's JSON, a workbook, CSV or bulletin file — is kept under a key made of what
determines it (:class:`Ask`): its kind, the caller's scope (role and the county, township or school it is rooted
in), the area, the period, the indicators, the threshold — one row per day it is judged on (Shanghai), so that the
warm-up can keep tomorrow's beside today's before midnight. It is served as kept while its ``as_of`` is within the
allowed staleness (``stats_max_stale_seconds``) and it was judged on this day, **even if the figures moved
meanwhile** — the issue's bound: never more than a few minutes stale, and saying its ``as_of``. Past that, the kept
rows' versions are read: the same versions as the answer was built from give the same answer, which is re-stamped
with the ``as_of`` a fresh build would say; other versions, a new build (kept in turn). The refresher's warm-up
(:mod:`.warm`) does the same for the answers asked for recently, after each pass.

``as_of`` stays honest: a kept answer says the ``as_of`` of its build (or of the re-stamp, whose versions equal
its build's), every change before which it counts; a change after it is simply not counted yet. Tomorrow's
answers, judged as at the coming midnight, say a real time too (never later than the build's ``real_now``).

Scope: the table has row-level security by scope root (the role and the county, township or school the
answer was built for; the platform reads all), and the key carries the scope too — a township official never
reads the bureau's kept answer nor another township's, whatever the key. The rows are read and written on
the request's own session (the primary), in the caller's scope.
"""

import hashlib
import json
import struct
import uuid
import zlib
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from pydantic import TypeAdapter
from sqlalchemy.ext.asyncio import AsyncSession

from api.models.accounts import Role
from api.models.stats import Level, Period, PeriodKind, StatsTable, StatsTrend
from api.scoping import Principal
from api.services.stats import indicators as registry
from api.services.stats import periods
from api.services.stats.service import (
    DEFAULT_MAX_STALE,
    DEFAULT_THRESHOLD,
    Area,
    answer_version,
    build_table,
    build_trend,
    check_level,
    check_period,
    resolve_area,
)

KEY_VERSION = "2"  # bump when an answer's body changes for the same ask (2: JSON kept compressed)
ASKED_EVERY = timedelta(hours=1)  # how often a served answer's asked_at is moved on (a write per hour, not per read)
_INSTANT = TypeAdapter(datetime)


@dataclass(frozen=True)
class Ask:
    """What determines an answer: its kind, the caller's scope, the area and the parameters (JSON values)."""

    kind: str  # table / trend / xlsx / csv / docx
    role: str
    county_id: uuid.UUID | None
    township_id: uuid.UUID | None
    school_id: uuid.UUID | None
    area_id: uuid.UUID
    params: str  # the parameters as canonical JSON

    @classmethod
    def of(cls, kind: str, principal: Principal, area_id: uuid.UUID, **params: Any) -> "Ask":
        role = principal.role.value if principal.role is not None else "-"
        return cls(
            kind,
            role,
            principal.county_id,
            principal.township_id,
            principal.school_id,
            area_id,
            json.dumps(params, sort_keys=True, ensure_ascii=False),
        )

    @property
    def key(self) -> str:
        digest = hashlib.sha256()
        for part in (KEY_VERSION, self.kind, self.role, self.county_id, self.township_id, self.school_id):
            digest.update(str(part).encode())
            digest.update(b"\0")
        digest.update(str(self.area_id).encode())
        digest.update(b"\0")
        digest.update(self.params.encode())
        return digest.hexdigest()

    @property
    def scope_id(self) -> uuid.UUID:
        """The root of the scope the answer is for (row security reads it); the platform's: the area."""
        own = {
            Role.county_bureau.value: self.county_id,
            Role.township_official.value: self.township_id,
            Role.school_admin.value: self.school_id,
        }.get(self.role)
        return own if own is not None else self.area_id

    @property
    def parameters(self) -> dict[str, Any]:
        loaded: dict[str, Any] = json.loads(self.params)
        return loaded

    def request(self) -> dict[str, Any]:
        """The ask as ``stats_answer.request`` keeps it (the warm-up builds it again from there)."""
        return {
            "role": self.role,
            "county_id": _text(self.county_id),
            "township_id": _text(self.township_id),
            "school_id": _text(self.school_id),
            "area_id": str(self.area_id),
            "params": self.parameters,
        }

    @classmethod
    def from_request(cls, kind: str, request: dict[str, Any]) -> "Ask":
        return cls(
            kind,
            request["role"],
            _uuid(request.get("county_id")),
            _uuid(request.get("township_id")),
            _uuid(request.get("school_id")),
            uuid.UUID(request["area_id"]),
            json.dumps(request["params"], sort_keys=True, ensure_ascii=False),
        )

    def principal(self) -> Principal:
        """The scope to build the answer in (the warm-up's): the role and places, no account."""
        return Principal(
            account_id=None,
            role=Role(self.role),
            county_id=self.county_id,
            township_id=self.township_id,
            school_id=self.school_id,
        )


def _text(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _uuid(value: str | None) -> uuid.UUID | None:
    return None if value is None else uuid.UUID(value)


@dataclass(frozen=True)
class Kept:
    body: bytes
    version: str | None
    judged_on: date
    as_of: datetime
    asked_at: datetime


_READ = sa.text(
    "SELECT body, version, judged_on, as_of, asked_at FROM stats_answer WHERE key = :key AND judged_on = :today"
)
_KEEP = sa.text(
    """
    INSERT INTO stats_answer (key, kind, scope_role, scope_id, request, body, version, judged_on, as_of, built_at,
                              asked_at)
    VALUES (:key, :kind, :scope_role, :scope_id, CAST(:request AS jsonb), :body, :version, :judged_on, :as_of,
            CAST(:built_at AS timestamptz),
            CASE WHEN CAST(:warm AS boolean)
                 THEN coalesce((SELECT max(asked_at) FROM stats_answer WHERE key = CAST(:key AS varchar)),
                               CAST(:built_at AS timestamptz))
                 ELSE CAST(:built_at AS timestamptz) END)
    ON CONFLICT (key, judged_on) DO UPDATE SET
        body = excluded.body, version = excluded.version, as_of = excluded.as_of, built_at = excluded.built_at,
        asked_at = CASE WHEN CAST(:warm AS boolean) THEN stats_answer.asked_at
                        ELSE greatest(stats_answer.asked_at, excluded.asked_at) END
    WHERE stats_answer.as_of <= excluded.as_of
    """
)
_RESTAMP = sa.text(
    "UPDATE stats_answer SET as_of = greatest(as_of, :as_of), asked_at = greatest(asked_at, :asked_at)"
    " WHERE key = :key AND judged_on = :today AND version = :version"
)
# Asked: every day's row of the key (today's and, before midnight, tomorrow's) ages from the last ask.
_ASKED = sa.text("UPDATE stats_answer SET asked_at = :now WHERE key = :key AND asked_at < :now")


async def read(session: AsyncSession, ask: Ask, today: date) -> Kept | None:
    """The answer of ``ask`` kept for ``today`` (Shanghai), if any."""
    row = (await session.execute(_READ, {"key": ask.key, "today": today})).first()
    return None if row is None else Kept(bytes(row[0]), row[1], row[2], row[3], row[4])


async def keep(
    session: AsyncSession,
    ask: Ask,
    body: bytes,
    *,
    as_of: datetime,
    version: str | None,
    now: datetime,
    real_now: datetime | None = None,
    warm: bool = False,
) -> None:
    """Keep a built answer, judged on ``now``'s day (Shanghai) and built at ``real_now`` (default ``now``; the
    warm-up's answers for tomorrow are judged at tomorrow's midnight but built now). Asked now, unless built by
    the warm-up (``warm``): then its ``asked_at`` is that of the key's other day, if any, so that an answer nobody
    asks for again ages out of the warm-up's window however often its figures move."""
    await session.execute(
        _KEEP,
        {
            "key": ask.key,
            "kind": ask.kind,
            "scope_role": ask.role,
            "scope_id": ask.scope_id,
            "request": json.dumps(ask.request(), ensure_ascii=False),
            "body": body,
            "version": version,
            "judged_on": periods.shanghai_date(now),
            "as_of": as_of,
            "built_at": real_now if real_now is not None else now,
            "warm": warm,
        },
    )


Build = Callable[[], Awaitable[tuple[bytes, datetime, str | None]]]
VersionOf = Callable[[], Awaitable[tuple[str | None, datetime]]]


@dataclass(frozen=True)
class Served:
    body: bytes
    as_of: datetime
    how: str  # kept / restamped / built (for logs and the warm-up's count)


async def answer(
    session: AsyncSession,
    ask: Ask,
    *,
    now: datetime,
    max_stale: timedelta | None,
    build: Build,
    version_of: VersionOf,
    warm: bool = False,
    real_now: datetime | None = None,
) -> Served:
    """The kept answer of ``ask`` while fresh enough (not for the warm-up, ``warm``); else the kept one
    re-stamped when the figures it was built from have not moved; else ``build()`` (kept in turn).

    ``now`` is the clock the answer is judged by (its day picks the kept rows and the kept answer); ``real_now``,
    when given, the real time — the warm-up builds tomorrow's answers before midnight with ``now`` at tomorrow's
    midnight: their ``as_of`` is then never later than ``real_now`` (a change after it is not counted; one
    before it is, or its mark, not included, says an older ``as_of``)."""
    today = periods.shanghai_date(now)
    real = real_now if real_now is not None else now
    kept = await read(session, ask, today)
    if kept is not None:
        bound = max_stale if max_stale is not None else DEFAULT_MAX_STALE
        if not warm and now - kept.as_of <= bound:
            if now - kept.asked_at >= ASKED_EVERY:
                await session.execute(_ASKED, {"key": ask.key, "now": now})
            return Served(kept.body, kept.as_of, "kept")
        if kept.version is not None:
            version, as_of = await version_of()
            as_of = min(as_of, real)
            if version == kept.version:
                asked = kept.asked_at if warm else now
                await session.execute(
                    _RESTAMP,
                    {"key": ask.key, "today": today, "version": version, "as_of": as_of, "asked_at": asked},
                )
                return Served(kept.body, max(as_of, kept.as_of), "restamped")
    body, as_of, version = await build()
    as_of = min(as_of, real)
    await keep(session, ask, body, as_of=as_of, version=version, now=now, real_now=real, warm=warm)
    return Served(body, as_of, "built")


# A kept JSON answer is kept compressed, without its as_of: the JSON less its closing brace as raw deflate
# ending on a byte boundary (a sync flush, no final block), after its CRC-32 and length. Served, its as_of and
# the closing brace are compressed as the stream's final block and the gzip frame put round both — the kept part
# is never compressed (nor decompressed) again: a 300-school table is 3.7 MB of JSON, about a tenth of it sent.
_PACKED = b"LSJ1"
_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, no time, unknown system


def pack_json(body: bytes) -> bytes:
    """A JSON object (without its ``as_of``) as kept: compressed, open at its end."""
    prefix = body[:-1]
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    deflated = packer.compress(prefix) + packer.flush(zlib.Z_SYNC_FLUSH)
    return _PACKED + struct.pack("<II", zlib.crc32(prefix), len(prefix)) + deflated


def gzip_with_as_of(kept: bytes, as_of: datetime) -> bytes:
    """The kept JSON with the ``as_of`` it is served with as its last member, as one gzip stream."""
    crc, length = struct.unpack("<II", kept[4:12])
    tail = b',"as_of":' + _INSTANT.dump_json(as_of) + b"}"
    packer = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS)
    closing = packer.compress(tail) + packer.flush(zlib.Z_FINISH)
    trailer = struct.pack("<II", zlib.crc32(tail, crc), (length + len(tail)) & 0xFFFFFFFF)
    return _GZIP_HEADER + kept[12:] + closing + trailer


def with_as_of(kept: bytes, as_of: datetime) -> bytes:
    """The kept JSON with its ``as_of``, plain (for a client that does not take gzip)."""
    return zlib.decompress(gzip_with_as_of(kept, as_of), 16 + zlib.MAX_WBITS)


# ---- tables and trends -----------------------------------------------------------------------------------------


def _indicator_keys(indicators: list[str] | None) -> list[str] | None:
    """The indicators asked for, None for all of them in the registry's order (one kept answer for both)."""
    if indicators is None or indicators == list(registry.REGISTRY):
        return None
    unknown = [k for k in indicators if k not in registry.REGISTRY]
    if unknown:
        registry.parse_keys(",".join(unknown))
    return list(indicators)


async def versions(
    stats_session: AsyncSession,
    principal: Principal,
    area: Area,
    *,
    levels: Sequence[Level] = (),
    table_periods: Sequence[Period] = (),
    trend_months: Sequence[Period] = (),
    now: datetime,
    threshold: int,
    max_stale: timedelta | None,
) -> tuple[str | None, datetime]:
    """What an answer over these tables and trend months is computed from
    (:func:`.service.answer_version`), as the text kept beside it, and the ``as_of`` it would say."""
    version, as_of = await answer_version(
        stats_session,
        principal,
        area,
        levels=levels,
        table_periods=table_periods,
        trend_months=trend_months,
        now=now,
        threshold=threshold,
        max_stale=max_stale,
    )
    return (None if version is None else repr(version)), as_of


def _packed(built: StatsTable | StatsTrend, version: str | None) -> tuple[bytes, datetime, str | None]:
    """A built table or trend as :func:`answer` keeps it: packed without its ``as_of``, which is served apart."""
    return pack_json(built.model_dump_json(exclude={"as_of"}).encode()), built.as_of, version


async def table_answer(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    *,
    level: Level,
    period: Period,
    area_id: uuid.UUID | None,
    indicators: list[str] | None,
    now: datetime,
    threshold: int = DEFAULT_THRESHOLD,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
    warm: bool = False,
    real_now: datetime | None = None,
) -> Served:
    """``GET /stats/table``'s body, kept (:func:`pack_json`), re-stamped or built (:func:`answer`): serve it with
    :func:`gzip_with_as_of` or :func:`with_as_of`. The
    same checks and errors as :func:`.service.build_table`, made before any kept answer is looked at."""
    keys = _indicator_keys(indicators)
    check_period(period, periods.shanghai_date(now))
    area = await resolve_area(stats_session, principal, area_id)
    check_level(area, level)
    ask = Ask.of(
        "table",
        principal,
        area.id,
        level=level.value,
        period_kind=period.kind.value,
        period_key=period.key,
        indicators=keys,
        threshold=threshold,
    )

    async def version_of() -> tuple[str | None, datetime]:
        return await versions(
            stats_session,
            principal,
            area,
            levels=[level],
            table_periods=[period],
            now=now,
            threshold=threshold,
            max_stale=max_stale,
        )

    async def build() -> tuple[bytes, datetime, str | None]:
        version, _ = await version_of()
        table = await build_table(
            stats_session,
            principal,
            level=level,
            period=period,
            area_id=area.id,
            indicators=keys,
            now=now,
            threshold=threshold,
            max_stale=max_stale,
        )
        return _packed(table, version)

    return await answer(
        session, ask, now=now, max_stale=max_stale, build=build, version_of=version_of, warm=warm, real_now=real_now
    )


async def trend_answer(
    stats_session: AsyncSession,
    session: AsyncSession,
    principal: Principal,
    *,
    indicators: list[str] | None,
    from_key: str,
    to_key: str,
    area_id: uuid.UUID | None,
    now: datetime,
    threshold: int = DEFAULT_THRESHOLD,
    max_stale: timedelta | None = DEFAULT_MAX_STALE,
    warm: bool = False,
    real_now: datetime | None = None,
) -> Served:
    """``GET /stats/trend``'s body, kept (:func:`pack_json`), re-stamped or built (:func:`answer`)."""
    keys = _indicator_keys(indicators)
    months = periods.month_range(from_key, to_key)
    check_period(months[-1], periods.shanghai_date(now))
    area = await resolve_area(stats_session, principal, area_id)
    ask = Ask.of(
        "trend",
        principal,
        area.id,
        from_key=months[0].key,
        to_key=months[-1].key,
        indicators=keys,
        threshold=threshold,
    )

    async def version_of() -> tuple[str | None, datetime]:
        return await versions(
            stats_session, principal, area, trend_months=months, now=now, threshold=threshold, max_stale=max_stale
        )

    async def build() -> tuple[bytes, datetime, str | None]:
        version, _ = await version_of()
        trend = await build_trend(
            stats_session,
            principal,
            indicators=keys,
            from_key=from_key,
            to_key=to_key,
            area_id=area.id,
            now=now,
            threshold=threshold,
            max_stale=max_stale,
        )
        return _packed(trend, version)

    return await answer(
        session, ask, now=now, max_stale=max_stale, build=build, version_of=version_of, warm=warm, real_now=real_now
    )


def standard_period(now: datetime) -> Period:
    """The period of the standard table the warm-up keeps ready for each county and township: this month."""
    return periods.current(PeriodKind.month, now)
