"""AES-256-GCM with the protocol's exact sizes.

``AESGCM`` accepts other nonce and key sizes; the protocol does not, so sizes are checked
here, before any key schedule runs.
"""

from __future__ import annotations

import binascii
import os
import threading
from collections.abc import Iterable
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from ..errors import InvalidPayload

CEK_SIZE = 32
IV_SIZE = 12
TAG_SIZE = 16


def new_cek() -> bytes:
    """A fresh random 32-byte content-encryption key."""
    return os.urandom(CEK_SIZE)


class _RandomBytes(threading.local):
    """Bytes from the OS's CSPRNG, fetched a page at a time per thread and never handed out twice.

    ``os.urandom`` is one system call that also lets go of the GIL; under a threaded server
    a request then waits for the GIL again behind other threads. A page serves 341 nonces, and
    each thread has its own, so no lock is needed. After a fork the child starts empty: it must
    not hand out bytes its parent also holds.
    """

    page = b""
    offset = 0

    def take(self, count: int) -> bytes:
        if self.offset + count > len(self.page):
            self.page, self.offset = os.urandom(max(4096, count)), 0
        start = self.offset
        self.offset = start + count
        return self.page[start : self.offset]


_random = _RandomBytes()


def _forget_random_bytes() -> None:
    global _random
    _random = _RandomBytes()


os.register_at_fork(after_in_child=_forget_random_bytes)


def new_iv() -> bytes:
    """A fresh random 12-byte GCM nonce (from a per-thread page of OS randomness)."""
    return _random.take(IV_SIZE)


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


#: Plaintext sealed at a time by :func:`seal_to_base64` (a multiple of 3: its base64 needs no
#: padding, so the pieces join into one base64 text).
SEAL_CHUNK = 3 * 16 * 1024
_STANDARD_TO_URLSAFE = bytes.maketrans(b"+/", b"-_")


def seal_to_base64(
    cek: bytes,
    plaintext: bytes | bytearray | memoryview,
    *,
    iv: bytes,
    aad: bytes | None = None,
    urlsafe: bool = False,
    tag_inline: bool = False,
) -> tuple[list[bytes], bytes]:
    """Encrypt and base64-encode a chunk at a time: ``(pieces, tag)``.

    The pieces join into the base64 of the ciphertext (of ciphertext || tag with
    ``tag_inline``, as format E's ``ct``); ``urlsafe`` gives unpadded base64url. A large answer
    is never held as ciphertext and base64 and their copies at once: only the pieces, which a
    server writes out as they are.
    """
    if len(cek) != CEK_SIZE or len(iv) != IV_SIZE:
        raise ValueError("the CEK must be 32 bytes and the IV 12")
    if len(plaintext) <= SEAL_CHUNK:  # one piece: the one-shot AEAD is cheaper to set up
        sealed = AESGCM(cek).encrypt(iv, bytes(plaintext), aad)
        with memoryview(sealed) as view:
            body = view if tag_inline else view[:-TAG_SIZE]
            return [_b64(body, urlsafe)], sealed[-TAG_SIZE:]
    encryptor = Cipher(algorithms.AES(cek), modes.GCM(iv)).encryptor()
    if aad is not None:
        encryptor.authenticate_additional_data(aad)
    pieces: list[bytes] = []
    with memoryview(plaintext) as view:
        last = len(view) - len(view) % SEAL_CHUNK if tag_inline else len(view)
        for start in range(0, last, SEAL_CHUNK):
            pieces.append(_b64(encryptor.update(view[start : start + SEAL_CHUNK]), urlsafe))
        rest = encryptor.update(view[last:]) if tag_inline else b""
    encryptor.finalize()
    tag: bytes = encryptor.tag
    if tag_inline:
        pieces.append(_b64(rest + tag, urlsafe))
    return pieces, tag


def _b64(data: bytes | memoryview, urlsafe: bool) -> bytes:
    encoded = binascii.b2a_base64(data, newline=False)
    return encoded.translate(_STANDARD_TO_URLSAFE).rstrip(b"=") if urlsafe else encoded


def _decryptor(cek: bytes, iv: bytes, tag: bytes, aad: bytes | None) -> Any:
    if len(cek) != CEK_SIZE or len(iv) != IV_SIZE or len(tag) != TAG_SIZE:
        raise InvalidPayload
    decryptor = Cipher(algorithms.AES(cek), modes.GCM(iv, tag)).decryptor()
    if aad is not None:
        decryptor.authenticate_additional_data(aad)
    return decryptor


def open_(
    cek: bytes, iv: bytes, ciphertext: bytes, tag: bytes, *, aad: bytes | None = None
) -> bytes:
    """Decrypt and authenticate; any size or tag problem raises :class:`InvalidPayload`."""
    decryptor = _decryptor(cek, iv, tag, aad)
    plaintext: bytes = decryptor.update(ciphertext)  # no ciphertext + tag copy, as AESGCM needs
    try:
        decryptor.finalize()
    except InvalidTag:
        raise InvalidPayload("tag_mismatch") from None
    return plaintext


def open_stream(
    cek: bytes,
    iv: bytes,
    ciphertext_chunks: Iterable[bytes],
    size: int,
    tag: bytes,
    *,
    aad: bytes | None = None,
) -> bytearray:
    """Like :func:`open_` for a ciphertext of ``size`` bytes that arrives in chunks.

    The plaintext is written into one buffer allocated up front, so a large body costs its
    plaintext and one chunk, not a joined ciphertext as well. Nothing is returned before the
    tag has been checked.
    """
    decryptor = _decryptor(cek, iv, tag, aad)
    # update_into may want block size - 1 spare bytes (older cryptography): cut off after.
    plaintext = bytearray(size + 15)
    written = 0
    try:
        with memoryview(plaintext) as view:
            for chunk in ciphertext_chunks:
                if written + len(chunk) > size:
                    raise InvalidPayload
                written += decryptor.update_into(chunk, view[written:])
        if written != size:
            raise InvalidPayload
        decryptor.finalize()
    except InvalidTag:
        raise InvalidPayload("tag_mismatch") from None
    del plaintext[size:]
    return plaintext
