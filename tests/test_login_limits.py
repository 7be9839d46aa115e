"""Login limits under parallel guessing, through a real server over sockets from several client addresses.

One account from one address: tight (5). One account from everywhere: looser (20) and never at the
account's own known address. One address across accounts: 30. Attempts are counted before the password is
checked, so no parallel burst gets more guesses than the limit, and nobody can lock a teacher out from afar.
"""

import asyncio
import ipaddress
from collections import Counter
from datetime import timedelta

import pytest
import sqlalchemy as sa

from api.main import create_app
from api.models.accounts import LoginSession
from api.proxies import client_behind_proxies
from api.services.login_limits import Bucket, buckets_for, decide
from tests.factories import PASSWORD
from tests.live import LiveServer

ATTACKER = "127.0.0.2"
OWNER_ELSEWHERE = "127.0.0.3"


def serve(settings, clock, database_url, **overrides):
    return LiveServer(
        create_app(settings.model_copy(update=overrides), clock=clock, database_url=database_url, migrate=False)
    )


async def attempt(client, username, password, **kw):
    return await client.post("/auth/login", json={"username": username, "password": password}, **kw)


async def burst(client, username, passwords, **kw):
    return await asyncio.gather(*(attempt(client, username, p, **kw) for p in passwords))


async def test_fifty_parallel_wrong_passwords_get_exactly_the_limit_of_answers(world, settings, clock, database_url):
    with serve(settings, clock, database_url) as server:
        async with server.client(ATTACKER) as attacker:
            answers = await burst(attacker, "teacher1", [f"guess-{i}" for i in range(50)])
    statuses = Counter(r.status_code for r in answers)
    assert statuses == {401: 5, 429: 45}, statuses
    refused = next(r for r in answers if r.status_code == 429)
    assert refused.json()["error"]["code"] == "login_rate_limited"
    assert 0 < int(refused.headers["retry-after"]) <= 15 * 60


async def test_the_right_password_inside_a_parallel_burst_never_passes_the_limit(world, settings, clock, database_url):
    guesses = [f"guess-{i}" for i in range(50)]
    guesses[37] = PASSWORD
    with serve(settings, clock, database_url) as server:
        async with server.client(ATTACKER) as attacker:
            answers = await burst(attacker, "teacher1", guesses)
            statuses = Counter(r.status_code for r in answers)
            # Only the first five admitted reach the password check; the right one answers 200 only if it
            # was one of them (a success gives its admission back, so a sixth guess may then be checked).
            assert statuses[200] <= 1
            assert statuses[401] <= 5
            assert statuses[200] + statuses[401] >= 5
            assert statuses[429] == 50 - statuses[200] - statuses[401]
            assert answers[37].status_code in (200, 429)
            if answers[37].status_code == 200:
                assert answers[37].json()["access_token"]

            # Once the limit is reached, the right password in a second burst is refused like every guess.
            more = await burst(attacker, "teacher1b", [f"guess-{i}" for i in range(5)])
            assert Counter(r.status_code for r in more) == {401: 5}
            again = await burst(attacker, "teacher1b", [PASSWORD, *(f"guess-{i}" for i in range(49))])
            assert Counter(r.status_code for r in again) == {429: 50}


async def test_parallel_logins_and_failures_through_one_address_never_deadlock(world, settings, clock, database_url):
    """A whole school logs in at 8 o'clock behind one address, with typos: the successes give their admissions
    back while other attempts are being admitted on the same rows."""
    staff = ["admin1", "teacher1", "teacher1b", "bureau", "official1", "platform", "admin2", "teacher2"]
    tries = [(name, PASSWORD if n == 2 else f"typo-{n}") for name in staff for n in range(5)]
    with serve(settings, clock, database_url, login_max_failures_per_ip=1000) as server:
        async with server.client("127.0.0.50") as school:
            for _ in range(3):
                clock.advance(timedelta(minutes=16))
                answers = await asyncio.gather(*(attempt(school, name, password) for name, password in tries))
                assert Counter(r.status_code for r in answers) == {200: len(staff), 401: 4 * len(staff)}


async def test_an_attacker_cannot_lock_the_owner_out_from_another_address(world, settings, clock, database_url):
    with serve(settings, clock, database_url) as server:
        async with server.client(ATTACKER) as attacker, server.client(OWNER_ELSEWHERE) as owner:
            answers = await burst(attacker, "admin1", [f"guess-{i}" for i in range(20)])
            assert Counter(r.status_code for r in answers) == {401: 5, 429: 15}
            assert (await attempt(attacker, "admin1", PASSWORD)).status_code == 429
            r = await attempt(owner, "admin1", PASSWORD)
            assert r.status_code == 200, r.text
            me = await owner.get("/auth/me", headers={"Authorization": f"Bearer {r.json()['access_token']}"})
            assert me.json()["username"] == "admin1"


async def test_guessing_one_account_from_many_addresses_is_slowed_but_its_owner_still_gets_in(
    world, settings, clock, database_url, system_session
):
    # The head teacher logged in from the school office last week: a known address for the account.
    system_session.add(
        LoginSession(
            account_id=world.ids["teacher1"],
            method="password",
            created_at=clock.now() - timedelta(days=7),
            client_ip="127.0.0.9",
        )
    )
    await system_session.commit()
    with serve(settings, clock, database_url, login_max_failures_per_account=8) as server:
        attackers = [server.client(f"127.0.0.{n}") for n in range(20, 24)]
        try:
            answers = await asyncio.gather(*(attempt(c, "teacher1", f"guess-{i}") for c in attackers for i in range(5)))
            # 4 addresses × 5 guesses, but the account as a whole admits only 8 guesses in the window.
            assert Counter(r.status_code for r in answers) == {401: 8, 429: 12}
            async with server.client("127.0.0.30") as stranger:
                assert (await attempt(stranger, "teacher1", PASSWORD)).status_code == 429
            async with server.client("127.0.0.9") as office:
                assert (await attempt(office, "teacher1", PASSWORD)).status_code == 200
        finally:
            for c in attackers:
                await c.aclose()


async def test_spraying_from_one_address_is_limited_but_not_for_accounts_at_home_there(
    world, settings, clock, database_url, system_session
):
    # The school's one public address: a teacher there logged in from it last week.
    school = "127.0.0.40"
    system_session.add(
        LoginSession(
            account_id=world.ids["teacher1b"],
            method="password",
            created_at=clock.now() - timedelta(days=7),
            client_ip=school,
        )
    )
    await system_session.commit()
    with serve(settings, clock, database_url) as server:
        async with server.client(school) as sprayer, server.client(OWNER_ELSEWHERE) as owner:
            answers = await asyncio.gather(*(attempt(sprayer, f"user{i}", "guess") for i in range(40)))
            assert Counter(r.status_code for r in answers) == {401: 30, 429: 10}
            assert (await attempt(sprayer, "admin2", PASSWORD)).status_code == 429
            assert (await attempt(owner, "admin2", PASSWORD)).status_code == 200
            # The teacher at home at that address is not locked out by someone else's spraying.
            assert (await attempt(sprayer, "teacher1b", PASSWORD)).status_code == 200


async def test_a_forged_forwarded_for_does_not_choose_the_address(world, settings, clock, database_url, app):
    with serve(settings, clock, database_url) as server:
        async with server.client(ATTACKER) as attacker:
            answers = await asyncio.gather(
                *(
                    attempt(attacker, "teacher2", f"guess-{i}", headers={"X-Forwarded-For": f"198.51.100.{i}"})
                    for i in range(10)
                )
            )
            assert Counter(r.status_code for r in answers) == {401: 5, 429: 5}
            # Nor can a forged header lock the owner's address.
            forged = {"X-Forwarded-For": OWNER_ELSEWHERE}
            assert (await attempt(attacker, "teacher2", PASSWORD, headers=forged)).status_code == 429
        async with server.client(OWNER_ELSEWHERE) as owner:
            assert (await attempt(owner, "teacher2", PASSWORD)).status_code == 200
    async with app.state.sessionmaker() as s:
        recorded = await s.execute(sa.select(LoginSession.client_ip).where(LoginSession.client_ip.is_not(None)))
        assert set(recorded.scalars()) == {OWNER_ELSEWHERE}


async def test_behind_a_trusted_proxy_the_forwarded_address_is_the_client(world, settings, clock, database_url):
    with serve(settings, clock, database_url, trusted_proxies=["127.0.0.1/32"]) as server:
        async with server.client("127.0.0.1") as proxy, server.client(ATTACKER) as not_a_proxy:
            attacker = {"X-Forwarded-For": "203.0.113.66"}
            answers = await burst(proxy, "teacher1", [f"guess-{i}" for i in range(8)], headers=attacker)
            assert Counter(r.status_code for r in answers) == {401: 5, 429: 3}
            # The owner comes through the same proxy from their own address.
            owner = {"X-Forwarded-For": "203.0.113.5"}
            assert (await attempt(proxy, "teacher1", PASSWORD, headers=owner)).status_code == 200
            # A client that is not a trusted proxy cannot pretend to be the locked-out attacker's victim.
            r = await attempt(not_a_proxy, "teacher1b", "guess", headers={"X-Forwarded-For": "203.0.113.5"})
            assert r.status_code == 401


# ---- pure rules ---------------------------------------------------------------------------------------


TRUSTED = [ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("127.0.0.1/32")]


@pytest.mark.parametrize(
    ("peer", "header", "client"),
    [
        ("203.0.113.1", ["198.51.100.7"], "203.0.113.1"),  # not from a proxy: the header is ignored
        ("127.0.0.1", ["198.51.100.7"], "198.51.100.7"),
        ("127.0.0.1", ["6.6.6.6, 198.51.100.7"], "198.51.100.7"),  # the client's own claim is not believed
        ("127.0.0.1", ["6.6.6.6, 198.51.100.7, 10.1.2.3"], "198.51.100.7"),  # through two proxies
        ("127.0.0.1", ["6.6.6.6", "198.51.100.7"], "198.51.100.7"),  # several header lines
        ("127.0.0.1", ["10.1.2.3"], "10.1.2.3"),  # only proxies: the farthest one
        ("127.0.0.1", ["not-an-ip"], "127.0.0.1"),
        ("127.0.0.1", ["198.51.100.7, not-an-ip"], "127.0.0.1"),
        ("127.0.0.1", [""], "127.0.0.1"),
        ("127.0.0.1", ["2001:db8::1"], "2001:db8::1"),
    ],
)
def test_the_client_is_the_first_address_from_the_right_that_no_trusted_proxy_added(peer, header, client):
    assert client_behind_proxies(peer, header, TRUSTED) == client


def test_only_the_account_address_limit_applies_at_a_known_address(settings):
    known = buckets_for(settings, username="teacher1", client_ip="10.0.0.1", known_address=True)
    unknown = buckets_for(settings, username="teacher1", client_ip="10.0.0.1", known_address=False)
    assert {b.key.split(":")[0]: b.limit for b in known} == {
        "aip": settings.login_max_failures_per_account_address,
        "acct": None,
        "ip": None,
    }
    assert {b.key.split(":")[0]: b.limit for b in unknown} == {
        "aip": settings.login_max_failures_per_account_address,
        "acct": settings.login_max_failures_per_account,
        "ip": settings.login_max_failures_per_ip,
    }
    assert [b.key for b in known] == sorted(b.key for b in known)


def test_a_refusal_waits_until_the_last_full_bucket_reopens(clock):
    now = clock.now()
    window = timedelta(minutes=15)
    buckets = [Bucket("a", 5), Bucket("b", 2), Bucket("c", None)]
    counts = {"a": (now - timedelta(minutes=14), 5), "b": (now - timedelta(minutes=5), 2), "c": (now, 99)}
    refused = decide(buckets, counts, window=window, now=now)
    assert not refused.admitted and refused.retry_after_seconds == 10 * 60
    counts["b"] = (now, 1)
    counts["a"] = (now, 4)
    assert decide(buckets, counts, window=window, now=now).admitted


async def test_the_lock_opens_again_when_its_window_ends(client, world, clock):
    for _ in range(5):
        assert (await attempt(client, "teacher1", "guess")).status_code == 401
    clock.advance(timedelta(minutes=10))
    r = await attempt(client, "teacher1", PASSWORD)
    assert r.status_code == 429 and int(r.headers["retry-after"]) == 5 * 60
    clock.advance(timedelta(minutes=5))
    assert (await attempt(client, "teacher1", PASSWORD)).status_code == 200


async def test_a_successful_login_is_not_counted_as_a_failure(client, world):
    for _ in range(4):
        assert (await attempt(client, "teacher1", "typo")).status_code == 401
    assert (await attempt(client, "teacher1", PASSWORD)).status_code == 200
    assert (await attempt(client, "teacher1", PASSWORD)).status_code == 200
    assert (await attempt(client, "teacher1", "typo")).status_code == 401
    assert (await attempt(client, "teacher1", PASSWORD)).status_code == 429
