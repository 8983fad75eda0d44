"""``flask_hybrid.signals``: what was decrypted and what was refused, and why, inside Flask; and
the Prometheus counter of docs/observability.md, wired through them."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from flask import Flask, request
from prometheus_client import CollectorRegistry, Counter

from flask_hybrid.signals import request_decrypted, request_refused

from .builders import (
    e_envelope,
    j_header,
    j_token,
    new_session,
    s_envelope,
    session_headers,
    state_of,
)

ECHO = b'{"order":1}'


@contextmanager
def recorded(flask_app: Flask) -> Iterator[list[tuple[str, dict[str, Any]]]]:
    events: list[tuple[str, dict[str, Any]]] = []

    def on_decrypted(sender: Flask, **extra: Any) -> None:
        assert sender is flask_app and request.path  # sent by the app, in its request context
        events.append(("decrypted", extra))

    def on_refused(sender: Flask, **extra: Any) -> None:
        assert sender is flask_app and request.path
        events.append(("refused", extra))

    with (
        request_decrypted.connected_to(on_decrypted, sender=flask_app),
        request_refused.connected_to(on_refused, sender=flask_app),
    ):
        yield events


def test_decrypted_requests_are_announced_with_format_and_session(app: Flask) -> None:
    client = app.test_client()
    keyring = state_of(app).keyring
    session = new_session(app)
    with recorded(app) as events:
        envelope, _ = s_envelope(session, ECHO)
        client.post("/api/echo", json=envelope, headers=session_headers(session))
        envelope, _ = e_envelope(keyring.current.private_key.public_key(), ECHO)
        client.post("/api/echo", json=envelope, headers={"X-Encryption-Enabled": "true"})
        token, _ = j_token(
            keyring.current.private_key.public_key(),
            j_header(keyring.current.kid, "POST", "/api/echo"),
            ECHO,
        )
        client.post("/api/echo", data=token, headers={"Content-Type": "application/jose"})
    assert events == [
        ("decrypted", {"format": "S", "session_id": session["sessionId"]}),
        ("decrypted", {"format": "E", "session_id": None}),
        ("decrypted", {"format": "J", "session_id": None}),
    ]


def refusals(flask_app: Flask) -> list[tuple[str, str]]:
    """Five refusals, one of each kind of cause, as (code, reason) seen by the signal."""
    client = flask_app.test_client()
    keyring = state_of(flask_app).keyring
    public_key = keyring.current.private_key.public_key()
    with recorded(flask_app) as events:
        envelope, _ = e_envelope(public_key, ECHO)
        envelope["ct"] = ("A" if envelope["ct"][0] != "A" else "B") + envelope["ct"][1:]
        client.post("/api/echo", json=envelope, headers={"X-Encryption-Enabled": "true"})
        token, _ = j_token(public_key, j_header(keyring.current.kid, "POST", "/api/echo"), ECHO)
        for _ in range(2):
            client.post("/api/echo", data=token, headers={"Content-Type": "application/jose"})
        stale = j_header(keyring.current.kid, "POST", "/api/echo", iat=int(time.time()) - 3600)
        token, _ = j_token(public_key, stale, ECHO)
        client.post("/api/echo", data=token, headers={"Content-Type": "application/jose"})
        session = new_session(flask_app)
        state_of(flask_app).sessions.store.delete(f"session:{session['sessionId']}")
        envelope, _ = s_envelope(session, ECHO)
        client.post("/api/echo", json=envelope, headers=session_headers(session))
    return [(extra["code"], extra["reason"]) for kind, extra in events if kind == "refused"]


def test_refusals_are_announced_with_code_and_reason(app: Flask) -> None:
    assert refusals(app) == [
        ("invalid_payload", "tag_mismatch"),
        ("replayed_request", "jti_seen"),
        ("replayed_request", "iat_out_of_window"),
        ("invalid_session", "session_gone"),
    ]


def test_reason_never_reaches_the_client(app: Flask) -> None:
    public_key = state_of(app).keyring.current.private_key.public_key()
    envelope, _ = e_envelope(public_key, ECHO)
    envelope["ct"] = ("A" if envelope["ct"][0] != "A" else "B") + envelope["ct"][1:]
    response = app.test_client().post(
        "/api/echo", json=envelope, headers={"X-Encryption-Enabled": "true"}
    )
    assert b"tag_mismatch" not in response.data
    assert all("tag_mismatch" not in value for _, value in response.headers.items())


def test_prometheus_counter_of_docs_observability(make_app: Callable[..., Flask]) -> None:
    # The few lines of docs/observability.md, as a user would write them.
    registry = CollectorRegistry()
    refused = Counter(
        "flask_hybrid_refusals",
        "Requests refused by flask-hybrid",
        ["code", "reason"],
        registry=registry,
    )
    flask_app = make_app()

    @request_refused.connect_via(flask_app)
    def count_refusal(sender: Flask, code: str, reason: str, **extra: Any) -> None:
        refused.labels(code=code, reason=reason).inc()

    refusals(flask_app)
    sample = registry.get_sample_value
    assert (
        sample("flask_hybrid_refusals_total", {"code": "replayed_request", "reason": "jti_seen"})
        == 1
    )
    assert (
        sample("flask_hybrid_refusals_total", {"code": "invalid_payload", "reason": "tag_mismatch"})
        == 1
    )
    assert (
        sample("flask_hybrid_refusals_total", {"code": "invalid_session", "reason": "session_gone"})
        == 1
    )
    other_app = make_app()  # connect_via(app): another app's refusals are not counted
    refusals(other_app)
    assert (
        sample("flask_hybrid_refusals_total", {"code": "replayed_request", "reason": "jti_seen"})
        == 1
    )
