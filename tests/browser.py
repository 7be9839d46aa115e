"""A headless Chromium driven over the DevTools protocol: what a person's browser really does with our pages.

The system's Chromium (Debian's ``chromium``), no browser download: ``LIUSHOU_CHROMIUM`` or the first of
``chromium``, ``chromium-browser``, ``google-chrome`` on the ``PATH``. A small client over ``websockets``
(already a dependency of uvicorn) is all it takes: one page, its network requests recorded, real mouse
clicks, DOM and layout read through the protocol (they work with JavaScript off), screenshots.

Host names other than loopback do not resolve in this browser, so a page that reaches out fails here as it
would on an offline county network — and the attempt is still recorded.
"""

import asyncio
import base64
import itertools
import json
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
NO_BROWSER = (
    "no Chromium found (install Debian's `chromium`, or set LIUSHOU_CHROMIUM): the browser tests need a real browser"
)


def find_chromium() -> str | None:
    configured = os.environ.get("LIUSHOU_CHROMIUM")
    if configured:
        return configured if Path(configured).exists() else None
    for name in CANDIDATES:
        found = shutil.which(name)
        if found:
            return found
    return None


class BrowserError(RuntimeError):
    pass


@dataclass
class Page:
    """One tab, attached with a flat session."""

    browser: "Browser"
    session_id: str
    requests: list[str] = field(default_factory=list)
    loads: int = 0
    # Requests the browser refused to send (a Content-Security-Policy, say), by request id.
    blocked: dict[str, str] = field(default_factory=dict)
    _urls: dict[str, str] = field(default_factory=dict)
    _last_request_at: float = 0.0

    async def send(self, method: str, **params: Any) -> dict[str, Any]:
        return await self.browser.send(method, session_id=self.session_id, **params)

    def on_event(self, method: str, params: dict[str, Any]) -> None:
        if method == "Network.requestWillBeSent":
            self.requests.append(params["request"]["url"])
            self._urls[params["requestId"]] = params["request"]["url"]
            self._last_request_at = time.monotonic()
        elif method == "Network.loadingFailed" and params.get("blockedReason"):
            self.blocked[self._urls.get(params["requestId"], params["requestId"])] = params["blockedReason"]
        elif method == "Page.loadEventFired":
            self.loads += 1

    async def phone(self, width: int = 360, height: int = 740, *, javascript: bool = True) -> None:
        """A cheap Android phone's screen, touch, and optionally no JavaScript."""
        await self.send(
            "Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=True
        )
        await self.send("Emulation.setTouchEmulationEnabled", enabled=True)
        await self.send("Emulation.setScriptExecutionDisabled", value=not javascript)

    async def goto(self, url: str, within: float = 30) -> None:
        loads = self.loads
        answer = await self.send("Page.navigate", url=url)
        if answer.get("errorText"):
            raise BrowserError(f"{url}: {answer['errorText']}")
        await self.wait_for_load(loads, within)

    async def wait_for_load(self, loads_before: int, within: float = 30) -> None:
        deadline = time.monotonic() + within
        while self.loads <= loads_before:
            if time.monotonic() > deadline:
                raise BrowserError("page did not load")
            await asyncio.sleep(0.02)

    @property
    def sent(self) -> list[str]:
        """The requests that left the browser (those it blocked itself never did)."""
        return [url for url in self.requests if url not in self.blocked]

    async def idle(self, quiet: float = 0.5, within: float = 10) -> None:
        """Wait until the page has started no request for ``quiet`` seconds (late images, workers)."""
        deadline = time.monotonic() + within
        while time.monotonic() < deadline:
            if time.monotonic() - self._last_request_at >= quiet:
                return
            await asyncio.sleep(0.05)

    async def evaluate(self, expression: str) -> Any:
        answer = await self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression}: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    async def wait_for(self, expression: str, within: float = 30) -> Any:
        deadline = time.monotonic() + within
        while True:
            value = await self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise BrowserError(f"timed out waiting for {expression}")
            await asyncio.sleep(0.1)

    # ---- DOM and layout through the protocol (no page script needed) ------------------------------------

    async def node(self, selector: str) -> int:
        root = await self.send("DOM.getDocument", depth=0)
        found = await self.send("DOM.querySelector", nodeId=root["root"]["nodeId"], selector=selector)
        if not found.get("nodeId"):
            raise BrowserError(f"no element {selector!r}")
        return int(found["nodeId"])

    async def html(self) -> str:
        root = await self.send("DOM.getDocument", depth=0)
        return str((await self.send("DOM.getOuterHTML", nodeId=root["root"]["nodeId"]))["outerHTML"])

    async def box(self, selector: str) -> dict[str, float]:
        """The border box of an element in CSS pixels: x, y, width, height."""
        model = (await self.send("DOM.getBoxModel", nodeId=await self.node(selector)))["model"]
        xs, ys = model["border"][0::2], model["border"][1::2]
        return {"x": min(xs), "y": min(ys), "width": model["width"], "height": model["height"]}

    async def line_boxes(self, selector: str) -> int:
        """How many line boxes an inline element is laid out in (1: it did not break across lines)."""
        return len((await self.send("DOM.getContentQuads", nodeId=await self.node(selector)))["quads"])

    async def style(self, selector: str, prop: str) -> str:
        computed = await self.send("CSS.getComputedStyleForNode", nodeId=await self.node(selector))
        return next(p["value"] for p in computed["computedStyle"] if p["name"] == prop)

    async def content_size(self) -> dict[str, float]:
        metrics = await self.send("Page.getLayoutMetrics")
        return metrics["cssContentSize"]

    async def click(self, selector: str) -> None:
        """A real click in the middle of the element, scrolled into view first: the browser hit-tests it."""
        node = await self.node(selector)
        await self.send("DOM.scrollIntoViewIfNeeded", nodeId=node)
        quad = (await self.send("DOM.getContentQuads", nodeId=node))["quads"][0]
        x, y = sum(quad[0::2]) / 4, sum(quad[1::2]) / 4
        for kind in ("mousePressed", "mouseReleased"):
            await self.send("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)

    async def screenshot(self, path: Path) -> None:
        shot = await self.send("Page.captureScreenshot", format="png")
        await asyncio.to_thread(path.write_bytes, base64.b64decode(shot["data"]))


class Browser:
    def __init__(self, process: asyncio.subprocess.Process, ws: ClientConnection, profile: str) -> None:
        self.process = process
        self.ws = ws
        self.profile = profile
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._pages: dict[str, Page] = {}
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for raw in self.ws:
            message = json.loads(raw)
            if "id" in message:
                future = self._waiting.pop(message["id"], None)
                if future is not None and not future.done():
                    future.set_result(message)
            elif message.get("sessionId") in self._pages:
                self._pages[message["sessionId"]].on_event(message["method"], message.get("params", {}))

    async def send(self, method: str, *, session_id: str | None = None, **params: Any) -> dict[str, Any]:
        command_id = next(self._ids)
        command: dict[str, Any] = {"id": command_id, "method": method, "params": params}
        if session_id:
            command["sessionId"] = session_id
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[command_id] = future
        await self.ws.send(json.dumps(command))
        answer = await asyncio.wait_for(future, 60)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        return dict(answer.get("result", {}))

    async def new_page(self) -> Page:
        target = await self.send("Target.createTarget", url="about:blank")
        attached = await self.send("Target.attachToTarget", targetId=target["targetId"], flatten=True)
        page = Page(self, attached["sessionId"])
        self._pages[page.session_id] = page
        for domain in ("Page", "Network", "DOM", "CSS", "Runtime"):
            await page.send(f"{domain}.enable")
        return page


@asynccontextmanager
async def chromium(executable: str) -> AsyncIterator[Browser]:
    """Start a headless Chromium with a throw-away profile; yields once its DevTools endpoint answers."""
    profile = tempfile.mkdtemp(prefix="liushou-chromium-")
    args = [
        executable,
        "--headless=new",
        "--remote-debugging-port=0",
        f"--user-data-dir={profile}",
        "--no-first-run",
        "--no-default-browser-check",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-extensions",
        "--mute-audio",
        # Only loopback resolves: an outside request fails, as on a network without the internet.
        "--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE localhost , EXCLUDE 127.0.0.1",
        "about:blank",
    ]
    if os.geteuid() == 0:
        args.insert(1, "--no-sandbox")  # Chromium refuses to run its sandbox as root
    process = await asyncio.create_subprocess_exec(*args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ws = None
    try:
        port_file = Path(profile) / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not (port_file.exists() and len(port_file.read_text().splitlines()) >= 2):
            if process.returncode is not None or time.monotonic() > deadline:
                raise BrowserError(f"{executable} did not start (exit {process.returncode})")
            await asyncio.sleep(0.05)
        port, path = port_file.read_text().splitlines()[:2]
        ws = await connect(f"ws://127.0.0.1:{port}{path}", max_size=64 * 1024 * 1024)
        browser = Browser(process, ws, profile)
        try:
            yield browser
        finally:
            browser._reader.cancel()
    finally:
        if ws is not None:
            await ws.close()
        if process.returncode is None:
            process.terminate()
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TimeoutError:
                process.kill()
                await process.wait()
        shutil.rmtree(profile, ignore_errors=True)
