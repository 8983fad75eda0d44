"""Strict base64 and JSON helpers for untrusted input."""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from ..errors import InvalidPayload


def b64encode(data: bytes) -> str:
    """Standard base64 with padding (RFC 4648 §4)."""
    return base64.b64encode(data).decode("ascii")


def b64decode(text: object) -> bytes:
    """Decode standard padded base64, refusing anything but its one canonical spelling.

    No whitespace, no URL-safe alphabet, no missing padding and no stray bits in the last
    character: re-encoding must give back the same text, so one message has one encoding.
    """
    if not isinstance(text, str):
        raise InvalidPayload
    try:
        raw = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidPayload from None
    if base64.b64encode(raw).decode("ascii") != text:
        raise InvalidPayload
    return raw


def b64url_encode(data: bytes) -> str:
    """URL-safe base64 without padding, as JOSE uses."""
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64url_decode(text: object) -> bytes:
    """Decode unpadded URL-safe base64, canonical spelling only."""
    if not isinstance(text, str) or "=" in text:
        raise InvalidPayload
    try:
        raw = base64.urlsafe_b64decode((text + "=" * (-len(text) % 4)).encode("ascii"))
    except (binascii.Error, UnicodeEncodeError, ValueError):
        raise InvalidPayload from None
    if b64url_encode(raw) != text:
        raise InvalidPayload
    return raw


def _no_duplicate_members(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    members = dict(pairs)
    if len(members) != len(pairs):
        raise InvalidPayload  # two readers could disagree on which value counts
    return members


def _no_constants(name: str) -> Any:
    raise InvalidPayload  # NaN and Infinity are not JSON


def loads_json(data: bytes | str) -> Any:
    """Parse strict UTF-8 JSON (no duplicate members, no NaN); any failure is InvalidPayload."""
    try:
        text = data.decode("utf-8") if isinstance(data, bytes) else data
        return json.loads(
            text, object_pairs_hook=_no_duplicate_members, parse_constant=_no_constants
        )
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise InvalidPayload from None


def loads_json_object(data: bytes | str) -> dict[str, Any]:
    """Like :func:`loads_json`, but the value must be a JSON object."""
    value = loads_json(data)
    if not isinstance(value, dict):
        raise InvalidPayload
    return value


def dumps_compact(value: Any) -> bytes:
    """Compact JSON as sent on the wire (no spaces, UTF-8)."""
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
