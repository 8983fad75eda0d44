"""``HybridEncryption``: key ring, stores, rate limits, blueprint and middleware in one line."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .blueprint import create_blueprint
from .config import DEFAULTS, ConfigVars, Settings
from .core.hpke import HpkePrivateKey
from .core.hpke import load_private_key as load_hpke_key
from .core.keyring import KeyRing
from .core.rsa import PrivateKey, has_implicit_rejection, load_private_key
from .instance import development_hpke_key, development_identity_key, development_jwt_secret
from .keypool import KeyPool
from .middleware import HybridMiddleware
from .ratelimit import RateLimits, limit_storage_from_url
from .sessions import SessionManager
from .state import HybridState
from .stores import SessionStore, store_from_url
from .stores.base import is_redis_url

if TYPE_CHECKING:
    from flask import Flask
    from flask_limiter import Limiter

logger = logging.getLogger("flask_hybrid")


class HybridEncryption:
    """Application-level encryption for a Flask app, configured by ``HYBRID_*`` keys.

    ::

        hybrid = HybridEncryption(app)
        # or, with an app factory: hybrid = HybridEncryption(); hybrid.init_app(app)

    Keyword arguments win over ``app.config``, which wins over the defaults. The per-app state
    (a :class:`~flask_hybrid.state.HybridState`) lives in ``app.extensions["hybrid"]``.

    Rate limits: pass the app's own Flask-Limiter as ``limiter=`` and the handshake limit
    (``HYBRID_HANDSHAKE_LIMIT``) is put on it, with its storage and its ``RATELIMIT_*`` settings.
    Without it, flask-hybrid counts the handshake itself (:mod:`flask_hybrid.ratelimit`) and
    registers nothing that could touch the app's other routes. Identity-key J requests
    (``HYBRID_JWE_LIMIT``) are always counted by flask-hybrid, in the middleware.
    ``replay_store=`` keeps J's replay records apart from the sessions (else
    ``HYBRID_REPLAY_STORE_URL`` / ``HYBRID_REPLAY_KEY_PREFIX``, else the session store).
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        store: SessionStore | None = None,
        identity_keys: list[bytes | str] | None = None,
        jwt_secret: bytes | str | None = None,
        clock: Callable[[], float] = time.time,
        limiter: Limiter | None = None,
        replay_store: SessionStore | None = None,
    ) -> None:
        self._store = store
        self._limiter = limiter
        self._replay_store = replay_store
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
        hpke_keys = self._hpke_keys(app, development and "H" in settings.formats)
        if hpke_keys is None and "H" in settings.formats:
            if config[ConfigVars.FORMATS] is not DEFAULTS[ConfigVars.FORMATS]:
                raise RuntimeError(
                    f"flask-hybrid: format H needs {ConfigVars.HPKE_KEYS}: the PEM (or the path "
                    "of the PEM file) of at least one X25519 private key, from "
                    "`flask hybrid keygen --hpke`; in development one is generated."
                )
            settings = replace(settings, formats=settings.formats - {"H"})  # H by default only
        keyring = KeyRing(
            (load_private_key(pem) for pem in self._identity_key_pems(app, development)),
            self._signing_keys(app),
            hpke_keys=hpke_keys,
        )
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
            replay_store=self._replay_store_for(config, store, store_timeout),
        )
        limits = RateLimits(
            handshake=config[ConfigVars.HANDSHAKE_LIMIT],
            jwe=config[ConfigVars.JWE_LIMIT],
            # the same bounded wait as the store: a hung Redis must not hang a request
            storage=limit_storage_from_url(
                self._limiter_storage(config, store_url),
                key_prefix=f"{config[ConfigVars.STORE_KEY_PREFIX]}ratelimit",  # apart per app
                timeout=store_timeout,
            ),
        )
        state = HybridState(keyring, sessions, settings, clock=self._clock, limits=limits)
        app.register_blueprint(create_blueprint(state, limiter=self._limiter))
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

    @staticmethod
    def _hpke_keys(app: Flask, development: bool) -> list[HpkePrivateKey] | None:
        """Format H's X25519 keys: ``HYBRID_HPKE_KEYS``, else (in development, with format H
        on) one generated into the instance folder, else none."""
        configured = app.config[ConfigVars.HPKE_KEYS]
        if not configured:
            if not development:
                return None
            return [load_hpke_key(development_hpke_key(app.instance_path))]
        if isinstance(configured, (str, bytes, os.PathLike)):
            configured = [configured]
        try:
            return [
                load_hpke_key(_pem_or_file(item, config_key=ConfigVars.HPKE_KEYS))
                for item in configured
            ]
        except ValueError as error:
            raise ValueError(f"flask-hybrid: {ConfigVars.HPKE_KEYS}: {error}") from None

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

    def _replay_store_for(
        self, config: Any, session_store: SessionStore, timeout: float
    ) -> SessionStore:
        """The store for J's replay records: the ``replay_store`` argument, else one of its own
        URL or prefix if configured, else the session store itself (one connection pool)."""
        if self._replay_store is not None:
            return self._replay_store
        url = config[ConfigVars.REPLAY_STORE_URL]
        prefix = config[ConfigVars.REPLAY_KEY_PREFIX]
        if not url and not prefix:
            return session_store
        if not url and self._store is not None:
            # HYBRID_STORE_URL may not describe the store object; guessing could split replay
            # records per process without a word.
            raise ValueError(
                f"flask-hybrid: {ConfigVars.REPLAY_KEY_PREFIX} with a store object needs "
                f"{ConfigVars.REPLAY_STORE_URL} or the replay_store argument"
            )
        return store_from_url(
            url or config[ConfigVars.STORE_URL],
            key_prefix=prefix or config[ConfigVars.STORE_KEY_PREFIX],
            timeout=timeout,
        )

    def _signing_keys(self, app: Flask) -> list[PrivateKey] | None:
        """``HYBRID_SIGNING_KEYS`` loaded, or ``None``: the identity keys sign."""
        configured = app.config[ConfigVars.SIGNING_KEYS]
        if not configured:
            return None
        if isinstance(configured, (str, bytes, os.PathLike)):
            configured = [configured]
        pems = [_pem_or_file(item, config_key=ConfigVars.SIGNING_KEYS) for item in configured]
        try:
            return [load_private_key(pem) for pem in pems]
        except ValueError as error:
            raise ValueError(f"flask-hybrid: {ConfigVars.SIGNING_KEYS}: {error}") from None


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
