"""The server's keys: identity keys (decryption) and signing keys, each known by its RFC 7638 kid.

In each list the first key is current. A key may be in both lists (the default, for the
published design's clients, which verify signatures with the key they encrypt to); key
separation means giving ``HYBRID_SIGNING_KEYS`` keys of their own.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicNumbers

from ..errors import InvalidPayload
from .encoding import b64url_decode, b64url_encode, loads_json_object
from .hpke import HpkePrivateKey, KeyConfig
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
    """One long-lived server key (identity or signing) with everything derived from it computed
    once; ``jwk`` carries no ``use``/``alg``, which depend on the list the key is in."""

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


#: The JWK ``alg`` of each use: identity keys unwrap RSA-OAEP-256 (formats E and J; format E's
#: PKCS#1 v1.5 ``ek`` too, which one ``alg`` cannot say); signing keys sign with RS256.
ENCRYPTION_ALG = "RSA-OAEP-256"
SIGNING_ALG = "RS256"
USES = ("enc", "sig")


def _ring(private_keys: Iterable[PrivateKey], what: str) -> tuple[IdentityKey, ...]:
    keys = tuple(IdentityKey.from_private_key(key) for key in private_keys)
    if len({key.kid for key in keys}) != len(keys):
        raise ValueError(f"the same {what} key is configured twice")
    return keys


class HpkeKeySet:
    """Format H's X25519 keys (``HYBRID_HPKE_KEYS``), current first.

    Only the current key is advertised (:meth:`key_config`, what ``/.well-known/hpke-keys``
    serves: EHBP clients read one ``key_config``); every key still decrypts, so requests sealed
    to the previous key during a rotation open. An EHBP request names no key: the request opener
    tries them in this order.
    """

    def __init__(self, keys: Iterable[HpkePrivateKey]) -> None:
        self._keys = tuple(keys)
        if not self._keys:
            raise ValueError("an HPKE key set needs at least one key")
        if len({key.public_bytes for key in self._keys}) != len(self._keys):
            raise ValueError("the same HPKE key is configured twice")

    @property
    def current(self) -> HpkePrivateKey:
        return self._keys[0]

    @property
    def keys(self) -> tuple[HpkePrivateKey, ...]:
        return self._keys

    def key_config(self) -> bytes:
        """The RFC 9458 ``key_config`` of the current key, ``key_id`` 0 as EHBP's server sends
        (the request carries no key id, so it could not pick a key anyway)."""
        return KeyConfig(0, self.current.public_bytes).encode()

    def __iter__(self) -> Iterator[HpkePrivateKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)


class KeyRing:
    """Identity keys and signing keys, current first. Iterating yields the identity keys.

    ``signing_keys`` defaults to the identity keys: the current identity key then signs, as the
    published design's clients expect. Identity keys decrypt and only they (:meth:`get`);
    signing keys sign and only they (:attr:`signing`, :meth:`signing_key`), so a separate
    signing key is never used to decrypt, nor an identity key to sign.

    Usage::

        ring = KeyRing.from_pems([current_pem, previous_pem], signing_pems=[signing_pem])
        ring.current.kid, ring.get(kid), ring.signing.kid, ring.signing_key(kid), ring.jwks()
    """

    def __init__(
        self,
        private_keys: Iterable[PrivateKey],
        signing_keys: Iterable[PrivateKey] | None = None,
        *,
        hpke_keys: Iterable[HpkePrivateKey] | None = None,
    ) -> None:
        self._keys = _ring(private_keys, "identity")
        if not self._keys:
            raise ValueError("a key ring needs at least one identity key")
        self._by_kid = {key.kid: key for key in self._keys}
        if signing_keys is None:
            self._signing_keys = self._keys
        else:
            self._signing_keys = _ring(signing_keys, "signing")
            if not self._signing_keys:
                raise ValueError("a key ring needs at least one signing key")
        self._signing_by_kid = {key.kid: key for key in self._signing_keys}
        self._hpke = None if hpke_keys is None else HpkeKeySet(hpke_keys)

    @classmethod
    def from_pems(
        cls, pems: Iterable[bytes | str], signing_pems: Iterable[bytes | str] | None = None
    ) -> KeyRing:
        """Load PEM private keys with full validation (done once, at start-up)."""
        signing = None if signing_pems is None else [load_private_key(pem) for pem in signing_pems]
        return cls((load_private_key(pem) for pem in pems), signing)

    @property
    def current(self) -> IdentityKey:
        """The identity key clients encrypt to (``HYBRID_IDENTITY_KEYS``' first)."""
        return self._keys[0]

    @property
    def signing(self) -> IdentityKey:
        """The key that signs responses (``HYBRID_SIGNING_KEYS``' first; by default ``current``)."""
        return self._signing_keys[0]

    @property
    def signing_keys(self) -> tuple[IdentityKey, ...]:
        """Every signing key, current first (older ones stay listed for verifiers)."""
        return self._signing_keys

    @property
    def separate_signing_keys(self) -> bool:
        """Whether signing keys were configured apart from the identity keys."""
        return self._signing_keys is not self._keys

    @property
    def hpke(self) -> HpkeKeySet | None:
        """Format H's X25519 keys (``hpke_keys``), or ``None`` when none were given."""
        return self._hpke

    def get(self, kid: str) -> IdentityKey | None:
        """The identity key with this kid: the only keys a request may be encrypted to."""
        return self._by_kid.get(kid)

    def signing_key(self, kid: str) -> IdentityKey | None:
        """The signing key with this kid (what a signature's ``keyid`` names)."""
        return self._signing_by_kid.get(kid)

    def __iter__(self) -> Iterator[IdentityKey]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The JWK Set: identity keys (current first), then signing keys (current first).

        Identity keys carry ``"use": "enc", "alg": "RSA-OAEP-256"``, signing keys
        ``"use": "sig", "alg": "RS256"``. A key that does both (the default) is listed twice,
        once per use, because a JWK has one ``use`` (RFC 7517 §4.2) and one ``alg``: a single
        entry without them would tell a verifier nothing, and one with ``"use": "enc"`` would
        make strict JOSE libraries refuse it for signatures. Clients that read only ``kty``,
        ``kid``, ``n`` and ``e`` still find the current identity key first.
        """
        entries = [_jwk_entry(key, "enc", ENCRYPTION_ALG) for key in self._keys]
        entries += [_jwk_entry(key, "sig", SIGNING_ALG) for key in self._signing_keys]
        return {"keys": entries}


def _jwk_entry(key: IdentityKey, use: str, alg: str) -> dict[str, str]:
    return {
        "kty": "RSA",
        "kid": key.kid,
        "use": use,
        "alg": alg,
        "n": key.jwk["n"],
        "e": key.jwk["e"],
    }


def parse_jwks(body: bytes, *, use: str = "enc") -> dict[str, PublicKey]:
    """The RSA keys of a JWK Set for one ``use`` by their RFC 7638 kid, in order (current first).

    ``use="enc"`` (the default) gives the keys to encrypt to: entries with ``"use": "enc"`` or
    no ``use`` (servers before key separation). ``use="sig"`` gives the keys that verify
    response signatures: entries with ``"use": "sig"``, or, when the set marks no entry with
    ``use`` at all, every key (such a server signs with its identity keys).

    The kid is computed from ``n`` and ``e``, never taken on trust: an entry whose stated kid
    differs, or whose key is under 2048 bits, is skipped. No usable key is :class:`InvalidPayload`.

    ::

        encrypt_to = parse_jwks(body)            # current identity key first
        verify_with = parse_jwks(body, use="sig")
    """
    if use not in USES:
        raise ValueError(f"use must be one of {USES}, not {use!r}")
    entries = loads_json_object(body).get("keys")
    if not isinstance(entries, list):
        raise InvalidPayload
    marked = any(isinstance(entry, dict) and "use" in entry for entry in entries)
    keys: dict[str, PublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or entry.get("kty") != "RSA":
            continue
        entry_use = entry.get("use", "enc" if marked else use)
        if entry_use != use:
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
