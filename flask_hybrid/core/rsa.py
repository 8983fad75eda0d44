"""RSA key wrapping, response signatures and key loading, on ``cryptography`` only.

Two unwrap paths with different failure rules:

* OAEP-SHA-256 (formats S and J, and E's OAEP alg): a failure is an ordinary
  :class:`InvalidPayload`; OAEP gives no padding oracle to hide.
* PKCS#1 v1.5 (JSEncrypt clients, format E): the classic Bleichenbacher oracle. Every result that
  is not a valid CEK silently becomes a random key, so the request fails later at the AES-GCM tag
  check exactly like any other forgery. This relies on OpenSSL's implicit rejection (3.2+), which
  :func:`has_implicit_rejection` verifies at start-up.
"""

from __future__ import annotations

import binascii
import hmac
import os

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from ..errors import InvalidPayload
from .aead import CEK_SIZE

PrivateKey = rsa.RSAPrivateKey
PublicKey = rsa.RSAPublicKey

MIN_KEY_BITS = 2048
SESSION_KEY_BITS = 2048

OAEP_SHA256 = padding.OAEP(
    mgf=padding.MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None
)
PKCS1V15 = padding.PKCS1v15()
_B64_CEK_SIZE = 44  # len(b64(32 bytes)): how JSEncrypt clients send the CEK
_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
# Byte maps for the text reading: anything outside the alphabet to "A" (so decoding never
# fails), to 1 (to count it), and alphabet characters whose value has low bits set to 1.
_TO_ALPHABET = bytes(byte if byte in _ALPHABET else ord("A") for byte in range(256))
_NOT_ALPHABET = bytes(0 if byte in _ALPHABET else 1 for byte in range(256))
_LOW_BITS_SET = bytes(
    1 if byte in _ALPHABET and _ALPHABET.index(byte) & 3 else 0 for byte in range(256)
)
_ZEROS_43 = bytes(_B64_CEK_SIZE - 1)


def generate_private_key(bits: int = SESSION_KEY_BITS) -> PrivateKey:
    """A fresh RSA key (e = 65537). Slow (~30-100 ms): keep it off the request path."""
    return rsa.generate_private_key(public_exponent=65537, key_size=bits)


def load_private_key(pem: bytes | str, *, generated_here: bool = False) -> PrivateKey:
    """Parse a PEM private key; it must be RSA of at least 2048 bits.

    ``generated_here=True`` skips the expensive consistency checks (~30 ms), which is safe only
    for keys this server generated itself and stored.
    """
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_private_key(
        data, password=None, unsafe_skip_rsa_key_validation=generated_here
    )
    if not isinstance(key, rsa.RSAPrivateKey):
        raise ValueError("only RSA keys are supported")
    if key.key_size < MIN_KEY_BITS:
        raise ValueError(f"RSA keys must have at least {MIN_KEY_BITS} bits")
    return key


def load_public_key(pem: bytes | str) -> PublicKey:
    """Parse a PEM SubjectPublicKeyInfo RSA public key."""
    data = pem.encode("ascii") if isinstance(pem, str) else pem
    key = serialization.load_pem_public_key(data)
    if not isinstance(key, rsa.RSAPublicKey):
        raise ValueError("only RSA keys are supported")
    return key


def private_pem(key: PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted (callers protect it at rest)."""
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def public_pem(key: PrivateKey | PublicKey) -> str:
    """SubjectPublicKeyInfo PEM text, as JSEncrypt and Web Crypto import it."""
    public_key = key.public_key() if isinstance(key, rsa.RSAPrivateKey) else key
    return public_key.public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    ).decode("ascii")


def _fit_to_modulus(key: PrivateKey, wrapped_key: bytes) -> bytes:
    # A ciphertext may arrive with its leading zero bytes dropped; a longer one is refused.
    size = (key.key_size + 7) // 8
    if len(wrapped_key) > size:
        raise InvalidPayload
    return wrapped_key.rjust(size, b"\0")


def wrap_oaep(public_key: PublicKey, cek: bytes) -> bytes:
    """RSA-OAEP (SHA-256, MGF1-SHA-256) encryption of a CEK."""
    return public_key.encrypt(cek, OAEP_SHA256)


def unwrap_oaep(key: PrivateKey, wrapped_key: bytes) -> bytes:
    """RSA-OAEP-256 unwrap of a 32-byte CEK; any failure is :class:`InvalidPayload`."""
    try:
        cek = key.decrypt(_fit_to_modulus(key, wrapped_key), OAEP_SHA256)
    except ValueError:
        raise InvalidPayload("tag_mismatch") from None  # a wrong key, as E reports it
    if len(cek) != CEK_SIZE:
        raise InvalidPayload
    return cek


def _length_is(data: bytes, size: int) -> int:
    """1 when ``len(data) == size``, else 0, compared in constant time."""
    return int(hmac.compare_digest(len(data).to_bytes(4, "big"), size.to_bytes(4, "big")))


def _select_cek_without_branches(unwrapped: bytes, random_key: bytes) -> bytes:
    """The CEK an envelope's ``ek`` carried, 32 raw bytes or the 44-byte text b64(CEK);
    ``random_key`` for anything else.

    Every input takes the same steps: both readings are computed (the text one from a
    sanitized copy that always decodes), validity is folded from constant-time comparisons
    into an index, and the result is sliced from one buffer at that index. No branch depends
    on the unwrapped value or its length, so its timing does not tell the classes apart.
    """
    # One fresh 44-byte window for every length. Everything below works on bytearrays: bytes
    # slicing and bytes.translate hand back the object itself when nothing changes, which
    # would make valid text take another path through the allocator.
    window = bytearray(_B64_CEK_SIZE)
    with memoryview(unwrapped) as view:
        head = view[:_B64_CEK_SIZE]
        window[: len(head)] = head
        head.release()
    raw_reading = window[:CEK_SIZE]
    characters = window[: _B64_CEK_SIZE - 1]
    # b64(32 bytes) is 43 alphabet characters, the last with its 2 low bits clear, then "=".
    text_reading = binascii.a2b_base64(characters.translate(_TO_ALPHABET) + b"=")
    is_raw = _length_is(unwrapped, CEK_SIZE)
    is_text = (
        _length_is(unwrapped, _B64_CEK_SIZE)
        & int(hmac.compare_digest(characters.translate(_NOT_ALPHABET), _ZEROS_43))
        & int(hmac.compare_digest(window[42:43].translate(_LOW_BITS_SET), b"\0"))
        & int(hmac.compare_digest(window[43:44], b"="))
    )
    index = CEK_SIZE * (2 - 2 * is_raw - is_text)  # raw: 0, text: 32, neither: 64
    return bytes((raw_reading + text_reading + random_key)[index : index + CEK_SIZE])


def unwrap_cek_or_random(key: PrivateKey, wrapped_key: bytes, *, oaep: bool) -> bytes:
    """Format E unwrap that never fails: anything but a valid CEK becomes a random key.

    Same answer, same path for every bad ``ek``: the caller's AES-GCM tag check is what fails.
    """
    random_key = os.urandom(CEK_SIZE)
    try:
        unwrapped = key.decrypt(
            _fit_to_modulus(key, wrapped_key), OAEP_SHA256 if oaep else PKCS1V15
        )
    except (ValueError, InvalidPayload):
        unwrapped = b""
    return _select_cek_without_branches(unwrapped, random_key)


def has_implicit_rejection(key: PrivateKey) -> bool:
    """Whether PKCS#1 v1.5 decryption answers bad padding with random bytes (OpenSSL >= 3.2).

    The ciphertext 1 decrypts to the integer 1, which never has valid padding: without implicit
    rejection OpenSSL raises, with it a synthetic message comes back.
    """
    size = (key.key_size + 7) // 8
    try:
        key.decrypt(b"\0" * (size - 1) + b"\1", PKCS1V15)
    except ValueError:
        return False
    return True


def sign(key: PrivateKey, data: bytes) -> bytes:
    """RSASSA-PKCS1-v1_5 with SHA-256, the response signature."""
    return key.sign(data, PKCS1V15, hashes.SHA256())


def verify(public_key: PublicKey, signature: bytes, data: bytes) -> bool:
    """Check a response signature; False for any mismatch."""
    try:
        public_key.verify(signature, data, PKCS1V15, hashes.SHA256())
    except InvalidSignature:
        return False
    return True
