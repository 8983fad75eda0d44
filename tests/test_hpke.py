"""flask_hybrid.core.hpke: RFC 9180 known answers for format H's suite, keys, key_config."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from flask_hybrid.core import hpke
from flask_hybrid.errors import InvalidPayload

VECTOR = json.loads(
    (
        Path(__file__).resolve().parent / "vectors/hpke/rfc9180-x25519-sha256-aes256gcm-base.json"
    ).read_text(encoding="utf-8")
)


def unhex(value: str) -> bytes:
    return bytes.fromhex(value)


def test_vector_is_the_suite_of_format_h() -> None:
    assert (VECTOR["mode"], VECTOR["kem_id"], VECTOR["kdf_id"], VECTOR["aead_id"]) == (
        0,
        hpke.KEM_ID,
        hpke.KDF_ID,
        hpke.AEAD_ID,
    )


def test_derive_key_pair() -> None:
    recipient = hpke.HpkePrivateKey.derive(unhex(VECTOR["ikmR"]))
    ephemeral = hpke.HpkePrivateKey.derive(unhex(VECTOR["ikmE"]))
    assert recipient.private_bytes == unhex(VECTOR["skRm"])
    assert recipient.public_bytes == unhex(VECTOR["pkRm"])
    assert ephemeral.private_bytes == unhex(VECTOR["skEm"])
    assert ephemeral.public_bytes == unhex(VECTOR["pkEm"])


def _recipient() -> hpke.RecipientContext:
    key = hpke.HpkePrivateKey.from_private_bytes(unhex(VECTOR["skRm"]))
    return hpke.setup_recipient(unhex(VECTOR["enc"]), key, unhex(VECTOR["info"]))


def _sender() -> hpke.SenderContext:
    ephemeral = hpke.HpkePrivateKey.from_private_bytes(unhex(VECTOR["skEm"]))
    return hpke.setup_sender(unhex(VECTOR["pkRm"]), unhex(VECTOR["info"]), ephemeral=ephemeral)


def test_sender_encryptions_and_exports() -> None:
    sender = _sender()
    assert sender.enc == unhex(VECTOR["enc"])
    for encryption in VECTOR["encryptions"]:  # all 257, in sequence
        sealed = sender.seal(unhex(encryption["pt"]), unhex(encryption["aad"]))
        assert sealed == unhex(encryption["ct"])
    for export in VECTOR["exports"]:
        value = sender.export(unhex(export["exporter_context"]), export["L"])
        assert value == unhex(export["exported_value"])


def test_recipient_encryptions_and_exports() -> None:
    recipient = _recipient()
    for export in VECTOR["exports"]:  # export does not move the sequence
        value = recipient.export(unhex(export["exporter_context"]), export["L"])
        assert value == unhex(export["exported_value"])
    for encryption in VECTOR["encryptions"]:
        opened = recipient.open(unhex(encryption["ct"]), unhex(encryption["aad"]))
        assert opened == unhex(encryption["pt"])


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda ct, aad: (ct[:-1] + bytes([ct[-1] ^ 1]), aad), id="tag"),
        pytest.param(lambda ct, aad: (bytes([ct[0] ^ 1]) + ct[1:], aad), id="ciphertext"),
        pytest.param(lambda ct, aad: (ct, aad + b"x"), id="aad"),
        pytest.param(lambda ct, aad: (ct[:15], aad), id="shorter-than-tag"),
    ],
)
def test_tampered_message_is_invalid_payload(change: Any) -> None:
    encryption = VECTOR["encryptions"][0]
    ciphertext, aad = change(unhex(encryption["ct"]), unhex(encryption["aad"]))
    with pytest.raises(InvalidPayload):
        _recipient().open(ciphertext, aad)


def test_out_of_order_message_does_not_open() -> None:
    second = VECTOR["encryptions"][1]
    with pytest.raises(InvalidPayload):
        _recipient().open(unhex(second["ct"]), unhex(second["aad"]))


@pytest.mark.parametrize(
    "enc",
    [
        pytest.param(b"", id="empty"),
        pytest.param(bytes(31), id="short"),
        pytest.param(bytes(33), id="long"),
        pytest.param(bytes(32), id="low-order-zero"),
        pytest.param(b"\x01" + bytes(31), id="low-order-one"),
    ],
)
def test_bad_encapsulated_key_is_invalid_payload(enc: bytes) -> None:
    key = hpke.HpkePrivateKey.generate()
    with pytest.raises(InvalidPayload):
        hpke.setup_recipient(enc, key, b"info")


def test_round_trip_with_fresh_keys() -> None:
    key = hpke.HpkePrivateKey.generate()
    sender = hpke.setup_sender(key.public_bytes, b"ehbp request")
    recipient = hpke.setup_recipient(sender.enc, key, b"ehbp request")
    for message in (b"one", b"", b"three" * 1000):
        assert recipient.open(sender.seal(message)) == message
    assert recipient.export(b"x", 32) == sender.export(b"x", 32)
    other = hpke.setup_recipient(sender.enc, hpke.HpkePrivateKey.generate(), b"ehbp request")
    with pytest.raises(InvalidPayload):
        other.open(sender.seal(b"four"))


def test_pem_round_trip_and_refusals() -> None:
    key = hpke.HpkePrivateKey.generate()
    pem = key.private_pem()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    assert hpke.load_private_key(pem) == key
    assert hpke.load_private_key(pem.decode("ascii")) == key
    other = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(ValueError, match="X25519"):
        hpke.load_private_key(other)
    with pytest.raises(ValueError):
        hpke.load_private_key(b"not a pem")
    with pytest.raises(ValueError):
        hpke.HpkePrivateKey.from_private_bytes(bytes(31))
    assert "private_bytes" not in repr(key)


def test_key_config_bytes() -> None:
    public_key = unhex(VECTOR["pkRm"])
    encoded = hpke.KeyConfig(0, public_key).encode()
    assert encoded == b"\x00\x00\x20" + public_key + b"\x00\x04\x00\x01\x00\x02"
    assert len(encoded) == hpke.KEY_CONFIG_SIZE == 41
    assert hpke.KeyConfig.parse(encoded) == hpke.KeyConfig(0, public_key)
    assert hpke.KeyConfig.parse(b"\x07" + encoded[1:]).key_id == 7


@pytest.mark.parametrize(
    "mutate",
    [
        pytest.param(lambda b: b[:-1], id="truncated"),
        pytest.param(lambda b: b + b"\x00", id="trailing"),
        pytest.param(lambda b: b[:1] + b"\x00\x21" + b[3:], id="kem-x448"),
        pytest.param(
            lambda b: b[:35] + b"\x00\x08" + b[37:] + b"\x00\x01\x00\x01", id="two-suites"
        ),
        pytest.param(lambda b: b[:-2] + b"\x00\x01", id="aes-128"),
        pytest.param(lambda b: b[:-4] + b"\x00\x02\x00\x02", id="sha-384"),
        pytest.param(lambda b: b"", id="empty"),
    ],
)
def test_key_config_refusals(mutate: Any) -> None:
    encoded = hpke.KeyConfig(0, bytes(range(32))).encode()
    with pytest.raises(InvalidPayload):
        hpke.KeyConfig.parse(mutate(encoded))


def test_key_config_argument_checks() -> None:
    with pytest.raises(ValueError):
        hpke.KeyConfig(256, bytes(32))
    with pytest.raises(ValueError):
        hpke.KeyConfig(0, bytes(31))
