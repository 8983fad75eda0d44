"""``flask hybrid ...``: make keys and secrets for production, and show what an app loaded.

Mistakes a user makes (a key file that exists, a folder that does not, an app without the
extension, a ``HYBRID_*`` setting that stops flask-hybrid from starting) end in one line that
names the file or the key, and exit status 1, as ``click.ClickException`` does: a traceback would
only bury that line.
"""

from __future__ import annotations

import json
import os
import secrets
import traceback
from pathlib import Path
from typing import TYPE_CHECKING

import click
from flask import current_app
from flask.cli import AppGroup, ScriptInfo

from .core import hpke, rsa

if TYPE_CHECKING:
    from flask import Flask

cli = AppGroup("hybrid", help="flask-hybrid: identity keys and secrets.")


@cli.command("keygen", with_appcontext=False)  # runs before the app has a key
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--bits", default=3072, show_default=True, type=click.IntRange(min=2048))
@click.option(
    "--hpke",
    "hpke_key",
    is_flag=True,
    help="Write an X25519 key for format H (HYBRID_HPKE_KEYS) instead.",
)
def keygen(path: Path, bits: int, hpke_key: bool) -> None:
    """Write a new RSA identity key (PKCS#8 PEM, mode 0600) to PATH, for HYBRID_IDENTITY_KEYS.

    With --hpke, an X25519 key (PKCS#8 PEM, mode 0600) for format H's HYBRID_HPKE_KEYS.
    """
    if hpke_key:
        source = click.get_current_context().get_parameter_source("bits")
        if source is not click.core.ParameterSource.DEFAULT:
            raise click.UsageError("--bits is for RSA keys; an X25519 key has no size to choose")
        pem = hpke.HpkePrivateKey.generate().private_pem()
    else:
        pem = rsa.private_pem(rsa.generate_private_key(bits))  # before the file: none half-made
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise click.ClickException(f"{path} already exists; not replacing a key file") from None
    except FileNotFoundError:
        raise click.ClickException(f"cannot write {path}: no folder {path.parent}") from None
    except OSError as error:
        raise click.ClickException(f"cannot write {path}: {error.strerror or error}") from None
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(pem)
    click.echo(f"wrote {path}")


@cli.command("secret", with_appcontext=False)
def secret() -> None:
    """Print a random value for HYBRID_JWT_SECRET."""
    click.echo(secrets.token_hex(32))


@cli.command("keys", with_appcontext=False)  # loads the app itself, see _load_app
def keys() -> None:
    """Print the JWK Set of the identity keys this app loaded (current first)."""
    app = _load_app()
    state = app.extensions.get("hybrid")
    if state is None:
        raise click.ClickException(
            f"the app {app.name!r} does not use flask-hybrid: "
            "call HybridEncryption(app) (or hybrid.init_app(app)) where the app is made"
        )
    click.echo(json.dumps(state.keyring.jwks(), indent=2))


def _load_app() -> Flask:
    """The app of ``--app``; a failure of flask-hybrid's set-up as one line, not a traceback.

    Only an exception raised inside ``HybridEncryption.init_app`` (a configuration problem, whose
    message names its ``HYBRID_*`` key) is shortened; any other error of the app's own code keeps
    its traceback, which is what a bug there needs.
    """
    if current_app:
        return current_app._get_current_object()  # type: ignore[attr-defined]
    info = click.get_current_context().ensure_object(ScriptInfo)
    try:
        return info.load_app()
    except Exception as error:
        if not _raised_in_init_app(error):
            raise
        message = " ".join(str(error).split()).removeprefix("flask-hybrid: ")
        message = message or type(error).__name__
        raise click.ClickException(f"flask-hybrid did not start: {message}") from None


def _raised_in_init_app(error: BaseException) -> bool:
    from .extension import HybridEncryption  # the extension only when an app failed to load

    init_app = HybridEncryption.init_app.__code__
    return any(frame.f_code is init_app for frame, _ in traceback.walk_tb(error.__traceback__))
