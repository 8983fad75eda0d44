"""The server's identity keys: the first is current; every one is known by its RFC 7638 kid."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from ..errors import InvalidPayload
from .encoding import b64url_decode, b64url_encode, loads_json_object
from .rsa import MIN_KEY_BITS, PrivateKey, PublicKey, load_private_key, public_pem


def _int_to_b64url(value: int) -> str:
    return b64url_encode(value.to_bytes((value.bit_length() + 7) // 8, "big"))


def public_jwk(key: PrivateKey | PublicKey) -> dict[str, str]:
    """The public JWK members of an RSA key (``kty``, ``n``, ``e``), without ``kid``."""
    numbers = (key.public_key() if isinstance(key, PrivateKey) else key).public_numbers()
    return {"kty": "RSA", "n": _int_to_b64url(numbers.n), "e": _int_to_b64url(numbers.e)}


def thumbprint(key: PrivateKey | PublicKey) -> str:
    """RFC 7638 JWK thumbprint (SHA-256, b64url): the required members in lexical order."""
    jwk = public_jwk(key)
    canonical = json.dumps(
        {"e": jwk["e"], "kty": "RSA", "n": jwk["n"]}, separators=(",", ":"), sort_keys=True
    )
    return b64url_encode(hashlib.sha256(canonical.encode("ascii")).digest())


@dataclass(frozen=True)
class IdentityKey:
    """One long-lived server key with everything derived from it computed once."""

    private_key: PrivateKey = field(repr=False)
    kid: str
    public_pem: str = field(repr=False)
    jwk: dict[str, str] = field(repr=False)

    @classmethod
    def from_private_key(cls, private_key: PrivateKey) -> IdentityKey:
        kid = thumbprint(private_key)
        members = public_jwk(private_key)
        jwk = {"kty": "RSA", "kid": kid, "n": members["n"], "e": members["e"]}
        return cls(private_key, kid, public_pem(private_key), jwk)


class KeyRing:
    """Identity keys, current first. Iterating yields the current key, then the others.

    Usage::

        ring = KeyRing.from_pems([current_pem, previous_pem])
        ring.current.kid, ring.get(kid), ring.jwks()
    """

    def __init__(self, private_keys: Iterable[PrivateKey]) -> None:
        self._keys = tuple(IdentityKey.from_private_key(key) for key in private_keys)
        if not self._keys:
            raise ValueError("a key ring needs at least one identity key")
        self._by_kid = {key.kid: key for key in self._keys}
        if len(self._by_kid) != len(self._keys):
            raise ValueError("the same identity key is configured twice")

    @classmethod
    def from_pems(cls, pems: Iterable[bytes | str]) -> KeyRing:
        """Load PEM private keys with full validation (done once, at start-up)."""
        return cls(load_private_key(pem) for pem in pems)

    @property
    def current(self) -> IdentityKey:
        return self._keys[0]

    @property
    def signing(self) -> IdentityKey:
        """The key that signs responses (``HYBRID_SIGNING_KEYS``; by default the current key)."""
        return self._keys[0]

    def get(self, kid: str) -> IdentityKey | None:
        return self._by_kid.get(kid)

    def __iter__(self) -> Iterator[IdentityKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set of every identity key, current first."""
        return {"keys": [dict(key.jwk) for key in self._keys]}


def parse_jwks(body: bytes) -> dict[str, PublicKey]:
    """The RSA keys of a JWK Set by their RFC 7638 kid, in order (current first).

    The kid is computed from ``n`` and ``e``, never taken on trust: an entry whose stated kid
    differs, or whose key is under 2048 bits, is skipped. No usable key is :class:`InvalidPayload`.
    """
    entries = loads_json_object(body).get("keys")
    if not isinstance(entries, list):
        raise InvalidPayload
    keys: dict[str, PublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        try:
            modulus = int.from_bytes(b64url_decode(entry.get("n")), "big")
            exponent = int.from_bytes(b64url_decode(entry.get("e")), "big")
            public_key = RSAPublicNumbers(exponent, modulus).public_key()
        except (InvalidPayload, ValueError):
            continue
        if public_key.key_size < MIN_KEY_BITS:
            continue
        kid = thumbprint(public_key)
        if entry.get("kid", kid) == kid:
            keys.setdefault(kid, public_key)
    if not keys:
        raise InvalidPayload
    return keys
