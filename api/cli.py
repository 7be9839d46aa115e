"""The ``liushou`` command: serve, migrate, seed the demo, create users, run the escalation worker."""

import asyncio
import contextlib
import logging
import subprocess
import sys
import uuid
from datetime import timedelta
from typing import TYPE_CHECKING, Annotated

import typer
import uvicorn

from api import embedded_pg
from api.channels.fakes import FakeProviderServer
from api.db import make_engine, make_sessionmaker, resolve_database_url, scoped_session
from api.logs import configure_logging
from api.migrations import upgrade_to_head
from api.models.accounts import AccountCreate, Role
from api.security import Passwords
from api.settings import Settings, get_settings
from api.shutdown import Server, Shutdown

if TYPE_CHECKING:
    from api.demo.seed import DemoFamilyAccount

app = typer.Typer(help="liushou 留守 — backend for schools caring for left-behind children.", no_args_is_help=True)


def _logging() -> None:
    # Request ids on every line; no personal data, search text or link token in any (api/logs.py).
    configure_logging(logging.INFO)


async def _migrate() -> str:
    try:
        url = await resolve_database_url(get_settings())
    except embedded_pg.EmbeddedPostgresError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    await upgrade_to_head(url)
    return url


async def _seed(url: str) -> "DemoFamilyAccount | None":
    """Seed the demo; the family account it holds (described in the serve banner as it really is)."""
    from api.demo.seed import demo_family, seed_demo
    from api.scoping import SYSTEM

    settings = get_settings()
    engine = make_engine(url, settings)
    try:
        # SYSTEM: seeding writes a whole county (schools, accounts, children) before anyone exists to scope it.
        async with scoped_session(make_sessionmaker(engine), SYSTEM) as session:
            await seed_demo(session, Passwords(settings))
            return await demo_family(session)
    finally:
        await engine.dispose()


def _migrate_in_child(url: str) -> None:
    code = "import sys; from api.migrations import upgrade_to_head_sync; upgrade_to_head_sync(sys.argv[1])"
    result = subprocess.run([sys.executable, "-c", code, url], check=False)
    if result.returncode != 0:
        typer.echo("error: the migrations failed (see above)", err=True)
        raise typer.Exit(2)


@app.command()
def migrate() -> None:
    """Apply every Alembic migration (the embedded database is started if no DATABASE_URL is set)."""
    _logging()
    Shutdown().install()
    asyncio.run(_migrate())
    typer.echo("database is at the latest migration")


@app.command("seed-demo")
def seed_demo() -> None:
    """Load the deterministic demo county (青山县). Safe to run twice."""
    _logging()
    Shutdown().install()

    async def run() -> None:
        await _seed(await _migrate())

    asyncio.run(run())
    typer.echo("demo data loaded")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port to listen on")] = 8000,
    demo: Annotated[bool, typer.Option(help="load the demo county and print its accounts")] = False,
) -> None:
    """Run the API (migrates first). With --demo, also the demo data. SIGINT, SIGTERM and SIGHUP drain it, then
    stop the embedded database it started; a second signal stops at once."""
    _logging()
    shutdown = Shutdown().install()
    from api.demo.seed import demo_accounts_text
    from api.main import create_app

    async def prepare() -> tuple[str, "DemoFamilyAccount | None"]:
        try:
            url = await resolve_database_url(get_settings())
        except embedded_pg.EmbeddedPostgresError as exc:
            typer.echo(f"error: {exc}", err=True)
            raise typer.Exit(2) from None
        # In a child process: Alembic (with Mako and Pygments, some 11 MB) stays out of the serving process.
        await asyncio.to_thread(_migrate_in_child, url)
        family = await _seed(url) if demo else None
        return url, family

    url, family = asyncio.run(prepare())
    settings = get_settings()
    fake = None
    if demo:
        settings, fake, channels = _demo_providers(settings, host, port)
        typer.echo(demo_accounts_text(f"http://{host}:{port}", family=family))
        for line in channels:
            typer.echo(line)
        _logging()  # the fakes' own uvicorn config took over uvicorn's loggers (and turned the access log off)
    config = uvicorn.Config(
        create_app(settings, database_url=url, migrate=False, freeze_after_start=True),
        host=host,
        port=port,
        proxy_headers=False,
        log_level="info",
        log_config=None,  # keep _logging()'s handler: uvicorn's own would write raw paths and exceptions
    )
    server = Server(config)
    server.stop_on(shutdown)
    try:
        server.run()
    finally:
        if fake is not None:
            fake.stop()
        embedded_pg.release_all()


# The channels the demo may replace with its fakes: setting, label, the fake's URL attribute.
_DEMO_CHANNELS = (
    ("wechat_base_url", "WeChat", "wechat_base_url"),
    ("sms_base_url", "SMS", "sms_base_url"),
    ("voice_base_url", "voice", "voice_base_url"),
)


def _demo_providers(settings: Settings, host: str, port: int) -> tuple[Settings, FakeProviderServer | None, list[str]]:
    """The demo talks to local fake providers that speak the real protocols, never to real phones — except for a
    channel whose URL was set (environment or .env): that one is honoured. Returns the settings to run with, the
    fake server (if any channel needs it) and the lines that say which endpoint each channel uses."""
    base = f"http://{host}:{port}"
    faked = [(field, label, attr) for field, label, attr in _DEMO_CHANNELS if field not in settings.model_fields_set]
    update: dict[str, str] = {} if "public_base_url" in settings.model_fields_set else {"public_base_url": base}
    fake = None
    if faked:
        fake = FakeProviderServer(
            callback_secret=settings.callback_secret,
            callback_url=f"{base}/inbound/sms",
            wechat_appid=settings.wechat_appid,
            wechat_secret=settings.wechat_secret,
            sms_api_key=settings.sms_api_key,
            voice_api_key=settings.voice_api_key,
        )
        fake.start()
        update |= {field: getattr(fake, attr) for field, _, attr in faked}
    lines = []
    for field, label, _ in _DEMO_CHANNELS:
        if field in update:
            lines.append(f"{label}: built-in fake provider at {update[field]}")
        else:
            lines.append(f"{label}: {getattr(settings, field)} (LIUSHOU_{field.upper()}, as configured)")
    if fake is not None:
        lines.append(f"What the fake providers were sent: {fake.base_url}/_fake/outbox")
    if "wechat_base_url" in update:
        lines.append("WeChat login in the demo: any js_code 'demo-<name>' logs in as openid 'o-demo-<name>'.")
    return settings.model_copy(update=update), fake, lines


@app.command("create-user")
def create_user(
    username: Annotated[str, typer.Option(help="login name")],
    password: Annotated[str, typer.Option(prompt=True, hide_input=True, confirmation_prompt=True)],
    role: Annotated[Role, typer.Option(help="role of the account")],
    display_name: Annotated[str, typer.Option(help="name shown to others")],
    county_id: Annotated[uuid.UUID | None, typer.Option(help="for county_bureau")] = None,
    township_id: Annotated[uuid.UUID | None, typer.Option(help="for township_official")] = None,
    school_id: Annotated[uuid.UUID | None, typer.Option(help="for school_admin and teacher")] = None,
) -> None:
    """Create a staff account with a password (the first platform admin, for example)."""
    _logging()
    Shutdown().install()
    from api.errors import LiushouError
    from api.scoping import SYSTEM
    from api.services.accounts import create_account

    async def run() -> None:
        settings = get_settings()
        url = await _migrate()
        engine = make_engine(url, settings)
        try:
            # SYSTEM: the operator at the console creates the first accounts; nobody is signed in.
            async with scoped_session(make_sessionmaker(engine), SYSTEM) as session:
                data = AccountCreate(
                    role=role,
                    display_name=display_name,
                    username=username,
                    password=password,
                    county_id=county_id,
                    township_id=township_id,
                    school_id=school_id,
                )
                account = await create_account(session, SYSTEM, passwords=Passwords(settings), data=data)
                typer.echo(f"created {account.role.value} {account.username} ({account.id})")
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    except LiushouError as exc:
        typer.echo(f"error: {exc.code}: {exc.message}", err=True)
        raise typer.Exit(2) from None


@app.command()
def worker(
    metrics_port: Annotated[
        int | None, typer.Option(help="serve this worker's Prometheus counters on this port")
    ] = None,
) -> None:
    """Run the escalation worker (the 30/60/120-minute chain). Several may run side by side; SIGINT, SIGTERM and
    SIGHUP stop it cleanly (a second one at once), and a worker killed outright loses nothing (its leases expire
    and another takes over)."""
    _logging()
    shutdown = Shutdown().install()
    import httpx
    import prometheus_client

    from api import metrics
    from api.clock import SystemClock
    from api.worker.loop import Worker

    async def run() -> None:
        settings = get_settings()
        url = await _migrate()
        engine = make_engine(url, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        # Signal handlers run between bytecodes of this thread: hand the work to the loop, which they wake
        # (once it is closed, a later signal only hurries the database's stop).
        shutdown.drain = lambda: loop.is_closed() or loop.call_soon_threadsafe(stop.set)
        shutdown.hurry = lambda: loop.is_closed() or loop.call_soon_threadsafe(task.cancel)
        try:
            # Keep as many connections alive as sends may run at once: no reconnecting under a burst.
            concurrency = settings.escalation_send_concurrency
            limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
            async with httpx.AsyncClient(timeout=settings.http_timeout_seconds, limits=limits) as http:
                await Worker(engine, http=http, settings=settings, clock=SystemClock()).run_forever(stop)
        finally:
            await engine.dispose()

    if metrics_port:
        prometheus_client.start_http_server(metrics_port, registry=metrics.REGISTRY)
    try:
        asyncio.run(run())
    except asyncio.CancelledError:
        pass  # a second signal: stopped at once
    finally:
        embedded_pg.release_all()


@app.command("stats-refresh")
def stats_refresh(
    once: Annotated[bool, typer.Option(help="one pass, then exit (e.g. from cron)")] = False,
) -> None:
    """Keep the statistics' pre-aggregates fresh: every ``stats_refresh_seconds``, recompute the schools whose
    records changed (a process of its own, on the primary, apart from the escalation worker); before midnight,
    tomorrow's too; then warm the kept answers asked for recently and the standard tables (before midnight,
    tomorrow's too: api/services/stats/warm.py). One at a time: while another holds the lock, a pass is skipped
    (and says so)."""
    _logging()
    shutdown = Shutdown().install()
    from api.clock import SystemClock
    from api.services.stats.preaggregate import refresh
    from api.services.stats.warm import warm

    async def run() -> None:
        settings = get_settings()
        url = await _migrate()
        engine = make_engine(url, settings)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        shutdown.drain = lambda: loop.is_closed() or loop.call_soon_threadsafe(stop.set)
        try:
            while not stop.is_set():
                skipped = False
                try:
                    done = await refresh(
                        make_sessionmaker(engine),
                        clock=SystemClock(),
                        ahead=timedelta(minutes=settings.stats_ahead_minutes),
                    )
                    skipped = bool(done.get("skipped"))
                    if skipped:
                        typer.echo("skipped: another stats-refresh holds the lock")
                    else:
                        typer.echo(
                            f"refreshed {done['schools']} schools (and {done['tomorrow']} for tomorrow)"
                            f" in {done['seconds']:.1f} s"
                        )
                except Exception:  # the database is away: the next pass tries again
                    logging.getLogger("liushou.stats").exception("statistics refresh failed")
                # Then the kept answers asked for recently, and the standard tables (a fresh deploy warm); the
                # refresher holding the lock warms them itself.
                try:
                    if not skipped:
                        warmed = await warm(make_sessionmaker(engine), clock=SystemClock(), settings=settings)
                        typer.echo(f"warmed {warmed['answers']:.0f} answers in {warmed['seconds']:.1f} s")
                except Exception:
                    logging.getLogger("liushou.stats").exception("statistics warm-up failed")
                if once:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=settings.stats_refresh_seconds)
        finally:
            await engine.dispose()

    try:
        asyncio.run(run())
    finally:
        embedded_pg.release_all()


if __name__ == "__main__":
    app()
