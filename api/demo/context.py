"""What every demo seeder shares: fixed ids and the context the organisation seeder hands to the others."""

import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from sqlalchemy.ext.asyncio import AsyncSession

from api.models.accounts import Account
from api.scoping import Principal

# Fixed ids so that demo links and docs stay valid across re-seeds.
NS = uuid.UUID("6f1c1e1a-5d39-4c55-9a53-6c6975736f75")


# How far back the demo's care history goes (files, pairings, care records).
HISTORY_DAYS = 98


def demo_id(name: str) -> uuid.UUID:
    return uuid.uuid5(NS, name)


@dataclass
class DemoContext:
    """What the organisation seeder made, for the seeders of later domains."""

    county_id: uuid.UUID
    township_ids: list[uuid.UUID]
    school_ids: list[uuid.UUID]
    class_ids: dict[uuid.UUID, list[uuid.UUID]] = field(default_factory=dict)
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)
    # The demo's "today": care records lie before it (a test passes its frozen clock's).
    now: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def history_starts(self) -> datetime:
        """When the demo's files were entered and its children paired: about three months before "today"."""
        return self.now - timedelta(days=HISTORY_DAYS)


DemoSeeder = Callable[[AsyncSession, DemoContext], Awaitable[None]]


async def principal_of(session: AsyncSession, account_id: uuid.UUID) -> Principal:
    """A demo account as the principal the services act for (the seeders write as that person would)."""
    account = await session.get(Account, account_id)
    assert account is not None
    return Principal(
        account_id=account.id,
        role=account.role,
        county_id=account.county_id,
        township_id=account.township_id,
        school_id=account.school_id,
        display_name=account.display_name,
    )
