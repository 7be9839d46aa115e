"""The app under a real uvicorn server on a loopback socket, in a thread with its own event loop.

``httpx.ASGITransport`` waits for everything the app does after the response (a yield dependency's exit,
background tasks) before it hands the response back, so it cannot show what a client sees when it sends its
next request the moment the previous answer arrives. A real server over a socket can: requests travel over
TCP from real client sockets, concurrently, as in production — and, through ``client(source=...)``, from any
127.x.y.z source address, so a test can be several clients. uvicorn is configured as ``liushou serve``
configures it: its own X-Forwarded-For handling off, the process's logging left as it is.
"""

import socket
import threading
import time
from typing import Any

import httpx
import uvicorn


class LiveServer:
    """Serve ``app`` (lifespan included) with uvicorn on 127.0.0.1; ``base_url`` once started."""

    def __init__(self, app: Any, *, access_log: bool = False, log_level: str = "warning") -> None:
        self.app = app
        self.access_log = access_log
        self.log_level = log_level
        self.base_url = ""
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._socket: socket.socket | None = None

    def start(self, timeout: float = 20.0) -> str:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Listening on 127.0.0.1 accepts connections from every 127.x source address.
        sock.bind(("127.0.0.1", 0))
        self._socket = sock
        # log_config=None: keep the process's logging as it is (the tests capture it), as `liushou serve` does.
        config = uvicorn.Config(
            self.app,
            log_config=None,
            log_level=self.log_level,
            access_log=self.access_log,
            loop="asyncio",
            lifespan="on",
            proxy_headers=False,
            backlog=512,  # parallel bursts of connections must wait in the queue, not be refused
        )
        server = self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="live-app", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("live server did not start")
            time.sleep(0.01)
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        return self.base_url

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=20.0)
        if self._socket is not None:
            self._socket.close()
        self._server = self._thread = self._socket = None

    def client(self, source: str = "127.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client whose connections leave from ``source`` (a 127.x address): one client address."""
        transport = httpx.AsyncHTTPTransport(
            local_address=source, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
        )
        return httpx.AsyncClient(transport=transport, base_url=self.base_url, timeout=60, **kwargs)

    def __enter__(self) -> "LiveServer":
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
