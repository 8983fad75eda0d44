"""Parse, open and seal the three wire formats of PROTOCOL.md (S, E and J).

Everything that reads untrusted input raises the bare :class:`InvalidPayload` for any defect;
the two exceptions are a ``kid`` that names no key (:class:`UnknownKey`) and a J request whose
well-formed binding does not fit (:class:`ReplayedRequest`), as the error table says. Data that
is not yet authenticated lives in ``Unverified*`` objects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidPayload, ReplayedRequest, UnknownKey
from . import aead, jwe
from .encoding import (
    NOT_PARSED,
    Buffer,
    JsonObjectText,
    b64_decoded_size,
    b64decode,
    b64encode,
    b64url_decode,
    check_json_text,
    dumps_compact,
    iter_b64decode,
    loads_json,
)
from .keyring import KeyRing
from .rsa import PKCS1V15, PublicKey, unwrap_cek_or_random, wrap_oaep

#: A request body as :func:`parse_session_envelope` and :func:`parse_envelope` take it: parsed
#: JSON (a dict), or the body's text read in place (what the middleware passes).
EnvelopeBody = dict | JsonObjectText

JSON_CONTENT_TYPE = "application/json"
REQUEST_JSON_CONTENT_TYPE = "application/json; charset=utf-8"
DEVICE_ID = re.compile(r"[\x21-\x7e]{1,128}")
MIN_JTI_BYTES = 16
_HTM = re.compile(r"[\x21-\x7e]{1,32}")
_HTU = re.compile(r"/[\x21-\x7e]{0,8191}")
_KID_MAX = 256


def _string_fields(body: object, names: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise InvalidPayload
    for name in names:
        if not isinstance(body.get(name), str):
            raise InvalidPayload
    return body


def require_json(plaintext: bytes | bytearray) -> Any:
    """Refuse a plaintext that is not strict UTF-8 JSON where JSON is declared.

    Returns its value when the check built it (small documents), else ``NOT_PARSED``: a large
    document is checked without building it, so memory stays a small fraction of it.
    """
    return check_json_text(plaintext)


def _b64_exact(text: object, size: int) -> bytes:
    raw = b64decode(text)
    if len(raw) != size:
        raise InvalidPayload
    return raw


def _string_member(body: object, name: str) -> Any:
    """A string member of a request body (``str`` or UTF-8 bytes); ``None`` when absent."""
    if isinstance(body, JsonObjectText):
        return body.string(name)
    if not isinstance(body, dict):
        raise InvalidPayload
    value = body.get(name)
    if value is not None and not isinstance(value, str):
        raise InvalidPayload
    return value


def _required_string(body: object, name: str) -> Any:
    value = _string_member(body, name)
    if value is None:
        raise InvalidPayload
    return value


def _text_member(body: object, name: str) -> str | None:
    value = _string_member(body, name)
    if value is None or isinstance(value, str):
        return value
    return bytes(value).decode("utf-8", "surrogatepass")


def _first_bytes(chunks: Iterable[bytes], size: int) -> Iterator[bytes]:
    """The first ``size`` bytes of a stream of chunks (format E's ciphertext before its tag)."""
    remaining = size
    for chunk in chunks:
        if remaining <= 0:
            return
        yield chunk if len(chunk) <= remaining else chunk[:remaining]
        remaining -= len(chunk)


# --- format S ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class UnverifiedSessionEnvelope:
    """A format S request body: the CEK wrapped to the session key, then AES-GCM parts.

    The ciphertext stays base64 text, checked canonical (often a view into the request
    body), and is decoded a chunk at a time as it is decrypted.
    """

    wrapped_key: bytes = field(repr=False)
    iv: bytes
    ciphertext_b64: Buffer | str = field(repr=False)
    ciphertext_size: int
    tag: bytes


def parse_session_envelope(body: EnvelopeBody) -> UnverifiedSessionEnvelope:
    wrapped_key, ciphertext, iv, tag = (
        _required_string(body, name)
        for name in ("encryptedAesKey", "encryptedData", "iv", "authTag")
    )
    return UnverifiedSessionEnvelope(
        wrapped_key=b64decode(wrapped_key),
        iv=_b64_exact(iv, aead.IV_SIZE),
        ciphertext_b64=ciphertext,
        ciphertext_size=b64_decoded_size(ciphertext),
        tag=_b64_exact(tag, aead.TAG_SIZE),
    )


def decrypt_session_envelope(envelope: UnverifiedSessionEnvelope, cek: bytes) -> bytearray:
    """Authenticate and decrypt a format S body; the caller then checks it is JSON.

    Split from :func:`open_session_envelope` so that a server can let go of the request body
    before the JSON check runs.
    """
    chunks = iter_b64decode(_buffer(envelope.ciphertext_b64))
    return aead.open_stream(cek, envelope.iv, chunks, envelope.ciphertext_size, envelope.tag)


def open_session_envelope(envelope: UnverifiedSessionEnvelope, cek: bytes) -> bytes:
    """Authenticate and decrypt a format S body under its (already unwrapped) CEK."""
    plaintext = decrypt_session_envelope(envelope, cek)
    require_json(plaintext)
    return bytes(plaintext)


def _buffer(text: Buffer | str) -> Buffer:
    return text.encode("ascii") if isinstance(text, str) else text


def seal_session_request(
    cek: bytes, wrapped_key: bytes, plaintext: bytes, *, iv: bytes | None = None
) -> bytes:
    """A format S request body; ``wrapped_key`` is the CEK wrapped to the session key."""
    iv, ciphertext, tag = aead.seal(cek, plaintext, iv=iv)
    return dumps_compact(
        {
            "encryptedAesKey": b64encode(wrapped_key),
            "encryptedData": b64encode(ciphertext),
            "iv": b64encode(iv),
            "authTag": b64encode(tag),
        }
    )


def parse_wrapped_key_header(value: object) -> bytes:
    """``X-Encrypted-Aes-Key``: b64 of the wrapped CEK, for bodiless S requests."""
    return b64decode(value)


def seal_session_parts(cek: bytes, plaintext: bytes, *, iv: bytes | None = None) -> list[bytes]:
    """A format S response body as pieces that join into it (see :func:`seal_session`)."""
    iv = aead.new_iv() if iv is None else iv
    pieces, tag = aead.seal_to_base64(cek, plaintext, iv=iv)
    tail = f'","iv":"{b64encode(iv)}","authTag":"{b64encode(tag)}"}}'
    return [b'{"encryptedData":"', *pieces, tail.encode("ascii")]


def seal_session(cek: bytes, plaintext: bytes, *, iv: bytes | None = None) -> bytes:
    """A format S response body (also the S handshake response)."""
    return b"".join(seal_session_parts(cek, plaintext, iv=iv))


def open_session_response(body: bytes, cek: bytes) -> bytes:
    """Client side of :func:`seal_session`."""
    fields = _string_fields(loads_json(body), ("encryptedData", "iv", "authTag"))
    return aead.open_(
        cek,
        _b64_exact(fields["iv"], aead.IV_SIZE),
        b64decode(fields["encryptedData"]),
        _b64_exact(fields["authTag"], aead.TAG_SIZE),
    )


def parse_handshake(body: object) -> tuple[bytes, str]:
    """The S-form handshake ``{"aesKey", "deviceId"}`` → ``(cek, device_id)``."""
    fields = _string_fields(body, ("aesKey", "deviceId"))
    return _b64_exact(fields["aesKey"], aead.CEK_SIZE), parse_device_id(fields["deviceId"])


def parse_device_id(value: object) -> str:
    """1 to 128 printable ASCII characters without spaces."""
    if not isinstance(value, str) or not DEVICE_ID.fullmatch(value):
        raise InvalidPayload
    return value


# --- format E ----------------------------------------------------------------------------------
ENVELOPE_ALG_PKCS1 = "RSA+AES-GCM"  # what JSEncrypt clients send
ENVELOPE_ALG_OAEP = "RSA-OAEP-256+AES-GCM"
ENVELOPE_ALGS = {ENVELOPE_ALG_PKCS1: False, ENVELOPE_ALG_OAEP: True}  # alg → uses OAEP


@dataclass(frozen=True)
class UnverifiedEnvelope:
    """A format E request body (JSEncrypt-compatible envelope).

    ``ct`` is ciphertext || tag in base64: the tag is decoded from its last characters and the
    rest stays text (checked canonical), decoded a chunk at a time as it is decrypted.
    """

    oaep: bool
    wrapped_key: bytes = field(repr=False)
    kid: str | None
    iv: bytes
    sealed_b64: Buffer | str = field(repr=False)
    ciphertext_size: int
    tag: bytes


def parse_envelope(body: EnvelopeBody) -> UnverifiedEnvelope:
    alg = _text_member(body, "alg")
    wrapped_key, iv, sealed = (_required_string(body, name) for name in ("ek", "iv", "ct"))
    if alg not in ENVELOPE_ALGS:
        raise InvalidPayload
    kid = _text_member(body, "kid")
    if kid is not None and not 0 < len(kid) <= _KID_MAX:
        raise InvalidPayload
    sealed_size = b64_decoded_size(sealed)
    if sealed_size < aead.TAG_SIZE:
        raise InvalidPayload
    tail = _buffer(sealed)[-24:]  # 24 characters decode to at least the 16-byte tag
    return UnverifiedEnvelope(
        oaep=ENVELOPE_ALGS[alg],
        wrapped_key=b64decode(wrapped_key),
        kid=kid,
        iv=_b64_exact(iv, aead.IV_SIZE),
        sealed_b64=sealed,
        ciphertext_size=sealed_size - aead.TAG_SIZE,
        tag=b64decode(tail)[-aead.TAG_SIZE :],
    )


def decrypt_envelope(envelope: UnverifiedEnvelope, keyring: KeyRing) -> tuple[bytes, bytearray]:
    """Find the CEK and decrypt a format E body; the caller then checks it is JSON.

    With ``kid`` only that identity key is tried, otherwise the current key first, then the
    others. Each unwrap yields a key (a random one when ``ek`` is not valid for that key), and
    only the AES-GCM tag decides: there is no padding oracle.
    """
    if envelope.kid is not None:
        identity_key = keyring.get(envelope.kid)
        if identity_key is None:
            raise UnknownKey("kid_unknown")
        candidates = [identity_key]
    else:
        candidates = list(keyring)
    for identity_key in candidates:
        cek = unwrap_cek_or_random(
            identity_key.private_key, envelope.wrapped_key, oaep=envelope.oaep
        )
        chunks = _first_bytes(
            iter_b64decode(_buffer(envelope.sealed_b64)), envelope.ciphertext_size
        )
        try:
            plaintext = aead.open_stream(
                cek, envelope.iv, chunks, envelope.ciphertext_size, envelope.tag
            )
        except InvalidPayload:
            continue
        return cek, plaintext
    raise InvalidPayload("tag_mismatch")  # no key opened it


def open_envelope(envelope: UnverifiedEnvelope, keyring: KeyRing) -> tuple[bytes, bytes]:
    """Find the CEK and open a format E body (JSON checked); returns ``(cek, plaintext)``."""
    cek, plaintext = decrypt_envelope(envelope, keyring)
    require_json(plaintext)
    return cek, bytes(plaintext)


def wrap_envelope_key(public_key: PublicKey, cek: bytes, *, padding: str) -> tuple[str, bytes]:
    """Format E ``(alg, ek)``: OAEP-256 over the raw CEK, or PKCS#1 v1.5 over b64(CEK) text."""
    if padding == "oaep":
        return ENVELOPE_ALG_OAEP, wrap_oaep(public_key, cek)
    return ENVELOPE_ALG_PKCS1, public_key.encrypt(b64encode(cek).encode("ascii"), PKCS1V15)


def seal_envelope_request(
    alg: str,
    wrapped_key: bytes,
    cek: bytes,
    plaintext: bytes,
    *,
    kid: str | None = None,
    iv: bytes | None = None,
) -> bytes:
    """A format E request body ``{"alg", "ek", "iv", "ct"[, "kid"]}``."""
    iv, ciphertext, tag = aead.seal(cek, plaintext, iv=iv)
    envelope = {
        "alg": alg,
        "ek": b64encode(wrapped_key),
        "iv": b64encode(iv),
        "ct": b64encode(ciphertext + tag),
    }
    if kid is not None:
        envelope["kid"] = kid
    return dumps_compact(envelope)


def seal_envelope_response_parts(
    cek: bytes, plaintext: bytes, *, iv: bytes | None = None
) -> list[bytes]:
    """The sealed answer to a format E request as pieces that join into it."""
    iv = aead.new_iv() if iv is None else iv
    pieces, _ = aead.seal_to_base64(cek, plaintext, iv=iv, tag_inline=True)
    head = f'{{"alg":"AES-GCM","iv":"{b64encode(iv)}","ct":"'
    return [head.encode("ascii"), *pieces, b'"}']


def seal_envelope_response(cek: bytes, plaintext: bytes, *, iv: bytes | None = None) -> bytes:
    """The ``X-Encrypt-Response: true`` answer to a format E request."""
    return b"".join(seal_envelope_response_parts(cek, plaintext, iv=iv))


def open_envelope_response(body: bytes, cek: bytes) -> bytes:
    """Client side of :func:`seal_envelope_response`."""
    fields = _string_fields(loads_json(body), ("alg", "iv", "ct"))
    sealed = b64decode(fields["ct"])
    if fields["alg"] != "AES-GCM" or len(sealed) < aead.TAG_SIZE:
        raise InvalidPayload
    return aead.open_(
        cek,
        _b64_exact(fields["iv"], aead.IV_SIZE),
        sealed[: -aead.TAG_SIZE],
        sealed[-aead.TAG_SIZE :],
    )


# --- format J ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class RequestBinding:
    """The claims of a J protected header that bind it to one request at one time."""

    kid: str
    htm: str
    htu: str
    iat: int
    jti: str
    content_type: str


def content_type_from_cty(cty: object) -> str:
    """The request content type a J ``cty`` names; absent or ``json`` means JSON."""
    if cty is None or cty in ("json", JSON_CONTENT_TYPE):
        return REQUEST_JSON_CONTENT_TYPE
    if not isinstance(cty, str) or not 0 < len(cty) <= 255 or not cty.isprintable():
        raise InvalidPayload
    return cty if "/" in cty else f"application/{cty}"  # RFC 7515 §4.1.10


def read_request_binding(header: dict[str, Any]) -> RequestBinding:
    """Check that a J header has well-formed ``kid``/``htm``/``htu``/``iat``/``jti``.

    Missing or malformed is :class:`InvalidPayload`; whether they fit this request is
    :func:`check_request_binding`'s job, after decryption.
    """
    kid, htm, htu, iat, jti = (header.get(name) for name in ("kid", "htm", "htu", "iat", "jti"))
    if not isinstance(kid, str) or not 0 < len(kid) <= _KID_MAX:
        raise InvalidPayload
    if not isinstance(htm, str) or not _HTM.fullmatch(htm):
        raise InvalidPayload
    if not isinstance(htu, str) or not _HTU.fullmatch(htu):
        raise InvalidPayload
    if isinstance(iat, bool) or not isinstance(iat, int) or iat < 0:
        raise InvalidPayload
    if not isinstance(jti, str) or len(b64url_decode(jti)) < MIN_JTI_BYTES:
        raise InvalidPayload
    typ = header.get("typ")
    if typ is not None and not isinstance(typ, str):
        raise InvalidPayload
    return RequestBinding(kid, htm, htu, iat, jti, content_type_from_cty(header.get("cty")))


def check_request_binding(
    binding: RequestBinding, *, method: str, target: str, now: float, window: int
) -> None:
    """Refuse (409) a J request made for another method, target or time."""
    if binding.htm != method:
        raise ReplayedRequest("htm_mismatch")
    if binding.htu != target:
        raise ReplayedRequest("htu_mismatch")
    if abs(now - binding.iat) > window:
        raise ReplayedRequest("iat_out_of_window")


def decrypt_request(token: jwe.UnverifiedJWE, cek: bytes, *, allow_empty: bool) -> bytearray:
    """Authenticate and decrypt a J request; the caller then runs :func:`check_request_plaintext`.

    Split from :func:`open_request` so that a server can let go of the request body before
    the JSON check runs.
    """
    plaintext = jwe.decrypt_to_buffer(token, cek)
    if not plaintext and not allow_empty:
        raise InvalidPayload
    return plaintext


def check_request_plaintext(header: dict[str, Any], plaintext: bytes | bytearray) -> Any:
    """JSON is required of a non-empty J plaintext unless ``cty`` names another type; its value
    when the check built it, else ``NOT_PARSED``."""
    if plaintext and content_type_from_cty(header.get("cty")) == REQUEST_JSON_CONTENT_TYPE:
        return require_json(plaintext)
    return NOT_PARSED


def open_request(token: jwe.UnverifiedJWE, cek: bytes, *, allow_empty: bool) -> bytes:
    """Authenticate and decrypt a J request; JSON is required unless ``cty`` says otherwise."""
    plaintext = decrypt_request(token, cek, allow_empty=allow_empty)
    check_request_plaintext(token.header, plaintext)
    return bytes(plaintext)


def _response_header(request_jti: str, status: int, content_type: str | None) -> dict[str, Any]:
    header: dict[str, Any] = {
        "alg": jwe.ALG_DIR,
        "enc": jwe.ENC_A256GCM,
        "req": request_jti,
        "status": status,
    }
    if content_type is not None:
        header["cty"] = content_type
    return header


def seal_response_parts(
    cek: bytes,
    plaintext: bytes,
    *,
    request_jti: str,
    status: int,
    content_type: str | None,
    iv: bytes | None = None,
) -> list[bytes]:
    """:func:`seal_response` as pieces that join into it (what a server writes out)."""
    header = _response_header(request_jti, status, content_type)
    return jwe.encrypt_dir_parts(header, plaintext, cek, iv=iv)


def seal_response(
    cek: bytes,
    plaintext: bytes,
    *,
    request_jti: str,
    status: int,
    content_type: str | None,
    iv: bytes | None = None,
) -> str:
    """The ``dir`` JWE answer to a J request, naming the request, status and content type."""
    parts = seal_response_parts(
        cek, plaintext, request_jti=request_jti, status=status, content_type=content_type, iv=iv
    )
    return b"".join(parts).decode("ascii")


def open_response(token: str, cek: bytes, *, request_jti: str) -> tuple[dict[str, Any], bytes]:
    """Client side of :func:`seal_response`; returns ``(header, plaintext)``."""
    parsed = jwe.parse_compact(token, alg=jwe.ALG_DIR)
    plaintext = jwe.decrypt(parsed, cek)
    if parsed.header.get("req") != request_jti:
        raise InvalidPayload
    return parsed.header, plaintext
