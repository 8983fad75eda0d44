"""Development keys kept in the app's instance folder, made once and shared by every process.

Creation is atomic: a key is written to a temporary file and hard-linked into place, so when
several processes start together exactly one file wins and every process reads that one.
"""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path

from .core import hpke, rsa

IDENTITY_KEY_FILE = "hybrid-identity-key.pem"
HPKE_KEY_FILE = "hybrid-hpke-key.pem"
JWT_SECRET_FILE = "hybrid-jwt-secret"  # noqa: S105 - a file name, not a secret


def _read_or_create(path: Path, make: bytes) -> bytes:
    path.parent.mkdir(parents=True, exist_ok=True)
    if not path.exists():
        temporary = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(descriptor, "wb") as handle:
                handle.write(make)
            with contextlib.suppress(FileExistsError):  # another process won: use its file
                os.link(temporary, path)
        finally:
            temporary.unlink(missing_ok=True)
    return path.read_bytes()


def development_identity_key(instance_path: str | os.PathLike[str]) -> bytes:
    """The PEM of the instance folder's identity key, generated on first use."""
    path = Path(instance_path) / IDENTITY_KEY_FILE
    if path.exists():
        return path.read_bytes()
    return _read_or_create(path, rsa.private_pem(rsa.generate_private_key()))


def development_hpke_key(instance_path: str | os.PathLike[str]) -> bytes:
    """The PEM of the instance folder's X25519 key for format H, generated on first use."""
    path = Path(instance_path) / HPKE_KEY_FILE
    if path.exists():
        return path.read_bytes()
    return _read_or_create(path, hpke.HpkePrivateKey.generate().private_pem())


def development_jwt_secret(instance_path: str | os.PathLike[str]) -> bytes:
    """The instance folder's JWT secret (32 random bytes, hex), generated on first use."""
    path = Path(instance_path) / JWT_SECRET_FILE
    return _read_or_create(path, secrets.token_hex(32).encode()).strip()
