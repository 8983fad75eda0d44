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


# --- format H: the HPKE key set, the instance key, /.well-known/hpke-keys ---------------------
def test_hpke_key_set_first_advertised_all_kept() -> None:
    from flask_hybrid.core.hpke import HpkePrivateKey, KeyConfig

    current, previous = HpkePrivateKey.generate(), HpkePrivateKey.generate()
    ring = KeyRing([IDENTITY_1], hpke_keys=[current, previous])
    assert ring.hpke is not None
    assert ring.hpke.current == current and list(ring.hpke) == [current, previous]
    assert KeyConfig.parse(ring.hpke.key_config()) == KeyConfig(0, current.public_bytes)
    assert KeyRing([IDENTITY_1]).hpke is None
    with pytest.raises(ValueError, match="twice"):
        KeyRing([IDENTITY_1], hpke_keys=[current, current])
    with pytest.raises(ValueError, match="at least one"):
        KeyRing([IDENTITY_1], hpke_keys=[])


def test_development_hpke_key_is_made_once(tmp_path: Path) -> None:
    from flask_hybrid.core.hpke import load_private_key
    from flask_hybrid.instance import HPKE_KEY_FILE, development_hpke_key

    first = development_hpke_key(tmp_path / "instance")
    assert development_hpke_key(tmp_path / "instance") == first
    assert (tmp_path / "instance" / HPKE_KEY_FILE).stat().st_mode & 0o077 == 0
    load_private_key(first)  # an X25519 PKCS#8 PEM


def test_hpke_config_key_has_a_visible_default() -> None:
    from flask_hybrid.config import DEFAULTS, ConfigVars

    assert ConfigVars.HPKE_KEYS == "HYBRID_HPKE_KEYS"
    assert DEFAULTS[ConfigVars.HPKE_KEYS] is None


@pytest.mark.parametrize("prefix", ["/hybrid", "/deep/prefix"])
def test_well_known_hpke_keys_at_the_origin_root(vector_keys: dict[str, Any], prefix: str) -> None:
    import ehbp as tinfoil
    from flask import Flask

    from flask_hybrid import HybridEncryption
    from flask_hybrid.core.hpke import HpkePrivateKey

    flask_app = Flask(__name__)
    flask_app.config.update(
        base_config(vector_keys, HYBRID_URL_PREFIX=prefix, HYBRID_FORMATS=["S", "E", "J"])
    )
    HybridEncryption(flask_app)
    client = flask_app.test_client()
    assert client.get("/.well-known/hpke-keys").status_code == 404  # no format H: no key made
    state = flask_app.extensions["hybrid"]
    current, previous = HpkePrivateKey.generate(), HpkePrivateKey.generate()
    state.keyring = KeyRing(
        [key.private_key for key in state.keyring], hpke_keys=[current, previous]
    )
    response = client.get("/.well-known/hpke-keys")
    assert response.status_code == 200
    assert response.headers["Content-Type"] == "application/ohttp-keys"  # exactly
    identity = tinfoil.ServerIdentity.unmarshal_public_config(response.data)
    assert identity.public_key_bytes() == current.public_bytes
    assert client.get(f"{prefix}/.well-known/hpke-keys").status_code == 404
