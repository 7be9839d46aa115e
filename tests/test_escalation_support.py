"""Shared harness of the escalation tests (no tests here): a real fake-provider server and a callback relay
on loopback, and :class:`Kit`, which reports incidents through the API and steps the worker with the
``FrozenClock``.

Providers post their signed callbacks to the relay (the messages' callback URLs point at it); the test then
forwards them, byte for byte with their signature, to the app's real ``/inbound/*`` endpoints. So the whole
path is real HTTP and real PostgreSQL, but the test decides when callbacks land.

A test gets its ``Kit`` from the ``kit`` fixture (``tests/conftest.py``); its module overrides ``settings``
with ``escalation_settings(...)``, so that the app sends to these providers and its callbacks reach the relay.
"""

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

import httpx
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from api.channels.base import SIGNATURE_HEADER
from api.channels.fakes import FakeProviderServer, LoopbackServer
from api.clock import FrozenClock
from api.db import scoped_session
from api.models.accounts import Account, Role
from api.models.children import Child, Sex
from api.models.escalation import DutyContact
from api.models.guardians import ChildGuardian, Guardian, GuardianRole
from api.scoping import SYSTEM
from api.settings import DEV_CALLBACK_SECRET, Settings
from api.worker.loop import Worker
from tests.conftest import make_test_settings
from tests.factories import World, login_token

GRANDMA = "13800138001"
GRANDPA = "13800138002"
FATHER = "13900139001"
MOTHER = "13900139002"
BUREAU_DUTY = "0739-5221234"
TOWNSHIP_DUTY = "13700137001"
LEADER = "13600136001"


def e164(national: str) -> str:
    """How the providers see our numbers: +86, no separators."""
    return "+86" + national.replace("-", "").removeprefix("0") if "-" in national else "+86" + national


class Relay:
    """Our callback URL during tests: records what providers post, so the test forwards it when it wants."""

    def __init__(self) -> None:
        self.received: list[tuple[str, str | None, bytes]] = []
        self.app = Starlette(routes=[Route("/inbound/{kind}", self._callback, methods=["POST"])])

    async def _callback(self, request: Request) -> Response:
        self.received.append((request.url.path, request.headers.get(SIGNATURE_HEADER), await request.body()))
        return Response(status_code=204)

    async def settle(self, quiet: float = 0.12, within: float = 5.0) -> None:
        """Wait until no callback has arrived for ``quiet`` seconds."""
        deadline = time.monotonic() + within
        seen, since = len(self.received), time.monotonic()
        while time.monotonic() < deadline:
            await asyncio.sleep(0.02)
            if len(self.received) != seen:
                seen, since = len(self.received), time.monotonic()
            elif time.monotonic() - since >= quiet:
                return


_servers: dict[str, Any] = {}


def servers() -> tuple[FakeProviderServer, LoopbackServer, Relay]:
    """One fake provider server and one relay for the whole test session (started on first use)."""
    if not _servers:
        relay = Relay()
        relay_server = LoopbackServer(relay.app)
        relay_server.start()
        fake = FakeProviderServer(callback_secret=DEV_CALLBACK_SECRET, callback_delay=0.01)
        fake.start()
        _servers.update(fake=fake, relay_server=relay_server, relay=relay)
    return _servers["fake"], _servers["relay_server"], _servers["relay"]


def escalation_settings(**overrides: Any) -> Settings:
    fake, relay_server, _ = servers()
    values: dict[str, Any] = {
        "sms_base_url": fake.sms_base_url,
        "voice_base_url": fake.voice_base_url,
        "wechat_base_url": fake.wechat_base_url,
        "public_base_url": relay_server.base_url,
        # The fake providers answer from a thread of the test process: a long pause of that process (a full
        # garbage collection late in the suite) can hold an answer for a second or two. Tests of slow providers
        # set their own, shorter timeout.
        "http_timeout_seconds": 5.0,
        "escalation_lease_seconds": 60,
    }
    values.update(overrides)
    return make_test_settings(**values)


@dataclass
class Family:
    child_id: uuid.UUID
    guardians: dict[str, uuid.UUID] = field(default_factory=dict)
    accounts: dict[str, uuid.UUID] = field(default_factory=dict)


STANDARD_FAMILY: list[dict[str, Any]] = [
    {"key": "grandma", "role": GuardianRole.entrusted_guardian, "relation": "祖母", "name": "王桂英", "phone": GRANDMA},
    {"key": "grandpa", "role": GuardianRole.entrusted_guardian, "relation": "祖父", "name": "刘德全", "phone": GRANDPA},
    {
        "key": "father",
        "role": GuardianRole.parent_away,
        "relation": "父亲",
        "name": "刘建军",
        "phone": FATHER,
        "wechat": "o-father",
    },
    {"key": "mother", "role": GuardianRole.parent_away, "relation": "母亲", "name": "张丽", "phone": MOTHER},
]
# A child whose only guardian is the mother, working away.
MOTHER_ONLY: list[dict[str, Any]] = [
    {"key": "mother", "role": GuardianRole.parent_away, "relation": "母亲", "name": "张丽", "phone": MOTHER}
]


class Kit:
    """One test's view of the system: the app, its client, the clock, the world, the fake and the worker."""

    def __init__(self, app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, world: World) -> None:
        self.app = app
        self.client = client
        self.clock = clock
        self.world = world
        self.fake, self.relay_server, self.relay = servers()
        self.http = httpx.AsyncClient()
        self.worker = self.new_worker()
        self._families = 0

    @classmethod
    async def create(cls, app: FastAPI, client: httpx.AsyncClient, clock: FrozenClock, world: World) -> "Kit":
        kit = cls(app, client, clock, world)
        (await kit.http.post(f"{kit.fake.base_url}/_fake/reset")).raise_for_status()
        await asyncio.sleep(0.03)  # let a callback of the previous test land before forgetting it
        kit.relay.received.clear()
        # The providers' events happen on the test's clock: a keypress is stamped when the test's world says.
        kit.fake.use_clock(clock.now)
        return kit

    def new_worker(
        self, engine: Any = None, worker_id: str | None = None, http: Any = None, settings: Settings | None = None
    ) -> Worker:
        return Worker(
            engine or self.app.state.engine,
            http=http or self.app.state.http,
            settings=settings or self.app.state.settings,
            clock=self.clock,
            worker_id=worker_id,
        )

    # ---- data -------------------------------------------------------------------------------------------

    async def family(self, members: list[dict[str, Any]] | None = None, *, school: str = "school1") -> Family:
        """A left-behind child of class 3(1) with guardians in contact order (default: STANDARD_FAMILY)."""
        members = STANDARD_FAMILY if members is None else members
        async with scoped_session(self.app.state.sessionmaker, SYSTEM) as s:
            child = Child(
                school_id=self.world[school],
                class_id=self.world["class11"] if school == "school1" else self.world["class21"],
                name="刘小明",
                sex=Sex.male,
                birth_date=date(2016, 3, 1),
            )
            s.add(child)
            await s.flush()
            fam = Family(child_id=child.id)
            self._families += 1
            for order, m in enumerate(members, start=1):
                account = None
                if m.get("wechat"):
                    # The first family's father is "o-father"; later families get openids of their own.
                    openid = m["wechat"] if self._families == 1 else f"{m['wechat']}-{self._families}"
                    account = Account(role=Role.family, display_name=m["name"], wechat_openid=openid)
                    s.add(account)
                    await s.flush()
                    fam.accounts[m["key"]] = account.id
                g = Guardian(
                    name=m["name"],
                    phone=m.get("phone"),
                    phone_alt=m.get("phone_alt"),
                    account_id=account.id if account else None,
                )
                s.add(g)
                await s.flush()
                s.add(
                    ChildGuardian(
                        child_id=child.id,
                        guardian_id=g.id,
                        role=m["role"],
                        relation=m["relation"],
                        contact_order=m.get("order", order),
                    )
                )
                fam.guardians[m["key"]] = g.id
        return fam

    async def duty(self, *, bureau: str | None = BUREAU_DUTY, township: str | None = TOWNSHIP_DUTY) -> None:
        """Duty phones for the county bureau and 石桥镇 (step 3)."""
        async with scoped_session(self.app.state.sessionmaker, SYSTEM) as s:
            now = self.clock.now()
            if bureau:
                s.add(
                    DutyContact(
                        county_id=self.world["county"],
                        name="县教育局值班室",
                        phone=bureau,
                        created_at=now,
                        updated_at=now,
                    )
                )
            if township:
                s.add(
                    DutyContact(
                        county_id=self.world["county"],
                        township_id=self.world["township1"],
                        name="石桥镇政府值班室",
                        phone=township,
                        created_at=now,
                        updated_at=now,
                    )
                )

    async def leader_phone(self, phone: str = LEADER, who: str = "admin1") -> None:
        async with scoped_session(self.app.state.sessionmaker, SYSTEM) as s:
            account = await s.get(Account, self.world[who])
            assert account is not None
            account.phone = phone

    # ---- the API ----------------------------------------------------------------------------------------

    async def headers(self, who: str | uuid.UUID) -> dict[str, str]:
        """A token valid at the frozen clock's time (tokens live 15 minutes; tests move the clock by hours)."""
        account_id = who if isinstance(who, uuid.UUID) else self.world[who]
        async with scoped_session(self.app.state.sessionmaker, SYSTEM) as s:
            account = await s.get(Account, account_id)
            assert account is not None
            token = await login_token(s, self.app, account, self.clock.now())
        return {"Authorization": f"Bearer {token}"}

    async def report(self, child_id: uuid.UUID, *, who: str = "teacher1", **body: Any) -> dict[str, Any]:
        payload = {
            "child_id": str(child_id),
            "category": "injury",
            "severity": "moderate",
            "summary": "课间在操场摔倒，左手腕肿痛",
            "location": "学校操场",
            "occurred_at": self.clock.now().isoformat(),
            "first_actions": "校医冷敷固定，班主任陪同",
        }
        payload.update(body)
        r = await self.client.post("/incidents", json=payload, headers=await self.headers(who))
        assert r.status_code == 201, r.text
        result: dict[str, Any] = r.json()
        return result

    async def incident(self, incident_id: str, who: str = "admin1") -> dict[str, Any]:
        r = await self.client.get(f"/incidents/{incident_id}", headers=await self.headers(who))
        assert r.status_code == 200, r.text
        result: dict[str, Any] = r.json()
        return result

    async def timeline(self, incident_id: str, who: str = "admin1") -> list[dict[str, Any]]:
        r = await self.client.get(f"/incidents/{incident_id}/timeline", headers=await self.headers(who))
        assert r.status_code == 200, r.text
        entries: list[dict[str, Any]] = r.json()["entries"]
        return entries

    async def step(self, incident_id: str, step_no: int) -> dict[str, Any]:
        incident = await self.incident(incident_id)
        result: dict[str, Any] = next(s for s in incident["steps"] if s["step_no"] == step_no)
        return result

    async def party(self, incident_id: str, audience: str) -> dict[str, Any]:
        incident = await self.incident(incident_id)
        return next(p for s in incident["steps"] for p in s["parties"] if p["audience"] == audience)

    # ---- time, worker, callbacks --------------------------------------------------------------------------

    def advance(self, **delta: float) -> None:
        self.clock.advance(timedelta(**delta))

    async def forward(self) -> list[dict[str, Any]]:
        """Deliver the callbacks received so far to the app's inbound endpoints, as the provider sent them."""
        pending, self.relay.received[:] = list(self.relay.received), []
        answers = []
        for path, signature, body in pending:
            headers = {"Content-Type": "application/json"}
            if signature:
                headers[SIGNATURE_HEADER] = signature
            r = await self.client.post(path, content=body, headers=headers)
            assert r.status_code == 200, r.text
            answers.append(r.json())
        return answers

    async def settle(self, rounds: int = 6) -> None:
        """Run the worker and deliver callbacks until nothing more happens at this instant."""
        for _ in range(rounds):
            stats = await self.worker.run_once()
            await self.relay.settle()
            delivered = await self.forward()
            if not stats.busy and not delivered:
                return

    async def outbox(self) -> dict[str, Any]:
        r = await self.http.get(f"{self.fake.base_url}/_fake/outbox")
        r.raise_for_status()
        result: dict[str, Any] = r.json()
        return result

    async def script(self, path: str, **body: Any) -> None:
        (await self.http.post(f"{self.fake.base_url}/_fake/{path}", json=body)).raise_for_status()

    async def sent_to(self, national: str) -> list[tuple[str, str]]:
        """(channel, text) of every SMS and call the providers accepted for a number, in order."""
        box = await self.outbox()
        number = e164(national)
        sent = [("sms", m["text"], m["message_id"]) for m in box["sms"] if m["to"] == number]
        sent += [("voice", c["tts_text"], c["call_id"]) for c in box["voice"] if c["to"] == number]
        return [(channel, text) for channel, text, _ in sent]

    async def close(self) -> None:
        self.fake.use_clock(None)
        await self.http.aclose()


def kinds(entries: list[dict[str, Any]], *wanted: str) -> list[dict[str, Any]]:
    return [e for e in entries if e["kind"] in wanted]


async def attempts(kit: Kit, national: str | None = None) -> list[tuple[str, str, str]]:
    """(channel, number, outcome) of every SMS / voice request the providers saw, in order."""
    box = await kit.outbox()
    number = e164(national) if national else None
    return [(a["channel"], a["to"], a["outcome"]) for a in box["attempts"] if number is None or a["to"] == number]
