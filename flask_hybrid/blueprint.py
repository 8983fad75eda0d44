"""The handshake blueprint: public key, JWKS, and ``POST``/``DELETE`` of a session.

It also turns every :class:`~flask_hybrid.errors.HybridError` raised in the app into the JSON
of the error table, and enforces :func:`require_encryption`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Blueprint, Response, current_app, request

from .core import formats
from .core.encoding import dumps_compact, loads_json_object
from .errors import (
    EncryptionRequired,
    HybridError,
    InvalidPayload,
    PayloadTooLarge,
    RateLimited,
    error_body,
)
from .middleware import ENVIRON_KEY, EncryptedRequest, bearer_token
from .state import HybridState

if TYPE_CHECKING:
    from flask_limiter import Limiter, RequestLimit

F = TypeVar("F", bound=Callable[..., Any])

_REQUIRES_ENCRYPTION = "_hybrid_requires_encryption"
_MAX_HANDSHAKE_BODY = 16 * 1024  # a handshake is a few hundred bytes


def require_encryption(view: F) -> F:
    """Mark a view as accepting only encrypted requests; a plaintext one gets 415.

    ::

        @app.post("/api/orders")
        @require_encryption
        def create_order(): ...
    """
    setattr(view, _REQUIRES_ENCRYPTION, True)
    return view


def error_response(error: HybridError | type[HybridError]) -> Response:
    """The one response of each error code (the middleware builds the same bytes)."""
    response = Response(error_body(error), error.code, content_type="application/json")
    response.headers["Cache-Control"] = "no-store"
    return response


def _json_response(value: dict[str, Any], status: int = 200) -> Response:
    return Response(dumps_compact(value), status, content_type="application/json")


def create_blueprint(
    state: HybridState,
    *,
    limiter: Limiter | None = None,
    handshake_limit: str = "30 per minute",
) -> Blueprint:
    """The blueprint for ``state``, mounted at ``state.settings.url_prefix``.

    Pass a Flask-Limiter ``limiter`` to rate-limit the handshake per client address. It needs
    :class:`~flask_hybrid.middleware.HybridMiddleware` around ``app.wsgi_app`` with the same
    ``state``: the middleware decrypts J handshakes and signs handshake responses.
    """
    settings = state.settings
    blueprint = Blueprint(
        "hybrid", __name__, url_prefix=settings.url_prefix, static_folder="static"
    )

    @blueprint.get("/public-key")
    def public_key() -> Response:
        current = state.keyring.current
        return _json_response({"kid": current.kid, "publicKey": current.public_pem})

    @blueprint.get("/jwks.json")
    def jwks() -> Response:
        return _json_response(state.keyring.jwks())

    def handshake() -> Response:
        raw_body = request.stream.read(_MAX_HANDSHAKE_BODY + 1)  # capped, chunked or not
        if len(raw_body) > _MAX_HANDSHAKE_BODY:
            raise PayloadTooLarge
        encrypted: EncryptedRequest | None = request.environ.get(ENVIRON_KEY)
        body = loads_json_object(raw_body)
        ip_address = request.remote_addr or ""
        if encrypted is not None:
            if encrypted.format != "J" or encrypted.session_id is not None:
                raise InvalidPayload  # S and E are no handshake forms; J goes to an identity key
            device_id = formats.parse_device_id(body.get("deviceId"))
            session = state.sessions.create(device_id, ip_address)
            return Response(session.to_json(), 201, content_type="application/json")
        if "S" not in settings.formats or request.mimetype != "application/json":
            raise InvalidPayload
        cek, device_id = formats.parse_handshake(body)
        session = state.sessions.create(device_id, ip_address)
        sealed = formats.seal_session(cek, session.to_json())
        return Response(sealed, 201, content_type="application/json")

    if limiter is not None:
        handshake = limiter.limit(
            handshake_limit, methods=["POST"], on_breach=_rate_limited_response
        )(handshake)
    blueprint.add_url_rule("/session", "handshake", handshake, methods=["POST"])

    @blueprint.delete("/session")
    def end_session() -> Response:
        state.sessions.end(bearer_token(request.environ), request.remote_addr)
        return Response(status=204)

    @blueprint.before_app_request
    def enforce_required_encryption() -> None:
        if request.environ.get(ENVIRON_KEY) is not None or request.method == "OPTIONS":
            return
        view = current_app.view_functions.get(request.endpoint or "")
        if getattr(view, _REQUIRES_ENCRYPTION, False) or any(
            request.path.startswith(prefix) for prefix in settings.require_encryption
        ):
            raise EncryptionRequired

    @blueprint.app_errorhandler(HybridError)
    def refuse(error: HybridError) -> Response:
        return error_response(error)

    return blueprint


def _rate_limited_response(request_limit: RequestLimit) -> Response:
    response = error_response(RateLimited)
    response.headers["Retry-After"] = str(max(1, int(request_limit.reset_at - time.time())))
    return response
