"""Chaos: workers killed with SIGKILL at random instants during a storm of incidents, PostgreSQL restarted.

    .venv/bin/python -m bench.escalation_chaos [--incidents 300] [--seconds 60] [--workers 2]
        [--kill-every 1-4] [--chaos-after 120] [--pg-outage 8] [--answer-delay 0.2] [--drain 480]

Production-shaped, as :mod:`bench.escalation`: an embedded PostgreSQL, the fake SMS, voice and WeChat
providers (one process each, real HTTP, signed callbacks), the API in its own process receiving them, and
``--workers`` ``liushou worker`` processes. The county's policy is made short (acknowledgement wait 1
minute, one round) so that whole chains play out within minutes: every guardian is called (and presses 1),
every father gets WeChat, then SMS, then a call; the township its SMS then a call. The providers take
``--answer-delay`` seconds to answer a send after accepting it, so that receipts often arrive before the
send's answer — the ordering that used to leave parties waiting forever.

While incidents are reported (``--seconds``) and ``--chaos-after`` seconds longer, a random worker is
killed with SIGKILL every ``--kill-every`` seconds and restarted at once; once, ``--pg-at`` seconds in,
PostgreSQL is stopped (immediate mode: connections cut) for ``--pg-outage`` seconds and started again.
Then the workers are left alone until every party is told or flagged to the leaders (or ``--drain`` runs
out), and :func:`audit` counts, from the database and the providers' outboxes:

- **stopped**: parties still notifying that nobody will follow up (no next check, a check overdue, or a
  message out longer than its wait without moving on, or a wait without a stored end);
- **lost**: messages due (or leased) long ago and never sent, parties that never got a message;
- **duplicated**: WeChat messages shown twice, SMS or calls sent twice for one message key, or a party
  sent the same target twice in one round;
- and the honesty of the timeline: delivered without a send time, sends without their line, the delivery
  told before the send, WeChat messages recorded unconfirmed / failed.

Results go to bench/results/escalation-chaos.md.
"""

import argparse
import asyncio
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncEngine

from api.db import make_engine, make_sessionmaker, scoped_session
from api.migrations import upgrade_to_head
from api.models.escalation import EscalationPolicy
from api.models.organisations import County
from api.scoping import SYSTEM, Principal
from api.settings import Environment, Settings
from bench.escalation import (
    FAKE,
    ROOT,
    SECRET,
    embedded_database,
    free_port,
    report_one,
    seed,
    service_env,
    spawn,
    stop_processes,
    wait_http,
)

RESULTS = ROOT / "bench" / "results" / "escalation-chaos.md"

# ---- what counts as stopped, lost, duplicated ------------------------------------------------------------

AUDIT = {
    "parties": "SELECT count(*) FROM escalation_party",
    "told": "SELECT count(*) FROM escalation_party WHERE status = 'told'",
    "flagged": "SELECT count(*) FROM escalation_party WHERE status IN ('unreachable', 'exhausted')",
    "notifying": "SELECT count(*) FROM escalation_party WHERE status = 'notifying'",
    # Never told and never tried again: nothing will look at the party, or what it waits on should have
    # moved it on long ago, or its wait has no stored end (it would be "now + wait" on every look).
    "stopped": """
        SELECT count(*) FROM escalation_party p
        LEFT JOIN outbound_message m ON m.id = p.current_message_id
        WHERE p.status = 'notifying' AND (
            p.next_check_at IS NULL
            OR p.next_check_at < now() - make_interval(secs => :slack)
            OR (m.status IN ('sent', 'delivered') AND m.finished_at IS NULL AND m.ack_wait_until IS NULL)
            OR (m.status IN ('sent', 'delivered') AND m.finished_at IS NULL
                AND coalesce(m.sent_at, m.delivered_at, m.created_at)
                    + make_interval(secs => m.ack_wait_seconds + :slack) < now())
        )""",
    "lost_messages": """
        SELECT count(*) FROM outbound_message
        WHERE (status = 'pending' AND next_attempt_at < now() - make_interval(secs => :slack))
           OR (status = 'sending' AND lease_until < now() - make_interval(secs => :slack))""",
    "parties_without_a_message": """
        SELECT count(*) FROM escalation_party p
        WHERE p.status NOT IN ('held', 'unreachable')
          AND NOT EXISTS (SELECT 1 FROM outbound_message m WHERE m.party_id = p.id AND m.purpose = 'notify')""",
    "duplicated_in_a_round": """
        SELECT count(*) FROM (
            SELECT 1 FROM outbound_message m
            WHERE m.purpose = 'notify' AND m.target_id IS NOT NULL
            GROUP BY m.party_id, m.target_id, m.round HAVING count(*) > 1) d""",
    "delivered_without_sent_at": "SELECT count(*) FROM outbound_message WHERE status = 'delivered' AND sent_at IS NULL",
    "sent_without_its_line": """
        SELECT count(*) FROM outbound_message m WHERE m.sent_at IS NOT NULL AND NOT EXISTS (
            SELECT 1 FROM incident_event e WHERE e.message_id = m.id AND e.kind = 'message_sent')""",
    "send_told_twice": """
        SELECT count(*) FROM (SELECT message_id FROM incident_event WHERE kind = 'message_sent'
                              GROUP BY message_id HAVING count(*) > 1) d""",
    "delivery_told_before_send": """
        SELECT count(*) FROM incident_event d JOIN incident_event s
          ON s.message_id = d.message_id AND s.kind = 'message_sent'
        WHERE d.kind IN ('message_delivered', 'call_answered') AND d.id < s.id""",
    "wechat_unconfirmed": "SELECT count(*) FROM outbound_message WHERE channel = 'wechat' AND status = 'unconfirmed'",
    # Why: its worker was killed (or could not record during the outage) before WeChat's answer was recorded,
    # or the send ran into its deadline / WeChat did not answer in time.
    "wechat_unconfirmed_worker_lost": """
        SELECT count(*) FROM outbound_message
        WHERE channel = 'wechat' AND status = 'unconfirmed' AND error_code = 'lease_expired'""",
    "wechat_unconfirmed_no_answer_in_time": """
        SELECT count(*) FROM outbound_message
        WHERE channel = 'wechat' AND status = 'unconfirmed' AND error_code <> 'lease_expired'""",
    "wechat_sent": "SELECT count(*) FROM outbound_message WHERE channel = 'wechat' AND sent_at IS NOT NULL",
    "wechat_failed_lease_expired": """
        SELECT count(*) FROM outbound_message
        WHERE channel = 'wechat' AND status = 'failed' AND error_code = 'lease_expired'""",
    "messages": "SELECT count(*) FROM outbound_message",
    "sent": "SELECT count(*) FROM outbound_message WHERE sent_at IS NOT NULL",
}
MUST_BE_ZERO = (
    "stopped",
    "lost_messages",
    "parties_without_a_message",
    "duplicated_in_a_round",
    "duplicated_sends",
    "delivered_without_sent_at",
    "sent_without_its_line",
    "send_told_twice",
    "delivery_told_before_send",
    "wechat_failed_lease_expired",
)


async def audit(engine: AsyncEngine, outboxes: list[dict[str, Any]], *, slack_seconds: float) -> dict[str, int]:
    """The counts above, plus ``duplicated_sends`` from the providers' outboxes (a WeChat message shown twice,
    an SMS or call accepted twice for one key)."""
    counts: dict[str, int] = {}
    async with engine.connect() as conn:
        for name, sql in AUDIT.items():
            counts[name] = int((await conn.execute(sa.text(sql), {"slack": slack_seconds})).scalar_one())
    pages: Counter[str] = Counter()
    keys: Counter[str] = Counter()
    for box in outboxes:
        pages.update(m.get("page") or "" for m in box.get("wechat_messages", []))
        keys.update(m["idempotency_key"] for m in box.get("sms", []) + box.get("voice", []))
    counts["duplicated_sends"] = sum(n - 1 for page, n in pages.items() if page and n > 1) + sum(
        n - 1 for n in keys.values() if n > 1
    )
    return counts


# ---- workers that die --------------------------------------------------------------------------------------


def worker_command() -> list[str]:
    return [sys.executable, "-m", "api.cli", "worker"]


@dataclass
class Workers:
    """``count`` worker processes; :meth:`chaos` kills one at random instants and restarts it at once."""

    count: int
    env: dict[str, str]
    logdir: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    kills: int = 0
    restarts: int = 0

    def start(self) -> None:
        self.procs = [self._spawn(i) for i in range(self.count)]

    def _spawn(self, i: int) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            worker_command(),
            env=self.env,
            stdout=(self.logdir / f"worker{i}.log").open("ab"),
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )

    def revive(self) -> None:
        """Restart any worker that exited (one started while PostgreSQL was down cannot migrate and stops)."""
        for i, proc in enumerate(self.procs):
            if proc.poll() is not None:
                self.procs[i] = self._spawn(i)
                self.restarts += 1

    async def working(self, engine: AsyncEngine) -> list[int]:
        """Indexes of the workers that have started working (beaten their heartbeat): a kill is meant to land
        in the middle of the work, not during a start-up that can take seconds on a loaded machine."""
        try:
            async with engine.connect() as conn:
                beating = set((await conn.execute(sa.text("SELECT pid FROM worker_heartbeat"))).scalars())
        except Exception:  # PostgreSQL is down: nobody is working
            return []
        return [i for i, proc in enumerate(self.procs) if proc.poll() is None and proc.pid in beating]

    async def chaos(
        self,
        engine: AsyncEngine,
        *,
        until: float,
        every: tuple[float, float],
        rng: random.Random,
        kills: int | None = None,
    ) -> None:
        """Until ``until`` (monotonic) or ``kills`` kills: every ``every`` seconds (uniform), SIGKILL a random
        working worker and restart it at once."""
        while time.monotonic() < until and (kills is None or self.kills < kills):
            await asyncio.sleep(rng.uniform(*every))
            self.revive()
            working = await self.working(engine)
            if not working:
                continue
            i = rng.choice(working)
            os.kill(self.procs[i].pid, signal.SIGKILL)
            self.procs[i].wait()
            self.kills += 1
            self.procs[i] = self._spawn(i)

    def stop(self) -> None:
        stop_processes(self.procs)


# ---- the run -------------------------------------------------------------------------------------------


async def short_policy(sessionmaker: Any) -> None:
    """A minute's wait for an acknowledgement and one round, so that chains play out within minutes."""
    async with scoped_session(sessionmaker, SYSTEM) as s:
        for county_id in (await s.execute(sa.select(County.id))).scalars():
            s.add(
                EscalationPolicy(
                    county_id=county_id,
                    ack_wait_minutes=1,
                    near_deadline_minutes=5,
                    round_pause_minutes=1,
                    max_rounds=1,
                    retry_backoff_seconds=5,
                    updated_at=datetime.now(UTC),
                )
            )


async def slow_answers(controls: dict[str, str], numbers: list[str], delay: float) -> None:
    """Each provider answers a send ``delay`` s after accepting it (its receipt may come first);
    ``controls``: the fake's base URL per channel (``sms``, ``voice``)."""
    if delay <= 0:
        return
    async with httpx.AsyncClient(timeout=10) as client:
        sem = asyncio.Semaphore(20)

        async def script(channel: str, number: str) -> None:
            async with sem:
                url = f"{controls[channel]}/_fake/{channel}/numbers"
                # A number's script replaces the fake's defaults: the callee still answers and presses 1.
                body = {"number": number, "delay_seconds": delay, **({"press": "1"} if channel == "voice" else {})}
                (await client.post(url, json=body)).raise_for_status()

        await asyncio.gather(*(script(channel, n) for n in numbers for channel in ("sms", "voice")))


async def report_storm(
    sessionmaker: Any, settings: Settings, pairs: list[tuple[Principal, uuid.UUID]], *, count: int, seconds: float
) -> tuple[int, int]:
    """Report ``count`` incidents evenly over ``seconds``; a report refused while PostgreSQL is down is
    retried until it goes through. Returns (reported, retries)."""
    start = time.monotonic()
    retries = 0
    reported = 0
    for i in range(count):
        if (pause := start + i * seconds / count - time.monotonic()) > 0:
            await asyncio.sleep(pause)
        while True:
            try:
                await report_one(sessionmaker, settings, pairs, i, summary="混沌测试事件")
                reported += 1
                break
            except Exception:
                retries += 1
                await asyncio.sleep(0.5)
    return reported, retries


def restart_embedded(pgdata: Path, outage: float) -> None:
    """Stop the embedded PostgreSQL at once (connections cut, as in a crash) and start it again."""
    import pgserver
    from pgserver._commands import pg_ctl

    server = pgserver.get_server(pgdata, cleanup_mode="stop")
    pg_ctl(["-w", "-m", "immediate", "stop"], pgdata=server.pgdata, user=server.system_user)
    time.sleep(outage)
    server.ensure_postgres_running()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--incidents", type=int, default=300)
    parser.add_argument("--seconds", type=float, default=60.0, help="the storm: reports spread over this long")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--schools", type=int, default=10)
    parser.add_argument("--children", type=int, default=30, help="children per school")
    parser.add_argument("--kill-every", default="1-4", help="seconds between kills, uniform in this range")
    parser.add_argument("--chaos-after", type=float, default=120.0, help="kill for this long after the storm")
    parser.add_argument("--pg-at", type=float, default=30.0, help="seconds into the storm PostgreSQL stops")
    parser.add_argument("--pg-outage", type=float, default=8.0, help="seconds PostgreSQL stays down (0: never)")
    parser.add_argument("--answer-delay", type=float, default=0.2, help="providers answer a send this late")
    parser.add_argument("--lease", type=int, default=20, help="escalation_lease_seconds of the workers")
    parser.add_argument("--drain", type=float, default=480.0, help="max seconds to wait for every party to end")
    parser.add_argument("--seed", type=int, default=8)
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    low, high = (float(x) for x in args.kill_every.split("-"))

    workdir = Path(tempfile.mkdtemp(prefix="liushou-bench-chaos-"))
    pgdata = workdir / "pg"
    url = await embedded_database(pgdata, "liushou_chaos")
    await upgrade_to_head(url)

    fakes = {channel: free_port() for channel in ("sms", "voice", "wechat")}
    api_port = free_port()
    env = service_env(
        url,
        fakes,
        api_port,
        {
            "LIUSHOU_ESCALATION_LEASE_SECONDS": str(args.lease),
            "LIUSHOU_HTTP_TIMEOUT_SECONDS": str(max(1.0, args.lease / 4)),
        },
    )
    settings = Settings(
        environment=Environment.development, callback_secret=SECRET, public_base_url=env["LIUSHOU_PUBLIC_BASE_URL"]
    )
    engine = make_engine(url, settings)
    sessionmaker = make_sessionmaker(engine)
    print(f"seeding {args.schools} schools × {args.children} children …", flush=True)
    pairs = await seed(sessionmaker, schools=args.schools, children_per_school=args.children)
    await short_policy(sessionmaker)
    async with engine.connect() as conn:
        phones = (await conn.execute(sa.text("SELECT phone FROM guardian WHERE phone IS NOT NULL"))).scalars()
        numbers = ["+86" + phone for phone in phones]

    procs = [
        spawn([sys.executable, "-c", FAKE, str(port), SECRET, "32"], env, workdir / f"fake-{channel}.log")
        for channel, port in fakes.items()
    ]
    procs.append(
        spawn([sys.executable, "-m", "uvicorn", "--factory", "api.main:create_app", "--port", str(api_port),
               "--log-level", "warning"], env, workdir / "api.log"),
    )  # fmt: skip
    workers = Workers(args.workers, env, workdir)
    try:
        for port in fakes.values():
            await wait_http(f"http://127.0.0.1:{port}/_fake/outbox")
        await wait_http(f"http://127.0.0.1:{api_port}/healthz")
        await slow_answers({c: f"http://127.0.0.1:{p}" for c, p in fakes.items()}, numbers, args.answer_delay)
        workers.start()
        await asyncio.sleep(3)
        print(f"storm: {args.incidents} incidents over {args.seconds:.0f} s, killing a worker every"
              f" {low:g}–{high:g} s until {args.chaos_after:.0f} s after it …", flush=True)  # fmt: skip
        began = time.monotonic()
        chaos = asyncio.create_task(
            workers.chaos(engine, until=began + args.seconds + args.chaos_after, every=(low, high), rng=rng)
        )
        storm = asyncio.create_task(
            report_storm(sessionmaker, settings, pairs, count=args.incidents, seconds=args.seconds)
        )
        outage_done = None
        if args.pg_outage > 0:
            await asyncio.sleep(args.pg_at)
            print(f"PostgreSQL stopped for {args.pg_outage:g} s …", flush=True)
            await asyncio.to_thread(restart_embedded, pgdata, args.pg_outage)
            outage_done = time.monotonic() - began
            print("PostgreSQL is back", flush=True)
        reported, report_retries = await storm
        await chaos
        workers.revive()
        chaos_end = time.monotonic() - began
        print(f"chaos over after {chaos_end:.0f} s ({workers.kills} kills); draining …", flush=True)
        deadline = time.monotonic() + args.drain
        while time.monotonic() < deadline:
            async with engine.connect() as conn:
                open_ = (
                    await conn.execute(sa.text("SELECT count(*) FROM escalation_party WHERE status = 'notifying'"))
                ).scalar_one()
            if open_ == 0:
                break
            workers.revive()
            await asyncio.sleep(2.0)
        drained = time.monotonic() - began
        async with httpx.AsyncClient(timeout=30) as client:
            outboxes = [(await client.get(f"http://127.0.0.1:{p}/_fake/outbox")).json() for p in fakes.values()]
        counts = await audit(engine, outboxes, slack_seconds=60)
    finally:
        workers.stop()
        stop_processes(procs)
        await engine.dispose()

    zero = all(counts[name] == 0 for name in MUST_BE_ZERO)
    lines = [
        f"# Escalation chaos: {reported} incidents in {args.seconds:.0f} s, workers killed at random,"
        f" PostgreSQL stopped for {args.pg_outage:g} s",
        "",
        f"Run {datetime.now(UTC):%Y-%m-%d %H:%M} UTC on {platform.platform()}, {os.cpu_count()} CPUs (shared),"
        f" Python {platform.python_version()}: `python -m bench.escalation_chaos --incidents {args.incidents}"
        f" --seconds {args.seconds:g} --workers {args.workers} --kill-every {args.kill_every}"
        f" --chaos-after {args.chaos_after:g} --pg-at {args.pg_at:g} --pg-outage {args.pg_outage:g}"
        f" --answer-delay {args.answer_delay:g} --lease {args.lease} --seed {args.seed}`.",
        "",
        f"- {args.workers} `liushou worker` processes; **{workers.kills} killed with SIGKILL** at random instants"
        f" (every {low:g}–{high:g} s, a worker that had started working) and restarted at once;"
        f" {workers.restarts} more restarts of workers that exited (started while PostgreSQL was down);"
        f" chaos for {chaos_end:.0f} s",
        f"- PostgreSQL stopped (immediate: every connection cut) {args.pg_at:g} s in for {args.pg_outage:g} s"
        + (f", back at {outage_done:.0f} s" if outage_done else "")
        + f"; {report_retries} report attempts refused meanwhile and retried",
        f"- policy: acknowledgement wait 1 min, one round; providers answer {args.answer_delay:g} s after"
        f" accepting (receipts often first); lease {args.lease} s",
        f"- every party ended (told or flagged) {drained:.0f} s after the storm began",
        "",
        "| count | value |",
        "|---|---:|",
    ]
    lines += [f"| {name}{' (must be 0)' if name in MUST_BE_ZERO else ''} | {counts[name]:,} |" for name in counts]
    lines += ["", f"**All must-be-zero counts are zero: {'yes' if zero else 'NO'}.**"]
    text = "\n".join(lines) + "\n"
    print()
    print(text)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(text)
        print(f"written to {RESULTS.relative_to(ROOT)}")
    if not zero:
        sys.exit(1)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    asyncio.run(main())
