"""Format H (EHBP, the Encrypted HTTP Body Protocol): sans-I/O framing of streamed bodies.

A request body is a sequence of frames ``LEN(4, big-endian) || CIPHERTEXT(LEN)``, each sealed
under one HPKE context (``info`` ``"ehbp request"``, empty AAD, sequence numbers in order) set up
from the ``Ehbp-Encapsulated-Key`` header. The response is framed the same way under AES-256-GCM
with a key and base nonce derived from that context's export (``"ehbp response"``, 32 bytes) and
a random 32-byte ``Ehbp-Response-Nonce``; frame ``i`` uses ``base_nonce XOR i``. Zero-length
frames are ignored and use no sequence number. ``docs/ehbp-notes.md`` has the full reading.

Nothing here does I/O: bytes go in as they arrive (:meth:`RequestOpener.feed`), plaintexts of
frames that authenticated come out. No plaintext of a frame leaves before its tag is checked,
and a failure ends the stream (every later call raises the same refusal).

Server::

    opener = RequestOpener(hpke_keys, environ["HTTP_EHBP_ENCAPSULATED_KEY"], max_body=max_body)
    for data in wsgi_input_chunks:
        for plaintext in opener.feed(data): ...  # authenticated, in order
    opener.finish()
    sealer = opener.response_sealer()
    headers.append(("Ehbp-Response-Nonce", sealer.nonce_header))
    body = [sealer.seal(chunk) for chunk in app_chunks]

Client::

    sealer = RequestSealer(key_config.public_key)
    headers["Ehbp-Encapsulated-Key"] = sealer.header_value
    wire = b"".join(sealer.seal(part) for part in body_parts)
    opener = sealer.response_opener(response.headers["Ehbp-Response-Nonce"])

EHBP binds no method, path or time and has no replay protection: a captured request can be
sent again, and the server cannot tell. A bodiless request carries no EHBP header and is plain.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Sequence

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF, HKDFExpand

from ..errors import InvalidPayload, KeyConfigMismatch, PayloadTooLarge
from . import hpke

ENCAPSULATED_KEY_HEADER = "Ehbp-Encapsulated-Key"
RESPONSE_NONCE_HEADER = "Ehbp-Response-Nonce"
KEYS_PATH = "/.well-known/hpke-keys"
KEYS_MEDIA_TYPE = "application/ohttp-keys"
KEY_CONFIG_PROBLEM_TYPE = "urn:ietf:params:ehbp:error:key-config"

REQUEST_INFO = b"ehbp request"
EXPORT_LABEL = b"ehbp response"
EXPORT_LENGTH = 32  # Nk of AES-256-GCM
RESPONSE_NONCE_SIZE = 32  # max(Nn, Nk)
RESPONSE_KEY_SIZE = 32
RESPONSE_BASE_NONCE_SIZE = 12
LENGTH_PREFIX_SIZE = 4
TAG_SIZE = hpke.TAG_SIZE
#: Plaintext bytes per frame when we seal (tinfoil-ehbp's request frame size too).
FRAME_SIZE = 64 * 1024
#: The npm client's nonce arithmetic stops at 2**32 frames; so do we, both ways.
MAX_FRAMES = 2**32

_HEX_ENC = re.compile(rb"[0-9a-fA-F]{64}")
_HEX_NONCE = re.compile(rb"[0-9a-fA-F]{64}")


def parse_encapsulated_key(value: str | bytes | None) -> bytes:
    """The 32-byte ``enc`` of an ``Ehbp-Encapsulated-Key`` value (64 hex digits, any case)."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    if raw is None or not _HEX_ENC.fullmatch(raw.strip(b" \t")):
        raise InvalidPayload("encapsulated_key")
    return bytes.fromhex(raw.strip(b" \t").decode("ascii"))


def parse_response_nonce(value: str | bytes | None) -> bytes:
    """The 32-byte response nonce of an ``Ehbp-Response-Nonce`` value (64 hex digits)."""
    raw = value.encode("latin-1") if isinstance(value, str) else value
    if raw is None or not _HEX_NONCE.fullmatch(raw.strip(b" \t")):
        raise InvalidPayload("response_nonce")
    return bytes.fromhex(raw.strip(b" \t").decode("ascii"))


def derive_response_keys(
    exported_secret: bytes, enc: bytes, response_nonce: bytes
) -> tuple[bytes, bytes]:
    """EHBP's response key and base nonce, as OHTTP (RFC 9458 §4.4) derives them.

    ``prk = HKDF-Extract(salt=enc || response_nonce, ikm=exported_secret)``, then
    ``key = HKDF-Expand(prk, "key", 32)`` and ``base_nonce = HKDF-Expand(prk, "nonce", 12)``.
    """
    if len(exported_secret) != EXPORT_LENGTH or len(enc) != hpke.ENC_SIZE:
        raise ValueError("the exported secret and enc are 32 bytes each")
    if len(response_nonce) != RESPONSE_NONCE_SIZE:
        raise ValueError("the response nonce is 32 bytes")
    prk = HKDF.extract(hashes.SHA256(), bytes(enc) + bytes(response_nonce), bytes(exported_secret))
    key = HKDFExpand(hashes.SHA256(), RESPONSE_KEY_SIZE, b"key").derive(prk)
    base_nonce = HKDFExpand(hashes.SHA256(), RESPONSE_BASE_NONCE_SIZE, b"nonce").derive(prk)
    return key, base_nonce


def frame(ciphertext: bytes) -> bytes:
    """``LEN(4, big-endian) || ciphertext``."""
    return struct.pack(">I", len(ciphertext)) + ciphertext


def _chunk_nonce(base_nonce: bytes, index: int) -> bytes:
    """``base_nonce XOR index``, the index big-endian in the nonce's low bytes."""
    if not 0 <= index < MAX_FRAMES:
        raise OverflowError("too many frames in one body")
    mixed = int.from_bytes(base_nonce, "big") ^ index
    return mixed.to_bytes(RESPONSE_BASE_NONCE_SIZE, "big")


class _FrameReader:
    """Splits a byte stream into frames, holding at most one partial frame.

    A length over ``max_frame`` is refused as soon as its prefix is read, before any of the
    frame is buffered. Zero-length frames are dropped here (EHBP: "receivers ignore" them).
    """

    def __init__(self, max_frame: int) -> None:
        self._max_frame = max_frame
        self._buffer = bytearray()
        self._need: int | None = None  # the ciphertext length of the frame being read
        self.empty_frames = 0

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        view = memoryview(data).cast("B")
        frames: list[bytes] = []
        while view.nbytes:
            if self._need is None:
                take = LENGTH_PREFIX_SIZE - len(self._buffer)
                self._buffer += view[:take]
                view = view[take:]
                if len(self._buffer) < LENGTH_PREFIX_SIZE:
                    break
                (length,) = struct.unpack(">I", self._buffer)
                self._buffer.clear()
                if length == 0:
                    self.empty_frames += 1
                    continue
                if length > self._max_frame:
                    raise PayloadTooLarge("ehbp_frame_too_large")
                self._need = length
            take = self._need - len(self._buffer)
            if not self._buffer and view.nbytes >= take:
                frames.append(bytes(view[:take]))  # a whole frame in this data: no copy kept
            else:
                self._buffer += view[:take]
                if len(self._buffer) < self._need:
                    break
                frames.append(bytes(self._buffer))
                self._buffer.clear()
            view = view[take:]
            self._need = None
        return frames

    @property
    def partial(self) -> bool:
        return bool(self._buffer) or self._need is not None


class ResponseSealer:
    """Seals a response body, frame by frame, under the keys derived from the request.

    ``nonce_header`` is the ``Ehbp-Response-Nonce`` value to send (64 lowercase hex digits).
    Each :meth:`seal` returns framed ciphertext to write as it is; the frame index goes up by
    one per frame. An empty plaintext gives ``b""`` (no frame), as EHBP's reference server does.
    """

    def __init__(
        self, exported_secret: bytes, enc: bytes, *, response_nonce: bytes | None = None
    ) -> None:
        if response_nonce is None:
            response_nonce = os.urandom(RESPONSE_NONCE_SIZE)
        key, self._base_nonce = derive_response_keys(exported_secret, enc, response_nonce)
        self._aead = AESGCM(key)
        self._index = 0
        self.nonce_header = response_nonce.hex()

    def seal(self, plaintext: bytes | memoryview) -> bytes:
        """Frame(s) of ``plaintext``: one per :data:`FRAME_SIZE` bytes (normally just one)."""
        view = memoryview(plaintext).cast("B")
        frames = []
        for start in range(0, view.nbytes, FRAME_SIZE):
            nonce = _chunk_nonce(self._base_nonce, self._index)
            self._index += 1
            frames.append(frame(self._aead.encrypt(nonce, view[start : start + FRAME_SIZE], b"")))
        return b"".join(frames)

    @property
    def frames_sealed(self) -> int:
        return self._index


class RequestOpener:
    """Opens a format H request body as it arrives; the server's half of an exchange.

    :param keys: the HPKE private keys (``HYBRID_HPKE_KEYS``), current first. EHBP's request
        names no key, so the first non-empty frame is tried under each key's context in turn;
        the key that opens it is the request's key from then on.
    :param encapsulated_key: the ``Ehbp-Encapsulated-Key`` header value, as received.
    :param max_body: the most plaintext bytes accepted (``HYBRID_MAX_BODY``). A frame may be
        as large as the whole body (the npm client sends one frame), so a frame length over
        ``max_body + 16`` is refused before any of it is buffered, and so is plaintext past
        ``max_body`` in total (each zero-length frame counts its 4 bytes), with
        :class:`PayloadTooLarge` (413).

    Refusals, all raised bare: a malformed header (:class:`InvalidPayload`, 400); a first frame
    that opens under no key, i.e. a key this server does not hold (:class:`KeyConfigMismatch`,
    422, on which EHBP clients refetch the keys and resend); a later frame that does not open,
    or a body that ends inside a frame or has no frame at all (:class:`InvalidPayload`, 400).
    After a refusal every call raises it again.
    """

    def __init__(
        self,
        keys: Sequence[hpke.HpkePrivateKey],
        encapsulated_key: str | bytes | None,
        *,
        max_body: int,
    ) -> None:
        if not keys:
            raise ValueError("format H needs at least one HPKE key")
        if max_body <= 0:
            raise ValueError("max_body must be positive")
        self.enc = parse_encapsulated_key(encapsulated_key)
        # Decapsulation cannot tell a wrong key: X25519 agrees with any point. Only a point
        # whose shared secret is zero fails here, the same for every key.
        self._candidates: list[tuple[int, hpke.RecipientContext]] | None = [
            (index, hpke.setup_recipient(self.enc, key, REQUEST_INFO))
            for index, key in enumerate(keys)
        ]
        self._context: hpke.RecipientContext | None = None
        self.key_index: int | None = None  # which of ``keys`` opened the body
        self._reader = _FrameReader(max_body + TAG_SIZE)
        self._budget = max_body
        self._frames = 0
        self._failure: Exception | None = None
        self._finished = False

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """The plaintexts of the frames that ``data`` completes, each authenticated, in order."""
        if self._failure is not None:
            raise self._failure
        if self._finished:
            raise RuntimeError("feed() after finish()")
        try:
            return self._open_frames(data)
        except (InvalidPayload, KeyConfigMismatch, PayloadTooLarge) as failure:
            self._failure = failure
            raise

    def _open_frames(self, data: bytes | memoryview) -> list[bytes]:
        before = self._reader.empty_frames
        frames = self._reader.feed(data)
        self._spend(LENGTH_PREFIX_SIZE * (self._reader.empty_frames - before))
        plaintexts = []
        for ciphertext in frames:
            if self._frames >= MAX_FRAMES:
                raise InvalidPayload("ehbp_too_many_frames")
            plaintext = self._open(ciphertext)
            self._frames += 1
            self._spend(len(plaintext))
            plaintexts.append(plaintext)
        return plaintexts

    def _spend(self, count: int) -> None:
        self._budget -= count
        if self._budget < 0:
            raise PayloadTooLarge("ehbp_body_too_large")

    def _open(self, ciphertext: bytes) -> bytes:
        if self._context is not None:
            try:
                return self._context.open(ciphertext)
            except InvalidPayload:
                raise InvalidPayload("ehbp_tag_mismatch") from None
        assert self._candidates is not None
        for index, context in self._candidates:
            try:
                plaintext = context.open(ciphertext)
            except InvalidPayload:
                continue
            self._context, self.key_index, self._candidates = context, index, None
            return plaintext
        raise KeyConfigMismatch("hpke_key_unknown")

    def finish(self) -> None:
        """End of the body: refused if it stopped inside a frame or held no frame at all.

        A body with no frame proves nothing about the encapsulated key (EHBP's §7.4): answering
        it sealed would seal to whoever chose that key, so it is refused, not passed through.
        """
        if self._failure is not None:
            raise self._failure
        self._finished = True
        if self._reader.partial:
            self._failure = InvalidPayload("ehbp_truncated")
        elif self._context is None:
            self._failure = InvalidPayload("ehbp_no_frame")
        if self._failure is not None:
            raise self._failure

    @property
    def authenticated(self) -> bool:
        """Whether a frame has opened: the key is proved and the answer may be sealed to it."""
        return self._context is not None

    def response_sealer(self, *, response_nonce: bytes | None = None) -> ResponseSealer:
        """The sealer of the answer (a fresh random nonce; ``response_nonce`` for tests).

        Only once a frame has opened: before that the key is not proved. Calling it before
        :meth:`finish` is allowed, for an app that answers while the body still streams in, and
        after a later frame was refused: the refusal is then sealed to the proved key.
        """
        if self._context is None:
            raise RuntimeError("no authenticated request to answer")
        secret = self._context.export(EXPORT_LABEL, EXPORT_LENGTH)
        return ResponseSealer(secret, self.enc, response_nonce=response_nonce)


class ResponseOpener:
    """Opens a format H response body as it arrives (the client's half).

    :param max_frame: the largest frame ciphertext accepted (default 64 MiB, as the published
        clients), refused before it is buffered with :class:`InvalidPayload`.
    """

    def __init__(
        self,
        exported_secret: bytes,
        enc: bytes,
        nonce_header: str | bytes | None,
        *,
        max_frame: int = 64 * 1024 * 1024,
    ) -> None:
        response_nonce = parse_response_nonce(nonce_header)
        key, self._base_nonce = derive_response_keys(exported_secret, enc, response_nonce)
        self._aead = AESGCM(key)
        self._index = 0
        self._reader = _FrameReader(max_frame)
        self._failure: Exception | None = None

    def feed(self, data: bytes | memoryview) -> list[bytes]:
        """The plaintexts of the frames that ``data`` completes, each authenticated, in order."""
        if self._failure is not None:
            raise self._failure
        try:
            frames = self._reader.feed(data)
            plaintexts = []
            for ciphertext in frames:
                nonce = _chunk_nonce(self._base_nonce, self._index)
                try:
                    plaintexts.append(self._aead.decrypt(nonce, ciphertext, b""))
                except Exception:  # InvalidTag, or a frame shorter than a tag
                    raise InvalidPayload("ehbp_tag_mismatch") from None
                self._index += 1
            return plaintexts
        except (InvalidPayload, PayloadTooLarge, OverflowError) as failure:
            self._failure = failure if isinstance(failure, InvalidPayload) else InvalidPayload()
            raise self._failure from None

    def finish(self) -> None:
        """End of the body: :class:`InvalidPayload` if it stopped inside a frame."""
        if self._failure is not None:
            raise self._failure
        if self._reader.partial:
            self._failure = InvalidPayload("ehbp_truncated")
            raise self._failure


class RequestSealer:
    """Seals a request body to the server's HPKE key (the client's half).

    ``header_value`` is the ``Ehbp-Encapsulated-Key`` to send. :meth:`seal` returns the frames
    of a part of the body (one per :data:`FRAME_SIZE` bytes); empty parts give ``b""``.
    ``ephemeral`` fixes the HPKE ephemeral key, for known-answer tests only.
    """

    def __init__(self, public_key: bytes, *, ephemeral: hpke.HpkePrivateKey | None = None) -> None:
        self._context = hpke.setup_sender(public_key, REQUEST_INFO, ephemeral=ephemeral)
        self.enc = self._context.enc
        self.header_value = self.enc.hex()
        self._frames = 0

    def seal(self, plaintext: bytes | memoryview) -> bytes:
        view = memoryview(plaintext).cast("B")
        frames = []
        for start in range(0, view.nbytes, FRAME_SIZE):
            if self._frames >= MAX_FRAMES:
                raise OverflowError("too many frames in one body")
            self._frames += 1
            frames.append(frame(self._context.seal(bytes(view[start : start + FRAME_SIZE]))))
        return b"".join(frames)

    @property
    def exported_secret(self) -> bytes:
        """The 32-byte ``"ehbp response"`` export: key material, what a recovery token holds."""
        return self._context.export(EXPORT_LABEL, EXPORT_LENGTH)

    def response_opener(
        self, nonce_header: str | bytes | None, *, max_frame: int = 64 * 1024 * 1024
    ) -> ResponseOpener:
        """The opener of the answer, given its ``Ehbp-Response-Nonce`` (:class:`InvalidPayload`
        if that is missing or not 64 hex digits)."""
        return ResponseOpener(self.exported_secret, self.enc, nonce_header, max_frame=max_frame)
