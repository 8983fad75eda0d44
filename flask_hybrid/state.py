"""What the middleware and the blueprint share: identity keys, sessions and settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from .config import Settings
from .core.keyring import KeyRing
from .sessions import SessionManager


@dataclass
class HybridState:
    """Everything a request needs, built once at start-up (by ``HybridEncryption`` or by hand).

    ``clock`` gives Unix seconds; tests replace it to check J's ``iat`` window.
    """

    keyring: KeyRing
    sessions: SessionManager
    settings: Settings = field(default_factory=Settings)
    clock: Callable[[], float] = time.time
