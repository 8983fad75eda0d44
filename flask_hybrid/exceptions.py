"""The refusals as Werkzeug HTTP exceptions: how they are raised inside Flask.

Each class here subclasses both its framework-free twin in :mod:`flask_hybrid.errors` and the
Werkzeug exception of its status (as Flask-Limiter's ``RateLimitExceeded`` subclasses
``TooManyRequests``), so an app's error handlers find a refusal by its class, by its base
class, or by its status::

    @app.errorhandler(flask_hybrid.ReplayedRequest)   # or errorhandler(409)
    def replayed(error): ...

Without a handler of the app's own, the response is the error table's JSON, the same bytes for
every cause within a code (:func:`flask_hybrid.errors.error_body`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from werkzeug.exceptions import (
    BadRequest,
    Conflict,
    HTTPException,
    RequestEntityTooLarge,
    ServiceUnavailable,
    TooManyRequests,
    Unauthorized,
    UnprocessableEntity,
    UnsupportedMediaType,
)

from . import errors

if TYPE_CHECKING:
    from _typeshed.wsgi import WSGIEnvironment


# ``code`` and ``description`` are always set here, where Werkzeug allows None: the
# "type: ignore[misc]" on each class below says that the narrower types are intended.
class HybridError(errors.HybridError, HTTPException):  # type: ignore[misc]
    """Base of the refusals raised inside Flask; catches every one of them.

    It has no status of its own, like Werkzeug's ``HTTPException``: so
    ``app.errorhandler(HybridError)`` registers a handler for the class, not for status 400.
    """

    code = None  # type: ignore[assignment]

    def __init__(self, reason: str | None = None, **options: Any) -> None:
        super().__init__(reason, **options)  # the errors twin: reason (and retry_after) only
        self.response = None  # what HTTPException.__init__ would set; never a prepared response

    def get_body(self, environ: WSGIEnvironment | None = None, scope: Any = None) -> str:
        return errors.error_body(self).decode("ascii")

    def get_headers(
        self, environ: WSGIEnvironment | None = None, scope: Any = None
    ) -> list[tuple[str, str]]:
        # Before the Werkzeug class in every flavour's MRO: no WWW-Authenticate on a 401 (the
        # token is ours), and Retry-After on a 429 as the middleware sends it.
        return errors.refusal_headers(self)


class InvalidPayload(errors.InvalidPayload, HybridError, BadRequest):  # type: ignore[misc]
    """400 ``invalid_payload``."""


class InvalidSession(errors.InvalidSession, HybridError, Unauthorized):  # type: ignore[misc]
    """401 ``invalid_session``."""


class UnknownKey(errors.UnknownKey, HybridError, Unauthorized):  # type: ignore[misc]
    """401 ``unknown_key``."""


class ReplayedRequest(errors.ReplayedRequest, HybridError, Conflict):  # type: ignore[misc]
    """409 ``replayed_request``."""


class PayloadTooLarge(errors.PayloadTooLarge, HybridError, RequestEntityTooLarge):  # type: ignore[misc]
    """413 ``payload_too_large``."""


class EncryptionRequired(errors.EncryptionRequired, HybridError, UnsupportedMediaType):  # type: ignore[misc]
    """415 ``encryption_required``."""


class RateLimited(errors.RateLimited, HybridError, TooManyRequests):  # type: ignore[misc]
    """429 ``rate_limited``, with ``Retry-After``."""


class KeyConfigMismatch(errors.KeyConfigMismatch, HybridError, UnprocessableEntity):  # type: ignore[misc]
    """422 ``key_config_mismatch`` (format H), as ``application/problem+json``."""


class StoreUnavailable(errors.StoreUnavailable, HybridError, ServiceUnavailable):  # type: ignore[misc]
    """503 ``store_unavailable``."""


#: Each refusal's Werkzeug flavour by its table code: every class above.
_BY_ERROR: dict[str, type[HybridError]] = {cls.error: cls for cls in HybridError.__subclasses__()}


def as_http_exception(error: errors.HybridError) -> HybridError:
    """The Werkzeug flavour of a refusal, with the same reason (and ``retry_after``)."""
    if isinstance(error, HybridError):
        return error
    options = {"retry_after": error.retry_after} if isinstance(error, errors.RateLimited) else {}
    return _BY_ERROR[error.error](error.reason, **options)
