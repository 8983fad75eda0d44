"""flask-hybrid: application-level encryption for Flask APIs, on top of TLS.

::

    from flask import Flask
    from flask_hybrid import HybridEncryption

    app = Flask(__name__)
    HybridEncryption(app)

The names below are imported on first use, so ``flask_hybrid.core`` and ``flask_hybrid.client``
work without loading Flask.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .blueprint import create_blueprint, get_encrypted_request, require_encryption
    from .config import ConfigVars, Settings
    from .exceptions import (
        EncryptionRequired,
        HybridError,
        InvalidPayload,
        InvalidSession,
        KeyConfigMismatch,
        PayloadTooLarge,
        RateLimited,
        ReplayedRequest,
        StoreUnavailable,
        UnknownKey,
    )
    from .extension import HybridEncryption
    from .keypool import KeyPool
    from .middleware import ENVIRON_KEY, EncryptedRequest, HybridMiddleware
    from .sessions import SessionManager
    from .state import HybridState

__version__ = "0.2.0.dev0"

_LAZY = {
    "create_blueprint": ".blueprint",
    "get_encrypted_request": ".blueprint",
    "require_encryption": ".blueprint",
    "ConfigVars": ".config",
    "Settings": ".config",
    **dict.fromkeys(
        (
            "EncryptionRequired",
            "HybridError",
            "InvalidPayload",
            "InvalidSession",
            "PayloadTooLarge",
            "RateLimited",
            "ReplayedRequest",
            "StoreUnavailable",
            "UnknownKey",
            "KeyConfigMismatch",
        ),
        ".exceptions",
    ),
    "HybridEncryption": ".extension",
    "ENVIRON_KEY": ".middleware",
    "EncryptedRequest": ".middleware",
    "HybridMiddleware": ".middleware",
    "KeyPool": ".keypool",
    "SessionManager": ".sessions",
    "HybridState": ".state",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'flask_hybrid' has no attribute {name!r}")
    return getattr(importlib.import_module(module, __name__), name)


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
    "KeyConfigMismatch",
    "KeyPool",
    "PayloadTooLarge",
    "RateLimited",
    "ReplayedRequest",
    "SessionManager",
    "Settings",
    "StoreUnavailable",
    "UnknownKey",
    "__version__",
    "create_blueprint",
    "get_encrypted_request",
    "require_encryption",
]
