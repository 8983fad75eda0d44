"""flask-hybrid: application-level encryption for Flask APIs, on top of TLS.

::

    from flask import Flask
    from flask_hybrid import HybridEncryption

    app = Flask(__name__)
    HybridEncryption(app)
"""

from __future__ import annotations

from .blueprint import create_blueprint, require_encryption
from .config import ConfigVars, Settings
from .errors import (
    EncryptionRequired,
    HybridError,
    InvalidPayload,
    InvalidSession,
    PayloadTooLarge,
    RateLimited,
    ReplayedRequest,
    StoreUnavailable,
    UnknownKey,
)
from .extension import HybridEncryption
from .middleware import ENVIRON_KEY, EncryptedRequest, HybridMiddleware
from .sessions import KeyPool, SessionManager
from .state import HybridState

__all__ = [
    "ENVIRON_KEY",
    "ConfigVars",
    "EncryptedRequest",
    "EncryptionRequired",
    "HybridEncryption",
    "HybridError",
    "HybridMiddleware",
    "HybridState",
    "InvalidPayload",
    "InvalidSession",
    "KeyPool",
    "PayloadTooLarge",
    "RateLimited",
    "ReplayedRequest",
    "SessionManager",
    "Settings",
    "StoreUnavailable",
    "UnknownKey",
    "create_blueprint",
    "require_encryption",
]
