"""The client address behind trusted reverse proxies (``LIUSHOU_TRUSTED_PROXIES``), and only behind them.

Login limits and the audit log key on the client address, so a forged ``X-Forwarded-For`` must not choose it:
the header is read only when the peer itself is a trusted proxy, and then from the right — each hop a trusted
proxy added — up to the first address no trusted proxy vouches for. ``serve`` runs uvicorn with its own proxy
handling off, so this is the one place that decides.
"""

import ipaddress
from collections.abc import Sequence

from starlette.types import ASGIApp, Receive, Scope, Send

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _address(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        return None


def client_behind_proxies(peer: str, forwarded_for: Sequence[str], trusted: Sequence[Network]) -> str:
    """Pure: the client address, given the TCP peer and the X-Forwarded-For values in arrival order."""
    hops = [hop.strip() for value in forwarded_for for hop in value.split(",") if hop.strip()]
    current = peer
    while hops:
        address = _address(current)
        if address is None or not any(address in net for net in trusted):
            break
        candidate = hops.pop()
        if _address(candidate) is None:
            break  # garbage from further left: the last trusted hop is as far as we can see
        current = candidate
    return current


class TrustedProxyMiddleware:
    def __init__(self, app: ASGIApp, *, trusted: Sequence[str]) -> None:
        self.app = app
        self.trusted = [ipaddress.ip_network(entry, strict=False) for entry in trusted]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client = scope.get("client")
        if self.trusted and scope["type"] in ("http", "websocket") and client:
            values = [v.decode("latin-1") for k, v in scope.get("headers") or [] if k == b"x-forwarded-for"]
            if values:
                real = client_behind_proxies(client[0], values, self.trusted)
                if real != client[0]:
                    scope = {**scope, "client": (real, 0)}
        await self.app(scope, receive, send)
