"""What S's hot path keeps between requests: verified token claims and parsed session records.

Neither may outlive what it stands for: an expired token is refused, and a session ended on any
process is refused at once, whatever the caches hold.
"""

from __future__ import annotations

import time

import jwt
import pytest

from flask_hybrid.errors import InvalidSession
from flask_hybrid.sessions import SessionManager
from flask_hybrid.stores.memory import MemoryStore

SECRET = b"s" * 32


def _manager(store: MemoryStore) -> SessionManager:
    return SessionManager(store, jwt_secret=SECRET)


def test_a_token_is_verified_once_then_its_claims_are_kept(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    sessions = _manager(MemoryStore())
    handshake = sessions.create("device", "127.0.0.1")
    calls: list[str] = []
    real_decode = jwt.decode

    def counting_decode(*args: object, **kwargs: object) -> object:
        calls.append("decode")
        return real_decode(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(jwt, "decode", counting_decode)
    for _ in range(3):
        live = sessions.verify(handshake.token, "device", "127.0.0.1")
        assert live.session_id == handshake.session_id
    assert calls == ["decode"]


def test_an_ended_session_is_refused_at_once_on_every_process() -> None:
    store = MemoryStore()
    first, second = _manager(store), _manager(store)  # two processes sharing one store
    handshake = first.create("device", "127.0.0.1")
    second.verify(handshake.token, "device", "127.0.0.1")  # cached on the second
    first.end(handshake.token, "device", "127.0.0.1")
    with pytest.raises(InvalidSession) as refused:
        second.verify(handshake.token, "device", "127.0.0.1")
    assert refused.value.reason == "session_gone"


def test_an_expired_token_is_refused_though_its_claims_were_kept() -> None:
    sessions = _manager(MemoryStore())
    handshake = sessions.create("device", "127.0.0.1")
    now = int(time.time())
    claims = jwt.decode(handshake.token, SECRET, algorithms=["HS256"])
    short = jwt.encode({**claims, "iat": now, "exp": now + 2}, SECRET, algorithm="HS256")
    sessions.verify(short, "device", "127.0.0.1")
    time.sleep(2.1)
    with pytest.raises(InvalidSession) as refused:
        sessions.verify(short, "device", "127.0.0.1")
    assert refused.value.reason == "token_expired"


def test_a_changed_record_is_read_again() -> None:
    store = MemoryStore()
    sessions = _manager(store)
    handshake = sessions.create("device", "127.0.0.1")
    sessions.verify(handshake.token, "device", "127.0.0.1")
    key = f"session:{handshake.session_id}"
    store.set(key, b"not json", 60)
    with pytest.raises(InvalidSession) as refused:
        sessions.verify(handshake.token, "device", "127.0.0.1")
    assert refused.value.reason == "session_unreadable"
