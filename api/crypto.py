"""Encryption at rest for sensitive fields (ID numbers) and blind indexes to look them up.

A value is stored as ``v1:<key_id>:<base64url(nonce + ciphertext + tag)>`` (AES-256-GCM, 96-bit random nonce).
The associated data binds the token to its version, key id and a caller-given context such as
``"child.id_number"``, so a ciphertext copied into another column does not decrypt.

Keys live in a ring so they can be rotated: the active key encrypts, every key in the ring decrypts, and
``needs_reencryption`` tells a background job which rows to rewrite.

A blind index (HMAC-SHA256 of the value) allows equality lookups and duplicate checks without decrypting.
Its key is derived with HKDF from one key of the ring (the index key, the first listed unless told
otherwise) and does not follow the active key, because every stored index would change with it: keep the
index key in the ring when rotating, or recompute all indexes before removing it.

Plaintext never appears in exception messages or reprs.
"""

import base64
import binascii
import hashlib
import hmac
import os
import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

_VERSION = "v1"
_NONCE_BYTES = 12
_KEY_BYTES = 32
_TAG_BYTES = 16
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
# Fixed HKDF inputs: changing them changes every blind index ever stored.
_INDEX_SALT = b"liushou/blind-index"
_INDEX_INFO = b"liushou/blind-index/hmac-sha256/v1"


class DecryptionError(Exception):
    """A token that is malformed, made with an unknown key, tampered with, or from another context."""


class KeyConfigError(ValueError):
    """The configured key ring is unusable."""


def generate_key() -> str:
    """Return a fresh random 256-bit key, base64-encoded, for an entry ``<key_id>:<key>`` in the config."""
    return base64.b64encode(os.urandom(_KEY_BYTES)).decode("ascii")


class FieldCipher:
    """A key ring that encrypts with its active key and decrypts with any of its keys."""

    def __init__(self, keys: Mapping[str, bytes], active: str, *, index_key_id: str | None = None) -> None:
        if not keys:
            raise KeyConfigError("the key ring is empty")
        for key_id, key in keys.items():
            if not _KEY_ID.fullmatch(key_id):
                raise KeyConfigError(f"key id {key_id!r} must be 1-32 characters of A-Z a-z 0-9 _ -")
            if len(key) != _KEY_BYTES:
                raise KeyConfigError(f"key {key_id!r} must be {_KEY_BYTES} bytes, not {len(key)}")
        if active not in keys:
            raise KeyConfigError(f"active key {active!r} is not in the ring")
        index_key_id = index_key_id if index_key_id is not None else next(iter(keys))
        if index_key_id not in keys:
            raise KeyConfigError(f"index key {index_key_id!r} is not in the ring")

        self._aeads = {key_id: AESGCM(key) for key_id, key in keys.items()}
        self._active = active
        self._index_key_id = index_key_id
        self._index_key = HKDF(algorithm=hashes.SHA256(), length=_KEY_BYTES, salt=_INDEX_SALT, info=_INDEX_INFO).derive(
            keys[index_key_id]
        )

    @classmethod
    def from_config(cls, keys: str, *, active: str | None = None, index_key_id: str | None = None) -> "FieldCipher":
        """Build a ring from ``"k1:<base64 32 bytes>,k2:<base64 32 bytes>"``.

        The last key listed is active unless ``active`` names another (useful to roll a new key out to every
        instance before any of them encrypts with it). The first key listed is the blind-index key unless
        ``index_key_id`` names another.
        """
        ring: dict[str, bytes] = {}
        for entry in (part.strip() for part in keys.split(",")):
            if not entry:
                continue
            key_id, sep, encoded = entry.partition(":")
            key_id = key_id.strip()
            if not sep:
                raise KeyConfigError("each key must be written as <key_id>:<base64 key>")
            if key_id in ring:
                raise KeyConfigError(f"key id {key_id!r} appears twice")
            ring[key_id] = _decode_key(key_id, encoded.strip())
        if not ring:
            raise KeyConfigError("no field encryption keys configured")
        return cls(ring, active if active is not None else list(ring)[-1], index_key_id=index_key_id)

    @property
    def active_key_id(self) -> str:
        return self._active

    @property
    def index_key_id(self) -> str:
        return self._index_key_id

    def __repr__(self) -> str:
        return f"FieldCipher(keys={sorted(self._aeads)!r}, active={self._active!r})"

    def encrypt(self, plaintext: str, *, context: str) -> str:
        """Encrypt ``plaintext`` with the active key, bound to ``context`` (e.g. the column name)."""
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._aeads[self._active].encrypt(
            nonce, plaintext.encode("utf-8"), _associated_data(self._active, context)
        )
        encoded = base64.urlsafe_b64encode(nonce + sealed).rstrip(b"=").decode("ascii")
        return f"{_VERSION}:{self._active}:{encoded}"

    def decrypt(self, token: str, *, context: str) -> str:
        """Decrypt a token made by ``encrypt`` with the same ``context``; raises ``DecryptionError``."""
        version, key_id, blob = _split_token(token)
        if version != _VERSION:
            raise DecryptionError("unsupported ciphertext version")
        aead = self._aeads.get(key_id)
        if aead is None:
            raise DecryptionError(f"ciphertext made with key {key_id!r}, which is not in the ring")
        if len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("ciphertext is truncated")
        try:
            plaintext = aead.decrypt(blob[:_NONCE_BYTES], blob[_NONCE_BYTES:], _associated_data(key_id, context))
        except InvalidTag:
            raise DecryptionError("ciphertext was altered or belongs to another context") from None
        return plaintext.decode("utf-8")

    def needs_reencryption(self, token: str) -> bool:
        """True if ``token`` was made with a key other than the active one (a rotation job rewrites it)."""
        _, key_id, _ = _split_token(token)
        return key_id != self._active

    def blind_index(self, value: str, *, context: str) -> str:
        """Hex HMAC-SHA256 of ``value`` within ``context``; equal inputs give equal indexes.

        Normalise the value first (e.g. the 18-character upper-case ID number) so that spellings of the
        same value meet.
        """
        if not context:
            raise ValueError("a blind index context is required")
        context_bytes = context.encode("utf-8")
        # Length-prefix the context so ("ab", "c") and ("a", "bc") cannot collide.
        message = len(context_bytes).to_bytes(4, "big") + context_bytes + value.encode("utf-8")
        return hmac.new(self._index_key, message, hashlib.sha256).hexdigest()


def _associated_data(key_id: str, context: str) -> bytes:
    if not context:
        # An empty context would let a token move between any two columns that forgot to set one.
        raise ValueError("an encryption context is required")
    return f"{_VERSION}\x00{key_id}\x00{context}".encode()


def _split_token(token: str) -> tuple[str, str, bytes]:
    parts = token.split(":")
    if len(parts) != 3 or not _BASE64URL.fullmatch(parts[2]):
        raise DecryptionError("not a field ciphertext")
    version, key_id, encoded = parts
    try:
        blob = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))
    except (binascii.Error, ValueError):
        raise DecryptionError("not a field ciphertext") from None
    # Base64 has spare bits in its last character; insist on the one canonical spelling of the bytes.
    if base64.urlsafe_b64encode(blob).rstrip(b"=").decode("ascii") != encoded:
        raise DecryptionError("not a field ciphertext")
    return version, key_id, blob


def _decode_key(key_id: str, encoded: str) -> bytes:
    # Accept standard and URL-safe alphabets: people paste keys from different tools.
    try:
        key = base64.b64decode(encoded.translate(str.maketrans("-_", "+/")), validate=True)
    except (binascii.Error, ValueError):
        raise KeyConfigError(f"key {key_id!r} is not valid base64") from None
    if len(key) != _KEY_BYTES:
        raise KeyConfigError(f"key {key_id!r} must decode to {_KEY_BYTES} bytes, not {len(key)}")
    return key
