"""The exception family and the error table of PROTOCOL.md, framework-free.

Every refusal flask-hybrid makes is one of these. The attributes follow Werkzeug's
``HTTPException`` (``code`` is the HTTP status, ``description`` the sentence sent), so that the
HTTP layer can raise the same classes inside Flask as Werkzeug exceptions
(:mod:`flask_hybrid.exceptions`), where the app's error handlers see them by class or by status.
The answer is always the same bytes for a given ``error`` (:func:`error_body`); the ``reason``
says which check failed, for logs and signals only.
"""

from __future__ import annotations

import json


class HybridError(Exception):
    """Base class of every refusal.

    :param reason: the fine-grained internal cause (``"tag_mismatch"``, ``"jti_seen"``, ...),
        for logs and the ``request_refused`` signal. It never reaches the client.
    """

    code: int = 400
    error: str = "invalid_payload"
    description: str = "The encrypted payload could not be processed."
    default_reason: str = "malformed"
    #: Set on a refusal whose body is RFC 9457 ``application/problem+json`` of this ``type``.
    problem_type: str | None = None

    def __init__(self, reason: str | None = None) -> None:
        # The message is the table code only: the cause never travels in str(exception). Not
        # super(): in the Werkzeug flavours the next class would take it as the description.
        Exception.__init__(self, self.error)
        self.reason = reason or self.default_reason


class InvalidPayload(HybridError):
    """Any problem with an untrusted envelope, JWE or ciphertext: syntax, sizes, key, tag."""

    code = 400  # stated again: the Werkzeug flavour's base has none (see exceptions.py)


class InvalidSession(HybridError):
    code = 401
    error = "invalid_session"
    description = "The session token is missing, invalid or expired."
    default_reason = "token_invalid"


class UnknownKey(HybridError):
    code = 401
    error = "unknown_key"
    description = "The key identifier is not known; fetch the server keys and retry."
    default_reason = "kid_unknown"


class ReplayedRequest(HybridError):
    code = 409
    error = "replayed_request"
    description = "The request was already seen, is outside the time window, or does not match."
    default_reason = "binding_mismatch"


class PayloadTooLarge(HybridError):
    code = 413
    error = "payload_too_large"
    description = "The request body is too large."
    default_reason = "body_too_large"


class EncryptionRequired(HybridError):
    code = 415
    error = "encryption_required"
    description = "This endpoint accepts only encrypted requests."
    default_reason = "plaintext_request"


class RateLimited(HybridError):
    """Over a rate limit; ``retry_after`` is whole seconds for the ``Retry-After`` header."""

    code = 429
    error = "rate_limited"
    description = "Too many requests; retry after the time given in Retry-After."
    default_reason = "over_limit"

    def __init__(self, reason: str | None = None, *, retry_after: int = 1) -> None:
        super().__init__(reason)
        self.retry_after = max(1, int(retry_after))


class KeyConfigMismatch(HybridError):
    """Format H (EHBP): the request is not sealed to any HPKE key this server holds.

    EHBP's key-configuration problem (its SPEC §5.4.2): 422 ``application/problem+json`` of
    ``type`` ``urn:ietf:params:ehbp:error:key-config``, on which the published clients raise their
    ``KeyConfigMismatchError`` so the caller can refetch ``/.well-known/hpke-keys`` and resend.
    """

    code = 422
    error = "key_config_mismatch"
    description = "The request is not encrypted to a current key; fetch the keys and retry."
    default_reason = "hpke_key_unknown"
    problem_type = "urn:ietf:params:ehbp:error:key-config"


class StoreUnavailable(HybridError):
    """The session store could not be reached; raised by the stores for any driver error."""

    code = 503
    error = "store_unavailable"
    description = "The session store is unavailable; retry shortly."
    default_reason = "store_down"


ERRORS: dict[str, type[HybridError]] = {
    cls.error: cls
    for cls in (
        InvalidPayload,
        InvalidSession,
        UnknownKey,
        ReplayedRequest,
        PayloadTooLarge,
        EncryptionRequired,
        RateLimited,
        KeyConfigMismatch,
        StoreUnavailable,
    )
}


def error_body(error: HybridError | type[HybridError]) -> bytes:
    """The exact JSON bytes of a refusal: the same for every cause within a code."""
    if error.problem_type is not None:  # RFC 9457, with the table's code as an extension member
        problem = {"type": error.problem_type, "title": error.description, "status": error.code}
        return json.dumps({**problem, "error": error.error}, separators=(",", ":")).encode()
    return json.dumps(
        {"error": error.error, "message": error.description}, separators=(",", ":")
    ).encode()


def refusal_headers(error: HybridError) -> list[tuple[str, str]]:
    """The headers of a refusal, beside :func:`error_body` (``Retry-After`` on a 429)."""
    media_type = "application/json" if error.problem_type is None else "application/problem+json"
    headers = [("Content-Type", media_type), ("Cache-Control", "no-store")]
    if isinstance(error, RateLimited):
        headers.append(("Retry-After", str(error.retry_after)))
    return headers
