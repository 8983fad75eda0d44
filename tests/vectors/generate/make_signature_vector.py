"""Write signature.json: worked examples of the request-bound response signature (RFC 9421).

docs/PROTOCOL.md, "Request-bound response signatures": the server signs an answer with the
components ("@status" "content-digest" ["x-hybrid-refusal"] "@method";req "content-digest";req
[key header;req]), label `hybrid`, tag `flask-hybrid`, alg `rsa-v1_5-sha256`, keyid = the signing
key's kid; its own refusals carry `X-Hybrid-Refusal: <code>`, covered.
Each example fixes the request, the response and `created`, and records every intermediate
value a client author needs: the digests, the Signature-Input, the signature base text and the
Signature. RSASSA-PKCS1-v1_5 is deterministic, so a re-run writes the same file.

Tools: http-message-signatures (PyPI) builds the signature base and signs; the base is also
built by hand from RFC 9421 §2.5 and must be the same text, and the signature is checked with
`cryptography` alone. No flask-hybrid code is used.

    python generate/make_signature_vector.py
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import json
from types import SimpleNamespace

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from http_message_signatures import HTTPMessageSigner, MappingKeyResolver, algorithms

from common import VECTORS_DIR, b64, load_keys, private_key

CREATED = 1767225600  # 2026-01-01T00:00:00Z, the "now" of the other vectors
LABEL, TAG, ALG = "hybrid", "flask-hybrid", "rsa-v1_5-sha256"
BASE_COMPONENTS = ['"@status"', '"content-digest"', '"@method";req', '"content-digest";req']
# The exact refusal bytes of docs/PROTOCOL.md's error table for unknown_key.
UNKNOWN_KEY_BODY = (
    '{"error":"unknown_key","message":'
    '"The key identifier is not known; fetch the server keys and retry."}'
)


def content_digest(body: bytes) -> str:
    """RFC 9530 Content-Digest, sha-256, as an RFC 8941 Dictionary with a Byte Sequence."""
    return f"sha-256=:{b64(hashlib.sha256(body).digest())}:"


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
) -> dict:
    key = private_key(keys, "identity_1")
    kid = keys["identity_1"]["kid"]
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
    signer = HTTPMessageSigner(
        signature_algorithm=algorithms.RSA_V1_5_SHA256,
        key_resolver=MappingKeyResolver(public_keys={}, private_keys={kid: key}),
    )
    options = dict(
        key_id=kid,
        created=datetime.datetime.fromtimestamp(CREATED, tz=datetime.timezone.utc),
        label=LABEL,
        tag=TAG,
        covered_component_ids=components,
        use_existing_digest=True,
    )
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
    signature = key.sign(prepared.signature_base, padding.PKCS1v15(), hashes.SHA256())
    if message.headers["Signature"] != f"{LABEL}=:{b64(signature)}:":
        raise SystemExit("http-message-signatures and cryptography disagree on the signature")
    key.public_key().verify(signature, signature_base.encode(), padding.PKCS1v15(), hashes.SHA256())
    expected_params = (
        f"({' '.join(components)});created={CREATED};keyid=\"{kid}\";alg=\"{ALG}\";tag=\"{TAG}\""
    )
    if prepared.signature_params != expected_params:
        raise SystemExit(f"unexpected parameters: {prepared.signature_params}")
    return {
        "description": description,
        "key": "identity_1",
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


def main() -> None:
    keys = load_keys()
    format_j = json.loads((VECTORS_DIR / "format_j.json").read_text())[0]
    format_s = next(
        vector
        for vector in json.loads((VECTORS_DIR / "format_s.json").read_text())
        if vector["kind"] == "header_key"
    )
    examples = [
        example(
            keys,
            "401 unknown_key refusal of a J request carried in the body (the body of "
            "format_j.json[0], used here for its bytes only)",
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
            "format_s.json): the request's digest is that of the empty body, so the key "
            "header is covered too",
            method=format_s["request"]["method"],
            target=format_s["request"]["target"],
            request_headers={
                "X-Encryption-Enabled": "true",
                "X-Encrypted-Aes-Key": format_s["request"]["headers"]["X-Encrypted-Aes-Key"],
            },
            request_body="",
            status=204,
            response_headers={},
            response_body="",
        ),
    ]
    path = VECTORS_DIR / "signature.json"
    path.write_text(json.dumps(examples, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"wrote {path} ({len(examples)} examples)")


if __name__ == "__main__":
    main()
