"""Passwords (argon2), our own JWTs (PyJWT), and one-time secrets stored only as hashes."""

import base64
import functools
import hashlib
import json
import secrets
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import jwt
from anyio import to_thread
from pwdlib import PasswordHash
from pwdlib.hashers.argon2 import Argon2Hasher

from api.crypto import DecryptionError, FieldCipher
from api.errors import Unauthorized
from api.settings import Settings

ACCESS = "access"
WECHAT_BINDING = "wx_bind"
BINDING_CONTEXT = "wechat-binding-ticket"
ALGORITHM = "HS256"


class Passwords:
    """argon2id; hashing runs in a worker thread so the event loop never blocks on it."""

    def __init__(self, settings: Settings) -> None:
        self._hash = PasswordHash(
            (Argon2Hasher(time_cost=settings.argon2_time_cost, memory_cost=settings.argon2_memory_cost),)
        )
        # Verified against when the account does not exist, so timing does not reveal account names.
        self._dummy = self._hash.hash(secrets.token_urlsafe(16))

    async def hash(self, password: str) -> str:
        return await to_thread.run_sync(self._hash.hash, password)

    async def verify(self, password: str, hashed: str | None) -> bool:
        return await to_thread.run_sync(self._hash.verify, password, hashed or self._dummy) and bool(hashed)


@dataclass(frozen=True)
class AccessClaims:
    account_id: uuid.UUID
    session_id: uuid.UUID
    role: str


def _encode(settings: Settings, claims: dict[str, Any]) -> str:
    return jwt.encode(claims, settings.jwt_secret, algorithm=ALGORITHM)


@functools.lru_cache(maxsize=8)
def _verification_key(secret: str) -> jwt.PyJWK:
    """The HMAC key, prepared once: given the bare secret, PyJWT checks it for PEM and SSH forms on every
    decode, a measurable share of an authenticated request."""
    encoded = base64.urlsafe_b64encode(secret.encode()).rstrip(b"=").decode()
    return jwt.PyJWK({"kty": "oct", "k": encoded}, algorithm=ALGORITHM)


@functools.lru_cache(maxsize=1024)
def _verified(secret: str, issuer: str, audience: str, token: str) -> dict[str, Any]:
    """The claims of a token whose signature, audience and issuer check out (raises otherwise). Kept for the
    next request that sends the same token: the same bytes under the same key verify the same way, and what
    can change (expiry, a revoked login session) is checked on every request after this."""
    claims: dict[str, Any] = jwt.decode(
        token,
        _verification_key(secret),
        algorithms=[ALGORITHM],  # a fixed list: "alg": "none" and algorithm swaps are refused
        audience=audience,
        issuer=issuer,
        # Expiry is checked by the caller against the app's clock, the one every deadline uses.
        options={
            "require": ["exp", "iat", "sub", "aud", "iss", "typ"],
            "verify_exp": False,
            "verify_iat": False,
        },
    )
    return claims


def _decode(settings: Settings, token: str, audience: str, typ: str, now: datetime) -> dict[str, Any]:
    try:
        claims = dict(_verified(settings.jwt_secret, settings.jwt_issuer, audience, token))
    except jwt.PyJWTError:
        raise Unauthorized("登录凭证无效 (invalid token)", code="token_invalid") from None
    if claims.get("typ") != typ or not isinstance(claims.get("exp"), int | float):
        raise Unauthorized("登录凭证无效 (invalid token)", code="token_invalid")
    if claims["exp"] <= now.timestamp():
        raise Unauthorized("登录已过期，请重新登录 (token expired)", code="token_expired")
    return claims


def issue_access_token(
    settings: Settings, *, account_id: uuid.UUID, session_id: uuid.UUID, role: str, now: datetime
) -> str:
    return _encode(
        settings,
        {
            "sub": str(account_id),
            "sid": str(session_id),
            "role": role,
            "typ": ACCESS,
            "iat": now,
            "exp": now + timedelta(minutes=settings.access_token_minutes),
            "aud": settings.jwt_audience,
            "iss": settings.jwt_issuer,
            "jti": secrets.token_hex(8),
        },
    )


def read_access_token(settings: Settings, token: str, now: datetime) -> AccessClaims:
    claims = _decode(settings, token, settings.jwt_audience, ACCESS, now)
    try:
        return AccessClaims(uuid.UUID(claims["sub"]), uuid.UUID(claims["sid"]), str(claims["role"]))
    except (KeyError, ValueError):
        raise Unauthorized("登录凭证无效 (invalid token)", code="token_invalid") from None


def issue_binding_ticket(
    settings: Settings, cipher: FieldCipher, *, openid: str, unionid: str | None, now: datetime
) -> str:
    """A short-lived ticket that lets an unknown WeChat user bind an invite. It travels through the mini-program
    and its logs, so the WeChat identity inside is encrypted (AES-GCM with the field key ring): the signed JWT
    carries only a random ticket id and ciphertext."""
    identity = cipher.encrypt(json.dumps({"openid": openid, "unionid": unionid}), context=BINDING_CONTEXT)
    return _encode(
        settings,
        {
            "sub": secrets.token_urlsafe(12),
            "wx": identity,
            "typ": WECHAT_BINDING,
            "iat": now,
            "exp": now + timedelta(minutes=settings.binding_ticket_minutes),
            "aud": settings.jwt_audience + ":wechat-binding",
            "iss": settings.jwt_issuer,
        },
    )


def read_binding_ticket(settings: Settings, cipher: FieldCipher, token: str, now: datetime) -> tuple[str, str | None]:
    claims = _decode(settings, token, settings.jwt_audience + ":wechat-binding", WECHAT_BINDING, now)
    try:
        identity = json.loads(cipher.decrypt(str(claims["wx"]), context=BINDING_CONTEXT))
        return str(identity["openid"]), identity.get("unionid")
    except (KeyError, TypeError, ValueError, DecryptionError):
        raise Unauthorized("登录凭证无效 (invalid token)", code="token_invalid") from None


def new_secret(nbytes: int = 32) -> str:
    return secrets.token_urlsafe(nbytes)


def new_invite_code() -> str:
    """Short enough to read aloud or type on a phone: 10 characters without look-alikes."""
    alphabet = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"
    return "".join(secrets.choice(alphabet) for _ in range(10))


def token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def invite_code_hash(code: str) -> str:
    """Codes are typed by people: case, spaces and dashes do not matter."""
    normalized = "".join(ch for ch in code.upper() if ch.isalnum())
    return hashlib.sha256(normalized.encode()).hexdigest()
