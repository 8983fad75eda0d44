"""The exception family and the error table of PROTOCOL.md.

Every refusal flask-hybrid makes is one of these. The HTTP layer turns them into responses in
one place (:func:`error_response_parts`), so each code always answers with the same bytes.
"""

from __future__ import annotations

import json


class HybridError(Exception):
    """Base class of every refusal; ``code`` and ``status`` come from the error table."""

    code: str = "invalid_payload"
    status: int = 400
    message: str = "The encrypted payload could not be processed."

    def __init__(self) -> None:
        # Bare on purpose: the cause of a refusal is never carried to the client or a log.
        super().__init__(self.code)


class InvalidPayload(HybridError):
    """Any problem with an untrusted envelope, JWE or ciphertext: syntax, sizes, key, tag."""


class InvalidSession(HybridError):
    code = "invalid_session"
    status = 401
    message = "The session token is missing, invalid or expired."


class UnknownKey(HybridError):
    code = "unknown_key"
    status = 401
    message = "The key identifier is not known; fetch the server keys and retry."


class ReplayedRequest(HybridError):
    code = "replayed_request"
    status = 409
    message = "The request was already seen, is outside the time window, or does not match."


class PayloadTooLarge(HybridError):
    code = "payload_too_large"
    status = 413
    message = "The request body is too large."


class EncryptionRequired(HybridError):
    code = "encryption_required"
    status = 415
    message = "This endpoint accepts only encrypted requests."


class RateLimited(HybridError):
    code = "rate_limited"
    status = 429
    message = "Too many requests; retry after the time given in Retry-After."


class StoreUnavailable(HybridError):
    """The session store could not be reached; raised by the stores for any driver error."""

    code = "store_unavailable"
    status = 503
    message = "The session store is unavailable; retry shortly."


ERRORS: dict[str, type[HybridError]] = {
    cls.code: cls
    for cls in (
        InvalidPayload,
        InvalidSession,
        UnknownKey,
        ReplayedRequest,
        PayloadTooLarge,
        EncryptionRequired,
        RateLimited,
        StoreUnavailable,
    )
}


def error_body(error: HybridError | type[HybridError]) -> bytes:
    """The exact JSON bytes of a refusal: the same for every cause within a code."""
    return json.dumps(
        {"error": error.code, "message": error.message}, separators=(",", ":")
    ).encode()
