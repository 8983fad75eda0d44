"""HPKE (RFC 9180) for format H: one suite, typed wrappers over ``pyhpke``.

Format H (EHBP) uses base mode with DHKEM(X25519, HKDF-SHA256), HKDF-SHA256 and AES-256-GCM,
and needs the exporter (RFC 9180 §5.3), which ``cryptography``'s single-shot HPKE lacks: the key
schedule is therefore ``pyhpke``'s, and this module is the only one that imports it. Keys are
``cryptography`` X25519 keys underneath, stored as PKCS#8 PEM like the identity keys.

The server advertises its key as an RFC 9458 ``key_config`` (:class:`KeyConfig`). Every problem
with untrusted input (an encapsulated key, a ciphertext, a key config) raises a bare
:class:`~flask_hybrid.errors.InvalidPayload`; a wrong argument type or a bad configured key is
``TypeError`` / ``ValueError``.

::

    key = HpkePrivateKey.generate()
    sender = setup_sender(key.public_bytes, b"info")
    ciphertext = sender.seal(b"hello")
    recipient = setup_recipient(sender.enc, key, b"info")
    recipient.open(ciphertext) == b"hello"
    recipient.export(b"label", 32) == sender.export(b"label", 32)
"""

from __future__ import annotations

import functools
import struct
from dataclasses import dataclass, field

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKeyInterface, KEMKeyPair
from pyhpke.context_interface import ContextInterface

from ..errors import InvalidPayload

KEM_ID = 0x0020  # DHKEM(X25519, HKDF-SHA256)
KDF_ID = 0x0001  # HKDF-SHA256
AEAD_ID = 0x0002  # AES-256-GCM
PUBLIC_KEY_SIZE = 32  # Npk
ENC_SIZE = 32  # Nenc
PRIVATE_KEY_SIZE = 32  # Nsk
TAG_SIZE = 16  # Nt
MAX_EXPORT_LENGTH = 255 * 32  # 255 * Nh

#: The ``key_config`` of RFC 9458 §3 with one (KDF, AEAD) pair: 1 + 2 + Npk + 2 + 4 bytes.
KEY_CONFIG_SIZE = 1 + 2 + PUBLIC_KEY_SIZE + 2 + 4

_SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)


@dataclass(frozen=True)
class HpkePrivateKey:
    """An X25519 private key of the suite, with its public key (both raw, 32 bytes)."""

    private_bytes: bytes = field(repr=False)
    public_bytes: bytes

    @classmethod
    def generate(cls) -> HpkePrivateKey:
        """A fresh key from the OS's randomness."""
        return cls.from_private_bytes(X25519PrivateKey.generate().private_bytes_raw())

    @classmethod
    def from_private_bytes(cls, private_bytes: bytes) -> HpkePrivateKey:
        """The key of 32 raw private bytes (``ValueError`` for another size)."""
        if not isinstance(private_bytes, (bytes, bytearray)):
            raise TypeError("an X25519 private key is 32 bytes")
        if len(private_bytes) != PRIVATE_KEY_SIZE:
            raise ValueError("an X25519 private key is 32 bytes")
        key = X25519PrivateKey.from_private_bytes(bytes(private_bytes))
        return cls(key.private_bytes_raw(), key.public_key().public_bytes_raw())

    @classmethod
    def derive(cls, ikm: bytes) -> HpkePrivateKey:
        """RFC 9180 ``DeriveKeyPair(ikm)``: the deterministic key of known-answer tests."""
        pair = _SUITE.kem.derive_key_pair(bytes(ikm))
        return cls.from_private_bytes(pair.private_key.to_private_bytes())

    def private_pem(self) -> bytes:
        """PKCS#8 PEM, unencrypted: the form ``HYBRID_HPKE_KEYS`` and the instance folder hold."""
        return X25519PrivateKey.from_private_bytes(self.private_bytes).private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @functools.cached_property
    def _kem_key(self) -> KEMKeyInterface:
        """pyhpke's form of the key, made once: a server opens every request with it."""
        return _SUITE.kem.deserialize_private_key(self.private_bytes)


def load_private_key(pem: bytes | str) -> HpkePrivateKey:
    """An X25519 private key from PKCS#8 PEM; ``ValueError`` for anything else."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not an unencrypted PEM private key: {error}") from None
    if not isinstance(key, X25519PrivateKey):
        raise ValueError("an HPKE key must be an X25519 private key")
    return HpkePrivateKey.from_private_bytes(key.private_bytes_raw())


@dataclass(frozen=True)
class KeyConfig:
    """An RFC 9458 ``key_config`` of this suite: ``key_id`` (0-255) and the public key."""

    key_id: int
    public_key: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 0xFF:
            raise ValueError("a key_id is one byte")
        if len(self.public_key) != PUBLIC_KEY_SIZE:
            raise ValueError("an X25519 public key is 32 bytes")

    def encode(self) -> bytes:
        """``key_id(1) kem_id(2) public_key(32) suites_length(2) kdf_id(2) aead_id(2)``."""
        return (
            struct.pack(">BH", self.key_id, KEM_ID)
            + self.public_key
            + struct.pack(">HHH", 4, KDF_ID, AEAD_ID)
        )

    @classmethod
    def parse(cls, data: bytes) -> KeyConfig:
        """Parse one ``key_config`` of exactly this suite and nothing after it.

        Stricter than the published clients (which ignore trailing bytes and, for npm, the
        ``key_id``): a server that offers another suite, or several, is not one we can talk to.
        """
        if not isinstance(data, (bytes, bytearray)) or len(data) != KEY_CONFIG_SIZE:
            raise InvalidPayload
        key_id, kem_id = struct.unpack_from(">BH", data, 0)
        suites_length, kdf_id, aead_id = struct.unpack_from(">HHH", data, 3 + PUBLIC_KEY_SIZE)
        if (kem_id, suites_length, kdf_id, aead_id) != (KEM_ID, 4, KDF_ID, AEAD_ID):
            raise InvalidPayload
        return cls(key_id, bytes(data[3 : 3 + PUBLIC_KEY_SIZE]))


class SenderContext:
    """The sender's HPKE context (``SetupBaseS``): ``enc`` to send, sequential seals, exports."""

    def __init__(self, enc: bytes, context: ContextInterface) -> None:
        self.enc = enc
        self._context = context

    def seal(self, plaintext: bytes, aad: bytes = b"") -> bytes:
        """Encrypt the next message of the sequence (RFC 9180 ``ContextS.Seal``)."""
        return self._context.seal(bytes(plaintext), aad)

    def export(self, exporter_context: bytes, length: int) -> bytes:
        """RFC 9180 ``Context.Export``."""
        return _export(self._context, exporter_context, length)


class RecipientContext:
    """The recipient's HPKE context (``SetupBaseR``): sequential opens, exports.

    A failed :meth:`open` has used up its sequence number, as in pyhpke: a stream that fails
    once is over (format H refuses the whole request).
    """

    def __init__(self, context: ContextInterface) -> None:
        self._context = context

    def open(self, ciphertext: bytes, aad: bytes = b"") -> bytes:
        """Decrypt the next message of the sequence; :class:`InvalidPayload` if it does not."""
        if len(ciphertext) < TAG_SIZE:
            raise InvalidPayload
        try:
            return self._context.open(bytes(ciphertext), aad)
        except Exception:  # pyhpke's OpenError; never say more than "does not open"
            raise InvalidPayload from None

    def export(self, exporter_context: bytes, length: int) -> bytes:
        """RFC 9180 ``Context.Export``."""
        return _export(self._context, exporter_context, length)


def _export(context: ContextInterface, exporter_context: bytes, length: int) -> bytes:
    if not 0 < length <= MAX_EXPORT_LENGTH:
        raise ValueError(f"an export is 1 to {MAX_EXPORT_LENGTH} bytes")
    return context.export(bytes(exporter_context), length)


def setup_sender(
    public_key: bytes, info: bytes, *, ephemeral: HpkePrivateKey | None = None
) -> SenderContext:
    """``SetupBaseS(pkR, info)``; ``ephemeral`` fixes ``skE`` for known-answer tests only."""
    if len(public_key) != PUBLIC_KEY_SIZE:
        raise ValueError("an X25519 public key is 32 bytes")
    eks = None
    if ephemeral is not None:
        eks = KEMKeyPair(
            _SUITE.kem.deserialize_private_key(ephemeral.private_bytes),
            _SUITE.kem.deserialize_public_key(ephemeral.public_bytes),
        )
    pkr = _SUITE.kem.deserialize_public_key(bytes(public_key))
    enc, context = _SUITE.create_sender_context(pkr, info=bytes(info), eks=eks)
    return SenderContext(bytes(enc), context)


def setup_recipient(enc: bytes, key: HpkePrivateKey, info: bytes) -> RecipientContext:
    """``SetupBaseR(enc, skR, info)``; :class:`InvalidPayload` for an ``enc`` that is not a
    usable X25519 public key (wrong size, or a low-order point whose DH output is all zero)."""
    if not isinstance(enc, (bytes, bytearray)) or len(enc) != ENC_SIZE:
        raise InvalidPayload
    try:
        context = _SUITE.create_recipient_context(bytes(enc), key._kem_key, info=bytes(info))
    except ValueError:  # cryptography refuses an all-zero X25519 shared secret
        raise InvalidPayload from None
    return RecipientContext(context)
