"""Format J's replay records: small, kept for twice the window plus the clock skew between
servers, and in a store (or under a prefix) of their own when configured."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask

from flask_hybrid import HybridEncryption
from flask_hybrid.core.encoding import b64url_encode
from flask_hybrid.stores import MemoryStore

from .builders import j_header, j_token, state_of
from .conftest import base_config

ECHO = b'{"n":1}'


def identity_token(flask_app: Flask, **header: Any) -> tuple[str, str]:
    """A J request to the current identity key; returns the token and its jti."""
    identity = state_of(flask_app).keyring.current
    fields = j_header(identity.kid, "POST", "/api/echo", **header)
    token, _ = j_token(identity.private_key.public_key(), fields, ECHO)
    return token, fields["jti"]


def post(flask_app: Flask, token: str) -> Any:
    return flask_app.test_client().post(
        "/api/echo", data=token, headers={"Content-Type": "application/jose"}
    )


def record_key(jti: str) -> str:
    return "jti:" + b64url_encode(hashlib.sha256(jti.encode()).digest()[:16])


def redis_keys(client: redis.Redis, pattern: str) -> list[bytes]:
    return list(client.scan_iter(match=pattern, count=500))


def test_a_record_is_small_and_lives_twice_the_window_plus_the_skew(
    make_app: Callable[..., Flask], redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    flask_app = make_app(HYBRID_STORE_URL=redis_url, HYBRID_STORE_KEY_PREFIX=redis_prefix)
    assert state_of(flask_app).settings.replay_ttl == 2 * 300 + 5
    token, jti = identity_token(flask_app)
    assert post(flask_app, token).status_code == 200
    assert post(flask_app, token).status_code == 409
    [key] = redis_keys(redis_client, f"{redis_prefix}jti:*")
    assert key == (redis_prefix + record_key(jti)).encode()
    assert redis_client.get(key) == b"1"
    assert 600 < redis_client.ttl(key) <= 605
    # Smaller than the record it replaces (the full SHA-256 in hex), measured by Redis itself.
    old_key = f"{redis_prefix}jti:{hashlib.sha256(jti.encode()).hexdigest()}"
    redis_client.set(old_key, b"1", ex=605)
    new_size, old_size = redis_client.memory_usage(key), redis_client.memory_usage(old_key)
    assert new_size is not None and old_size is not None and new_size < old_size


def app_with_clock(
    vector_keys: dict[str, Any], tmp_path: Path, name: str, offset: float, **config: Any
) -> Flask:
    flask_app = Flask(name, instance_path=str(tmp_path / name))
    flask_app.config.update(base_config(vector_keys, **config))
    HybridEncryption(flask_app, clock=lambda: time.time() + offset)

    @flask_app.post("/api/echo")
    def echo() -> dict[str, bool]:
        return {"ok": True}

    return flask_app


@pytest.mark.parametrize(
    ("skew", "replayed_status"),
    [
        pytest.param(0, 200, id="ttl-2x-window-replay-accepted"),  # the TTL before the fix
        pytest.param(None, 409, id="default-skew-replay-refused"),
    ],
)
def test_replay_on_a_server_whose_clock_is_behind(
    vector_keys: dict[str, Any],
    tmp_path: Path,
    redis_url: str,
    redis_prefix: str,
    skew: int | None,
    replayed_status: int,
) -> None:
    """Two servers on one Redis, the first 1.5 s ahead of the second (or the second 1.5 s
    behind): a request the first accepted at the far edge of its window is still inside the
    second's window after a 2 x window record has expired."""
    window = 1
    config: dict[str, Any] = {
        "HYBRID_STORE_URL": redis_url,
        "HYBRID_STORE_KEY_PREFIX": redis_prefix,
        "HYBRID_REPLAY_WINDOW": window,
    }
    if skew is not None:
        config["HYBRID_CLOCK_SKEW"] = skew
    ahead = app_with_clock(vector_keys, tmp_path, "ahead", 1.5, **config)
    behind = app_with_clock(vector_keys, tmp_path, "behind", 0.0, **config)
    # Start at .55 s past a second so that the whole-second iat loses only 0.05 s to rounding.
    time.sleep((0.55 - time.time() % 1) % 1)
    started = time.time()
    iat = int(started + 1.5) + window  # the newest iat the server ahead still accepts
    token, _ = identity_token(ahead, iat=iat)
    assert post(ahead, token).status_code == 200
    answered = time.time()
    # Past the expiry of a 2 x window record, still within the window of the server behind.
    replay_at = answered + 2 * window + 0.1
    assert replay_at < iat + window - 0.05, "the first request took too long to show the replay"
    time.sleep(replay_at - time.time())
    assert post(behind, token).status_code == replayed_status


def test_replay_records_under_their_own_prefix(
    make_app: Callable[..., Flask], redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    config = {
        "HYBRID_STORE_URL": redis_url,
        "HYBRID_STORE_KEY_PREFIX": f"{redis_prefix}sessions:",
        "HYBRID_REPLAY_KEY_PREFIX": f"{redis_prefix}replay:",
    }
    first, second = make_app(**config), make_app(**config)
    sessions = state_of(first).sessions
    assert sessions.replay_store is not sessions.store
    token, jti = identity_token(first)
    assert post(first, token).status_code == 200
    assert post(second, token).status_code == 409  # shared by every process
    assert redis_keys(redis_client, f"{redis_prefix}replay:*") == [
        f"{redis_prefix}replay:{record_key(jti)}".encode()
    ]
    assert redis_keys(redis_client, f"{redis_prefix}sessions:jti:*") == []


def test_replay_records_in_a_store_of_their_own(
    make_app: Callable[..., Flask], redis_url: str, redis_prefix: str, redis_client: redis.Redis
) -> None:
    flask_app = make_app(
        HYBRID_STORE_URL=redis_url,
        HYBRID_STORE_KEY_PREFIX=redis_prefix,
        HYBRID_REPLAY_STORE_URL="memory://",
    )
    replay_store = state_of(flask_app).sessions.replay_store
    assert isinstance(replay_store, MemoryStore) and replay_store.key_prefix == redis_prefix
    token, jti = identity_token(flask_app)
    assert post(flask_app, token).status_code == 200
    assert post(flask_app, token).status_code == 409
    assert replay_store.get(record_key(jti)) == b"1"
    assert redis_keys(redis_client, f"{redis_prefix}jti:*") == []


def test_replay_store_argument_and_defaults(vector_keys: dict[str, Any], tmp_path: Path) -> None:
    own = MemoryStore(key_prefix="replay:")
    flask_app = Flask("replay_argument", instance_path=str(tmp_path / "a"))
    flask_app.config.update(base_config(vector_keys))
    HybridEncryption(flask_app, replay_store=own)
    assert state_of(flask_app).sessions.replay_store is own
    token, jti = identity_token(flask_app)
    assert post(flask_app, token).status_code == 404  # opened (no route here), so recorded
    assert own.get(record_key(jti)) == b"1"

    plain = Flask("replay_default", instance_path=str(tmp_path / "b"))
    plain.config.update(base_config(vector_keys))
    HybridEncryption(plain)
    assert state_of(plain).sessions.replay_store is state_of(plain).sessions.store

    # A prefix alone cannot say which server a store object talks to: refused, naming the key.
    guarded = Flask("replay_guard", instance_path=str(tmp_path / "c"))
    guarded.config.update(base_config(vector_keys, HYBRID_REPLAY_KEY_PREFIX="replay:"))
    with pytest.raises(ValueError, match="HYBRID_REPLAY_KEY_PREFIX"):
        HybridEncryption(guarded, store=MemoryStore())


@pytest.mark.parametrize("value", [-1, 1.5, "5", True, None])
def test_clock_skew_must_be_whole_seconds(make_app: Callable[..., Flask], value: Any) -> None:
    with pytest.raises(ValueError, match="HYBRID_CLOCK_SKEW"):
        make_app(HYBRID_CLOCK_SKEW=value)


def test_clock_skew_zero_and_default(make_app: Callable[..., Flask]) -> None:
    assert state_of(make_app(HYBRID_CLOCK_SKEW=0)).settings.replay_ttl == 600
    assert state_of(make_app(HYBRID_REPLAY_WINDOW=60)).settings.replay_ttl == 125
