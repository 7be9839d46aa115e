"""How a liushou process stops: SIGINT, SIGTERM and SIGHUP alike (Ctrl+C, ``kill``/systemd/docker, a closed
terminal). The first asks it to drain — the API finishes its requests, the in-process worker its pass — and then
the embedded PostgreSQL it started is stopped; a second stops everything at once.
"""

import logging
import signal
import threading
from collections.abc import Callable, Generator
from contextlib import contextmanager
from types import FrameType

import uvicorn

from api import embedded_pg

log = logging.getLogger("liushou.shutdown")

SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))


def _interrupt() -> None:
    raise KeyboardInterrupt


def _nothing() -> None:
    pass


class Shutdown:
    """The process's answer to stop signals, installed once per command.

    ``drain`` runs on the first signal (by default it interrupts what the command is doing, so its ``finally``
    blocks and the exit hooks still run); every later one stops the embedded server at once and calls ``hurry``.
    Commands that can drain (``serve``, ``worker``) replace both once they are running.
    """

    def __init__(self) -> None:
        self.received = 0
        self.drain: Callable[[], object] = _interrupt
        self.hurry: Callable[[], object] = _nothing

    def install(self) -> "Shutdown":
        if threading.current_thread() is threading.main_thread():
            for sig in SIGNALS:
                signal.signal(sig, self._handle)
        return self

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.received += 1
        name = signal.Signals(signum).name
        if self.received == 1:
            log.info("%s received: stopping cleanly (send it again to stop at once)", name)
            self.drain()
        else:
            log.warning("%s received again: stopping at once", name)
            embedded_pg.hurry()
            self.hurry()


class Server(uvicorn.Server):
    """uvicorn, minus its own signal handling: ``Shutdown`` owns the signals (uvicorn ignores SIGHUP, needs two
    SIGINTs to force an exit, and re-raises SIGTERM after draining, which killed the process before it could
    stop the embedded database)."""

    @contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield

    def stop_on(self, shutdown: Shutdown) -> None:
        def drain() -> None:
            self.should_exit = True

        def hurry() -> None:
            self.force_exit = True

        shutdown.drain, shutdown.hurry = drain, hurry
