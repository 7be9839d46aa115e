"""The app under a real uvicorn server on a loopback socket, in a background thread.

ASGITransport runs the app in the test's own call and waits for everything it does; this does not: requests
travel over TCP from real client sockets (from any 127.x.y.z source address, so tests can be several
clients), concurrently, as in production. uvicorn's own X-Forwarded-For handling is off, as in ``serve``.
"""

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn
from fastapi import FastAPI


class ThreadedApp:
    def __init__(self, app: FastAPI) -> None:
        self.app = app
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def __enter__(self) -> "ThreadedApp":
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Listening on 127.0.0.1 accepts connections from every 127.x source address.
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        config = uvicorn.Config(
            self.app,
            log_level="warning",
            access_log=False,
            loop="asyncio",
            lifespan="on",
            proxy_headers=False,
            backlog=512,
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.__exit__()
                raise RuntimeError("uvicorn did not start")
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20)
        if self._socket is not None:
            self._socket.close()

    def client(self, source: str = "127.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client whose connections leave from ``source`` (a 127.x address): one client address."""
        transport = httpx.AsyncHTTPTransport(
            local_address=source, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
        )
        return httpx.AsyncClient(transport=transport, base_url=self.base_url, timeout=60, **kwargs)
