"""Field encryption at rest and blind indexes."""

import base64
import hashlib
import hmac

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from api.crypto import DecryptionError, FieldCipher, KeyConfigError, generate_key
from api.settings import DEV_FIELD_KEYS

K1 = bytes(range(32))
K2 = bytes(range(32, 64))
ID_COLUMN = "child.id_number"
ID_NUMBER = "11010519491231002X"


def _b64(key: bytes) -> str:
    return base64.b64encode(key).decode()


def _ring(config: str, **kwargs: str) -> FieldCipher:
    return FieldCipher.from_config(config, **kwargs)


@pytest.fixture
def cipher() -> FieldCipher:
    return FieldCipher({"k1": K1}, "k1")


def _unpack(token: str) -> tuple[str, str, bytes]:
    version, key_id, encoded = token.split(":")
    return version, key_id, base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4))


def _pack(version: str, key_id: str, blob: bytes) -> str:
    return f"{version}:{key_id}:{base64.urlsafe_b64encode(blob).rstrip(b'=').decode()}"


def test_round_trip(cipher: FieldCipher) -> None:
    token = cipher.encrypt(ID_NUMBER, context=ID_COLUMN)
    assert token.startswith("v1:k1:")
    assert ID_NUMBER not in token
    assert cipher.decrypt(token, context=ID_COLUMN) == ID_NUMBER


def test_non_ascii_and_empty_plaintext_round_trip(cipher: FieldCipher) -> None:
    for plaintext in ("湖南省邵阳市隆回县桃洪镇", ""):
        assert cipher.decrypt(cipher.encrypt(plaintext, context="c"), context="c") == plaintext


def test_the_token_is_aes_gcm_over_nonce_and_ciphertext_with_versioned_associated_data(
    cipher: FieldCipher,
) -> None:
    version, key_id, blob = _unpack(cipher.encrypt(ID_NUMBER, context=ID_COLUMN))
    assert (version, key_id) == ("v1", "k1")
    assert len(blob) == 12 + len(ID_NUMBER) + 16  # 96-bit nonce, ciphertext, 128-bit tag
    opened = AESGCM(K1).decrypt(blob[:12], blob[12:], f"v1\x00k1\x00{ID_COLUMN}".encode())
    assert opened.decode() == ID_NUMBER


def test_each_encryption_uses_a_fresh_nonce(cipher: FieldCipher) -> None:
    tokens = {cipher.encrypt(ID_NUMBER, context=ID_COLUMN) for _ in range(50)}
    assert len(tokens) == 50


def test_a_ciphertext_moved_to_another_column_does_not_decrypt(cipher: FieldCipher) -> None:
    token = cipher.encrypt(ID_NUMBER, context="child.id_number")
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, context="guardian.id_number")


def test_an_empty_context_is_refused(cipher: FieldCipher) -> None:
    with pytest.raises(ValueError):
        cipher.encrypt(ID_NUMBER, context="")


@pytest.mark.parametrize("position", [0, 5, 12, 20, -1])
def test_a_flipped_bit_anywhere_is_detected(cipher: FieldCipher, position: int) -> None:
    version, key_id, blob = _unpack(cipher.encrypt(ID_NUMBER, context=ID_COLUMN))
    tampered = bytearray(blob)
    tampered[position] ^= 0x01
    with pytest.raises(DecryptionError):
        cipher.decrypt(_pack(version, key_id, bytes(tampered)), context=ID_COLUMN)


@pytest.mark.parametrize(
    "token",
    [
        "",
        "11010519491231002X",
        "v1:k1",
        "v1:k1:",
        "v1:k1:AAAA",  # shorter than nonce + tag
        "v1:k1:not base64!",
        "v1:k1:abc:def",
    ],
)
def test_malformed_tokens_raise_decryption_error(cipher: FieldCipher, token: str) -> None:
    with pytest.raises(DecryptionError):
        cipher.decrypt(token, context=ID_COLUMN)


def test_a_non_canonical_base64_spelling_is_refused(cipher: FieldCipher) -> None:
    token = cipher.encrypt(ID_NUMBER, context=ID_COLUMN)
    # 46 bytes encode to 62 characters; the last one carries 4 unused bits that decoders ignore.
    last = token[-1]
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    sibling = alphabet[alphabet.index(last) ^ 0x01]
    with pytest.raises(DecryptionError):
        cipher.decrypt(token[:-1] + sibling, context=ID_COLUMN)


def test_an_unknown_version_or_key_is_refused(cipher: FieldCipher) -> None:
    _, key_id, blob = _unpack(cipher.encrypt(ID_NUMBER, context=ID_COLUMN))
    with pytest.raises(DecryptionError):
        cipher.decrypt(_pack("v2", key_id, blob), context=ID_COLUMN)
    with pytest.raises(DecryptionError):
        cipher.decrypt(_pack("v1", "k9", blob), context=ID_COLUMN)


def test_relabelling_a_token_with_another_key_id_fails() -> None:
    both = FieldCipher({"k1": K1, "k2": K2}, "k1")
    _, _, blob = _unpack(both.encrypt(ID_NUMBER, context=ID_COLUMN))
    with pytest.raises(DecryptionError):
        both.decrypt(_pack("v1", "k2", blob), context=ID_COLUMN)


def test_rotation_old_key_still_decrypts_new_key_encrypts() -> None:
    before = _ring(f"k1:{_b64(K1)}")
    old_token = before.encrypt(ID_NUMBER, context=ID_COLUMN)

    after = _ring(f"k1:{_b64(K1)},k2:{_b64(K2)}")
    assert after.active_key_id == "k2"
    assert after.decrypt(old_token, context=ID_COLUMN) == ID_NUMBER
    new_token = after.encrypt(ID_NUMBER, context=ID_COLUMN)
    assert new_token.startswith("v1:k2:")
    assert after.needs_reencryption(old_token)
    assert not after.needs_reencryption(new_token)

    # Once k1 is retired, what it encrypted is gone; rewrite before removing a key.
    retired = _ring(f"k2:{_b64(K2)}")
    assert retired.decrypt(new_token, context=ID_COLUMN) == ID_NUMBER
    with pytest.raises(DecryptionError):
        retired.decrypt(old_token, context=ID_COLUMN)


def test_a_new_key_can_be_rolled_out_before_it_is_active() -> None:
    staged = _ring(f"k1:{_b64(K1)},k2:{_b64(K2)}", active="k1")
    assert staged.encrypt(ID_NUMBER, context=ID_COLUMN).startswith("v1:k1:")


def test_blind_index_is_stable_hex_and_depends_on_value_context_and_key() -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    index = cipher.blind_index(ID_NUMBER, context=ID_COLUMN)
    assert index == cipher.blind_index(ID_NUMBER, context=ID_COLUMN)
    assert index == FieldCipher({"k1": K1}, "k1").blind_index(ID_NUMBER, context=ID_COLUMN)
    assert len(index) == 64 and int(index, 16) >= 0
    assert index != cipher.blind_index("440524188001010014", context=ID_COLUMN)
    assert index != cipher.blind_index(ID_NUMBER, context="guardian.id_number")
    assert index != FieldCipher({"k1": K2}, "k1").blind_index(ID_NUMBER, context=ID_COLUMN)


def test_blind_index_key_is_derived_not_the_encryption_key_itself() -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    context = ID_COLUMN.encode()
    raw = hmac.new(K1, len(context).to_bytes(4, "big") + context + ID_NUMBER.encode(), hashlib.sha256)
    assert cipher.blind_index(ID_NUMBER, context=ID_COLUMN) != raw.hexdigest()


def test_blind_index_context_cannot_be_shifted_into_the_value() -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    assert cipher.blind_index("bc", context="a") != cipher.blind_index("c", context="ab")


def test_blind_index_survives_rotation_of_the_active_key() -> None:
    before = _ring(f"k1:{_b64(K1)}")
    after = _ring(f"k1:{_b64(K1)},k2:{_b64(K2)}")
    assert after.index_key_id == "k1"
    assert before.blind_index(ID_NUMBER, context=ID_COLUMN) == after.blind_index(ID_NUMBER, context=ID_COLUMN)


def test_generate_key_gives_distinct_32_byte_keys_usable_in_config() -> None:
    first, second = generate_key(), generate_key()
    assert first != second
    assert len(base64.b64decode(first)) == 32
    cipher = _ring(f"main:{first}")
    assert cipher.decrypt(cipher.encrypt("x", context="c"), context="c") == "x"


def test_config_accepts_url_safe_base64_and_spaces() -> None:
    urlsafe = base64.urlsafe_b64encode(bytes([251] * 32)).decode()
    assert "-" in urlsafe or "_" in urlsafe
    assert _ring(f" k1 : {urlsafe} , ").active_key_id == "k1"


def test_the_development_key_in_settings_parses() -> None:
    assert FieldCipher.from_config(DEV_FIELD_KEYS).active_key_id == "dev"


@pytest.mark.parametrize(
    "config",
    [
        "",
        " , ",
        "k1",  # no key
        f"k1:{_b64(K1)[:-4]}",  # 29 bytes
        "k1:not-base64-at-all!",
        f"k1:{_b64(K1)},k1:{_b64(K2)}",  # duplicate id
        f"bad id:{_b64(K1)}",
    ],
)
def test_unusable_key_configs_are_refused(config: str) -> None:
    with pytest.raises(KeyConfigError):
        FieldCipher.from_config(config)


def test_an_active_or_index_key_outside_the_ring_is_refused() -> None:
    with pytest.raises(KeyConfigError):
        _ring(f"k1:{_b64(K1)}", active="k2")
    with pytest.raises(KeyConfigError):
        _ring(f"k1:{_b64(K1)}", index_key_id="k2")


def test_key_material_never_shows_in_repr() -> None:
    cipher = FieldCipher({"k1": K1}, "k1")
    assert _b64(K1) not in repr(cipher)
    assert K1.hex() not in repr(cipher)
    assert "k1" in repr(cipher)


def test_errors_do_not_echo_the_plaintext_or_token(cipher: FieldCipher) -> None:
    token = cipher.encrypt(ID_NUMBER, context=ID_COLUMN)
    with pytest.raises(DecryptionError) as caught:
        cipher.decrypt(token, context="elsewhere")
    assert ID_NUMBER not in str(caught.value)
    assert token.split(":")[2] not in str(caught.value)
