"""In process: the symmetric part of format J's open + seal, ours against joserfc and jwcrypto.

Every library opens the same compact JWE (``alg: dir``, A256GCM, so no RSA is involved: the
server caches the unwrapped CEK of a reused ``ek``) under the same CEK and seals the same
plaintext back as a ``dir`` JWE. Ours is what the server runs per request for the JWE itself:
``jwe.parse_compact`` + ``jwe.decrypt`` to open and ``formats.seal_response`` to seal (the
strict JSON check, which the other libraries do not do, is left out).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from typing import Any

from joserfc import jwe as joserfc_jwe
from joserfc.jwe import JWERegistry
from joserfc.jwk import OctKey
from jwcrypto import jwe as jwcrypto_jwe  # type: ignore[import-untyped]
from jwcrypto import jwk as jwcrypto_jwk

from flask_hybrid.core import formats, jwe

from .workload import b64url, big_document

SIZES = (1024, 16 * 1024, 128 * 1024, 1024 * 1024)
LIBRARIES = ("flask-hybrid", "joserfc", "jwcrypto")
_DIR = ["dir", "A256GCM"]


def size_label(size: int) -> str:
    return f"{size // (1024 * 1024)} MB" if size >= 1024 * 1024 else f"{size // 1024} KB"


def _json_document(size: int) -> bytes:
    if size >= 4096:
        return big_document(size)
    order = {"order": {"id": 1042, "note": ""}}
    text = json.dumps(order, separators=(",", ":")).encode()
    return text[: -len(b'""}}')] + b'"' + b"x" * (size - len(text)) + b'"}}'


def operations(size: int) -> dict[str, Callable[[], Any]]:
    """One open + seal per library, all on the same token, CEK and plaintext."""
    cek = os.urandom(32)
    plaintext = _json_document(size)
    header = {"alg": "dir", "enc": "A256GCM", "kid": "bench", "jti": b64url(os.urandom(16))}
    token = jwe.encrypt(header, plaintext, cek)
    token_bytes = token.encode("ascii")
    jti = header["jti"]
    content_type = "application/json"

    def ours() -> Any:
        parsed = jwe.parse_compact(token_bytes, alg=jwe.ALG_DIR)
        opened = jwe.decrypt(parsed, cek)
        return formats.seal_response(
            cek, opened, request_jti=jti, status=200, content_type=content_type
        )

    oct_key = OctKey.import_key(cek)
    # Our headers carry jti, req and status, which joserfc's strict header check refuses.
    registry = JWERegistry(algorithms=_DIR, strict_check_header=False)
    registry.max_ciphertext_length = 4 * len(token)  # its default stops at 64 KB

    def with_joserfc() -> Any:
        opened = joserfc_jwe.decrypt_compact(token, oct_key, registry=registry)
        answer = {"alg": "dir", "enc": "A256GCM", "req": jti, "status": 200, "cty": content_type}
        return joserfc_jwe.encrypt_compact(
            answer, opened.plaintext or b"", oct_key, registry=registry
        )

    jwk_key = jwcrypto_jwk.JWK(kty="oct", k=b64url(cek))

    def with_jwcrypto() -> Any:
        request = jwcrypto_jwe.JWE()
        request.deserialize(token, key=jwk_key)
        answer = {"alg": "dir", "enc": "A256GCM", "req": jti, "status": 200, "cty": content_type}
        sealed = jwcrypto_jwe.JWE(request.payload, protected=json.dumps(answer))
        sealed.add_recipient(jwk_key)
        return sealed.serialize(compact=True)

    calls = {"flask-hybrid": ours, "joserfc": with_joserfc, "jwcrypto": with_jwcrypto}
    for name, call in calls.items():  # each must round-trip the same plaintext
        answer = call()
        parsed = jwe.parse_compact(answer, alg=jwe.ALG_DIR)
        if jwe.decrypt(parsed, cek) != plaintext:
            raise AssertionError(f"{name} did not seal the plaintext it opened")
    return calls


def _batch_size(call: Callable[[], Any], seconds: float) -> int:
    start = time.perf_counter()
    call()
    once = max(time.perf_counter() - start, 1e-7)
    return max(1, int(seconds / once))


def compare(*, budget: float = 1.0, sizes: tuple[int, ...] = SIZES) -> dict[str, dict[str, float]]:
    """Seconds per open + seal, by size label and library.

    The libraries take turns, a batch each, 7 times; each keeps its best batch. The best is the
    figure least disturbed by whatever else the machine runs (the bench's machine is shared),
    and taking turns exposes every library to the same moments.
    """
    rounds = 7
    results: dict[str, dict[str, float]] = {}
    for size in sizes:
        calls = operations(size)
        share = budget / len(sizes) / len(calls) / rounds
        batches = {name: _batch_size(calls[name], share) for name in LIBRARIES}
        best = {name: float("inf") for name in LIBRARIES}
        for _ in range(rounds):
            for name in LIBRARIES:
                call, batch = calls[name], batches[name]
                start = time.perf_counter()
                for _ in range(batch):
                    call()
                best[name] = min(best[name], (time.perf_counter() - start) / batch)
        results[size_label(size)] = best
    return results
