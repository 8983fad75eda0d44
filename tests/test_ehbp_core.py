"""flask_hybrid.core.ehbp: format H framing, EHBP's vectors, and tinfoil-ehbp in-process.

tinfoil-ehbp (the published Python client) is used as a real third party: its client-side
functions seal requests our RequestOpener must open, open the answers our ResponseSealer seals,
and seal answers our client-side ResponseOpener must open.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import ehbp as tinfoil
import pytest

from flask_hybrid.core import ehbp, hpke
from flask_hybrid.errors import (
    ERRORS,
    InvalidPayload,
    KeyConfigMismatch,
    PayloadTooLarge,
    error_body,
    refusal_headers,
)

VECTORS = Path(__file__).resolve().parent / "vectors" / "ehbp"
MAX_BODY = 1024 * 1024


def load(name: str) -> Any:
    return json.loads((VECTORS / f"{name}.json").read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def server_key() -> hpke.HpkePrivateKey:
    return hpke.HpkePrivateKey.generate()


def seal_request(key: hpke.HpkePrivateKey, *parts: bytes) -> tuple[ehbp.RequestSealer, bytes]:
    sealer = ehbp.RequestSealer(key.public_bytes)
    return sealer, b"".join(sealer.seal(part) for part in parts)


def open_all(opener: ehbp.RequestOpener, wire: bytes, step: int | None = None) -> bytes:
    step = step or len(wire) or 1
    plaintexts: list[bytes] = []
    for start in range(0, len(wire), step):
        plaintexts += opener.feed(memoryview(wire)[start : start + step])
    opener.finish()
    return b"".join(plaintexts)


# --- EHBP's own vectors ----------------------------------------------------------------------
def test_derive_vector() -> None:
    vector = load("derive")
    key, base_nonce = ehbp.derive_response_keys(
        bytes.fromhex(vector["exportedSecret"]),
        bytes.fromhex(vector["requestEnc"]),
        bytes.fromhex(vector["responseNonce"]),
    )
    assert key.hex() == vector["derivedKey"]
    assert base_nonce.hex() == vector["derivedNonceBase"]


def test_response_decryption_vector() -> None:
    vector = load("response-decryption")
    secret, enc = bytes.fromhex(vector["exportedSecret"]), bytes.fromhex(vector["requestEnc"])
    opener = ehbp.ResponseOpener(secret, enc, vector["responseNonce"])
    body = bytes.fromhex(vector["encryptedResponse"])
    assert b"".join(opener.feed(body)) == bytes.fromhex(vector["plaintext"])
    opener.finish()
    # and our sealer, given the same nonce, writes exactly those bytes
    sealer = ehbp.ResponseSealer(secret, enc, response_nonce=bytes.fromhex(vector["responseNonce"]))
    assert sealer.nonce_header == vector["responseNonce"]
    assert sealer.seal(bytes.fromhex(vector["plaintext"])) == body


def test_recovery_token_vector_is_our_response_key_input() -> None:
    vector = load("session-recovery-token")
    token = tinfoil.SessionRecoveryToken.from_dict(vector)
    nonce = bytes(range(32))
    sealer = ehbp.ResponseSealer(token.exported_secret, token.request_enc, response_nonce=nonce)
    assert token.decrypt_response_body(nonce, sealer.seal(b"recovered")) == b"recovered"


# --- round trips between our halves ----------------------------------------------------------
@pytest.mark.parametrize("step", [1, 3, 4, 5, 17, 4096, None], ids=lambda s: f"step-{s}")
def test_round_trip_any_split(server_key: hpke.HpkePrivateKey, step: int | None) -> None:
    body = bytes(range(256)) * 300  # 76 800 bytes: two frames
    sealer, wire = seal_request(server_key, body[:10], body[10:])
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    assert open_all(opener, wire, step) == body
    assert opener.key_index == 0
    response = opener.response_sealer()
    assert (
        len(response.nonce_header) == 64 and response.nonce_header == response.nonce_header.lower()
    )
    answer = response.seal(b"first") + response.seal(b"") + response.seal(b"x" * 70_000)
    assert response.frames_sealed == 3
    client = sealer.response_opener(response.nonce_header)
    assert b"".join(client.feed(answer)) == b"first" + b"x" * 70_000
    client.finish()


def test_frames_are_released_as_they_authenticate(server_key: hpke.HpkePrivateKey) -> None:
    sealer, wire = seal_request(server_key, b"a" * ehbp.FRAME_SIZE, b"b" * 10)
    first_len = 4 + ehbp.FRAME_SIZE + 16
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    assert opener.feed(wire[: first_len - 1]) == []  # not yet whole: nothing
    assert opener.feed(wire[first_len - 1 : first_len + 5]) == [b"a" * ehbp.FRAME_SIZE]
    assert opener.feed(wire[first_len + 5 :]) == [b"b" * 10]
    opener.finish()


def test_zero_length_frames_are_ignored(server_key: hpke.HpkePrivateKey) -> None:
    sealer, wire = seal_request(server_key, b"one", b"two")
    cut = 4 + 3 + 16
    wire = b"\0\0\0\0" + wire[:cut] + b"\0\0\0\0" * 3 + wire[cut:]
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    assert open_all(opener, wire, 2) == b"onetwo"


# --- refusals ----------------------------------------------------------------------------------
def test_tampered_frame_releases_nothing(server_key: hpke.HpkePrivateKey) -> None:
    sealer, wire = seal_request(server_key, b"good", b"evil")
    cut = 4 + 4 + 16
    tampered = wire[:-1] + bytes([wire[-1] ^ 1])
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    assert opener.feed(tampered[:cut]) == [b"good"]
    with pytest.raises(InvalidPayload) as refused:
        opener.feed(tampered[cut:])
    assert refused.value.reason == "ehbp_tag_mismatch"
    with pytest.raises(InvalidPayload):  # the stream stays refused
        opener.feed(b"")
    with pytest.raises(InvalidPayload):
        opener.finish()
    # The first frame proved the key: the refusal can be sealed to it (EHBP §5.1).
    assert len(opener.response_sealer().nonce_header) == 64
    unproved = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    with pytest.raises(KeyConfigMismatch):  # a first frame that no key opens
        unproved.feed(tampered[:4] + bytes([tampered[4] ^ 1]) + tampered[5:cut])
    with pytest.raises(RuntimeError):  # nothing opened: nothing to answer sealed
        unproved.response_sealer()


def test_reordered_frames_are_refused(server_key: hpke.HpkePrivateKey) -> None:
    sealer = ehbp.RequestSealer(server_key.public_bytes)
    first, second = sealer.seal(b"one"), sealer.seal(b"two")
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    assert opener.feed(first) == [b"one"]
    with pytest.raises(InvalidPayload):  # a frame sealed again at the same index: refused
        opener.feed(first)
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    with pytest.raises(KeyConfigMismatch):  # the second frame first opens under no key
        opener.feed(second)


def test_first_frame_under_no_key_is_key_config_mismatch(server_key: hpke.HpkePrivateKey) -> None:
    stale = hpke.HpkePrivateKey.generate()
    sealer, wire = seal_request(stale, b"hello")
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    with pytest.raises(KeyConfigMismatch):
        opener.feed(wire)
    assert KeyConfigMismatch.code == 422


def test_rotation_old_key_still_opens(server_key: hpke.HpkePrivateKey) -> None:
    current = hpke.HpkePrivateKey.generate()
    sealer, wire = seal_request(server_key, b"sealed to the previous key")
    opener = ehbp.RequestOpener([current, server_key], sealer.header_value, max_body=MAX_BODY)
    assert open_all(opener, wire) == b"sealed to the previous key"
    assert opener.key_index == 1
    client = sealer.response_opener(opener.response_sealer().nonce_header)
    assert client.feed(b"") == []


@pytest.mark.parametrize(
    "header",
    [
        pytest.param(None, id="missing"),
        pytest.param("", id="empty"),
        pytest.param("00" * 31, id="short"),
        pytest.param("00" * 33, id="long"),
        pytest.param("zz" * 32, id="not-hex"),
        pytest.param("0x" + "00" * 31, id="prefixed"),
        pytest.param("00" * 16 + " " + "00" * 16, id="inner-space"),
        pytest.param("00" * 32, id="low-order-point"),
    ],
)
def test_malformed_encapsulated_key_is_invalid_payload(
    server_key: hpke.HpkePrivateKey, header: str | None
) -> None:
    with pytest.raises(InvalidPayload):
        ehbp.RequestOpener([server_key], header, max_body=MAX_BODY)


def test_uppercase_encapsulated_key_is_accepted(server_key: hpke.HpkePrivateKey) -> None:
    sealer, wire = seal_request(server_key, b"x")
    opener = ehbp.RequestOpener([server_key], sealer.header_value.upper(), max_body=MAX_BODY)
    assert open_all(opener, wire) == b"x"


@pytest.mark.parametrize("cut", [1, 3, 4, 5, 20], ids=lambda c: f"cut-{c}")
def test_partial_frame_at_the_end_is_refused(server_key: hpke.HpkePrivateKey, cut: int) -> None:
    sealer, wire = seal_request(server_key, b"complete", b"partial frame")
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    whole = 4 + 8 + 16
    assert opener.feed(wire[: whole + cut]) == [b"complete"]
    with pytest.raises(InvalidPayload) as refused:
        opener.finish()
    assert refused.value.reason == "ehbp_truncated"


def test_body_without_frames_is_refused(server_key: hpke.HpkePrivateKey) -> None:
    sealer = ehbp.RequestSealer(server_key.public_bytes)
    for wire in (b"", b"\0\0\0\0"):
        opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
        opener.feed(wire)
        with pytest.raises(InvalidPayload) as refused:
            opener.finish()
        assert refused.value.reason == "ehbp_no_frame"


@pytest.mark.parametrize("length", [MAX_BODY + 17, 2**32 - 1], ids=["just-over", "u32-max"])
def test_hostile_frame_length_refused_before_buffering(
    server_key: hpke.HpkePrivateKey, length: int
) -> None:
    sealer = ehbp.RequestSealer(server_key.public_bytes)
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    with pytest.raises(PayloadTooLarge):
        opener.feed(struct.pack(">I", length))  # the prefix alone is enough


def test_one_frame_as_large_as_the_body_is_accepted(server_key: hpke.HpkePrivateKey) -> None:
    # the npm client seals the whole body as one frame: max_body + 16 must pass
    sealer = ehbp.RequestSealer(server_key.public_bytes)
    context = sealer._context  # one HPKE seal of the whole body, as npm's ehbp does
    wire = ehbp.frame(context.seal(b"n" * MAX_BODY))
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    assert open_all(opener, wire, 65536) == b"n" * MAX_BODY


def test_plaintext_over_max_body_in_total_is_refused(server_key: hpke.HpkePrivateKey) -> None:
    sealer, wire = seal_request(server_key, b"y" * (MAX_BODY + 1))
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    with pytest.raises(PayloadTooLarge):
        open_all(opener, wire, 65536)


def test_response_opener_refusals(server_key: hpke.HpkePrivateKey) -> None:
    sealer, wire = seal_request(server_key, b"q")
    opener = ehbp.RequestOpener([server_key], sealer.header_value, max_body=MAX_BODY)
    open_all(opener, wire)
    response = opener.response_sealer()
    answer = response.seal(b"answer one") + response.seal(b"answer two")
    for header in (None, "", "00" * 31, "g" * 64):
        with pytest.raises(InvalidPayload):
            sealer.response_opener(header)
    client = sealer.response_opener(response.nonce_header)
    with pytest.raises(InvalidPayload):  # a tampered second frame: only the first comes out
        client.feed(answer[:-1] + bytes([answer[-1] ^ 1]))
    client = sealer.response_opener(response.nonce_header)
    assert client.feed(answer[:-3]) == [b"answer one"]
    with pytest.raises(InvalidPayload):
        client.finish()
    client = sealer.response_opener(response.nonce_header, max_frame=8)
    with pytest.raises(InvalidPayload):
        client.feed(answer)
    other_nonce = ("ff" if response.nonce_header[:2] != "ff" else "00") + response.nonce_header[2:]
    with pytest.raises(InvalidPayload):
        sealer.response_opener(other_nonce).feed(answer)


# --- interop with tinfoil-ehbp's client-side functions -------------------------------------------
def test_tinfoil_parses_our_key_config(server_key: hpke.HpkePrivateKey) -> None:
    config = hpke.KeyConfig(0, server_key.public_bytes).encode()
    identity = tinfoil.ServerIdentity.unmarshal_public_config(config)
    assert identity.public_key_bytes() == server_key.public_bytes
    assert identity.marshal_public_config() == config


@pytest.mark.parametrize("size", [1, 1000, 64 * 1024, 200_000], ids=lambda s: f"{s}B")
def test_tinfoil_request_to_our_server_and_back(server_key: hpke.HpkePrivateKey, size: int) -> None:
    identity = tinfoil.ServerIdentity(server_key.public_bytes)
    body = bytes(i % 251 for i in range(size))
    stream = identity.encrypt_request_stream(iter([body[:7], body[7:]]))
    assert stream is not None
    header = stream.encapsulated_key.hex()
    opener = ehbp.RequestOpener([server_key], header, max_body=MAX_BODY)
    received = b"".join(p for frame in stream.frames for p in opener.feed(frame))  # type: ignore[union-attr]
    opener.finish()
    assert received == body
    response = opener.response_sealer()
    answer = response.seal(b'{"ok":') + response.seal(b"true}")
    decryptor = stream.token.create_response_decryptor(bytes.fromhex(response.nonce_header))
    assert b"".join(decryptor.push(answer)) == b'{"ok":true}'
    decryptor.finish()


def test_tinfoil_bodiless_request_has_no_header(server_key: hpke.HpkePrivateKey) -> None:
    identity = tinfoil.ServerIdentity(server_key.public_bytes)
    assert identity.encrypt_request_stream(iter([b"", b""])) is None
    assert identity.encrypt_request_body(b"") is None


def test_our_request_opened_by_tinfoil_derivation(server_key: hpke.HpkePrivateKey) -> None:
    # our client against tinfoil's side of the response: tinfoil seals, we open
    sealer, _ = seal_request(server_key, b"ping")
    nonce = bytes(range(100, 132))
    keys = tinfoil.derive_response_keys(sealer.exported_secret, sealer.enc, nonce)
    answer = b"".join(
        tinfoil.frame_chunk(tinfoil.encrypt_chunk(keys, index, chunk))
        for index, chunk in enumerate([b"pong ", b"from ", b"tinfoil"])
    )
    opener = sealer.response_opener(nonce.hex())
    assert b"".join(opener.feed(answer)) == b"pong from tinfoil"
    opener.finish()


def test_our_derivation_matches_tinfoil() -> None:
    secret, enc, nonce = bytes(range(32)), bytes(range(32, 64)), bytes(range(64, 96))
    theirs = tinfoil.derive_response_keys(secret, enc, nonce)
    assert ehbp.derive_response_keys(secret, enc, nonce) == (theirs.key, theirs.nonce_base)
    for index in (0, 1, 255, 256, 2**32 - 1):
        assert ehbp._chunk_nonce(theirs.nonce_base, index) == tinfoil.compute_nonce(
            theirs.nonce_base, index
        )


# --- the 422 refusal ---------------------------------------------------------------------------
def test_key_config_refusal_is_what_the_clients_look_for() -> None:
    error = KeyConfigMismatch()
    assert ERRORS["key_config_mismatch"] is KeyConfigMismatch
    assert error.code == 422
    headers = dict(refusal_headers(error))
    assert headers["Content-Type"] == "application/problem+json"
    problem = json.loads(error_body(error))
    assert (
        problem["type"] == ehbp.KEY_CONFIG_PROBLEM_TYPE == tinfoil.protocol.KEY_CONFIG_PROBLEM_TYPE
    )
    assert isinstance(problem["title"], str)
    # tinfoil-ehbp's own check turns it into its KeyConfigMismatchError
    from ehbp._http import raise_for_key_config_mismatch
    from httpx import Headers

    with pytest.raises(tinfoil.KeyConfigMismatchError):
        raise_for_key_config_mismatch(422, Headers(headers), error_body(error))


def test_protocol_constants_match_tinfoil() -> None:
    protocol = tinfoil.protocol
    assert ehbp.ENCAPSULATED_KEY_HEADER == protocol.ENCAPSULATED_KEY_HEADER
    assert ehbp.RESPONSE_NONCE_HEADER == protocol.RESPONSE_NONCE_HEADER
    assert ehbp.KEYS_PATH == protocol.KEYS_PATH
    assert ehbp.KEYS_MEDIA_TYPE == protocol.KEYS_MEDIA_TYPE
    assert ehbp.REQUEST_INFO == protocol.HPKE_REQUEST_INFO
    assert ehbp.EXPORT_LABEL == protocol.EXPORT_LABEL
    assert ehbp.FRAME_SIZE == tinfoil.identity.REQUEST_FRAME_SIZE


def test_core_imports_no_framework() -> None:
    import sys

    for name in ("flask_hybrid.core.ehbp", "flask_hybrid.core.hpke"):
        module = sys.modules[name]
        source = Path(module.__file__ or "").read_text(encoding="utf-8")
        for framework in ("flask", "werkzeug", "redis", "requests"):
            assert f"import {framework}" not in source and f"from {framework}" not in source
