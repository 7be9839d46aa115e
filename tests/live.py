"""The app under a real uvicorn server on a loopback socket, in a thread with its own event loop.

``httpx.ASGITransport`` waits for everything the app does after the response (a yield dependency's exit,
background tasks) before it hands the response back, so it cannot show what a client sees when it sends its
next request the moment the previous answer arrives. A real server over a socket can: requests travel over
TCP from real client sockets, concurrently, as in production — and, through ``client(source=...)``, from any
127.x.y.z source address, so a test can be several clients. uvicorn is configured as ``liushou serve``
configures it: its own X-Forwarded-For handling off, the process's logging left as it is.
"""

from typing import Any

import httpx

from api.channels.fakes import LoopbackServer


class LiveServer(LoopbackServer):
    """Serve ``app`` (lifespan included) with uvicorn on 127.0.0.1; ``base_url`` once started."""

    def __init__(self, app: Any, *, access_log: bool = False, log_level: str = "warning") -> None:
        # Listening on 127.0.0.1 accepts connections from every 127.x source address.
        super().__init__(
            app,
            # log_config=None: keep the process's logging as it is (the tests capture it), as `liushou serve` does.
            log_config=None,
            log_level=log_level,
            access_log=access_log,
            proxy_headers=False,
            backlog=512,  # parallel bursts of connections must wait in the queue, not be refused
        )

    # The whole app (its lifespan opens and closes the database) may start and stop slower than a fake.
    def start(self, timeout: float = 20.0) -> str:
        return super().start(timeout)

    def stop(self, timeout: float = 20.0) -> None:
        super().stop(timeout)

    def client(self, source: str = "127.0.0.1", **kwargs: Any) -> httpx.AsyncClient:
        """An HTTP client whose connections leave from ``source`` (a 127.x address): one client address."""
        transport = httpx.AsyncHTTPTransport(
            local_address=source, limits=httpx.Limits(max_connections=100, max_keepalive_connections=100)
        )
        return httpx.AsyncClient(transport=transport, base_url=self.base_url, timeout=60, **kwargs)

    def __enter__(self) -> "LiveServer":
        self.start()
        return self
