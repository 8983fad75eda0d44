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
from .encoding import b64url_decode, b64url_encode, dumps_compact, loads_json_object
from .rsa import PrivateKey, PublicKey, unwrap_oaep, wrap_oaep

ALG_RSA_OAEP_256 = "RSA-OAEP-256"
ALG_DIR = "dir"
ENC_A256GCM = "A256GCM"
MAX_HEADER_SEGMENT = 8192  # a protected header is a few hundred bytes


@dataclass(frozen=True)
class UnverifiedJWE:
    """A parsed compact JWE whose header and ciphertext are not yet authenticated."""

    protected_segment: str  # the first segment as sent: the AAD
    header: dict[str, Any]
    encrypted_key: bytes = field(repr=False)
    iv: bytes
    ciphertext: bytes = field(repr=False)
    tag: bytes


def parse_compact(token: object, *, alg: str = ALG_RSA_OAEP_256) -> UnverifiedJWE:
    """Split and decode a compact JWE, checking the profile (syntax only, no crypto)."""
    if not isinstance(token, str):
        raise InvalidPayload
    segments = token.split(".")
    if len(segments) != 5 or len(segments[0]) > MAX_HEADER_SEGMENT:
        raise InvalidPayload
    protected_segment, encrypted_key_segment, iv_segment, ciphertext_segment, tag_segment = segments
    header = loads_json_object(b64url_decode(protected_segment))
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
        protected_segment, header, encrypted_key, iv, b64url_decode(ciphertext_segment), tag
    )


def unwrap_key(jwe: UnverifiedJWE, key: PrivateKey) -> bytes:
    """The CEK of an RSA-OAEP-256 JWE; not yet authenticated (the tag check does that)."""
    return unwrap_oaep(key, jwe.encrypted_key)


def decrypt(jwe: UnverifiedJWE, cek: bytes) -> bytes:
    """Authenticate header and ciphertext under ``cek`` and return the plaintext."""
    return aead.open_(
        cek, jwe.iv, jwe.ciphertext, jwe.tag, aad=jwe.protected_segment.encode("ascii")
    )


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
