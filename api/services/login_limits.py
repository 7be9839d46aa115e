"""Password login limits that hold under parallel guessing and cannot be used to lock an owner out.

Three buckets of failures, each counted in a fixed window (docs/security.md):

* account + address — tight (5): one place guessing one account;
* account — looser (20): many places guessing one account;
* address — across accounts (30): password spraying from one place.

At an address the account has logged in from recently (its *known* address: the school office, home) only
the first applies: whatever happens elsewhere, or to other accounts behind the same school's one public
address, the owner there is refused only after failures of their own account from there.

An attempt is admitted *before* its password is checked: the bucket rows are upserted and locked in one key
order, and only if no applicable bucket is full is each incremented — then committed, so that concurrent
attempts queue on the row locks and at most ``limit`` of them reach the password check. A successful login
gives its own admission back (it was not a failure), locking the rows in the same order.
"""

import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from math import ceil

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlmodel import col

from api.models.accounts import LoginSession, LoginThrottle
from api.settings import Settings

NO_ADDRESS = "-"
# Rows whose window ended this long ago are deleted a few at a time by later attempts.
_SWEEP_BATCH = 100


@dataclass(frozen=True, slots=True)
class Bucket:
    key: str
    # None: counted but not enforced for this attempt (the wide buckets, at one of the account's known addresses).
    limit: int | None


@dataclass(frozen=True, slots=True)
class Admission:
    admitted: bool
    keys: tuple[str, ...]
    retry_after_seconds: int = 0


def buckets_for(settings: Settings, *, username: str, client_ip: str | None, known_address: bool) -> list[Bucket]:
    """The buckets one attempt counts in, in the one order their rows are locked (by key)."""
    address = client_ip or NO_ADDRESS
    found = [
        Bucket(f"aip:{username}|{address}", settings.login_max_failures_per_account_address),
        Bucket(f"acct:{username}", None if known_address else settings.login_max_failures_per_account),
    ]
    if client_ip:
        found.append(Bucket(f"ip:{client_ip}", None if known_address else settings.login_max_failures_per_ip))
    return sorted(found, key=lambda b: b.key)


def decide(
    buckets: list[Bucket], counts: dict[str, tuple[datetime, int]], *, window: timedelta, now: datetime
) -> Admission:
    """Pure: admit unless an enforced bucket is full; when refused, wait until the last full one reopens."""
    keys = tuple(b.key for b in buckets)
    waits = [
        (counts[b.key][0] + window - now).total_seconds()
        for b in buckets
        if b.limit is not None and counts[b.key][1] >= b.limit
    ]
    if waits:
        return Admission(admitted=False, keys=keys, retry_after_seconds=max(1, ceil(max(waits))))
    return Admission(admitted=True, keys=keys)


async def is_known_address(
    session: AsyncSession, settings: Settings, *, account_id: uuid.UUID | None, client_ip: str | None, now: datetime
) -> bool:
    """Has this account logged in from this address within ``login_known_address_days``?"""
    if account_id is None or not client_ip or settings.login_known_address_days == 0:
        return False
    since = now - timedelta(days=settings.login_known_address_days)
    stmt = (
        sa.select(col(LoginSession.id))
        .where(
            col(LoginSession.account_id) == account_id,
            col(LoginSession.client_ip) == client_ip,
            col(LoginSession.created_at) >= since,
        )
        .limit(1)
    )
    return (await session.execute(stmt)).first() is not None


async def admit(session: AsyncSession, buckets: list[Bucket], *, window: timedelta, now: datetime) -> Admission:
    """Lock the buckets' rows (creating or reopening them), decide, and count the attempt if admitted.

    Commits: the count must hold whatever the password check says, and the locks must not be held while
    it runs."""
    table = LoginThrottle.__table__  # type: ignore[attr-defined]
    cutoff = now - window
    counts: dict[str, tuple[datetime, int]] = {}
    for bucket in buckets:  # already in key order: one lock order for every attempt
        expired = table.c.window_start <= cutoff
        stmt = (
            insert(table)
            .values(key=bucket.key, window_start=now, failures=0)
            .on_conflict_do_update(
                index_elements=[table.c.key],
                set_={
                    "window_start": sa.case((expired, now), else_=table.c.window_start),
                    "failures": sa.case((expired, 0), else_=table.c.failures),
                },
            )
            .returning(table.c.window_start, table.c.failures)
        )
        started, failures = (await session.execute(stmt)).one()
        counts[bucket.key] = (started, failures)
    admission = decide(buckets, counts, window=window, now=now)
    if admission.admitted:
        await session.execute(
            sa.update(table).where(table.c.key.in_(admission.keys)).values(failures=table.c.failures + 1)
        )
    await _sweep(session, cutoff=cutoff - window)
    await session.commit()
    return admission


async def give_back(session: AsyncSession, admission: Admission) -> None:
    """A successful login was not a failure: return its admission. Row by row in key order, the order
    :func:`admit` locks them in (one UPDATE over all keys locks them in scan order and deadlocks against it),
    and committed at once, so the buckets are not held while the login session is written."""
    table = LoginThrottle.__table__  # type: ignore[attr-defined]
    for key in admission.keys:
        await session.execute(
            sa.update(table).where(table.c.key == key, table.c.failures > 0).values(failures=table.c.failures - 1)
        )
    await session.commit()


async def _sweep(session: AsyncSession, *, cutoff: datetime) -> None:
    """Delete a few long-closed buckets; rows another attempt holds are skipped, not waited for."""
    table = LoginThrottle.__table__  # type: ignore[attr-defined]
    stale = (
        sa.select(table.c.key)
        .where(table.c.window_start < cutoff)
        .limit(_SWEEP_BATCH)
        .with_for_update(skip_locked=True)
        .scalar_subquery()
    )
    await session.execute(sa.delete(table).where(table.c.key.in_(stale)))
