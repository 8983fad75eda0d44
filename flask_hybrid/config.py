"""The ``HYBRID_*`` configuration keys, their defaults, and their validation.

Precedence, as in Flask-Limiter: a keyword argument to ``HybridEncryption`` → ``app.config`` →
the default below. :class:`Settings` holds the validated values the request path reads.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


class ConfigVars:
    """One constant per configuration key."""

    IDENTITY_KEYS = "HYBRID_IDENTITY_KEYS"
    SIGNING_KEYS = "HYBRID_SIGNING_KEYS"
    HPKE_KEYS = "HYBRID_HPKE_KEYS"
    JWT_SECRET = "HYBRID_JWT_SECRET"  # noqa: S105 - the name of a key, not a secret
    DEVELOPMENT = "HYBRID_DEVELOPMENT"
    STORE_URL = "HYBRID_STORE_URL"
    STORE_KEY_PREFIX = "HYBRID_STORE_KEY_PREFIX"
    STORE_TIMEOUT = "HYBRID_STORE_TIMEOUT"
    SESSION_TTL = "HYBRID_SESSION_TTL"
    REPLAY_WINDOW = "HYBRID_REPLAY_WINDOW"
    CLOCK_SKEW = "HYBRID_CLOCK_SKEW"
    REPLAY_STORE_URL = "HYBRID_REPLAY_STORE_URL"
    REPLAY_KEY_PREFIX = "HYBRID_REPLAY_KEY_PREFIX"
    MAX_BODY = "HYBRID_MAX_BODY"
    SIGN_RESPONSES = "HYBRID_SIGN_RESPONSES"
    BIND_IP = "HYBRID_BIND_IP"
    FORMATS = "HYBRID_FORMATS"
    REQUIRE_ENCRYPTION = "HYBRID_REQUIRE_ENCRYPTION"
    URL_PREFIX = "HYBRID_URL_PREFIX"
    HANDSHAKE_LIMIT = "HYBRID_HANDSHAKE_LIMIT"
    JWE_LIMIT = "HYBRID_JWE_LIMIT"
    RATELIMIT_STORAGE_URL = "HYBRID_RATELIMIT_STORAGE_URL"
    KEY_POOL_SIZE = "HYBRID_KEY_POOL_SIZE"


DEFAULTS: dict[str, Any] = {
    ConfigVars.IDENTITY_KEYS: None,  # PEM texts or file paths, current first
    ConfigVars.SIGNING_KEYS: None,  # PEM texts or file paths, current first; None: identity keys
    ConfigVars.HPKE_KEYS: None,  # format H: X25519 PEM texts or file paths, current first
    ConfigVars.JWT_SECRET: None,
    ConfigVars.DEVELOPMENT: None,  # None: follow app.debug or app.testing
    ConfigVars.STORE_URL: "memory://",
    ConfigVars.STORE_KEY_PREFIX: "hybrid:",
    ConfigVars.STORE_TIMEOUT: 0.5,
    ConfigVars.SESSION_TTL: 3600,
    ConfigVars.REPLAY_WINDOW: 300,
    ConfigVars.CLOCK_SKEW: 5,  # seconds between servers' clocks; J's jti records live longer
    ConfigVars.REPLAY_STORE_URL: None,  # None: the session store
    ConfigVars.REPLAY_KEY_PREFIX: None,  # None: HYBRID_STORE_KEY_PREFIX
    ConfigVars.MAX_BODY: 10 * 1024 * 1024,
    ConfigVars.SIGN_RESPONSES: "unsealed",
    ConfigVars.BIND_IP: True,
    ConfigVars.FORMATS: ("S", "E", "J", "H"),  # H: only once HPKE keys exist (see init_app)
    ConfigVars.REQUIRE_ENCRYPTION: (),  # path prefixes, e.g. ("/api/",)
    ConfigVars.URL_PREFIX: "/hybrid",
    ConfigVars.HANDSHAKE_LIMIT: "30 per minute",  # per client address (IPv6: per /64)
    ConfigVars.JWE_LIMIT: "600 per minute",  # J requests to an identity key, per address
    ConfigVars.RATELIMIT_STORAGE_URL: None,  # None: the store's Redis URL, else memory://
    ConfigVars.KEY_POOL_SIZE: 16,  # per worker: a burst of 16 handshakes served from the pool
}

SIGN_POLICIES = ("unsealed", "all", "none")
FORMATS = ("S", "E", "J", "H")


def _positive_int(config: Mapping[str, Any], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{key} must be a positive integer, not {value!r}")
    return value


def _non_negative_int(config: Mapping[str, Any], key: str) -> int:
    value = config[key]
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"{key} must be a whole number of seconds >= 0, not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """The validated options the middleware and blueprint read on every request."""

    session_ttl: int = 3600
    replay_window: int = 300
    clock_skew: int = 5
    max_body: int = 10 * 1024 * 1024
    sign_responses: str = "unsealed"
    bind_ip: bool = True
    formats: frozenset[str] = field(default_factory=lambda: frozenset(FORMATS))
    require_encryption: tuple[str, ...] = ()
    url_prefix: str = "/hybrid"

    def __post_init__(self) -> None:
        if self.sign_responses not in SIGN_POLICIES:
            raise ValueError(
                f"{ConfigVars.SIGN_RESPONSES} must be one of {SIGN_POLICIES}, "
                f"not {self.sign_responses!r}"
            )
        unknown = set(self.formats) - set(FORMATS)
        if unknown or not self.formats:
            raise ValueError(f"{ConfigVars.FORMATS} must name some of {FORMATS}")
        if not self.url_prefix.startswith("/") or self.url_prefix.endswith("/"):
            raise ValueError(f"{ConfigVars.URL_PREFIX} must start and not end with '/'")

    @property
    def handshake_path(self) -> str:
        return f"{self.url_prefix}/session"

    @property
    def replay_ttl(self) -> int:
        """How long a J ``jti`` is remembered: twice the ``iat`` window, plus the clock skew.

        A server accepts ``iat`` within ±window of its own clock, so a request can be accepted
        from ``window`` before to ``window`` after its ``iat``; a second server whose clock is
        ``skew`` behind the first accepts it up to ``skew`` longer than the first would.
        """
        return 2 * self.replay_window + self.clock_skew

    @classmethod
    def from_mapping(cls, config: Mapping[str, Any]) -> Settings:
        """Build from ``HYBRID_*`` keys; a bad value raises ``ValueError`` naming its key."""
        values = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
        require = values[ConfigVars.REQUIRE_ENCRYPTION]
        if isinstance(require, str):
            require = (require,)
        formats = values[ConfigVars.FORMATS]
        if isinstance(formats, str):
            formats = tuple(part.strip() for part in formats.split(","))
        return cls(
            session_ttl=_positive_int(values, ConfigVars.SESSION_TTL),
            replay_window=_positive_int(values, ConfigVars.REPLAY_WINDOW),
            clock_skew=_non_negative_int(values, ConfigVars.CLOCK_SKEW),
            max_body=_positive_int(values, ConfigVars.MAX_BODY),
            sign_responses=values[ConfigVars.SIGN_RESPONSES],
            bind_ip=bool(values[ConfigVars.BIND_IP]),
            formats=frozenset(str(name).upper() for name in formats),
            require_encryption=tuple(require),
            url_prefix=values[ConfigVars.URL_PREFIX],
        )
