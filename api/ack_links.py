"""Acknowledgement-link tokens: the message id signed with the first key of the acknowledgement-link key ring
(``LIUSHOU_ACK_LINK_KEYS``, its own setting: rotating the JWT secret after a leak must not break every link
of an emergency in flight); every key of the ring verifies. Nothing secret is stored and a token cannot be
guessed or altered.

A plain module (standard library only): the settings parse the ring with it at start-up, the emergency
domain signs and reads links with it.
"""

import base64
import binascii
import hashlib
import hmac
import re
import uuid
from dataclasses import dataclass
from functools import lru_cache

_TOKEN_MAC_BYTES = 12
_LINK_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_LINK_KEY_MIN_BYTES = 16


class LinkKeyError(ValueError):
    """The acknowledgement-link key ring is unusable."""


@dataclass(frozen=True)
class LinkKeys:
    """The acknowledgement-link key ring: the first key signs, every key verifies (rotate by putting a new
    key first and dropping an old one once the links it signed no longer matter)."""

    keys: tuple[tuple[str, bytes], ...]

    @property
    def signing_key(self) -> bytes:
        return self.keys[0][1]


@lru_cache(maxsize=8)
def link_keys(config: str) -> LinkKeys:
    """Parse ``"kid:<base64 key>,kid2:<base64 key>"`` (keys of at least 16 bytes; 32 recommended)."""
    ring: list[tuple[str, bytes]] = []
    for entry in (part.strip() for part in config.split(",")):
        if not entry:
            continue
        key_id, sep, encoded = entry.partition(":")
        key_id = key_id.strip()
        if not sep or not _LINK_KEY_ID.fullmatch(key_id):
            raise LinkKeyError("each acknowledgement-link key is <key_id>:<base64 key>, key ids A-Z a-z 0-9 _ -")
        if any(key_id == known for known, _ in ring):
            raise LinkKeyError(f"acknowledgement-link key id {key_id!r} appears twice")
        try:
            key = base64.b64decode(encoded.strip(), validate=True)
        except (binascii.Error, ValueError):
            raise LinkKeyError(f"acknowledgement-link key {key_id!r} is not valid base64") from None
        if len(key) < _LINK_KEY_MIN_BYTES:
            raise LinkKeyError(f"acknowledgement-link key {key_id!r} must be at least {_LINK_KEY_MIN_BYTES} bytes")
        ring.append((key_id, key))
    if not ring:
        raise LinkKeyError("no acknowledgement-link keys configured")
    return LinkKeys(tuple(ring))


def _mac(key: bytes, message_id: bytes) -> bytes:
    return hmac.new(key, b"liushou/ack-link/v2:" + message_id, hashlib.sha256).digest()[:_TOKEN_MAC_BYTES]


def ack_token(key_ring: str, message_id: uuid.UUID) -> str:
    """The token of a message's acknowledgement link: its id and a truncated HMAC (the ring's first key),
    base64url."""
    mac = _mac(link_keys(key_ring).signing_key, message_id.bytes)
    return base64.urlsafe_b64encode(message_id.bytes + mac).rstrip(b"=").decode()


def read_ack_token(key_ring: str, token: str) -> uuid.UUID | None:
    """The message id behind a link token, or None when the token is malformed or signed by no key of the
    ring."""
    if len(token) > 64:
        return None
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    except (binascii.Error, ValueError):
        return None
    if len(raw) != 16 + _TOKEN_MAC_BYTES:
        return None
    # Every key is compared (no early exit), so timing does not tell which key a forgery came close to.
    matches = [hmac.compare_digest(_mac(key, raw[:16]), raw[16:]) for _, key in link_keys(key_ring).keys]
    return uuid.UUID(bytes=raw[:16]) if any(matches) else None
