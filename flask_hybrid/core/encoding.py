"""Strict base64 and JSON helpers for untrusted input."""

from __future__ import annotations

import base64
import binascii
import json
import re
import sys
from collections.abc import Iterator
from typing import Any

from ..errors import InvalidPayload
from .strictjson import MAX_DEPTH, check_json, json_object_spans

#: Documents up to this size (with few containers) are checked by the C parser: see
#: :func:`check_json_text`.
_SMALL_JSON = 4096
#: A large document goes to the C parser only with at least this much text per value (every
#: value but the first of its container follows a comma): then no value, at most ~200 bytes of
#: objects beyond its own text, can make the tree much larger than the document.
_TEXT_PER_VALUE = 256

Buffer = bytes | bytearray | memoryview

#: Base64 characters decoded at a time when a field is streamed (a multiple of 4).
B64_CHUNK = 64 * 1024
_B64_TEXT = re.compile(rb"[A-Za-z0-9+/]*={0,2}")  # one character class: no per-character state
_URLSAFE_TO_STRICT = bytes.maketrans(b"-_+/=", b"+/!!!")
#: binascii checks the alphabet as it decodes (Python 3.11+): no separate pass over the text.
_STRICT = sys.version_info >= (3, 11)
# Canonical spelling, checked without decoding: the character before the padding carries bits
# past the data's end (4 with "==", 2 with "="), which must be zero. These are the characters
# (their byte values) whose value has those low bits clear; unpadded base64url likewise.
_STANDARD = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_URLSAFE = _STANDARD.translate(bytes.maketrans(b"+/", b"-_"))
_LAST_BEFORE_PADDING = {1: frozenset(_STANDARD[::4]), 2: frozenset(_STANDARD[::16])}
_LAST_URLSAFE = {3: frozenset(_URLSAFE[::4]), 2: frozenset(_URLSAFE[::16])}


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 §4)."""
    return base64.b64encode(data).decode("ascii")


def _ascii(text: object) -> Buffer:
    """Base64 text as bytes: a ``str`` (ASCII only) or a bytes-like object as it is."""
    if isinstance(text, str):
        try:
            return text.encode("ascii")
        except UnicodeEncodeError:
            raise InvalidPayload("bad_base64") from None
    if isinstance(text, (bytes, bytearray, memoryview)):
        return text
    raise InvalidPayload("bad_base64")


def _decode(data: Buffer) -> bytes:
    """binascii's decoder, strict where it can be: a character outside the alphabet, or
    padding anywhere but at the end, is :class:`InvalidPayload`."""
    try:
        if _STRICT:
            return binascii.a2b_base64(data, strict_mode=True)  # type: ignore[call-arg,unused-ignore]
        if not _B64_TEXT.fullmatch(data):
            raise InvalidPayload("bad_base64")
        return binascii.a2b_base64(data)
    except binascii.Error:
        raise InvalidPayload("bad_base64") from None


def b64_decoded_size(text: object) -> int:
    """The decoded size of standard padded base64, checked for its one canonical spelling.

    No missing padding and no stray bits in the last character, so one message has one
    encoding; whitespace or a character of another alphabet is refused when the text is decoded
    (:func:`b64decode`, :func:`iter_b64decode`), not here: a large field is sized without a
    pass over it, then decoded in chunks.
    """
    data = _ascii(text)
    if len(data) % 4:
        raise InvalidPayload("bad_base64")
    if not data:
        return 0
    pad = (data[-1] == 0x3D) + (data[-2] == 0x3D)  # "="
    if pad and data[-1 - pad] not in _LAST_BEFORE_PADDING[pad]:
        raise InvalidPayload("bad_base64")  # stray bits: a second spelling of the same bytes
    return len(data) // 4 * 3 - pad


def b64decode(text: object) -> bytes:
    """Decode standard padded base64, refusing anything but its one canonical spelling."""
    data = _ascii(text)
    b64_decoded_size(data)
    return _decode(data)


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding, as JOSE uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decoded_size(text: object) -> int:
    """The decoded size of unpadded URL-safe base64, checked for its canonical spelling (its
    alphabet is checked when it is decoded, as :func:`b64_decoded_size` says)."""
    data = _ascii(text)
    remainder = len(data) % 4
    if remainder == 1:
        raise InvalidPayload("bad_base64")
    if remainder and data[-1] not in _LAST_URLSAFE[remainder]:
        raise InvalidPayload("bad_base64")  # stray bits: a second spelling of the same bytes
    return len(data) // 4 * 3 + max(remainder - 1, 0)


def _decode_urlsafe(data: Buffer) -> bytes:
    # "+", "/" and "=" become a character no decoder takes: they are not base64url.
    standard = bytes(data).translate(_URLSAFE_TO_STRICT)
    return _decode(standard + b"=" * (-len(standard) % 4))


def b64url_decode(text: object) -> bytes:
    """Decode unpadded URL-safe base64, canonical spelling only."""
    data = _ascii(text)
    b64url_decoded_size(data)
    return _decode_urlsafe(data)


def iter_b64decode(
    text: Buffer, *, urlsafe: bool = False, chunk: int = B64_CHUNK
) -> Iterator[bytes]:
    """Decode base64 text already sized (:func:`b64_decoded_size`), ``chunk`` characters at a
    time, refusing a character outside the alphabet as it comes to it.

    For streaming a large field into a cipher without holding its decoded copy; ``text`` may
    be a memoryview into the request body (nothing is copied but one chunk at a time).
    """
    if chunk % 4:
        raise ValueError("the chunk must be a multiple of 4 characters")
    with memoryview(text) as view:
        for start in range(0, len(view), chunk):
            piece = view[start : start + chunk]
            yield _decode_urlsafe(piece) if urlsafe else _decode(piece)


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise InvalidPayload("not_json")  # two readers could disagree on which value counts
    return members


def _no_constants(name: str) -> Any:
    raise InvalidPayload("not_json")  # NaN and Infinity are not JSON


# One decoder for every parse (json.loads with hooks would build a new one each call).
_STRICT_DECODER = json.JSONDecoder(
    object_pairs_hook=_no_duplicate_members, parse_constant=_no_constants
)


def loads_json(data: bytes | bytearray | str) -> Any:
    """Parse strict UTF-8 JSON (no duplicate members, no NaN); any failure is InvalidPayload."""
    try:
        text = data.decode("utf-8") if isinstance(data, (bytes, bytearray)) else data
        return _STRICT_DECODER.decode(text)
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidPayload("not_json") from None


#: What :func:`check_json_text` returns for a document it checked without building its value.
NOT_PARSED: Any = type("NotParsed", (), {"__repr__": lambda self: "NOT_PARSED"})()


def check_json_text(data: bytes | bytearray) -> Any:
    """Refuse anything :func:`loads_json` would refuse; return the value if it was built.

    The C parser checks a document when its tree stays small: a small document with few
    containers, or an ASCII document with few containers whose values are long (an upload: a
    few long strings), so that the tree is not much larger than the text. That value is returned,
    so that nobody parses the same text twice. Any other document is checked without building
    its value (see :mod:`.strictjson`), and :data:`NOT_PARSED` is returned: memory stays a
    small fraction of ``data`` whatever it holds. With at most :data:`MAX_DEPTH` containers a
    document cannot nest deeper than the scanner's limit, so both checks give the same answer
    (``tests/test_core_json.py`` holds them equal).
    """
    containers = data.count(b"[") + data.count(b"{")
    if containers <= MAX_DEPTH and (
        len(data) <= _SMALL_JSON
        or (  # ASCII: one astral character would make the whole decoded text 4 bytes a letter
            data.isascii() and (containers + data.count(b",")) * _TEXT_PER_VALUE <= len(data)
        )
    ):
        return loads_json(data)
    check_json(data)
    return NOT_PARSED


def loads_json_object(data: bytes | bytearray | str) -> dict[str, Any]:
    """Like :func:`loads_json`, but the value must be a JSON object."""
    value = loads_json(data)
    if not isinstance(value, dict):
        raise InvalidPayload
    return value


def dumps_compact(value: Any) -> bytes:
    """Compact JSON as sent on the wire (no spaces, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


class JsonObjectText:
    """A JSON object, checked strict, whose members are read from its text when asked for.

    What :func:`loads_json_object` gives, without the copies: a large string member (a base64
    ciphertext) is handed out as a view into ``data``, never as a ``str``.
    """

    def __init__(self, data: bytes | bytearray) -> None:
        self._data = data
        self._spans = json_object_spans(data)

    def __contains__(self, name: object) -> bool:
        return name in self._spans

    def string(self, name: str) -> Buffer | None:
        """A string member's UTF-8 (a view when it has no escapes); ``None`` when absent.

        A member that is not a string is :class:`InvalidPayload`.
        """
        span = self._spans.get(name)
        if span is None:
            return None
        start, end = span
        if self._data[start] != 0x22:  # '"'
            raise InvalidPayload
        if self._data.find(b"\\", start, end) < 0:
            return memoryview(self._data)[start + 1 : end - 1]
        return str(json.loads(bytes(self._data[start:end]))).encode("utf-8", "surrogatepass")

    def text(self, name: str) -> str | None:
        """A string member as ``str`` (for short members); ``None`` when absent."""
        raw = self.string(name)
        return None if raw is None else bytes(raw).decode("utf-8", "surrogatepass")
