"""What the middleware and the blueprint share: keys, sessions, settings and rate limits."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Settings
from .core.keyring import KeyRing
from .ratelimit import RateLimits
from .sessions import SessionManager


@dataclass
class HybridState:
    """Everything a request needs, built once at start-up (by ``HybridEncryption`` or by hand).

    ``clock`` gives Unix seconds; tests replace it to check J's ``iat`` window. ``limits`` counts
    handshakes and identity-key J requests per client address (in process unless given a
    storage; see :mod:`flask_hybrid.ratelimit`).
    """

    keyring: KeyRing
    sessions: SessionManager
    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], float] = time.time
    limits: RateLimits = field(default_factory=RateLimits)
