"""Format E's PKCS#1 v1.5 unwrap picks the same CEK as the branching rule it replaced."""

from __future__ import annotations

import base64
import os
import random

from flask_hybrid.core.encoding import b64decode
from flask_hybrid.core.rsa import _select_cek_without_branches
from flask_hybrid.errors import InvalidPayload

RANDOM_KEY = os.urandom(32)


def branching_rule(unwrapped: bytes) -> bytes:
    """The rule as it was written with branches: 32 raw bytes, or 44 characters of b64(CEK)."""
    if len(unwrapped) == 32:
        return unwrapped
    if len(unwrapped) == 44:
        try:
            cek = b64decode(unwrapped.decode("ascii"))
        except (UnicodeDecodeError, InvalidPayload):
            return RANDOM_KEY
        if len(cek) == 32:
            return cek
    return RANDOM_KEY


def unwrapped_values() -> list[bytes]:
    chooser = random.Random(7)
    values = [
        b"",
        os.urandom(31),
        os.urandom(32),
        os.urandom(33),
        os.urandom(44),
        os.urandom(245),
        base64.b64encode(os.urandom(32)),
        base64.b64encode(os.urandom(31)) + b"=",  # 44 characters, but 31 bytes ("==")
        base64.b64encode(os.urandom(33)),  # 44 characters, no padding: 33 bytes
        base64.b64encode(os.urandom(32))[:42] + b"B=",  # stray low bits in the last character
        base64.urlsafe_b64encode(b"\xff" * 32),
    ]
    for _ in range(3000):
        text = bytearray(base64.b64encode(os.urandom(32)))
        text[chooser.randrange(44)] = chooser.randrange(256)
        values.append(bytes(text))
    return values


def test_same_cek_as_the_branching_rule() -> None:
    for unwrapped in unwrapped_values():
        assert _select_cek_without_branches(unwrapped, RANDOM_KEY) == branching_rule(unwrapped)
