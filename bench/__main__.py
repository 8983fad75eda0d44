"""Compare each format's request path with the plain request, as ratios measured in one run.

Runs through Flask's test client (no sockets), so what is measured is flask-hybrid's own work:
parsing, RSA unwrap, AES-GCM, sealing and signing. Client-side encryption is done ahead of the
timed loop, so only the server's share is timed. Absolute times depend on the machine; the ratios
are what to compare across changes.

    python -m bench [--rounds N]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

import app as demo
from flask_hybrid.core import aead, jwe, rsa
from flask_hybrid.core.encoding import b64encode, b64url_encode

ORDER = json.dumps(
    {
        "order": {
            "id": 1042,
            "lines": [{"sku": f"SKU-{n}", "qty": n, "price": "9.90"} for n in range(20)],
        }
    }
).encode()


def _timed(run: Callable[[], Any], rounds: int) -> float:
    for _ in range(max(3, rounds // 10)):  # warm-up
        run()
    samples = []
    for _ in range(5):
        start = time.perf_counter()
        for _ in range(rounds):
            run()
        samples.append((time.perf_counter() - start) / rounds)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=200)
    rounds = parser.parse_args().rounds

    flask_app = demo.create_app(
        {
            "HYBRID_STORE_URL": "memory://",
            "HYBRID_HANDSHAKE_LIMIT": "1000000 per minute",
            "HYBRID_JWE_LIMIT": "1000000 per minute",
            "HYBRID_REPLAY_WINDOW": 3600,
        }
    )
    flask_app.instance_path = tempfile.mkdtemp(prefix="flask-hybrid-bench-")
    client = flask_app.test_client()
    state = flask_app.extensions["hybrid"]
    identity = state.keyring.current
    identity_public = identity.private_key.public_key()

    handshake_cek = aead.new_cek()
    response = client.post(
        "/hybrid/session", json={"aesKey": b64encode(handshake_cek), "deviceId": "bench"}
    )
    from flask_hybrid.core import formats

    session = json.loads(formats.open_session_response(response.data, handshake_cek))
    session_public = rsa.load_public_key(session["publicKey"])
    session_headers = {
        "Authorization": f"Bearer {session['token']}",
        "X-Device-Id": "bench",
        "X-Encryption-Enabled": "true",
        "Content-Type": "application/json",
    }

    def s_body(cek: bytes) -> bytes:
        iv, ciphertext, tag = aead.seal(cek, ORDER)
        return json.dumps(
            {
                "encryptedAesKey": b64encode(rsa.wrap_oaep(session_public, cek)),
                "encryptedData": b64encode(ciphertext),
                "iv": b64encode(iv),
                "authTag": b64encode(tag),
            }
        ).encode()

    def e_body(oaep: bool) -> bytes:
        cek = aead.new_cek()
        material = cek if oaep else b64encode(cek).encode()
        iv, ciphertext, tag = aead.seal(cek, ORDER)
        wrapped = identity_public.encrypt(material, rsa.OAEP_SHA256 if oaep else rsa.PKCS1V15)
        return json.dumps(
            {
                "alg": "RSA-OAEP-256+AES-GCM" if oaep else "RSA+AES-GCM",
                "ek": b64encode(wrapped),
                "iv": b64encode(iv),
                "ct": b64encode(ciphertext + tag),
            }
        ).encode()

    reused_cek = aead.new_cek()
    reused_wrapped = b64url_encode(rsa.wrap_oaep(identity_public, reused_cek))

    def j_body(reuse: bool) -> str:
        header = {
            "alg": "RSA-OAEP-256",
            "enc": "A256GCM",
            "kid": identity.kid,
            "htm": "POST",
            "htu": "/api/echo",
            "iat": int(time.time()),
            "jti": b64url_encode(aead.new_cek()[:16]),
            "cty": "json",
        }
        if not reuse:
            return jwe.encrypt(header, ORDER, aead.new_cek(), public_key=identity_public)
        parts = jwe.encrypt(header, ORDER, reused_cek, public_key=identity_public).split(".")
        parts[1] = reused_wrapped
        return ".".join(parts)

    total = rounds * 7 + 100
    bodies: dict[str, list[Any]] = {
        "S fresh CEK": [s_body(aead.new_cek()) for _ in range(total)],
        "S reused CEK": [s_body(reused_cek)] * total,
        "E OAEP, signed": [e_body(True) for _ in range(total)],
        "E PKCS#1 v1.5, signed": [e_body(False) for _ in range(total)],
        "J fresh CEK": [j_body(False) for _ in range(total)],
        "J reused CEK": [j_body(True) for _ in range(total)],
    }
    senders: dict[str, Callable[[Any], Any]] = {
        "S fresh CEK": lambda body: client.post("/api/echo", data=body, headers=session_headers),
        "S reused CEK": lambda body: client.post("/api/echo", data=body, headers=session_headers),
        "E OAEP, signed": lambda body: client.post(
            "/api/echo", data=body, headers={"X-Encryption-Enabled": "true"}
        ),
        "E PKCS#1 v1.5, signed": lambda body: client.post(
            "/api/echo", data=body, headers={"X-Encryption-Enabled": "true"}
        ),
        "J fresh CEK": lambda body: client.post(
            "/api/echo", data=body, headers={"Content-Type": "application/jose"}
        ),
        "J reused CEK": lambda body: client.post(
            "/api/echo", data=body, headers={"Content-Type": "application/jose"}
        ),
    }

    plain = _timed(
        lambda: client.post("/api/echo", data=ORDER, headers={"Content-Type": "application/json"}),
        rounds,
    )
    print(f"plain POST /api/echo: {plain * 1e6:8.0f} µs/request  (ratio 1.00)")
    for name, send in senders.items():
        queue = iter(bodies[name])

        def one(send: Callable[[Any], Any] = send, queue: Any = queue) -> None:
            response = send(next(queue))
            assert response.status_code == 200, response.data

        seconds = _timed(one, rounds)
        print(f"{name:<22}: {seconds * 1e6:8.0f} µs/request  (ratio {seconds / plain:5.2f})")
    burst = _timed(
        lambda: client.post(
            "/hybrid/session", json={"aesKey": b64encode(handshake_cek), "deviceId": "bench"}
        ),
        max(5, rounds // 20),
    )
    print(f"handshake, burst      : {burst * 1e6:8.0f} µs  (ratio {burst / plain:6.1f})")
    warm = []
    for _ in range(3):  # one handshake at a time, the key pool refilled in between
        time.sleep(1.0)
        start = time.perf_counter()
        client.post("/hybrid/session", json={"aesKey": b64encode(handshake_cek), "deviceId": "b"})
        warm.append(time.perf_counter() - start)
    pooled = statistics.median(warm)
    print(f"handshake, pooled key : {pooled * 1e6:8.0f} µs  (ratio {pooled / plain:6.1f})")


if __name__ == "__main__":
    main()
