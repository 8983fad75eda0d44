"""Write signature.json: worked examples of the request-bound response signature (RFC 9421).

docs/PROTOCOL.md, "Request-bound response signatures": the server signs an answer with the
components ("@status" "content-digest" ["x-hybrid-refusal"] "@method";req "content-digest";req
[key header;req]), label `hybrid`, tag `flask-hybrid`. Its own refusals carry
`X-Hybrid-Refusal: <code>`, covered, and are signed with alg `rsa-v1_5-sha256`, keyid = the
signing key's kid. The app's answers to a request it opened (a 204 to a sealed request, format
S's sealed answers) are bound instead with alg `hmac-sha256`, keyid `cek`: an HMAC-SHA256 of the
same kind of base under HKDF-SHA256(the request's CEK, no salt, info "flask-hybrid answer
binding", 32 bytes).
Each example fixes the request, the response and `created`, and records every intermediate
value a client author needs: the digests, the CEK and the answer key it gives (HMAC examples),
the Signature-Input, the signature base text and the Signature. RSASSA-PKCS1-v1_5 and HMAC are
deterministic, and the HMAC examples reuse the fixed CEKs and IVs of format_s.json, so a re-run
writes the same file.

Tools: http-message-signatures (PyPI) builds the signature base and signs; the base is also
built by hand from RFC 9421 §2.5 and must be the same text, and the signature is checked with
`cryptography` alone (RSA verify, or HKDF and HMAC). The sealed answer is sealed again with
cryptography's AESGCM and must be format_s.json's. No flask-hybrid code is used.

    python generate/make_signature_vector.py   # from tests/vectors
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from types import SimpleNamespace

from cryptography.hazmat.primitives import hashes, hmac
from cryptography.hazmat.primitives.asymmetric import padding
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from common import VECTORS_DIR, b64, json_text, load_keys, private_key

CREATED = 1767225600  # 2026-01-01T00:00:00Z, the "now" of the other vectors
LABEL, TAG = "hybrid", "flask-hybrid"
RSA_ALG, HMAC_ALG = "rsa-v1_5-sha256", "hmac-sha256"
CEK_KEYID = "cek"
ANSWER_KEY_INFO = b"flask-hybrid answer binding"
BASE_COMPONENTS = ['"@status"', '"content-digest"', '"@method";req', '"content-digest";req']
# The exact refusal bytes of docs/PROTOCOL.md's error table for unknown_key.
UNKNOWN_KEY_BODY = (
    '{"error":"unknown_key","message":'
    '"The key identifier is not known; fetch the server keys and retry."}'
)


def content_digest(body: bytes) -> str:
    """RFC 9530 Content-Digest, sha-256, as an RFC 8941 Dictionary with a Byte Sequence."""
    return f"sha-256=:{b64(hashlib.sha256(body).digest())}:"


def answer_key(cek: bytes) -> bytes:
    """PROTOCOL.md: HKDF-SHA256(ikm = the request's CEK, no salt, info, 32 bytes)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=ANSWER_KEY_INFO).derive(cek)


def base_by_hand(
    status: int,
    response_digest: str,
    method: str,
    request_headers: dict[str, str],
    components: list[str],
    signature_params: str,
    refusal: str | None,
) -> str:
    """RFC 9421 §2.5: one line per component, then "@signature-params"; no final newline."""
    values = {
        '"@status"': str(status),
        '"content-digest"': response_digest,
        '"x-hybrid-refusal"': refusal or "",
        '"@method";req': method,
    }
    lowered = {name.lower(): value.strip() for name, value in request_headers.items()}
    lines = []
    for component in components:
        if component in values:
            value = values[component]
        else:  # '"<field>";req': the request's field, as the client sent it
            value = lowered[component.split('"')[1]]
        lines.append(f"{component}: {value}")
    lines.append(f'"@signature-params": {signature_params}')
    return "\n".join(lines)


def example(
    keys: dict,
    description: str,
    *,
    method: str,
    target: str,
    request_headers: dict[str, str],
    request_body: str,
    status: int,
    response_headers: dict[str, str],
    response_body: str,
    refusal: str | None = None,
    cek: bytes | None = None,
) -> dict:
    """One worked example: signed by identity_1 (RSA), or bound by the HMAC when ``cek``."""
    request_headers = {**request_headers, "Content-Digest": content_digest(request_body.encode())}
    response_digest = content_digest(response_body.encode())
    components = BASE_COMPONENTS + [
        f'"{name}";req'
        for name in ("x-hybrid-jwe", "x-encrypted-aes-key")
        if name in {header.lower() for header in request_headers}
    ]
    marker = {}
    if refusal is not None:  # flask-hybrid's own refusal: marked, and the mark covered
        marker = {"X-Hybrid-Refusal": refusal}
        components.insert(2, '"x-hybrid-refusal"')
    message = SimpleNamespace(
        status_code=status,
        headers={**response_headers, "Content-Digest": response_digest, **marker},
        request=SimpleNamespace(
            method=method,
            url=f"http://flask-hybrid.invalid{target}",  # required by the library, not covered
            headers=dict(request_headers),
        ),
    )
    if cek is None:
        alg, kid, key = RSA_ALG, keys["identity_1"]["kid"], private_key(keys, "identity_1")
        algorithm = algorithms.RSA_V1_5_SHA256
    else:
        alg, kid, key = HMAC_ALG, CEK_KEYID, answer_key(cek)
        algorithm = algorithms.HMAC_SHA256
    signer = HTTPMessageSigner(
        signature_algorithm=algorithm,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={kid: key}),
    )
    options = {
        "key_id": kid,
        "created": datetime.datetime.fromtimestamp(CREATED, tz=datetime.UTC),
        "label": LABEL,
        "tag": TAG,
        "covered_component_ids": components,
        "use_existing_digest": True,
    }
    prepared = signer.prepare(message, **options)
    signature_base = prepared.signature_base.decode("ascii")
    by_hand = base_by_hand(
        status,
        response_digest,
        method,
        request_headers,
        components,
        prepared.signature_params,
        refusal,
    )
    if by_hand != signature_base:
        raise SystemExit(f"signature base differs:\n{by_hand}\n---\n{signature_base}")
    signer.sign(message, **options)
    if cek is None:
        signature = key.sign(prepared.signature_base, padding.PKCS1v15(), hashes.SHA256())
        key.public_key().verify(
            signature, signature_base.encode(), padding.PKCS1v15(), hashes.SHA256()
        )
    else:
        mac = hmac.HMAC(key, hashes.SHA256())
        mac.update(signature_base.encode())
        signature = mac.finalize()
    if message.headers["Signature"] != f"{LABEL}=:{b64(signature)}:":
        raise SystemExit("http-message-signatures and cryptography disagree on the signature")
    expected_params = (
        f'({" ".join(components)});created={CREATED};keyid="{kid}";alg="{alg}";tag="{TAG}"'
    )
    if prepared.signature_params != expected_params:
        raise SystemExit(f"unexpected parameters: {prepared.signature_params}")
    if cek is None:
        signing = {"key": "identity_1"}
    else:
        signing = {"cek_hex": cek.hex(), "answer_key_hex": key.hex()}
    return {
        "description": description,
        "alg": alg,
        **signing,
        "kid": kid,
        "created": CREATED,
        "request": {
            "method": method,
            "target": target,
            "headers": request_headers,
            "body": request_body,
        },
        "response": {
            "status": status,
            "headers": dict(message.headers),
            "body": response_body,
        },
        "covered_components": components,
        "signature_params": prepared.signature_params,
        "signature_input": message.headers["Signature-Input"],
        "signature_base": signature_base,
        "signature_b64": base64.b64encode(signature).decode("ascii"),
        "signature": message.headers["Signature"],
    }


def sealed_answer(vector: dict) -> str:
    """The format S answer body of ``vector``, sealed again here; it must be the recorded one."""
    cek = bytes.fromhex(vector["cek_hex"])
    answer = vector["response"]
    sealed = AESGCM(cek).encrypt(
        bytes.fromhex(answer["iv_hex"]), answer["plaintext"].encode(), None
    )
    envelope = {
        "encryptedData": b64(sealed[:-16]),
        "iv": b64(bytes.fromhex(answer["iv_hex"])),
        "authTag": b64(sealed[-16:]),
    }
    if envelope != answer["envelope"]:
        raise SystemExit("AESGCM does not seal the answer of format_s.json as recorded")
    return json_text(envelope)  # as the server sends it: compact, in this member order


def main() -> None:
    keys = load_keys()
    format_j = json.loads((VECTORS_DIR / "format_j.json").read_text())[0]
    format_s = json.loads((VECTORS_DIR / "format_s.json").read_text())
    header_key = next(vector for vector in format_s if vector["kind"] == "header_key")
    posted = format_s[0]
    if posted["kind"] != "request" or format_s[4]["cek_hex"] != posted["cek_hex"]:
        raise SystemExit("format_s.json is not as this script expects")
    examples = [
        example(
            keys,
            "401 unknown_key refusal of a J request carried in the body (the body of "
            "format_j.json[0], used here for its bytes only): flask-hybrid's own refusal, "
            "signed with the signing key identity_1",
            method=format_j["request"]["method"],
            target=format_j["request"]["target"],
            request_headers={"Content-Type": "application/jose"},
            request_body=format_j["jwe"],
            status=401,
            response_headers={"Content-Type": "application/json"},
            response_body=UNKNOWN_KEY_BODY,
            refusal="unknown_key",
        ),
        example(
            keys,
            "204 with no body to a bodiless S request (the X-Encrypted-Aes-Key header form of "
            "format_s.json, whose CEK is cek_hex): the app's answer, bound by the HMAC under "
            "the answer key of that CEK; the request's digest is that of the empty body, so "
            "the key header is covered too",
            method=header_key["request"]["method"],
            target=header_key["request"]["target"],
            request_headers={
                "X-Encryption-Enabled": "true",
                "X-Encrypted-Aes-Key": header_key["request"]["headers"]["X-Encrypted-Aes-Key"],
            },
            request_body="",
            status=204,
            response_headers={},
            response_body="",
            cek=bytes.fromhex(header_key["cek_hex"]),
        ),
        example(
            keys,
            "200 sealed format S answer to a POST with a body (format_s.json[0]: its request "
            "envelope as sent, its answer sealed under its CEK and response IV): bound by the "
            "HMAC under the answer key of that CEK. format_s.json[4] reuses the CEK, and its "
            "answer would open under it too; the covered request digest tells them apart",
            method="POST",
            target="/api/echo",
            request_headers={
                "Content-Type": "application/json",
                "X-Encryption-Enabled": "true",
            },
            request_body=json_text(posted["request"]["envelope"]),
            status=posted["response"]["status"],
            response_headers={
                "Content-Type": "application/json",
                "X-Encryption-Enabled": "true",
                "X-Plaintext-Content-Type": "application/json",
            },
            response_body=sealed_answer(posted),
            cek=bytes.fromhex(posted["cek_hex"]),
        ),
    ]
    path = VECTORS_DIR / "signature.json"
    path.write_text(json.dumps(examples, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(examples)} examples)")


if __name__ == "__main__":
    main()
