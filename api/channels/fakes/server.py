"""The fake providers' app (all three channels and the scripting API under one origin) and the loopback server
that runs it — or any ASGI app — on 127.0.0.1 in a background thread, for tests and `serve --demo`."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable
from datetime import datetime
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI

from api.channels.fakes.control import control_router
from api.channels.fakes.sms import sms_router
from api.channels.fakes.state import (
    DEFAULT_SMS_API_KEY,
    DEFAULT_VOICE_API_KEY,
    DEFAULT_WECHAT_APPID,
    DEFAULT_WECHAT_SECRET,
    Fake,
    FakeConfig,
    now_utc,
)
from api.channels.fakes.voice import voice_router
from api.channels.fakes.wechat import wechat_router


def create_fake_app(
    *,
    callback_secret: str,
    callback_url: str | None = None,
    wechat_appid: str = DEFAULT_WECHAT_APPID,
    wechat_secret: str = DEFAULT_WECHAT_SECRET,
    sms_api_key: str = DEFAULT_SMS_API_KEY,
    voice_api_key: str = DEFAULT_VOICE_API_KEY,
    callback_delay: float = 0.05,
    voice_default_press: str | None = "1",
    callback_concurrency: int = 32,
) -> FastAPI:
    """Build the fake providers app. Callbacks are signed with `callback_secret` and go to the URL given in
    each request, else to `callback_url`. Unscripted voice calls are answered and `voice_default_press` is
    pressed (None: answered, nothing pressed)."""
    fake = Fake(
        FakeConfig(
            callback_secret=callback_secret,
            callback_url=callback_url,
            wechat_appid=wechat_appid,
            wechat_secret=wechat_secret,
            sms_api_key=sms_api_key,
            voice_api_key=voice_api_key,
            callback_delay=callback_delay,
            voice_default_press=voice_default_press,
            callback_concurrency=callback_concurrency,
        )
    )

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        limits = httpx.Limits(max_connections=callback_concurrency, max_keepalive_connections=callback_concurrency)
        async with httpx.AsyncClient(limits=limits) as http:
            fake.http = http
            yield
            fake.reset()
            fake.http = None

    app = FastAPI(
        title="liushou fake providers",
        lifespan=lifespan,
        docs_url="/_fake/docs",
        openapi_url="/_fake/openapi.json",
    )
    app.state.fake = fake
    for router in (wechat_router, sms_router, voice_router, control_router):
        app.include_router(router)
    return app


class LoopbackServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 in a background thread (tests, `serve --demo`);
    ``uvicorn_options`` go to ``uvicorn.Config`` (default: warnings only, no access log)."""

    def __init__(self, app: Any, *, host: str = "127.0.0.1", port: int = 0, **uvicorn_options: Any) -> None:
        self.app = app
        self.host = host
        self.port = port
        self.uvicorn_options: dict[str, Any] = {"log_level": "warning", "access_log": False, **uvicorn_options}
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self, timeout: float = 10.0) -> str:
        """Bind (port 0 = a free port), serve in a daemon thread, and return the base URL once ready."""
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        self._socket = sock
        config = uvicorn.Config(self.app, loop="asyncio", lifespan="on", **self.uvicorn_options)
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="loopback-server", daemon=True
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("loopback server did not start")
            time.sleep(0.01)
        self.port = sock.getsockname()[1]
        self.base_url = f"http://{self.host}:{self.port}"
        return self.base_url

    def stop(self, timeout: float = 10.0) -> None:
        """Ask uvicorn to exit, wait for the thread (up to ``timeout`` s), release the port."""
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def __enter__(self) -> LoopbackServer:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class FakeProviderServer(LoopbackServer):
    """The fake providers on a loopback port; client base URLs are the `*_base_url` properties."""

    def __init__(self, *, callback_secret: str, host: str = "127.0.0.1", port: int = 0, **options: Any) -> None:
        super().__init__(create_fake_app(callback_secret=callback_secret, **options), host=host, port=port)

    def use_clock(self, clock: Callable[[], datetime] | None) -> None:
        """Read the provider's time from `clock` (e.g. a test's `FrozenClock.now`); None: the real clock.
        In-process only; a fake in another process is told the time with `PUT /_fake/clock`."""
        self.app.state.fake.clock = clock or now_utc

    def __enter__(self) -> FakeProviderServer:
        self.start()
        return self

    @property
    def wechat_base_url(self) -> str:
        return f"{self.base_url}/wechat"

    @property
    def sms_base_url(self) -> str:
        return f"{self.base_url}/sms"

    @property
    def voice_base_url(self) -> str:
        return f"{self.base_url}/voice"
