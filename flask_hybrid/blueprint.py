"""The handshake blueprint: public key, JWKS, and ``POST``/``DELETE`` of a session.

It is also where refusals enter Flask: a hook that runs before every other ``before_request``
raises the middleware's refusal of the request (or a 415 for :func:`require_encryption`) as a
Werkzeug exception, so the app's error handlers and ``after_request`` hooks shape the answer
and no view runs. Without a handler of the app's own, a refusal is the error table's JSON.
"""

from __future__ import annotations

import functools
import math
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

from flask import Blueprint, Flask, Response, current_app, request
from flask.json.provider import DefaultJSONProvider
from flask.sansio.blueprints import BlueprintSetupState

from . import signals
from .core import formats, signatures
from .core.encoding import NOT_PARSED, dumps_compact, loads_json_object
from .errors import (
    EncryptionRequired,
    HybridError,
    InvalidPayload,
    PayloadTooLarge,
    RateLimited,
    error_body,
    refusal_headers,
)
from .exceptions import as_http_exception
from .middleware import (
    ENVIRON_KEY,
    JSON_KEY,
    REFUSAL_KEY,
    REFUSAL_RAISED_KEY,
    EncryptedRequest,
    bearer_token,
    log_refusal,
)
from .ratelimit import client_key
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


def get_encrypted_request() -> EncryptedRequest | None:
    """How the current request arrived, or ``None`` for a plaintext one.

    Like Flask-JWT-Extended's ``get_jwt()``, for views that want to know::

        info = get_encrypted_request()
        if info is not None:
            info.format, info.session_id  # "S", "E" or "J"; the session, if there is one
    """
    encrypted: EncryptedRequest | None = request.environ.get(ENVIRON_KEY)
    return encrypted


def error_response(error: HybridError | type[HybridError]) -> Response:
    """The one response of each error code (the middleware builds the same bytes)."""
    if isinstance(error, type):
        error = error()
    return Response(error_body(error), error.code, headers=refusal_headers(error))


def refuse(error: HybridError) -> NoReturn:
    """Raise a refusal inside Flask, as its Werkzeug exception, logged and signalled once."""
    environ = request.environ
    if environ.get(REFUSAL_KEY) is not error:  # the middleware already logged its own
        encrypted = environ.get(ENVIRON_KEY)
        log_refusal(environ, error, None if encrypted is None else encrypted.format)
        environ[REFUSAL_KEY] = error
    environ[REFUSAL_RAISED_KEY] = True
    signals.request_refused.send(
        current_app._get_current_object(),  # type: ignore[attr-defined]
        code=error.error,
        reason=error.reason,
    )
    raise as_http_exception(error)


def _reuse_checked_json(app: Flask, environ: dict[str, Any]) -> None:
    """Give ``request.get_json()`` the value the middleware built while checking the plaintext,
    so a JSON body is parsed once per request, not twice.

    Only for Flask's default JSON provider, whose ``loads`` is ``json.loads`` with no options:
    the value is what it would build. An app with its own provider (``Decimal`` floats, orjson)
    parses the body itself, as usual.
    """
    value = environ.pop(JSON_KEY, NOT_PARSED)
    if value is not NOT_PARSED and type(app.json) is DefaultJSONProvider:
        request._cached_json = (value, value)  # what get_json() caches after parsing


def _check_content_digest(body: bytes) -> None:
    """The request's ``Content-Digest``, if it has one, must be that of ``body`` (400)."""
    digest = signatures.RequestDigest(request.headers.get("Content-Digest"))
    digest.update(body)
    digest.check()


def _refusing(view: F) -> F:
    """Raise a refusal from the core (a store outage, a bad body) the way :func:`refuse` does."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return view(*args, **kwargs)
        except HybridError as error:
            refuse(error)

    return wrapper  # type: ignore[return-value]


def _json_response(value: dict[str, Any], status: int = 200) -> Response:
    return Response(dumps_compact(value), status, content_type="application/json")


def create_blueprint(
    state: HybridState,
    *,
    limiter: Limiter | None = None,
    handshake_limit: str | None = None,
) -> Blueprint:
    """The blueprint for ``state``, mounted at ``state.settings.url_prefix``.

    The handshake is limited per client address (IPv4 address, IPv6 /64:
    :func:`~flask_hybrid.ratelimit.client_key`) to ``handshake_limit`` (default: that of
    ``state.limits``, ``HYBRID_HANDSHAKE_LIMIT``). Given the app's Flask-Limiter ``limiter``,
    the limit is put on it, so its storage, ``RATELIMIT_ENABLED`` and hooks apply; else
    ``state.limits`` counts it and nothing is registered on the app. It needs
    :class:`~flask_hybrid.middleware.HybridMiddleware` around ``app.wsgi_app`` with the same
    ``state``: the middleware decrypts J handshakes and signs handshake responses.
    """
    settings = state.settings
    blueprint = Blueprint(
        "hybrid", __name__, url_prefix=settings.url_prefix, static_folder="static"
    )

    def refuse_or_announce() -> None:
        """Raise the middleware's refusal, or 415 for a plaintext request to a protected route;
        announce a decrypted request. It runs first, so no other hook sees a refused request."""
        environ = request.environ
        refusal = environ.get(REFUSAL_KEY)
        if refusal is not None:
            refuse(refusal)
        app: Flask = current_app._get_current_object()  # type: ignore[attr-defined]
        encrypted: EncryptedRequest | None = environ.get(ENVIRON_KEY)
        if encrypted is not None:
            _reuse_checked_json(app, environ)
            signals.request_decrypted.send(
                app, format=encrypted.format, session_id=encrypted.session_id
            )
            return
        rule = request.url_rule
        if request.method == "OPTIONS" and getattr(rule, "provide_automatic_options", False):
            return  # a preflight Flask answers itself; a view that handles OPTIONS is checked
        view = app.view_functions.get(request.endpoint or "")
        if getattr(view, _REQUIRES_ENCRYPTION, False) or any(
            request.path.startswith(prefix) for prefix in settings.require_encryption
        ):
            refuse(EncryptionRequired())

    def install_first(setup: BlueprintSetupState) -> None:
        setup.app.before_request_funcs.setdefault(None, []).insert(0, refuse_or_announce)

    blueprint.record_once(install_first)

    @blueprint.get("/public-key")
    def public_key() -> Response:
        current = state.keyring.current
        return _json_response({"kid": current.kid, "publicKey": current.public_pem})

    @blueprint.get("/jwks.json")
    def jwks() -> Response:
        return _json_response(state.keyring.jwks())

    def hpke_keys() -> Response:
        """Format H's key config (RFC 9458 ``application/ohttp-keys``, the current key only).

        EHBP clients fetch it at the origin's root whatever the blueprint's prefix, so it is put
        on the app itself, at ``/.well-known/hpke-keys``; 404 when no HPKE keys are configured.
        Behind a path-mounting proxy or ``SCRIPT_NAME``, that root path must reach this app.
        """
        keys = state.keyring.hpke
        if keys is None:
            return Response(status=404)
        return Response(
            keys.key_config(),
            mimetype="application/ohttp-keys",  # exactly: both clients compare it whole
            headers={"Cache-Control": "no-cache"},  # a rotation must show at the next fetch
        )

    blueprint.record_once(
        lambda setup: setup.app.add_url_rule(
            "/.well-known/hpke-keys", "hybrid_hpke_keys", hpke_keys, methods=["GET"]
        )
    )

    @_refusing
    def handshake() -> Response:
        raw_body = request.stream.read(_MAX_HANDSHAKE_BODY + 1)  # capped, chunked or not
        if len(raw_body) > _MAX_HANDSHAKE_BODY:
            raise PayloadTooLarge
        _check_content_digest(raw_body)
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

    limit = handshake_limit or state.limits.handshake_limit
    if limiter is not None and limit is not None:
        handshake = limiter.limit(
            limit,
            key_func=_client_key,
            methods=["POST"],
            on_breach=_rate_limited_response,
        )(handshake)
    elif limiter is None:
        handshake = _counted(handshake, state.limits.hit_handshake)
    blueprint.add_url_rule("/session", "handshake", handshake, methods=["POST"])

    @blueprint.delete("/session")
    @_refusing
    def end_session() -> Response:
        _check_content_digest(request.get_data())
        # Checked as every S request is: token, live record, device id and (bound) address.
        state.sessions.end(
            bearer_token(request.environ),
            request.headers.get("X-Device-Id"),
            request.remote_addr,
        )
        return Response(status=204)

    @blueprint.app_errorhandler(HybridError)  # its Werkzeug flavours too: they subclass it
    def refusal_response(error: HybridError) -> Response:
        request.environ.setdefault(REFUSAL_KEY, error)  # raised by the app itself: sign it
        return error_response(error)

    return blueprint


def _client_key() -> str:
    return client_key(request.remote_addr)


def _counted(view: F, hit: Callable[[str | None], None]) -> F:
    """``view``, counted by one of flask-hybrid's own limits (which raise 429) before it runs."""

    @functools.wraps(view)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            hit(request.remote_addr)
        except HybridError as error:
            refuse(error)
        return view(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _rate_limited_response(request_limit: RequestLimit) -> Response:
    """Flask-Limiter's ``on_breach``: the error table's 429, with ``Retry-After``."""
    retry_after = math.ceil(request_limit.reset_at - time.time())
    return error_response(RateLimited("handshake_limit", retry_after=retry_after))
