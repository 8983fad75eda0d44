"""The key ring: identity keys decrypt, signing keys sign, and the JWK Set says which is which."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from flask_hybrid.core import rsa
from flask_hybrid.core.keyring import KeyRing, parse_jwks, thumbprint
from flask_hybrid.errors import HybridError

from .conftest import base_config, hybrid_state

KEYS = json.loads((Path(__file__).resolve().parent / "vectors" / "keys.json").read_text())
IDENTITY_1 = rsa.load_private_key(KEYS["identity_1"]["private_pem"])
IDENTITY_2 = rsa.load_private_key(KEYS["identity_2"]["private_pem"])
SIGNER = rsa.load_private_key(KEYS["session"]["private_pem"])  # any third key will do
KID_1, KID_2, SIGNER_KID = (thumbprint(key) for key in (IDENTITY_1, IDENTITY_2, SIGNER))


def uses(document: dict[str, Any]) -> list[tuple[str, str, str]]:
    return [(entry["kid"], entry["use"], entry["alg"]) for entry in document["keys"]]


def test_signing_defaults_to_the_identity_keys() -> None:
    ring = KeyRing([IDENTITY_1, IDENTITY_2])
    assert ring.signing is ring.current and ring.signing.kid == KID_1
    assert not ring.separate_signing_keys
    assert ring.signing_key(KID_2) is ring.get(KID_2)
    # Each key twice, once per use: identity keys first, current first in each list.
    assert uses(ring.jwks()) == [
        (KID_1, "enc", "RSA-OAEP-256"),
        (KID_2, "enc", "RSA-OAEP-256"),
        (KID_1, "sig", "RS256"),
        (KID_2, "sig", "RS256"),
    ]


def test_separate_signing_keys_never_decrypt_and_identity_keys_never_sign() -> None:
    ring = KeyRing([IDENTITY_1, IDENTITY_2], signing_keys=[SIGNER, IDENTITY_2])
    assert ring.separate_signing_keys
    assert ring.signing.kid == SIGNER_KID and ring.signing.private_key is SIGNER
    assert ring.get(SIGNER_KID) is None  # a request encrypted to the signing key: unknown_key
    assert ring.signing_key(KID_1) is None
    assert ring.signing_key(KID_2) is not None  # an older signing key, still listed
    assert [key.kid for key in ring] == [KID_1, KID_2]
    assert uses(ring.jwks()) == [
        (KID_1, "enc", "RSA-OAEP-256"),
        (KID_2, "enc", "RSA-OAEP-256"),
        (SIGNER_KID, "sig", "RS256"),
        (KID_2, "sig", "RS256"),
    ]
    entry = ring.jwks()["keys"][2]
    assert list(entry) == ["kty", "kid", "use", "alg", "n", "e"]
    assert {"kty": entry["kty"], "n": entry["n"], "e": entry["e"]} == {
        key: value for key, value in ring.signing.jwk.items() if key != "kid"
    }


def test_bad_rings_are_refused() -> None:
    with pytest.raises(ValueError, match="signing key is configured twice"):
        KeyRing([IDENTITY_1], signing_keys=[SIGNER, SIGNER])
    with pytest.raises(ValueError, match="at least one signing key"):
        KeyRing([IDENTITY_1], signing_keys=[])
    with pytest.raises(ValueError, match="identity key is configured twice"):
        KeyRing([IDENTITY_1, IDENTITY_1])


def test_parse_jwks_by_use() -> None:
    body = json.dumps(KeyRing([IDENTITY_1, IDENTITY_2], signing_keys=[SIGNER]).jwks()).encode()
    assert list(parse_jwks(body)) == [KID_1, KID_2]
    assert list(parse_jwks(body, use="enc")) == [KID_1, KID_2]
    assert list(parse_jwks(body, use="sig")) == [SIGNER_KID]
    with pytest.raises(ValueError, match="use must be one of"):
        parse_jwks(body, use="both")


def test_parse_jwks_of_a_set_without_use() -> None:
    """A server from before key separation: every key encrypts, and signs with the same key."""
    unmarked = {
        "keys": [{"kty": "RSA", **KeyRing([key]).current.jwk} for key in (IDENTITY_1, IDENTITY_2)]
    }
    body = json.dumps(unmarked).encode()
    assert list(parse_jwks(body)) == list(parse_jwks(body, use="sig")) == [KID_1, KID_2]
    # In a set that marks uses, an unmarked entry is an encryption key only.
    marked = {"keys": [unmarked["keys"][0], {**unmarked["keys"][1], "use": "sig"}]}
    body = json.dumps(marked).encode()
    assert list(parse_jwks(body)) == [KID_1]
    assert list(parse_jwks(body, use="sig")) == [KID_2]
    only_signing = {"keys": [{**unmarked["keys"][0], "use": "sig"}]}
    with pytest.raises(HybridError):
        parse_jwks(json.dumps(only_signing).encode())  # nothing to encrypt to


def test_signing_keys_from_config(make_app: Any, tmp_path: Path, vector_keys: dict) -> None:
    signer_file = tmp_path / "signing.pem"
    signer_file.write_text(KEYS["session"]["private_pem"])
    flask_app = make_app(HYBRID_SIGNING_KEYS=[str(signer_file)])
    ring = hybrid_state(flask_app).keyring
    assert ring.signing.kid == SIGNER_KID and ring.current.kid == KID_1
    served = flask_app.test_client().get("/hybrid/jwks.json").get_json()
    assert served == ring.jwks()
    assert uses(served)[-1] == (SIGNER_KID, "sig", "RS256")
    # One PEM text works as well as a list; unset means the identity keys sign.
    single = make_app(HYBRID_SIGNING_KEYS=KEYS["session"]["private_pem"])
    assert hybrid_state(single).keyring.signing.kid == SIGNER_KID
    assert hybrid_state(make_app()).keyring.signing.kid == KID_1
    assert base_config(vector_keys).get("HYBRID_SIGNING_KEYS") is None


def test_bad_signing_keys_are_refused_at_start_up_naming_the_key(
    make_app: Any, tmp_path: Path
) -> None:
    small = rsa.private_pem(rsa.generate_private_key(1024))
    for configured in ([small], [str(tmp_path / "missing.pem")]):
        with pytest.raises((ValueError, RuntimeError), match="HYBRID_SIGNING_KEYS"):
            make_app(HYBRID_SIGNING_KEYS=configured)
