"""The narrow JWE profile of format J: compact serialization, RSA-OAEP-256 or dir, A256GCM.

Written on ``cryptography`` primitives (not a JOSE library) so that the server keeps the CEK and
seals the response under it. Anything outside the profile -- another ``alg`` or ``enc``, ``zip``,
``crit`` -- is refused as :class:`InvalidPayload`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidPayload
from . import aead
from .encoding import (
    Buffer,
    b64url_decode,
    b64url_decoded_size,
    b64url_encode,
    dumps_compact,
    iter_b64decode,
    loads_json_object,
)
from .rsa import PrivateKey, PublicKey, unwrap_oaep, wrap_oaep

ALG_RSA_OAEP_256 = "RSA-OAEP-256"
ALG_DIR = "dir"
ENC_A256GCM = "A256GCM"
MAX_HEADER_SEGMENT = 8192  # a protected header is a few hundred bytes
# The first three segments (header, key, IV) are short, and so is the last (the tag): their
# dots are found in the first and last bytes of the token, so that a large ciphertext is never
# scanned for them. A dot inside the ciphertext fails its decoding (not base64url).
_HEAD = MAX_HEADER_SEGMENT + 4096 + 64
_TAIL = 64


def _segments(view: memoryview) -> tuple[memoryview, ...]:
    head = bytes(view[:_HEAD])
    first = head.find(b".")
    second = head.find(b".", first + 1) if first >= 0 else -1
    third = head.find(b".", second + 1) if second >= 0 else -1
    tail_start = max(0, len(view) - _TAIL)
    last = bytes(view[tail_start:]).rfind(b".")
    last = last + tail_start if last >= 0 else -1
    if third < 0 or last <= third:
        raise InvalidPayload
    return (
        view[:first],
        view[first + 1 : second],
        view[second + 1 : third],
        view[third + 1 : last],
        view[last + 1 :],
    )


@dataclass(frozen=True)
class UnverifiedJWE:
    """A parsed compact JWE whose header and ciphertext are not yet authenticated."""

    protected_segment: str  # the first segment as sent: the AAD
    header: dict[str, Any]
    encrypted_key: bytes = field(repr=False)
    iv: bytes
    ciphertext_b64: Buffer = field(repr=False)  # base64url, checked; decoded as decrypted
    ciphertext_size: int
    tag: bytes


def parse_compact(token: object, *, alg: str = ALG_RSA_OAEP_256) -> UnverifiedJWE:
    """Split and decode a compact JWE, checking the profile (syntax only, no crypto).

    ``token`` is text, or bytes (a view into a request body: the ciphertext is not copied).
    """
    if isinstance(token, str):
        if not token.isascii():
            raise InvalidPayload
        token = token.encode("ascii")
    if not isinstance(token, (bytes, bytearray, memoryview)):
        raise InvalidPayload
    view = memoryview(token)
    protected, encrypted_key_segment, iv_segment, ciphertext_segment, tag_segment = _segments(view)
    if len(protected) > MAX_HEADER_SEGMENT:
        raise InvalidPayload
    header_json = b64url_decode(protected)  # checks the alphabet: the segment is ASCII
    protected_segment = bytes(protected).decode("ascii")
    header = loads_json_object(header_json)
    if header.get("alg") != alg or header.get("enc") != ENC_A256GCM:
        raise InvalidPayload
    if "zip" in header or "crit" in header:
        raise InvalidPayload
    encrypted_key = b64url_decode(encrypted_key_segment)
    if (alg == ALG_DIR) != (encrypted_key == b""):
        raise InvalidPayload
    iv, tag = b64url_decode(iv_segment), b64url_decode(tag_segment)
    if len(iv) != aead.IV_SIZE or len(tag) != aead.TAG_SIZE:
        raise InvalidPayload
    return UnverifiedJWE(
        protected_segment,
        header,
        encrypted_key,
        iv,
        ciphertext_segment,
        b64url_decoded_size(ciphertext_segment),
        tag,
    )


def unwrap_key(jwe: UnverifiedJWE, key: PrivateKey) -> bytes:
    """The CEK of an RSA-OAEP-256 JWE; not yet authenticated (the tag check does that)."""
    return unwrap_oaep(key, jwe.encrypted_key)


def decrypt_to_buffer(jwe: UnverifiedJWE, cek: bytes) -> bytearray:
    """Authenticate header and ciphertext under ``cek``; the plaintext in a new buffer."""
    return aead.open_stream(
        cek,
        jwe.iv,
        iter_b64decode(jwe.ciphertext_b64, urlsafe=True),
        jwe.ciphertext_size,
        jwe.tag,
        aad=jwe.protected_segment.encode("ascii"),
    )


def decrypt(jwe: UnverifiedJWE, cek: bytes) -> bytes:
    """Authenticate header and ciphertext under ``cek`` and return the plaintext."""
    return bytes(decrypt_to_buffer(jwe, cek))


def encrypt_dir_parts(
    header: dict[str, Any], plaintext: bytes, cek: bytes, *, iv: bytes | None = None
) -> list[bytes]:
    """A ``dir`` compact JWE as pieces that join into it (what a server writes out as they
    are, so that a large answer is never held twice); see :func:`encrypt`."""
    if header.get("alg") != ALG_DIR or header.get("enc") != ENC_A256GCM:
        raise ValueError("the header must have alg 'dir' and enc 'A256GCM'")
    protected_segment = b64url_encode(dumps_compact(header)).encode("ascii")
    iv = aead.new_iv() if iv is None else iv
    pieces, tag = aead.seal_to_base64(cek, plaintext, iv=iv, aad=protected_segment, urlsafe=True)
    head = b".".join((protected_segment, b"", b64url_encode(iv).encode("ascii"), b""))
    return [head, *pieces, b"." + b64url_encode(tag).encode("ascii")]


def encrypt(
    header: dict[str, Any],
    plaintext: bytes,
    cek: bytes,
    *,
    public_key: PublicKey | None = None,
    encrypted_key: bytes | None = None,
    iv: bytes | None = None,
) -> str:
    """Build a compact JWE: ``dir`` with neither key argument, else RSA-OAEP-256.

    For RSA-OAEP-256 give ``public_key`` (the CEK is wrapped now) or ``encrypted_key`` (the CEK
    already wrapped, so a client can send one ``ek`` with many requests). ``header`` is
    serialized in the order given and must name the matching ``alg`` and ``enc``.
    """
    if public_key is not None and encrypted_key is None:
        encrypted_key = wrap_oaep(public_key, cek)
    expected_alg = ALG_DIR if encrypted_key is None else ALG_RSA_OAEP_256
    if header.get("alg") != expected_alg or header.get("enc") != ENC_A256GCM:
        raise ValueError(f"the header must have alg {expected_alg!r} and enc 'A256GCM'")
    protected_segment = b64url_encode(dumps_compact(header))
    iv, ciphertext, tag = aead.seal(cek, plaintext, aad=protected_segment.encode("ascii"), iv=iv)
    return ".".join(
        (
            protected_segment,
            b64url_encode(encrypted_key or b""),
            b64url_encode(iv),
            b64url_encode(ciphertext),
            b64url_encode(tag),
        )
    )
