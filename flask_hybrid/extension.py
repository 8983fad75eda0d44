"""``HybridEncryption``: key ring, store, limiter, blueprint and middleware in one line."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from flask_limiter import Limiter
from flask_limiter.util import get_remote_address

from .blueprint import create_blueprint
from .config import DEFAULTS, ConfigVars, Settings
from .core.keyring import KeyRing
from .core.rsa import has_implicit_rejection
from .instance import development_identity_key, development_jwt_secret
from .middleware import HybridMiddleware
from .sessions import KeyPool, SessionManager
from .state import HybridState
from .stores import SessionStore, store_from_url
from .stores.base import is_redis_url

if TYPE_CHECKING:
    from flask import Flask

logger = logging.getLogger("flask_hybrid")


class HybridEncryption:
    """Application-level encryption for a Flask app, configured by ``HYBRID_*`` keys.

    ::

        hybrid = HybridEncryption(app)
        # or, with an app factory: hybrid = HybridEncryption(); hybrid.init_app(app)

    Keyword arguments win over ``app.config``, which wins over the defaults. The per-app state
    (a :class:`~flask_hybrid.state.HybridState`) lives in ``app.extensions["hybrid"]``.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: SessionStore | None = None,
        identity_keys: list[bytes | str] | None = None,
        jwt_secret: bytes | str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._store = store
        self._identity_keys = identity_keys
        self._jwt_secret = jwt_secret
        self._clock = clock
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        for key, value in DEFAULTS.items():
            app.config.setdefault(key, value)
        config = app.config
        settings = Settings.from_mapping(config)
        development = config[ConfigVars.DEVELOPMENT]
        if development is None:
            development = app.debug or app.testing
        keyring = KeyRing.from_pems(self._identity_key_pems(app, development))
        if "E" in settings.formats and not has_implicit_rejection(keyring.current.private_key):
            raise RuntimeError(
                "flask-hybrid: format E needs PKCS#1 v1.5 implicit rejection (OpenSSL >= 3.2), "
                "which the OpenSSL used by 'cryptography' lacks. Upgrade cryptography, or leave "
                f"'E' out of {ConfigVars.FORMATS}."
            )
        store_url = config[ConfigVars.STORE_URL]
        store_timeout = float(config[ConfigVars.STORE_TIMEOUT])
        store = self._store or store_from_url(
            store_url,
            key_prefix=config[ConfigVars.STORE_KEY_PREFIX],
            timeout=store_timeout,
        )
        sessions = SessionManager(
            store,
            jwt_secret=self._jwt_secret_value(app, development),
            ttl=settings.session_ttl,
            bind_ip=settings.bind_ip,
            key_pool=KeyPool(int(config[ConfigVars.KEY_POOL_SIZE])),
            clock=self._clock,
        )
        state = HybridState(keyring, sessions, settings, clock=self._clock)
        limiter_storage = self._limiter_storage(config, store_url)
        # a hung Redis must not hang the handshake: the same bounded wait as the store
        # (Flask-Limiter annotates int values; redis-py takes float seconds)
        limiter_options: dict[str, Any] = {}
        if is_redis_url(limiter_storage):
            limiter_options = {
                "socket_timeout": store_timeout,
                "socket_connect_timeout": store_timeout,
            }
        limiter = Limiter(
            get_remote_address,
            app=app,
            storage_uri=limiter_storage,
            storage_options=limiter_options,
            default_limits=[],
            swallow_errors=True,  # a limiter outage must not take the handshake down
            key_prefix=f"{config[ConfigVars.STORE_KEY_PREFIX]}ratelimit",  # apart per app
        )
        app.register_blueprint(
            create_blueprint(
                state, limiter=limiter, handshake_limit=config[ConfigVars.HANDSHAKE_LIMIT]
            )
        )
        # The blueprint raises the middleware's refusals inside this app (see create_blueprint).
        app.wsgi_app = HybridMiddleware(  # type: ignore[method-assign]
            app.wsgi_app, state, refusals_through_app=True
        )
        app.extensions["hybrid"] = state

    def _identity_key_pems(self, app: Flask, development: bool) -> list[bytes | str]:
        configured = self._identity_keys or app.config[ConfigVars.IDENTITY_KEYS]
        if not configured:
            if not development:
                raise RuntimeError(
                    f"flask-hybrid: {ConfigVars.IDENTITY_KEYS} is not set. Give it the PEM "
                    "(or the path of the PEM file) of at least one RSA private key of 2048 "
                    "bits or more; in development one is generated into the instance folder."
                )
            return [development_identity_key(app.instance_path)]
        if isinstance(configured, (str, bytes, os.PathLike)):
            configured = [configured]
        return [_pem_or_file(item, config_key=ConfigVars.IDENTITY_KEYS) for item in configured]

    def _jwt_secret_value(self, app: Flask, development: bool) -> bytes:
        secret = self._jwt_secret or app.config[ConfigVars.JWT_SECRET]
        if not secret:
            if not development:
                raise RuntimeError(
                    f"flask-hybrid: {ConfigVars.JWT_SECRET} is not set. Give it at least 32 random "
                    "bytes, e.g. from `python -c 'import secrets; print(secrets.token_hex(32))'`."
                )
            return development_jwt_secret(app.instance_path)
        secret = secret.encode() if isinstance(secret, str) else secret
        if len(secret) < 32:
            raise ValueError(f"flask-hybrid: {ConfigVars.JWT_SECRET} must be at least 32 bytes")
        return secret

    @staticmethod
    def _limiter_storage(config: Any, store_url: str) -> str:
        configured = config[ConfigVars.RATELIMIT_STORAGE_URL]
        if configured:
            return str(configured)
        return store_url if is_redis_url(store_url) else "memory://"


def _pem_or_file(item: bytes | str | os.PathLike[str], *, config_key: str) -> bytes:
    """PEM text as given, or the bytes of the file it names; an unreadable file names the key."""
    if isinstance(item, bytes):
        return item
    if isinstance(item, str) and item.lstrip().startswith("-----BEGIN"):
        return item.encode("ascii")
    path = Path(item)
    try:
        return path.read_bytes()
    except OSError as error:
        where = "" if path.is_absolute() else f" ({path.absolute()})"
        raise RuntimeError(
            f"flask-hybrid: {config_key} names the file {str(path)!r}{where}, which cannot be "
            f"read: {error.strerror or error}"
        ) from error
