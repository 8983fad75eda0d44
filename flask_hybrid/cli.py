"""``flask hybrid ...``: make keys and secrets for production, and show what an app loaded."""

from __future__ import annotations

import json
import os
import secrets
from pathlib import Path

import click
from flask import current_app
from flask.cli import AppGroup

from .core import rsa

cli = AppGroup("hybrid", help="flask-hybrid: identity keys and secrets.")


@cli.command("keygen", with_appcontext=False)  # runs before the app has a key
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bits", default=3072, show_default=True, type=click.IntRange(min=2048))
def keygen(path: Path, bits: int) -> None:
    """Write a new RSA identity key (PKCS#8 PEM, mode 0600) to PATH, for HYBRID_IDENTITY_KEYS."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(rsa.private_pem(rsa.generate_private_key(bits)))
    click.echo(f"wrote {path}")


@cli.command("secret", with_appcontext=False)
def secret() -> None:
    """Print a random value for HYBRID_JWT_SECRET."""
    click.echo(secrets.token_hex(32))


@cli.command("keys")
def keys() -> None:
    """Print the JWK Set of the identity keys this app loaded (current first)."""
    state = current_app.extensions["hybrid"]
    click.echo(json.dumps(state.keyring.jwks(), indent=2))
