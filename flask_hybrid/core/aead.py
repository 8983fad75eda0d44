"""AES-256-GCM with the protocol's exact sizes.

``AESGCM`` accepts other nonce and key sizes; the protocol does not, so sizes are checked
here, before any key schedule runs.
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import InvalidPayload

CEK_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16


def new_cek() -> bytes:
    """A fresh random 32-byte content-encryption key."""
    return os.urandom(CEK_SIZE)


def new_iv() -> bytes:
    """A fresh random 12-byte GCM nonce."""
    return os.urandom(IV_SIZE)


def seal(
    cek: bytes, plaintext: bytes, *, aad: bytes | None = None, iv: bytes | None = None
) -> tuple[bytes, bytes, bytes]:
    """Encrypt under ``cek``; returns ``(iv, ciphertext, tag)``.

    ``iv`` is for known-answer tests only; leave it out and a fresh one is drawn.
    """
    if len(cek) != CEK_SIZE:
        raise ValueError("the CEK must be 32 bytes")
    if iv is None:
        iv = new_iv()
    elif len(iv) != IV_SIZE:
        raise ValueError("the IV must be 12 bytes")
    sealed = AESGCM(cek).encrypt(iv, plaintext, aad)
    return iv, sealed[:-TAG_SIZE], sealed[-TAG_SIZE:]


def open_(
    cek: bytes, iv: bytes, ciphertext: bytes, tag: bytes, *, aad: bytes | None = None
) -> bytes:
    """Decrypt and authenticate; any size or tag problem raises :class:`InvalidPayload`."""
    if len(cek) != CEK_SIZE or len(iv) != IV_SIZE or len(tag) != TAG_SIZE:
        raise InvalidPayload
    try:
        return AESGCM(cek).decrypt(iv, ciphertext + tag, aad)
    except InvalidTag:
        raise InvalidPayload from None
